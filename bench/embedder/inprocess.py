"""In-process sentence-transformers on each of its backends, as a user who wants speed without a
service would call it: the baseline the embedder service must beat (issue 31).

It runs in a virtualenv of its own (`bench/embedder/inprocess-requirements.txt`, made by
`run.py`): sentence-transformers' ONNX and OpenVINO backends need optimum, whose releases pin an
older transformers than the mesh's. Nothing of meshsearch is imported here. `run.py` writes the
texts to a JSON file and reads back one JSON result per backend:

  python bench/embedder/inprocess.py TEXTS.json MODEL_PATH WORKDIR BACKEND [BACKEND ...]

Backends, each with the numerics the service would use on this CPU:
  torch          float32, `SentenceTransformer(path)`;
  onnx           `backend="onnx"` (optimum's export, ONNX Runtime, float32);
  onnx-int8      `export_dynamic_quantized_onnx_model` with the CPU's own config (avx512_vnni
                 where the CPU has VNNI, else avx2), then `backend="onnx"` on that file;
  openvino       `backend="openvino"` with INFERENCE_PRECISION_HINT f32;
  openvino-bf16  the same with bf16 (what OpenVINO picks by itself on CPUs with BF16 units).
Each is timed at batch sizes 16, 32, 64 and 128 (its best is reported), best of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH_SIZES = (16, 32, 64, 128)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def load(backend: str, model_path: str, workdir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    if backend == "torch":
        return SentenceTransformer(model_path, device="cpu")
    if backend == "onnx":
        return SentenceTransformer(model_path, device="cpu", backend="onnx")
    if backend == "onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        config = "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"
        exported = workdir / "onnx-export"
        if not (exported / "onnx" / f"model_qint8_{config}.onnx").exists():
            SentenceTransformer(model_path, device="cpu", backend="onnx").save_pretrained(str(exported))
            model = SentenceTransformer(str(exported), device="cpu", backend="onnx")
            export_dynamic_quantized_onnx_model(model, config, str(exported))
        return SentenceTransformer(
            str(exported), device="cpu", backend="onnx", model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"}
        )
    if backend in ("openvino", "openvino-bf16"):
        precision = "bf16" if backend == "openvino-bf16" else "f32"
        return SentenceTransformer(
            model_path,
            device="cpu",
            backend="openvino",
            model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": precision}},
        )
    raise SystemExit(f"unknown backend {backend!r}")


def best_rate(model: Any, texts: list[str], repeats: int) -> dict[str, float]:
    best = {"texts_per_s": 0.0, "batch_size": 0}
    for batch_size in BATCH_SIZES:
        for _ in range(repeats):
            started = time.perf_counter()
            model.encode(texts, batch_size=batch_size)
            rate = len(texts) / (time.perf_counter() - started)
            if rate > best["texts_per_s"]:
                best = {"texts_per_s": rate, "batch_size": batch_size}
    return best


def single_text_ms(model: Any, count: int = 100) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        model.encode([f"how do vaccines train the immune system {i}"])
        latencies.append((time.perf_counter() - started) * 1000)
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", type=Path, help="JSON: {mix: [...], abstracts: [...], sts: [...]}")
    parser.add_argument("model_path")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("backends", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = json.loads(args.texts.read_text())
    import numpy as np

    for backend in args.backends:
        model = load(backend, args.model_path, args.workdir)
        model.encode(["warm up"] * 64, batch_size=32)
        mix = best_rate(model, texts["mix"], args.repeats)
        abstracts = best_rate(model, texts["abstracts"], args.repeats)
        single = single_text_ms(model)
        vectors = np.asarray(model.encode(texts["sts"], batch_size=64, normalize_embeddings=True), dtype=np.float32)
        vectors_file = args.workdir / f"sts-{backend}.npy"
        np.save(vectors_file, vectors)
        result = {
            "backend": backend,
            "mix": mix,
            "abstracts": abstracts,
            "single_p50_ms": single[len(single) // 2],
            "sts_vectors": str(vectors_file),
        }
        print(json.dumps(result), flush=True)
        del model


if __name__ == "__main__":
    main()
