"""OpenVINO on CPU, in float32 (`openvino`) or bfloat16 (`openvino-bf16`, on CPUs with
bfloat16 units: AVX512_BF16 or AMX).

It runs the same local ONNX export as the ONNX Runtime backends (`onnx_backend`), unfused,
since OpenVINO applies its own fusions when it compiles the graph. The precision is always set
explicitly: left alone, OpenVINO picks bf16 on CPUs that have it, and the vectors would change
with the node the replica lands on. Unlike int8 with dynamic quantization, neither precision
makes a text's vector depend on its batch-mates. Pooling runs in numpy, as for ONNX Runtime.

How fast each precision is depends on the CPU: the auto backend measures them where it runs,
and docs/benchmarks.md records them per CPU with the commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.cpu import inference_threads
from meshsearch_embedder.onnx_backend import ExportedModelEncoder, exported_onnx_model


class OpenVinoEncoder(ExportedModelEncoder):
    def __init__(
        self, model_path: str, *, cache_dir: str, model_id: str = "", threads: int = 0, bfloat16: bool = False
    ) -> None:
        import openvino

        core = openvino.Core()
        if bfloat16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeError("this CPU has no bfloat16 units (AVX512_BF16 or AMX)")
        super().__init__(model_path)
        exported = exported_onnx_model(self._path, Path(cache_dir), self._revision)
        self._model = core.compile_model(
            str(exported),
            "CPU",
            {
                # One inference at a time on the batcher's thread: latency mode, one stream.
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                "INFERENCE_NUM_THREADS": inference_threads(threads),
                "INFERENCE_PRECISION_HINT": "bf16" if bfloat16 else "f32",
            },
        )
        self._input_names = {port.get_any_name() for port in self._model.inputs}
        self.info = self._describe(
            model_id=model_id,
            output_dimension=self._model.outputs[0].partial_shape[-1].get_length(),
            dtype="bfloat16" if bfloat16 else "float32",
            backend="openvino-bf16" if bfloat16 else "openvino",
        )

    def _hidden_states(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        hidden: npt.NDArray[np.float32] = self._model(feeds)[0]
        return hidden
