"""ONNX Runtime on CPU, optionally with int8 weights: the fast CPU backend.

The ONNX graph is built locally from the packaged model (no download): the transformer is
exported with `torch.onnx` and, for `onnx-int8`, its MatMul weights are quantized per channel
with `onnxruntime.quantization` (per-tensor int8 loses too much accuracy on this model). The
files are cached per model revision, so only the first start of a new model pays for the
export. Pooling (mean, CLS or max, per the model's Pooling config) runs in numpy.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
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

log = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


def _check_pipeline(path: Path) -> dict:  # type: ignore[type-arg]
    """The Pooling config, after checking the model is Transformer -> Pooling (-> Normalize)."""
    modules = read_json(path / "modules.json")
    kinds: set[str] = {module["type"] for module in modules} if isinstance(modules, list) else set()
    unsupported = kinds - _SUPPORTED_MODULES
    if unsupported:
        raise ValueError(f"the onnx backend supports Transformer + Pooling (+ Normalize) models, not {unsupported}")
    pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), "1_Pooling")
    return read_json(path / pooling_dir / "config.json")


def _export(model_path: Path, target: Path) -> None:
    """Export the transformer to ONNX with dynamic batch and sequence axes."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    transformer = model[0].auto_model.eval()  # type: ignore[union-attr]  # module 0 is the Transformer

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = model.tokenizer(["a sample", "a longer sample text"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated, and tracing warns about tensors
        # turned into Python booleans (attention-mask shortcuts, constant for this model). The
        # exported graph is what the int8 quantization and the STS quality gate were validated on
        # (tests/integration/test_embedder_backends.py), so these one-time warnings are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(),
            tuple(sample[name] for name in _INPUTS),
            str(target),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _atomic_build(target: Path, build) -> None:  # type: ignore[no-untyped-def]
    """Build into a temporary file beside `target`, then rename: replicas sharing a cache
    directory never see a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        build(partial)
        os.replace(partial, target)


def build_onnx_model(model_path: Path, cache_dir: Path, revision: str, quantize: bool) -> Path:
    """Path of the (cached) ONNX model for this revision, building it when missing."""
    directory = cache_dir / revision
    fp32 = directory / "model.onnx"
    if not fp32.exists():
        log.info("exporting model to ONNX", extra={"target": str(fp32)})
        _atomic_build(fp32, lambda partial: _export(model_path, partial))
    if not quantize:
        return fp32
    int8 = directory / "model-int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        log.info("quantizing ONNX model to int8", extra={"target": str(int8)})
        _atomic_build(
            int8,
            lambda partial: quantize_dynamic(
                fp32, partial, per_channel=True, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
            ),
        )
    return int8


class OnnxEncoder(EncoderBackend):
    def __init__(
        self, model_path: str, *, cache_dir: str, quantize: bool = True, model_id: str = "", threads: int = 0
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        path = require_model_dir(model_path)
        self._pooling = _check_pipeline(path)
        st_config = read_json(path / "sentence_bert_config.json")
        max_tokens = int(st_config.get("max_seq_length", 512))
        super().__init__(AutoTokenizer.from_pretrained(str(path), local_files_only=True), max_tokens)
        revision = content_revision(path)
        onnx_path = build_onnx_model(path, Path(cache_dir), revision, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        dimension = int(self._pooling.get("word_embedding_dimension", 0)) or self._session.get_outputs()[0].shape[-1]
        self.info = ModelInfo(
            model_id=model_id or derive_model_id(path),
            revision=revision,
            dimension=int(dimension),
            max_tokens=max_tokens,
            dtype="int8" if quantize else "float32",
            backend="onnx-int8" if quantize else "onnx",
            device="cpu",
            prompts=dict(read_json(path / "config_sentence_transformers.json").get("prompts", {})),
        )

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        padded = self.pad(batch)
        feeds = {name: getattr(padded, name) for name in _INPUTS if name in self._input_names}
        hidden: npt.NDArray[np.float32] = self._session.run(None, feeds)[0]
        mask = padded.attention_mask[..., None].astype(hidden.dtype)
        pooled: npt.NDArray[np.float32]
        if self._pooling.get("pooling_mode_cls_token"):
            pooled = hidden[:, 0]
        elif self._pooling.get("pooling_mode_max_tokens"):
            pooled = np.where(mask > 0, hidden, -np.inf).max(axis=1)
        else:
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled.astype(np.float32)
