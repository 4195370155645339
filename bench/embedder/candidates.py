"""CPU backend candidates, in process, on this machine: speed against sentence-transformers and
the quality gate every candidate must pass before the embedder may use it.

Candidates (built from the packaged model in a scratch directory, with the embedder's own
export, fusion and quantization steps):
  onnx-fp32        the exported graph, unfused;
  fused-fp32       with ONNX Runtime's BERT fusions (the shipped `onnx` backend);
  int8             unfused, MatMul weights int8 per channel (the recipe before fusions);
  fused-int8       fused, MatMul + Attention weights int8 per channel;
  fused-int8-rr    the same with reduce_range (the shipped `onnx-int8` backend).
Gate: STS-b dev Spearman within 0.005 of torch fp32 and mean cosine to torch >= 0.99.
Speed: texts/s on SciFact claims and abstracts mixed 4:1, and on abstracts alone, batches of 16
sorted by length (as sentence-transformers does), every candidate and torch interleaved in
ABBA order; ratios to torch. Usage:
  .venv/bin/python bench/embedder/candidates.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import spearmanr  # noqa: E402

from meshsearch_embedder.backend import read_json  # noqa: E402
from meshsearch_embedder.onnx_backend import export_onnx, fuse_onnx, quantize_onnx  # noqa: E402
from meshsearch_embedder.settings import default_model_path  # noqa: E402
from meshsearch_harness.datasets import (
    query_passage_mix,  # noqa: E402
    sts_pairs,  # noqa: E402
)
from meshsearch_harness.figures import cpu_description  # noqa: E402

BATCH = 16


def build(model_path: Path, scratch: Path) -> dict[str, Path]:
    exported, fused = scratch / "exported.onnx", scratch / "fused.onnx"
    export_onnx(model_path, exported)
    fuse_onnx(exported, fused, read_json(model_path / "config.json"))
    files = {"onnx-fp32": exported, "fused-fp32": fused}
    for name, source, reduce_range in (
        ("int8", exported, False),
        ("fused-int8", fused, False),
        ("fused-int8-rr", fused, True),
    ):
        files[name] = scratch / f"{name}.onnx"
        quantize_onnx(source, files[name], reduce_range=reduce_range)
    return files


def onnx_encoder(path: Path, tokenizer, threads: int) -> Callable[[list[str]], np.ndarray]:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts])
        result = np.empty((len(texts), 384), np.float32)
        for start in range(0, len(texts), BATCH):
            rows = order[start : start + BATCH]
            batch = tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=256, return_tensors="np"
            )
            hidden = session.run(None, {k: v.astype(np.int64) for k, v in batch.items() if k in inputs})[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            result[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return result

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model_path = Path(default_model_path())
    reference = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {
        "torch": lambda texts: reference.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    }
    with tempfile.TemporaryDirectory(prefix="meshsearch-candidates-") as scratch:
        for name, path in build(model_path, Path(scratch)).items():
            encoders[name] = onnx_encoder(path, reference.tokenizer, args.threads)

        pairs = sts_pairs("dev")
        left, right, gold = [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]
        vectors = {name: (encode(left), encode(right)) for name, encode in encoders.items()}
        print(f"{cpu_description()}; {args.threads} threads\n")
        print("| candidate | STS-b dev Spearman | Δ torch | mean cosine to torch | gate |")
        print("|---|---:|---:|---:|---|")
        base_left, base_right = vectors["torch"]
        base = spearmanr((base_left * base_right).sum(1), gold).statistic
        for name, (a, b) in vectors.items():
            score = spearmanr((a * b).sum(1), gold).statistic
            cosine = float(np.concatenate([(a * base_left).sum(1), (b * base_right).sum(1)]).mean())
            passed = abs(score - base) <= 0.005 and cosine >= 0.99
            print(f"| {name} | {score:.5f} | {score - base:+.5f} | {cosine:.5f} | {'pass' if passed else 'FAIL'} |")

        mixed = query_passage_mix(400, 100)
        abstracts = query_passage_mix(0, 100)
        print("\n| candidate | mixed texts/s | × torch | abstracts texts/s | × torch |")
        print("|---|---:|---:|---:|---:|")
        rates: dict[str, dict[str, list[float]]] = {name: {"mixed": [], "abstracts": []} for name in encoders}
        for round_index in range(2):  # ABBA: the order reverses on the second round
            names = list(encoders) if round_index == 0 else list(reversed(encoders))
            for workload, texts in (("mixed", mixed), ("abstracts", abstracts)):
                for name in names:
                    started = time.perf_counter()
                    encoders[name](texts)
                    rates[name][workload].append(len(texts) / (time.perf_counter() - started))
        torch_rate = {w: float(np.median(rates["torch"][w])) for w in ("mixed", "abstracts")}
        for name, by_workload in rates.items():
            mixed_rate, abstract_rate = (
                float(np.median(by_workload["mixed"])),
                float(np.median(by_workload["abstracts"])),
            )
            print(
                f"| {name} | {mixed_rate:.1f} | {mixed_rate / torch_rate['mixed']:.2f} | "
                f"{abstract_rate:.1f} | {abstract_rate / torch_rate['abstracts']:.2f} |"
            )


if __name__ == "__main__":
    main()
