"""What authentication, rate limiting and tenant isolation cost, measured side by side.

In one run, on the embedded stack plus a second api with auth on (same embedder, search
service, database and Redis), calls are sent one at a time in rounds that interleave the paths,
so a drifting machine favours none:
  (a) auth off: GetCollection, and Search with a query whose embedding is cached;
  (b) auth on, with a key already verified (cache hit) and its rate limit in Redis: the same;
  (c) auth on, the first call of a key never seen (one argon2id verification);
  (d) tenant probes through (b): GetCollection of another tenant's collection, and of a name
      that exists nowhere; both must answer NOT_FOUND alike, in time too.
Prints p50 and p99 of each, the ratios (b)/(a) and (d-other)/(d-absent), and the CPU.
Usage:
  .venv/bin/python bench/auth/run.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402
from meshsearch_harness.secured import SecuredApis, bearer, start_secured_apis  # noqa: E402


def timed(call: Callable[..., object], *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    return time.perf_counter() - started


def report(label: str, samples: list[float]) -> float:
    p50 = percentile(samples, 50) * 1000
    print(f"  {label:<52} p50 {p50:7.2f} ms   p99 {percentile(samples, 99) * 1000:7.2f} ms   n={len(samples)}")
    return p50


def run(stack: EmbeddedStack, secured: SecuredApis, rounds: int) -> None:
    open_api = grpc.insecure_channel(f"127.0.0.1:{stack.ports.api}")
    auth_api = grpc.insecure_channel(secured.target())
    tenant, other = f"b{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}"
    key, other_key = secured.new_key(tenant), secured.new_key(other)
    name = "bench_auth"
    for channel, metadata, collection in (
        (open_api, (), name),
        (auth_api, bearer(key), name),
        (auth_api, bearer(other_key), f"{name}_other"),
    ):
        api_pb2_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=collection)), metadata=metadata, timeout=60
        )
    open_collections = api_pb2_grpc.CollectionServiceStub(open_api)
    auth_collections = api_pb2_grpc.CollectionServiceStub(auth_api)
    open_search = api_pb2_grpc.SearchServiceStub(open_api)
    auth_search = api_pb2_grpc.SearchServiceStub(auth_api)
    query = "how do cells divide"
    for _ in range(20):  # warm: channels, the key's cache entry, the query's embedding
        open_search.Search(pb.SearchRequest(collection=name, query=query), timeout=30)
        auth_search.Search(pb.SearchRequest(collection=name, query=query), metadata=bearer(key), timeout=30)
    fresh_keys = [secured.new_key(tenant, pb.ROLE_READ) for _ in range(min(rounds, 60))]
    paths: dict[str, list[float]] = {
        p: [] for p in ("a_get", "b_get", "a_search", "b_search", "c", "d_other", "d_absent")
    }
    get = pb.GetCollectionRequest(name=name)
    for i in range(rounds):
        paths["a_get"].append(timed(lambda: open_collections.GetCollection(get, timeout=30)))
        paths["b_get"].append(timed(lambda: auth_collections.GetCollection(get, metadata=bearer(key), timeout=30)))
        paths["a_search"].append(
            timed(lambda: open_search.Search(pb.SearchRequest(collection=name, query=query), timeout=30))
        )
        paths["b_search"].append(
            timed(
                lambda: auth_search.Search(
                    pb.SearchRequest(collection=name, query=query), metadata=bearer(key), timeout=30
                )
            )
        )
        if i < len(fresh_keys):
            fresh = fresh_keys[i]
            paths["c"].append(timed(auth_collections.GetCollection, get, metadata=bearer(fresh), timeout=30))
        probes = [("d_other", name + "_other"), ("d_absent", f"absent_{i}")]
        for label, probed in probes if i % 2 else reversed(probes):
            request = pb.GetCollectionRequest(name=probed)
            paths[label].append(timed(auth_collections.GetCollection, request, metadata=bearer(key), timeout=30))
    print(f"CPU: {cpu_description()}")
    print(f"{rounds} rounds, one call at a time, paths interleaved:")
    a_get = report("(a) GetCollection, auth off", paths["a_get"])
    b_get = report("(b) GetCollection, auth on (verified key, Redis limit)", paths["b_get"])
    a_search = report("(a) Search (cached embedding), auth off", paths["a_search"])
    b_search = report("(b) Search (cached embedding), auth on", paths["b_search"])
    report("(c) first call of a new key (argon2id verification)", paths["c"])
    other_p50 = report("(d) GetCollection of another tenant's collection", paths["d_other"])
    absent_p50 = report("(d) GetCollection of a name that exists nowhere", paths["d_absent"])
    print(
        f"auth on / off, p50: GetCollection {b_get / a_get:.2f}x (+{b_get - a_get:.2f} ms), "
        f"Search {b_search / a_search:.2f}x (+{b_search - a_search:.2f} ms)"
    )
    print(f"another tenant's / absent, p50: {other_p50 / absent_p50:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = EmbeddedStack(Path(tmp) / "stack", Ports.ephemeral())
        stack.start(services=("embedder", "search", "api"))
        try:
            secured_apis = start_secured_apis(stack, Path(tmp) / "secured", cache_ttl_s=5.0)  # the default
            secured = next(secured_apis)
            try:
                run(stack, secured, args.rounds)
            finally:
                secured_apis.close()
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
