"""ONNX Runtime on CPU, optionally with int8 weights: the fast CPU backend.

The ONNX graph is built locally from the packaged model (no download), in three steps:
1. export the transformer with `torch.onnx`, with eager attention: the pattern ONNX Runtime's
   transformer optimizer recognizes (the SDPA export leaves attention unfused);
2. fuse it (`onnxruntime.transformers.optimizer`, BERT fusions): Attention, the embedding
   LayerNorm, Skip+LayerNorm and Bias+GELU become single kernels;
3. for `onnx-int8`, quantize the MatMul and Attention weights to int8 per channel, with
   reduce_range (7-bit weights): per-tensor int8 loses too much accuracy on this model, and on
   AVX2 CPUs without VNNI the 7-bit path is both faster and closer to fp32.
The eager-attention export is what makes int8 fast (its attention is fused); the offline
fusions are kept because they cost nothing at run time, and reduce_range for its accuracy. The
figures behind each choice, per CPU and with their commands, are in docs/benchmarks.md
(bench/embedder/candidates.py).

The files are cached per model revision and build recipe (`BUILD`), so only the first start of
a new model or recipe pays for the build. Pooling (mean, CLS or max, per the model's Pooling
config) runs in numpy.
"""

from __future__ import annotations

import abc
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.backend import (
    EncoderBackend,
    ModelInfo,
    content_revision,
    derive_model_id,
    read_json,
    require_model_dir,
)
from meshsearch_embedder.cpu import inference_threads

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


def check_pipeline(path: Path) -> dict:  # type: ignore[type-arg]
    """The Pooling config, after checking the model is Transformer -> Pooling (-> Normalize)."""
    modules = read_json(path / "modules.json")
    kinds: set[str] = {module["type"] for module in modules} if isinstance(modules, list) else set()
    unsupported = kinds - _SUPPORTED_MODULES
    if unsupported:
        raise ValueError(f"the onnx backend supports Transformer + Pooling (+ Normalize) models, not {unsupported}")
    pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), "1_Pooling")
    return read_json(path / pooling_dir / "config.json")


BUILD = "fused-v1"  # the recipe below; part of the cache path, so a new recipe rebuilds


def traceable_transformer(model_path: Path, attention: str):  # type: ignore[no-untyped-def]
    """(the model's transformer as a module from the three inputs to its last hidden state,
    a tokenized sample batch to trace it with). `attention` is transformers' attn_implementation:
    "eager" (plain MatMul/Softmax, what ONNX Runtime's fusions match) or "sdpa" (one fused
    attention op, which OpenVINO keeps as ScaledDotProductAttention)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(model_path), device="cpu", local_files_only=True, model_kwargs={"attn_implementation": attention}
    )
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
    return LastHiddenState(), {name: sample[name] for name in INPUTS}


def export_onnx(model_path: Path, target: Path) -> None:
    """Export the transformer to ONNX with dynamic batch and sequence axes."""
    import torch

    module, sample = traceable_transformer(model_path, "eager")
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "last_hidden_state")}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated, and tracing warns about tensors
        # turned into Python booleans (attention-mask shortcuts, constant for this model). The
        # exported graph is what the int8 quantization and the STS quality gate were validated on
        # (tests/integration/test_embedder_backends.py), so these one-time warnings are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(sample[name] for name in INPUTS),
            str(target),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def atomic_build(target: Path, build) -> None:  # type: ignore[no-untyped-def]
    """Build into a temporary path beside `target`, then rename: replicas sharing a cache
    directory never see a half-written model. `target` may be a file or a directory (an
    OpenVINO IR is two files); a directory another replica renamed into place first is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        build(partial)
        try:
            os.replace(partial, target)
        except OSError:
            if not (partial.is_dir() and target.is_dir()):
                raise


