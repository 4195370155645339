"""The embedding model, split into the two stages the batcher schedules separately.

`tokenize` turns texts into token id lists (no padding, so texts from different requests can
be regrouped by length later); `encode` pads one batch and runs the forward pass. Both are
blocking and must run off the event loop; `encode` must only ever run on one thread at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str
    dimension: int
    max_tokens: int
    dtype: str
    backend: str
    device: str
    prompts: dict[str, str]


def _content_revision(model_path: Path) -> str:
    """A short hash of the weight files: changes exactly when the weights change."""
    digest = hashlib.sha256()
    for weights in sorted(model_path.glob("*.safetensors")) + sorted(model_path.glob("*.bin")):
        digest.update(weights.name.encode())
        digest.update(str(weights.stat().st_size).encode())
        with weights.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _derive_model_id(model_path: Path) -> str:
    readme = model_path / "README.md"
    if readme.exists() and "all-MiniLM-L6-v2" in readme.read_text(errors="ignore")[:4000]:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return model_path.name


class TorchEncoder:
    """sentence-transformers on torch: CUDA with fp16 when present, CPU float32 otherwise."""

    def __init__(self, model_path: str, *, model_id: str = "", device: str = "auto", threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        path = Path(model_path)
        if not (path / "modules.json").exists():
            raise FileNotFoundError(f"{model_path} is not a local sentence-transformers model directory")
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        if device.startswith("cuda"):
            model = model.half()
        model.eval()
        # Run every module but a trailing Normalize: normalization is a per-request option.
        modules = list(model)
        self.normalizes_by_default = type(modules[-1]).__name__ == "Normalize"
        self._modules = modules[:-1] if self.normalizes_by_default else modules
        self._torch = torch
        self._tokenizer = model.tokenizer
        self._device = device
        self._pad_id = model.tokenizer.pad_token_id or 0
        self.info = ModelInfo(
            model_id=model_id or _derive_model_id(path),
            revision=_content_revision(path),
            dimension=int(model.get_embedding_dimension()),
            max_tokens=int(model.max_seq_length),
            dtype="float16" if device.startswith("cuda") else "float32",
            backend="torch",
            device=device,
            prompts=dict(model.prompts),
        )

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids per text, special tokens included; cut to max_tokens when `truncate`."""
        encoded = self._tokenizer(
            texts,
            truncation=truncate,
            max_length=self.info.max_tokens if truncate else None,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        """Unnormalized embeddings of one batch, shape (len(batch), dimension)."""
        torch = self._torch
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        features = {
            "input_ids": input_ids.to(self._device),
            "attention_mask": attention.to(self._device),
            "token_type_ids": torch.zeros_like(input_ids).to(self._device),
        }
        with torch.inference_mode():
            for module in self._modules:
                features = module(features)
        return features["sentence_embedding"].float().cpu().numpy()
