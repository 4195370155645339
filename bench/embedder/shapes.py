"""Does an OpenVINO engine fed the shapes a service's batches take run slower than its fixed-shape
calibration says, and do bucketed shapes (backend.ShapeBuckets) fix it?

A service's batches come in whatever (rows, tokens) arrivals make: thousands of distinct shapes,
where an in-process caller or a calibration repeats a few. OpenVINO's CPU plugin compiles kernels
per shape and caches a bounded number of them. This feeds each OpenVINO precision a stream of
batches of real SciFact texts (claims and abstracts 4:1, 1-32 rows of near length, within the
embedder's default 4,096-token budget), three passes of fresh random shapes, once padded to its exact shape and
once to its bucket, each in a process of its own (so memory is its own), alternated twice. It
prints texts/s and peak memory per run, the bucketed:exact ratio, and the CPU.

With --cold, it asks instead whether a replica should warm every bucket before it serves: in a
fresh process per precision, each shape the buckets allow within the budget
(`ShapeBuckets.shapes`) is run twice; the first pass's extra time over the second is what that
shape costs a replica meeting it cold, and the sweep's wall time what warming all would add to
its start. Usage:
  .venv/bin/python bench/embedder/shapes.py [--precisions bf16,int8] [--batches 300] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meshsearch_embedder.openvino_backend import OpenVinoEncoder  # noqa: E402
from meshsearch_embedder.settings import default_model_path  # noqa: E402
from meshsearch_harness.datasets import query_passage_mix  # noqa: E402
from meshsearch_harness.figures import cpu_description  # noqa: E402

TOKEN_BUDGET = 4096
PASSES = 3


def batches(token_ids: list[list[int]], count: int, seed: int) -> list[list[list[int]]]:
    """`count` batches of 1-32 texts of near length (neighbours in length order, as the batcher
    groups them), within the token budget; the batch sizes and where they start are random."""
    rng = random.Random(seed)
    by_length = sorted(token_ids, key=len)
    result = []
    for _ in range(count):
        start = rng.randrange(len(by_length))
        rows = by_length[start : start + rng.randint(1, 32)]
        result.append(rows[: max(1, TOKEN_BUDGET // len(rows[-1]))])
    return result


def child(precision: str, bucketed: bool, count: int, cache: str) -> dict[str, object]:
    encoder = OpenVinoEncoder(default_model_path(), cache_dir=cache, precision=precision)  # type: ignore[arg-type]
    if not bucketed:
        encoder.shape_buckets = None
    token_ids = encoder.tokenize(query_passage_mix(800, 200), truncate=True)
    encoder.encode(token_ids[:4])
    texts, started = 0, time.perf_counter()
    for seed in range(PASSES):
        for batch in batches(token_ids, count, seed):
            encoder.encode(batch)
            texts += len(batch)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"texts_per_s": texts / seconds, "peak_mb": peak_mb}


def cold_child(precision: str, cache: str) -> dict[str, object]:
    encoder = OpenVinoEncoder(default_model_path(), cache_dir=cache, precision=precision)  # type: ignore[arg-type]
    assert encoder.shape_buckets is not None
    shapes = encoder.shape_buckets.shapes(max_rows=32, token_budget=TOKEN_BUDGET)
    extra: list[tuple[float, tuple[int, int]]] = []
    started = time.perf_counter()
    for rows, tokens in shapes:
        batch = [[101] + [2000] * (tokens - 2) + [102]] * rows  # [CLS] ... [SEP], a full bucket
        first = time.perf_counter()
        encoder.encode(batch)
        second = time.perf_counter()
        encoder.encode(batch)
        extra.append((2 * second - first - time.perf_counter(), (rows, tokens)))
    worst = max(extra)
    return {
        "shapes": len(shapes),
        "sweep_s": time.perf_counter() - started,
        "cold_extra_s": sum(seconds for seconds, _ in extra),
        "worst_extra_ms": 1000 * worst[0],
        "worst_shape": list(worst[1]),
    }


def cold(precisions: list[str]) -> None:
    """Each precision's bucket sweep in a fresh process (after its model is built)."""
    print(
        "| precision | bucket shapes | first pass's extra over the second, total s | mean ms | worst ms (shape) "
        "| warming them all, s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as cache:
        for precision in precisions:
            OpenVinoEncoder(default_model_path(), cache_dir=cache, precision=precision)  # type: ignore[arg-type]
            command = [sys.executable, __file__, "--cold-child", precision, cache]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            r = json.loads(output.strip().splitlines()[-1])
            mean_ms = 1000 * r["cold_extra_s"] / r["shapes"]
            print(
                f"| {precision} | {r['shapes']} | {r['cold_extra_s']:.2f} | {mean_ms:.1f} "
                f"| {r['worst_extra_ms']:.1f} ({r['worst_shape'][0]} x {r['worst_shape'][1]}) | {r['sweep_s']:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="bf16,int8")
    parser.add_argument("--batches", type=int, default=300, help="batches per pass")
    parser.add_argument("--cold", action="store_true", help="what each bucket costs met cold, and warming them all")
    parser.add_argument("--child", nargs=3, metavar=("PRECISION", "BUCKETED", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--cold-child", nargs=2, metavar=("PRECISION", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        precision, bucketed, cache = args.child
        print(json.dumps(child(precision, bucketed == "1", args.batches, cache)))
        return
    if args.cold_child:
        print(json.dumps(cold_child(*args.cold_child)))
        return
    print(cpu_description())
    if args.cold:
        cold(args.precisions.split(","))
        return
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for precision in args.precisions.split(","):
            # Builds (and quantizes) the model once, outside any timed run.
            OpenVinoEncoder(default_model_path(), cache_dir=cache, precision=precision)  # type: ignore[arg-type]
        for _ in range(2):
            for precision in args.precisions.split(","):
                for bucketed in (False, True):
                    command = [sys.executable, __file__, "--batches", str(args.batches)]
                    command += ["--child", precision, "1" if bucketed else "0", cache]
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    result = json.loads(output.strip().splitlines()[-1])
                    results.setdefault((precision, bucketed), []).append(result)
                    shape = "bucketed" if bucketed else "exact"
                    print(f"{precision:5} {shape:8} {result['texts_per_s']:7.1f} texts/s  {result['peak_mb']:6.0f} MB")
    print("\n| precision | shapes | texts/s (runs) | peak MB | bucketed / exact |")
    print("|---|---|---:|---:|---:|")
    for precision in args.precisions.split(","):
        exact = sum(r["texts_per_s"] for r in results[(precision, False)]) / 2
        for bucketed in (False, True):
            runs = results[(precision, bucketed)]
            rates = " / ".join(f"{r['texts_per_s']:.1f}" for r in runs)
            mean = sum(r["texts_per_s"] for r in runs) / len(runs)
            peak = max(r["peak_mb"] for r in runs)
            ratio = f"{mean / exact:.2f}" if bucketed else "1.00"
            print(f"| {precision} | {'bucketed' if bucketed else 'exact'} | {rates} | {peak:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
