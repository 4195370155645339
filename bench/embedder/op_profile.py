"""Where the ONNX Runtime backends spend their time on this CPU: the answer issue 13 asks for
when a target is missed.

For `onnx` (fused float32) and `onnx-int8` (fused, int8 weights), built from the packaged model
with the embedder's own recipe in a scratch directory, this runs SciFact claims and abstracts in
sorted batches of 16 under ONNX Runtime's profiler and prints:
  - texts/s and the share of kernel time by operator type (matrix products, attention,
    layer norms, GELU);
  - the rate of the matrix products in GFLOP/s (2 x weights x tokens, from the model's config),
    beside the rate of a large float32 matrix product in torch in the same run: how close the
    model's matrix products already are to what these cores do.
On a CPU without VNNI, int8 matrix products gain little over float32 ones, which bounds what any
int8 backend can give there. Usage:
  .venv/bin/python bench/embedder/op_profile.py [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meshsearch_embedder.backend import content_revision, read_json  # noqa: E402
from meshsearch_embedder.onnx_backend import build_onnx_model  # noqa: E402
from meshsearch_embedder.settings import default_model_path  # noqa: E402
from meshsearch_harness.datasets import query_passage_mix  # noqa: E402
from meshsearch_harness.figures import cpu_description  # noqa: E402

BATCH = 16
MATMUL_OPS = {"MatMul", "DynamicQuantizeMatMul", "MatMulInteger", "FusedMatMul"}


def linear_flops_per_token(config: dict) -> float:  # type: ignore[type-arg]
    """FLOPs of one token through the encoder's dense layers (Q, K, V, output, and the two
    feed-forward layers of every block); attention scores come on top."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2.0 * layers * (4 * hidden * hidden + 2 * hidden * inner)


def torch_sgemm_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def profile(  # type: ignore[no-untyped-def]
    model: Path, texts: list[str], tokenizer, threads: int, scratch: Path
) -> tuple[float, dict[str, float], int]:
    """texts/s, kernel microseconds by operator type, and real tokens embedded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(scratch / "profile")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    ordered = sorted(texts, key=len)
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(ordered), BATCH):
        batch = tokenizer(
            ordered[start : start + BATCH], padding=True, truncation=True, max_length=256, return_tensors="np"
        )
        tokens += int(batch["attention_mask"].size)  # padded tokens: what the kernels compute
        session.run(None, {k: v.astype(np.int64) for k, v in batch.items() if k in inputs})
    rate = len(texts) / (time.perf_counter() - started)
    by_op: collections.Counter[str] = collections.Counter()
    trace = Path(session.end_profiling())
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    return rate, dict(by_op), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    model_path = Path(default_model_path())
    tokenizer = SentenceTransformer(str(model_path), device="cpu", local_files_only=True).tokenizer

    per_token = linear_flops_per_token(read_json(model_path / "config.json"))
    workloads = {"claims": query_passage_mix(320, 0), "abstracts": query_passage_mix(0, 64)}
    print(f"{cpu_description()}; {args.threads} threads")
    print(f"torch float32 matrix product 2048x2048: {torch_sgemm_gflops(args.threads):.0f} GFLOP/s\n")
    print(
        "| backend | texts | texts/s | matrix products | attention | layer norms | GELU | other "
        "| matrix products GFLOP/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="meshsearch-profile-") as scratch:
        revision = content_revision(model_path)
        for backend, quantize in (("onnx", False), ("onnx-int8", True)):
            model = build_onnx_model(model_path, Path(scratch), revision, quantize)
            for name, texts in workloads.items():
                rate, by_op, tokens = profile(model, texts, tokenizer, args.threads, Path(scratch))
                total = sum(by_op.values())

                def share(kinds: set[str], by_op: dict[str, float] = by_op, total: float = total) -> float:
                    return sum(v for k, v in by_op.items() if k in kinds) / total

                matmul = share(MATMUL_OPS)
                attention = share({"Attention", "QAttention", "MultiHeadAttention"})
                norms = share({"SkipLayerNormalization", "EmbedLayerNormalization", "LayerNormalization"})
                gelu = share({"BiasGelu", "Gelu", "FastGelu"})
                matmul_s = matmul * total / 1e6
                print(
                    f"| {backend} | {name} | {rate:.1f} | {matmul:.0%} | {attention:.0%} | {norms:.0%} | {gelu:.0%} | "
                    f"{1 - matmul - attention - norms - gelu:.0%} | {per_token * tokens / matmul_s / 1e9:.0f} |"
                )


if __name__ == "__main__":
    main()
