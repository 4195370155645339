"""OpenVINO on CPU: float32 (`openvino`), bfloat16 (`openvino-bf16`, on CPUs with bfloat16
units: AVX512_BF16 or AMX), or int8 (`openvino-int8`).

It runs the model converted from torch by OpenVINO itself (`openvino.convert_model`, traced
with transformers' SDPA attention), not the ONNX export of the ONNX Runtime backends: the
conversion keeps each attention block as one `ScaledDotProductAttention` op, which OpenVINO's
CPU plugin runs as a fused kernel, where the ONNX export's eager attention arrives as separate
MatMul/Softmax ops (1.3x as many short texts per second in bf16 on an Intel Xeon with AMX,
the same for 256-token texts; docs/benchmarks.md). The precision is always set
explicitly: left alone, OpenVINO picks bf16 on CPUs that have it, and the vectors would change
with the node the replica lands on. Pooling runs in numpy, as for ONNX Runtime.

`openvino-int8` is static post-training quantization (NNCF, transformer mode, mixed preset:
symmetric weights, asymmetric activations) with scales fixed once from the calibration module's
own texts; what stays in floating point runs in float32. (In bfloat16 it was as fast on an
Intel Xeon with AMX, but OpenVINO 2026.4's int8-with-bf16 kernels there returned vectors at
cosine 0.67-0.92 to the right ones for texts of exactly 32 tokens, and correct ones at 31 and
33: docs/benchmarks.md.) Static scales
mean a text's vector does not depend on its batch-mates, unlike ONNX Runtime's dynamic int8.
On an AMD EPYC with AVX-512 VNNI/BF16 it embedded 1.6x as many short texts per second as
`openvino-bf16` (1.4x on long ones; float parts in float32, and in bf16 no faster there:
docs/benchmarks.md) at a mean cosine of 0.993 to float32 torch on STS-b dev; on an Intel Xeon
with AMX it was slower than `openvino-bf16`.
The quantized model is built once per revision into the ONNX cache directory.

How fast each precision is depends on the CPU: the auto backend measures them where it runs,
and docs/benchmarks.md records them per CPU with the commands.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.backend import ShapeBuckets
from meshsearch_embedder.calibration import quantization_texts
from meshsearch_embedder.cpu import inference_threads
from meshsearch_embedder.onnx_backend import ExportedModelEncoder, atomic_build, traceable_transformer

log = logging.getLogger(__name__)

Precision = Literal["f32", "bf16", "int8"]
OPENVINO_PRECISIONS: dict[str, Precision] = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}
# The recipes below; part of the cache path, so a new recipe rebuilds.
IR_BUILD = "openvino-sdpa-v1"
INT8_BUILD = "openvino-int8-v2"


def converted_model(model_path: Path, cache_dir: Path, revision: str) -> Path:
    """Path of the (cached) OpenVINO IR of this revision, converted from torch when missing."""
    directory = cache_dir / revision / IR_BUILD
    if not (directory / "model.xml").exists():
        log.info("converting model to OpenVINO", extra={"target": str(directory)})
        atomic_build(directory, lambda partial: _convert(model_path, partial))
    return directory / "model.xml"


def _convert(model_path: Path, directory: Path) -> None:
    import warnings

    import openvino
    import torch

    module, sample = traceable_transformer(model_path, "sdpa")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing's notes on attention-mask shortcuts, constant here
        converted = openvino.convert_model(module, example_input=sample)
    directory.mkdir()
    # Weights stay float32: the precision is chosen when compiling (bf16, f32) or quantizing.
    openvino.save_model(converted, str(directory / "model.xml"), compress_to_fp16=False)


# Window lengths each long calibration text is cut to, so the scales see every length served.
_CALIBRATION_LENGTHS = (24, 48, 96, 160, 256)


class OpenVinoEncoder(ExportedModelEncoder):
    def __init__(
        self,
        model_path: str,
        *,
        cache_dir: str,
        model_id: str = "",
        threads: int = 0,
        precision: Precision = "f32",
        streams: int = 1,
    ) -> None:
        import openvino

        core = openvino.Core()
        has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and not has_bf16:
            raise RuntimeError("this CPU has no bfloat16 units (AVX512_BF16 or AMX)")
        super().__init__(model_path)
        converted = converted_model(self._path, Path(cache_dir), self._revision)
        model = str(converted)
        if precision == "int8":
            model = str(self._quantized(converted, Path(cache_dir) / self._revision / INT8_BUILD))
        float_precision = "bf16" if precision == "bf16" else "f32"
        # One stream runs one batch on every thread (latency mode); several streams split the
        # threads between them and run that many batches at once (throughput mode), which the
        # batcher feeds through `concurrent_batches`.
        self.concurrent_batches = max(1, streams)
        self._model = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY" if self.concurrent_batches == 1 else "THROUGHPUT",
                "NUM_STREAMS": self.concurrent_batches,
                "INFERENCE_NUM_THREADS": inference_threads(threads),
                "INFERENCE_PRECISION_HINT": float_precision,
            },
        )
        # OpenVINO's CPU plugin compiles kernels per input shape and caches a bounded number:
        # fed the shapes arrivals make, it recompiles all the time (ShapeBuckets).
        self.shape_buckets = ShapeBuckets(self._max_tokens)
        self._requests = threading.local()  # an infer request per inference thread
        self._input_names = {port.get_any_name() for port in self._model.inputs}
        names = {"f32": ("float32", "openvino"), "bf16": ("bfloat16", "openvino-bf16")}
        dtype, backend = names.get(precision, ("int8+float32", "openvino-int8"))
        self.info = self._describe(
            model_id=model_id,
            output_dimension=self._model.outputs[0].partial_shape[-1].get_length(),
            dtype=dtype,
            backend=backend,
        )

    def _quantized(self, converted: Path, directory: Path) -> Path:
        """The int8 model of this revision, quantized from `converted` once, then cached (built
        whole and renamed into place, as every cached model is: `atomic_build`)."""
        model = directory / "model.xml"
        if not model.exists():
            log.info("quantizing model to int8 with NNCF", extra={"target": str(directory)})
            atomic_build(directory, lambda partial: self._quantize(converted, partial))
        return model

    def _quantize(self, converted: Path, directory: Path) -> None:
        import nncf
        import openvino

        source = openvino.Core().read_model(str(converted))
        inputs = [port.get_any_name() for port in source.inputs]
        samples = []
        for ids in self.tokenize(quantization_texts(), truncate=True):
            lengths = [n for n in _CALIBRATION_LENGTHS if n < len(ids)] if len(ids) > _CALIBRATION_LENGTHS[-2] else []
            for length in [*lengths, len(ids)]:
                padded = self.pad([ids[:length]])
                samples.append({name: getattr(padded, name) for name in inputs})
        quantized = nncf.quantize(
            source,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(samples),
        )
        directory.mkdir()
        openvino.save_model(quantized, str(directory / "model.xml"))  # and its weights, model.bin

    def _hidden_states(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._model.create_infer_request()
        request.infer(feeds)
        # A view of the request's own output buffer, no copy: this thread pools it (encode)
        # before it runs this request again.
        hidden: npt.NDArray[np.float32] = request.get_output_tensor(0).data
        return hidden
