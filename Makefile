# meshsearch developer entry points. Everything runs from a virtualenv in .venv.
#   make demo    set up, start the embedded stack, index a real corpus, answer queries, stop
#   make test    set up, check contracts, run every test (real PostgreSQL, Redis, model, gRPC)
#   make bench   run the benchmarks under bench/ (see docs/benchmarks.md)
#   make chaos   every fault under mixed load (each process killed, frozen, restarted; Redis flushed; each
#                link vanished, reset, silent, slow), and kill -9 of every process during ingest jobs
#   make fuzz    10,000 generated requests per service, none may end UNKNOWN or INTERNAL
#   make soak    an hour of 64 mixed clients (SOAK_S=600 for ten minutes); no series may grow past 10 %

VENV      ?= .venv
PY        := $(VENV)/bin/python
BUF       := $(VENV)/bin/buf
# The CPU build of torch lies on local disk here; unpinned, pip may fetch a multi-GB CUDA build.
TORCH     ?= torch==2.13.0
PACKAGES  := -e libs/common[dev] -e services/embedder[onnx,openvino] -e services/search -e services/api -e clients/python -e tools/cli[embedded] -e tools/harness
# What `buf breaking` compares against; CI passes the previous commit on main.
BUF_AGAINST ?= .git\#ref=HEAD

.PHONY: setup node-client node-check demo up test unit chaos fuzz soak lint typecheck protos protos-check buf-lint buf-breaking bench clean \
	deploy-check images compose-test locks dashboard
# The Kubernetes version the manifests are validated against.
K8S_VERSION ?= 1.33.0
IMAGE_TAG   ?= dev
DOCKERFILES := services/api/Dockerfile services/embedder/Dockerfile services/search/Dockerfile \
	tools/build/images/postgres.Containerfile tools/build/images/redis.Containerfile

setup: $(VENV)/.installed

$(VENV)/.installed: libs/common/pyproject.toml clients/python/pyproject.toml tools/cli/pyproject.toml tools/harness/pyproject.toml services/api/pyproject.toml services/embedder/pyproject.toml services/search/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) $(PACKAGES)
	touch $@

demo: setup
	$(VENV)/bin/meshsearch demo

up: setup
	$(VENV)/bin/meshsearch up

test: setup node-client protos-check lint typecheck node-check deploy-check
	$(PY) -m pytest -c tests/pytest.ini tests --ignore=tests/deploy

# The Node.js client (clients/node), installed from its lock file; the e2e tests drive it.
node-client: clients/node/node_modules/.installed

clients/node/node_modules/.installed: clients/node/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix clients/node --no-audit --no-fund --loglevel=error
	touch $@

# Regenerates the Node client's message types from protos/ and type-checks it and its tests.
node-check: node-client
	npm run --silent --prefix clients/node check

unit: setup
	$(PY) -m pytest -c tests/pytest.ini tests/unit

# `make test` runs the short form of the same test (one round, 3,000 documents, fast failure detection).
chaos: setup
	MESHSEARCH_CHAOS=full $(PY) -m pytest -c tests/pytest.ini -s tests/e2e/test_mesh_chaos.py tests/e2e/test_ingest_faults.py

# `make test` runs the short form (1,000 generated requests per service).
fuzz: setup
	MESHSEARCH_FUZZ=full $(PY) -m pytest -c tests/pytest.ini tests/e2e/test_rpc_fuzz.py

# `make test` runs the short form (90 s). The plot of every sampled series goes to docs/images.
SOAK_S ?= 3600
soak: setup
	MESHSEARCH_SOAK_S=$(SOAK_S) MESHSEARCH_SOAK_PLOT=docs/images/soak.png $(PY) -m pytest -c tests/pytest.ini -s tests/e2e/test_soak.py

lint: setup buf-lint
	$(VENV)/bin/ruff check --config libs/common/ruff.toml libs services clients/python tools tests bench

# mypy --strict over every package and the tests (relaxed there); generated stubs excluded.
typecheck: setup
	$(VENV)/bin/mypy --config-file libs/common/mypy.ini libs/common/src/meshsearch_common clients/python/src/meshsearch/client tools/cli/src/meshsearch_cli tools/harness/src/meshsearch_harness \
	  services/api/src/meshsearch_api services/embedder/src/meshsearch_embedder services/search/src/meshsearch_search tests

# Rebuilds k8s/base/dashboards/meshsearch.json (tests/unit/test_dashboard.py fails when it drifts).
dashboard: setup
	$(PY) tools/build/dashboard.py

protos: setup
	PYTHON=$(abspath $(PY)) tools/build/generate_protos.sh

# Fails when the committed stubs differ from what protos/ generates.
protos-check: setup
	@tmp=$$(mktemp -d) && PYTHON=$(abspath $(PY)) tools/build/generate_protos.sh $$tmp \
	  && diff -r -x __pycache__ $$tmp/meshsearch libs/common/src/meshsearch \
	  && echo "generated stubs match protos/" ; status=$$?; rm -rf $$tmp; exit $$status

buf-lint: setup
	$(BUF) lint

buf-breaking: setup
	$(BUF) breaking --against '$(BUF_AGAINST)'

bench: setup
	$(PY) bench/embedder/run.py
	$(PY) bench/search/run.py
	$(PY) bench/ingest/run.py
	$(PY) bench/ingest/jobs.py
	$(PY) bench/quality/run.py
	$(PY) bench/e2e/run.py
	$(PY) bench/sharding/probe.py
	$(PY) bench/server/run.py
	$(PY) bench/auth/run.py

# Offline checks of how meshsearch is deployed: Dockerfiles (hadolint), compose.yaml (the Compose
# specification's schema), and every Kubernetes overlay rendered by kustomize (the API schemas of
# K8S_VERSION, strict). tests/unit/test_deployment_files.py checks their settings.
deploy-check: setup k8s-dev-secrets
	$(VENV)/bin/hadolint $(DOCKERFILES)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	for overlay in k8s/overlays/*/; do \
	  $(VENV)/bin/kubectl kustomize $$overlay > .venv/rendered.yaml && \
	  $(VENV)/bin/kubernetes-validate -k $(K8S_VERSION) --strict --quiet .venv/rendered.yaml || exit 1; \
	done

# The dev overlay's Secret values (k8s/overlays/dev/secrets.env, never committed), random.
k8s-dev-secrets:
	tools/build/k8s_dev_secrets.sh

# Every image, built with podman from base images made of Debian's packages (no registry needed):
# localhost/meshsearch-{api,worker,embedder,search,postgres,redis}:$(IMAGE_TAG).
images: setup
	tools/build/images/build.sh $(IMAGE_TAG)

# Those images run for real (as root, with podman; CI's second step): each alone in a pod (non-root
# user, torch only in the embedder, gRPC health, exit 0 on SIGTERM), then compose.yaml under
# podman-compose: index, search, scale the embedder, tear down.
compose-test: images
	MESHSEARCH_TAG=$(IMAGE_TAG) $(PY) -m pytest -c tests/pytest.ini tests/deploy

# Regenerate services/*/requirements.lock (what the images install) after a pyproject.toml change.
locks:
	PYTHON=python3 tools/build/lock_images.sh

clean:
	rm -rf $(VENV) .meshsearch .pytest_cache
