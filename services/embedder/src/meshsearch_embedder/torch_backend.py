"""sentence-transformers on torch: CUDA with fp16 when present, CPU float32 otherwise."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from meshsearch_embedder.model import EncoderBackend, ModelInfo, content_revision, derive_model_id, require_model_dir


class TorchEncoder(EncoderBackend):
    def __init__(self, model_path: str, *, model_id: str = "", device: str = "auto", threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        path = require_model_dir(model_path)
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        if device.startswith("cuda"):
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
            dtype="float16" if device.startswith("cuda") else "float32",
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
