"""OpenVINO on CPU, in float32 (`openvino`) or bfloat16 (`openvino-bf16`, on CPUs with
bfloat16 units: AVX512_BF16 or AMX).

It runs the same local ONNX export as the ONNX Runtime backends (`onnx_backend`), unfused,
since OpenVINO applies its own fusions when it compiles the graph. The precision is always set
explicitly: left alone, OpenVINO picks bf16 on CPUs that have it, and the vectors would change
with the node the replica lands on. Unlike int8 with dynamic quantization, neither precision
makes a text's vector depend on its batch-mates. Pooling runs in numpy, as for ONNX Runtime.

Measured in process (2026-12-01, AMD EPYC with AVX-512 VNNI and BF16, 2 threads, calibration
texts), texts/s short / long: torch 501 / 25, openvino 1,058 / 64, openvino-bf16 1,412 / 99,
onnx-int8 1,860 / 88 (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.model import (
    EncoderBackend,
    ModelInfo,
    content_revision,
    derive_model_id,
    read_json,
    require_model_dir,
)
from meshsearch_embedder.onnx_backend import check_pipeline, exported_onnx_model, pool_hidden_states


class OpenVinoEncoder(EncoderBackend):
    def __init__(
        self, model_path: str, *, cache_dir: str, model_id: str = "", threads: int = 0, bfloat16: bool = False
    ) -> None:
        import openvino
        from transformers import AutoTokenizer

        core = openvino.Core()
        if bfloat16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeError("this CPU has no bfloat16 units (AVX512_BF16 or AMX)")

        path = require_model_dir(model_path)
        self._pooling = check_pipeline(path)
        max_tokens = int(read_json(path / "sentence_bert_config.json").get("max_seq_length", 512))
        super().__init__(AutoTokenizer.from_pretrained(str(path), local_files_only=True), max_tokens)
        revision = content_revision(path)
        exported = exported_onnx_model(path, Path(cache_dir), revision)
        self._model = core.compile_model(
            str(exported),
            "CPU",
            {
                # One inference at a time on the batcher's thread: latency mode, one stream.
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                "INFERENCE_NUM_THREADS": threads or (os.cpu_count() or 1),
                "INFERENCE_PRECISION_HINT": "bf16" if bfloat16 else "f32",
            },
        )
        self._input_names = {port.get_any_name() for port in self._model.inputs}
        self.info = ModelInfo(
            model_id=model_id or derive_model_id(path),
            revision=revision,
            dimension=int(self._pooling.get("word_embedding_dimension", 0)) or int(self._model.outputs[0].shape[-1]),
            max_tokens=max_tokens,
            dtype="bfloat16" if bfloat16 else "float32",
            backend="openvino-bf16" if bfloat16 else "openvino",
            device="cpu",
            prompts=dict(read_json(path / "config_sentence_transformers.json").get("prompts", {})),
        )

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        padded = self.pad(batch)
        feeds = {
            name: getattr(padded, name)
            for name in ("input_ids", "attention_mask", "token_type_ids")
            if name in self._input_names
        }
        hidden: npt.NDArray[np.float32] = self._model(feeds)[0]
        return pool_hidden_states(hidden, padded.attention_mask, self._pooling)
