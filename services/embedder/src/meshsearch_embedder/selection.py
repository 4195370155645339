"""Which inference backend a replica runs (MESHSEARCH_EMBEDDER_BACKEND).

A backend named explicitly is loaded as named. `auto`, the default:
- on a CUDA device, torch in float16 (the only GPU backend; it is fastest there);
- on a CPU, every candidate (torch float32, ONNX Runtime fused float32 and int8, OpenVINO
  float32, bfloat16 and static int8; those whose library or CPU support is missing are skipped, with the
  reason) is loaded and must
  first agree with the torch reference on the calibration texts (mean cosine >= 0.99), and at
  each probed text length (calibration.probe_lengths, >= 0.98): that catches a build or kernel
  that misbehaves on this CPU, at every shape or at one. The recipes themselves passed the full
  quality gate, STS-b dev Spearman within 0.005 of torch, offline
  (tests/integration/test_embedder_backends.py checks it on every CI run). The eligible
  candidates are then timed on short and long texts, and the fastest on the expected workload
  (short:long texts 4:1, queries and passages) is kept.

Speed ranks differ by CPU (onnx-int8 was 1.8x torch on one AMD EPYC and 1.0x on long texts on
another), which is why this is measured rather than configured. The result is cached per model
revision, CPU, thread count and library versions, under a file lock, so replicas sharing a cache
and later starts on the same machine reuse one choice: a choice that flipped between restarts
would change the numerics of new vectors, which collections refuse unless they accept mixed
numerics. A fleet of unlike nodes should name its backend explicitly (docs/configuration.md).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from meshsearch_embedder.backend import EncoderBackend
from meshsearch_embedder.calibration import Calibration, calibrate, mean_cosine
from meshsearch_embedder.cpu import cpu_description, cpu_model, simd_flags, usable_cpus

log = logging.getLogger(__name__)

CPU_CANDIDATES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
REFERENCE = "torch"
MIN_MEAN_COSINE = 0.99
# Per probed length (calibration.probe_lengths), the mean over a few texts: looser than the
# overall bar, since int8 on short cuts of passages sits near it, yet far above what a broken
# kernel gives (0.67-0.92 in the case that prompted it).
MIN_LENGTH_COSINE = 0.98
SHORT_PER_LONG = 4  # the workload the choice is for: four short texts per long one
SELECTION_VERSION = 2  # part of the cache key: a new way of choosing measures again


@dataclass(frozen=True)
class Candidate:
    backend: str
    short_per_s: float = 0.0
    long_per_s: float = 0.0
    mean_cosine: float = 0.0
    rejected_because: str = ""

    @property
    def eligible(self) -> bool:
        return not self.rejected_because

    @property
    def seconds_per_mix(self) -> float:
        """Time for SHORT_PER_LONG short texts and one long one: what the choice minimizes."""
        if self.short_per_s <= 0 or self.long_per_s <= 0:
            return float("inf")
        return SHORT_PER_LONG / self.short_per_s + 1 / self.long_per_s


@dataclass(frozen=True)
class Selection:
    requested: str
    backend: str
    reason: str
    cpu: str = ""
    cached: bool = False
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)


Loader = Callable[[str], EncoderBackend]


class SelectionCache:
    """The choice of one (model revision, CPU, threads, versions), as JSON in `directory`."""

    def __init__(self, directory: Path, key: str) -> None:
        self._path = directory / f"{key}.json"
        self.lock = FileLock(str(directory / f"{key}.lock"))
        directory.mkdir(parents=True, exist_ok=True)

    def read(self) -> Selection | None:
        try:
            data = json.loads(self._path.read_text())
            data["candidates"] = tuple(Candidate(**c) for c in data["candidates"])
            return Selection(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, selection: Selection) -> None:
        partial = self._path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(selection), indent=1))
        os.replace(partial, self._path)


def cache_key(revision: str, threads: int, candidates: Sequence[str], streams: int = 1) -> str:
    """What makes a measured choice valid: change any of it and the choice is measured again."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return ""

    facts = {
        "revision": revision,
        "cpu": cpu_model(),
        "flags": simd_flags(),
        "cores": usable_cpus(),
        "threads": threads,
        "streams": streams,
        "candidates": list(candidates),
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        "openvino": version("openvino"),
        "selection": SELECTION_VERSION,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def select_backend(
    requested: str,
    load: Loader,
    *,
    on_gpu: bool,
    cache: SelectionCache | None = None,
    candidates: Sequence[str] = CPU_CANDIDATES,
) -> tuple[EncoderBackend, Selection]:
    """The encoder to serve with and why. `load(name)` builds a backend (blocking); `cache`
    holds earlier choices for this model and machine (None: measure at every start)."""
    if requested != "auto":
        return load(requested), Selection(requested, requested, "named explicitly")
    if on_gpu:
        encoder = load(REFERENCE)
        return encoder, Selection(requested, REFERENCE, f"a CUDA device is present: torch in {encoder.info.dtype}")
    if cache is None:
        return _calibrated(requested, load, candidates)
    with cache.lock:
        remembered = cache.read()
        if remembered is not None and remembered.backend in candidates:
            try:
                return load(remembered.backend), replace(remembered, cached=True)
            except Exception as error:  # noqa: BLE001 - a cached choice that no longer loads is measured again
                log.warning(
                    "cached backend no longer loads", extra={"backend": remembered.backend, "error": str(error)}
                )
        encoder, selection = _calibrated(requested, load, candidates)
        cache.write(selection)
        return encoder, selection


def worst_length(candidate: Calibration, reference: Calibration) -> tuple[int, float]:
    """The probed length where the candidate agrees least with the reference, and how well."""
    by_length = {n: mean_cosine(rows, reference.by_length[n]) for n, rows in candidate.by_length.items()}
    length = min(by_length, key=by_length.__getitem__)
    return length, by_length[length]


def _calibrated(requested: str, load: Loader, names: Sequence[str]) -> tuple[EncoderBackend, Selection]:
    """Load every candidate, gate it against the reference, time it; keep the fastest."""
    encoders: dict[str, EncoderBackend] = {}
    rejected: dict[str, str] = {}
    for name in dict.fromkeys([REFERENCE, *names]):
        try:
            encoders[name] = load(name)
        except ImportError as error:
            rejected[name] = f"{error.name or 'a module it needs'} is not installed"
        except Exception as error:  # noqa: BLE001 - a candidate that cannot load is skipped, not fatal
            rejected[name] = f"failed to load: {error}"
    if REFERENCE not in encoders:
        raise RuntimeError(f"the reference backend {REFERENCE} does not load: {rejected[REFERENCE]}")
    measured = calibrate(encoders)
    reference_vectors = measured[REFERENCE].vectors
    candidates = []
    for name in names:
        if name in rejected:
            candidates.append(Candidate(name, rejected_because=rejected[name]))
            continue
        result = measured[name]
        cosine = mean_cosine(result.vectors, reference_vectors)
        reason = "" if cosine >= MIN_MEAN_COSINE else f"mean cosine to torch {cosine:.4f} < {MIN_MEAN_COSINE}"
        length, worst = worst_length(result, measured[REFERENCE])
        if not reason and worst < MIN_LENGTH_COSINE:
            reason = f"mean cosine to torch at {length} tokens {worst:.4f} < {MIN_LENGTH_COSINE}"
        candidates.append(Candidate(name, result.short_per_s, result.long_per_s, cosine, reason))
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        raise RuntimeError(f"no backend candidate is eligible: {[(c.backend, c.rejected_because) for c in candidates]}")
    best = min(eligible, key=lambda c: c.seconds_per_mix)
    chosen = encoders.pop(best.backend)
    encoders.clear()  # the others' weights and sessions go now, not at the next collection
    gc.collect()
    reason = f"fastest of {len(eligible)} eligible candidate(s) on this CPU, {SHORT_PER_LONG} short texts per long one"
    return chosen, Selection(requested, best.backend, reason, cpu=cpu_description(), candidates=tuple(candidates))
