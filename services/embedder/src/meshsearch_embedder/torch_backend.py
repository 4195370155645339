"""sentence-transformers on torch: CUDA with fp16 when present, CPU float32 otherwise."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.backend import EncoderBackend, ModelInfo, content_revision, derive_model_id, require_model_dir
from meshsearch_embedder.cpu import inference_threads


def resolve_device(requested: str, cuda_devices: int) -> str:
    """The torch device to run on: `auto` takes the first CUDA device when there is one, else
    the CPU. An explicit CUDA device that is not there is a configuration error, said at start
    rather than as a torch error on the first request."""
    if requested == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if index >= cuda_devices:
            raise ValueError(
                f"MESHSEARCH_EMBEDDER_DEVICE={requested} but {cuda_devices} CUDA device(s) are visible; "
                "use auto or cpu, or run on a GPU node"
            )
    elif requested != "cpu":
        raise ValueError(f"MESHSEARCH_EMBEDDER_DEVICE={requested} is not one of auto, cpu, cuda, cuda:N")
    return requested


def cuda_device_count() -> int:
    """CUDA devices torch can use (0 on a CPU build or a machine without a GPU)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def precision_for(device: str) -> str:
    """float16 on CUDA (half the memory, tensor cores), float32 on CPU (no fast float16 there)."""
    return "float16" if device.startswith("cuda") else "float32"


class TorchEncoder(EncoderBackend):
    def __init__(self, model_path: str, *, model_id: str = "", device: str = "auto", threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        device = resolve_device(device, cuda_device_count())
        torch.set_num_threads(inference_threads(threads))
        path = require_model_dir(model_path)
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        if precision_for(device) == "float16":
            model = model.half()
        model.eval()
        max_tokens, dimension = model.max_seq_length, model.get_embedding_dimension()
        if max_tokens is None or dimension is None:
            raise ValueError(f"{model_path} does not declare its maximum sequence length and dimension")
        super().__init__(model.tokenizer, max_tokens)
        # Run every module but a trailing Normalize: normalization is a per-request option.
        modules = list(model)
        self._modules = modules[:-1] if type(modules[-1]).__name__ == "Normalize" else modules
        self._torch = torch
        self._device = device
        self.sentence_transformer = model
        self.info = ModelInfo(
            model_id=model_id or derive_model_id(path),
            revision=content_revision(path),
            dimension=dimension,
            max_tokens=max_tokens,
            dtype=precision_for(device),
            backend="torch",
            device=device,
            prompts={name: prompt for name, prompt in model.prompts.items() if prompt is not None},
        )

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        """Unnormalized embeddings of one batch, shape (len(batch), dimension)."""
        torch = self._torch
        padded = self.pad(batch)
        features = {
            name: torch.from_numpy(getattr(padded, name)).to(self._device)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.inference_mode():
            for module in self._modules:
                features = module(features)
        embeddings: npt.NDArray[np.float32] = features["sentence_embedding"].float().cpu().numpy()
        return embeddings