def fuse_onnx(exported: Path, target: Path, config: dict) -> None:  # type: ignore[type-arg]
    """Apply ONNX Runtime's BERT fusions (a graph they do not match is saved unfused)."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(
        str(exported),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=1,
    )
    log.info(
        "fused ONNX graph", extra={"fusions": {k: v for k, v in fused.get_fused_operator_statistics().items() if v}}
    )
    fused.save_model_to_file(str(target))


def quantize_onnx(fp32: Path, target: Path, reduce_range: bool = True) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32,
        target,
        per_channel=True,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul", "Attention"],
        weight_type=QuantType.QInt8,
        # Fused operators are outside ONNX's shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def exported_onnx_model(model_path: Path, cache_dir: Path, revision: str) -> Path:
    """Path of the (cached) plain ONNX export of this revision, exporting it when missing: the
    input of the ONNX Runtime recipes."""
    exported = cache_dir / revision / BUILD / "exported.onnx"
    if not exported.exists():
        log.info("exporting model to ONNX", extra={"target": str(exported)})
        atomic_build(exported, lambda partial: export_onnx(model_path, partial))
    return exported


def build_onnx_model(model_path: Path, cache_dir: Path, revision: str, quantize: bool) -> Path:
    """Path of the (cached) ONNX model for this revision and recipe, building it when missing."""
    directory = cache_dir / revision / BUILD
    fp32, int8 = directory / "model.onnx", directory / "model-int8.onnx"
    if not fp32.exists():
        exported = exported_onnx_model(model_path, cache_dir, revision)
        config = read_json(model_path / "config.json")
        atomic_build(fp32, lambda partial: fuse_onnx(exported, partial, config))
    if not quantize:
        return fp32
    if not int8.exists():
        log.info("quantizing ONNX model to int8", extra={"target": str(int8)})
        atomic_build(int8, lambda partial: quantize_onnx(fp32, partial))
    return int8


class ExportedModelEncoder(EncoderBackend):
    """What the backends that run the exported transformer share (ONNX Runtime, OpenVINO): the
    tokenizer, the model's identity, and pooling in numpy. A subclass sets `_input_names` and
    runs the graph in `_hidden_states`."""

    _input_names: set[str]

    def __init__(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        self._path = require_model_dir(model_path)
        self._pooling = check_pipeline(self._path)
        max_tokens = int(read_json(self._path / "sentence_bert_config.json").get("max_seq_length", 512))
        super().__init__(AutoTokenizer.from_pretrained(str(self._path), local_files_only=True), max_tokens)
        self._revision = content_revision(self._path)

    def _describe(self, *, model_id: str, output_dimension: int, dtype: str, backend: str) -> ModelInfo:
        return ModelInfo(
            model_id=model_id or derive_model_id(self._path),
            revision=self._revision,
            dimension=int(self._pooling.get("word_embedding_dimension", 0)) or int(output_dimension),
            max_tokens=self._max_tokens,
            dtype=dtype,
            backend=backend,
            device="cpu",
            prompts=dict(read_json(self._path / "config_sentence_transformers.json").get("prompts", {})),
        )

    @abc.abstractmethod
    def _hidden_states(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        """The transformer's last hidden state for one padded batch."""

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        padded = self.pad(batch)
        feeds = {name: getattr(padded, name) for name in INPUTS if name in self._input_names}
        pooled = pool_hidden_states(self._hidden_states(feeds), padded.attention_mask, self._pooling)
        return pooled[: len(batch)]


class OnnxEncoder(ExportedModelEncoder):
    def __init__(
        self,
        model_path: str,
        *,
        cache_dir: str,
        quantize: bool = True,
        model_id: str = "",
        threads: int = 0,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        super().__init__(model_path)
        onnx_path = build_onnx_model(self._path, Path(cache_dir), self._revision, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = inference_threads(threads)
        options.inter_op_num_threads = 1
        # ONNX Runtime's threads spin by default. On cores shared with PostgreSQL and the other
        # services, the spinning takes the CPU the others need: a bulk load on two cores stored
        # 162 instead of 215 short texts/s (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.info = self._describe(
            model_id=model_id,
            output_dimension=self._session.get_outputs()[0].shape[-1],
            dtype="int8" if quantize else "float32",
            backend="onnx-int8" if quantize else "onnx",
        )

    def _hidden_states(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        hidden: npt.NDArray[np.float32] = self._session.run(None, feeds)[0]
        return hidden


def pool_hidden_states(
    hidden: npt.NDArray[np.float32],
    attention_mask: npt.NDArray[np.int64],
    pooling: dict,  # type: ignore[type-arg]
) -> npt.NDArray[np.float32]:
    """The sentence-transformers Pooling module in numpy (mean, CLS or max, per its config),
    for backends that run the transformer alone."""
    mask = attention_mask[..., None].astype(hidden.dtype)
    pooled: npt.NDArray[np.float32]
    if pooling.get("pooling_mode_cls_token"):
        pooled = hidden[:, 0]
    elif pooling.get("pooling_mode_max_tokens"):
        pooled = np.where(mask > 0, hidden, -np.inf).max(axis=1)
    else:
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled.astype(np.float32)
