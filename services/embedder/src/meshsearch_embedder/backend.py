"""What every inference backend shares: `EncoderBackend`, the one base class of backends
(torch, ONNX), with the tokenizer, model identity (`ModelInfo`) and padding.

A backend is split into the two stages the batcher schedules separately: `tokenize` turns
texts into token id lists (no padding, so texts from different requests can be regrouped by
length later) and `encode` pads one batch and runs the forward pass. Both block and must run
off the event loop; `encode` must only ever run on one thread at a time.
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


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

    @property
    def numerics(self) -> str:
        """Engine and precision, e.g. "torch-float32" or "onnx-int8" (part of the identity)."""
        return f"{self.backend.split('-')[0]}-{self.dtype}"


def content_revision(model_path: Path) -> str:
    """A short hash of the weight files: changes exactly when the weights change."""
    digest = hashlib.sha256()
    for weights in sorted(model_path.glob("*.safetensors")) + sorted(model_path.glob("*.bin")):
        digest.update(weights.name.encode())
        digest.update(str(weights.stat().st_size).encode())
        with weights.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def derive_model_id(model_path: Path) -> str:
    readme = model_path / "README.md"
    if readme.exists() and "all-MiniLM-L6-v2" in readme.read_text(errors="ignore")[:4000]:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return model_path.name


def require_model_dir(model_path: str) -> Path:
    path = Path(model_path)
    if not (path / "modules.json").exists():
        raise FileNotFoundError(f"{model_path} is not a local sentence-transformers model directory")
    return path


def read_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text()) if path.exists() else {}


class Windows(NamedTuple):
    """One text cut for chunking: its token count (special tokens included, as `tokenize`
    counts it) and the character spans of its windows."""

    tokens: int
    spans: list[tuple[int, int]]


class PaddedBatch:
    """One batch as right-padded int64 arrays, the layout every backend feeds its model.

    `shape` pads further, to (rows, tokens) at least the batch's own: extra columns are padding
    the attention mask hides, and each extra row is a lone padding token left visible, so that
    its attention has something to attend to. Callers drop the extra rows' outputs."""

    def __init__(self, batch: list[list[int]], pad_id: int, shape: tuple[int, int] | None = None) -> None:
        longest = max(len(ids) for ids in batch)
        rows, columns = shape if shape else (len(batch), longest)
        rows, columns = max(rows, len(batch)), max(columns, longest)
        self.input_ids = np.full((rows, columns), pad_id, dtype=np.int64)
        self.attention_mask = np.zeros((rows, columns), dtype=np.int64)
        for row, ids in enumerate(batch):
            self.input_ids[row, : len(ids)] = ids
            self.attention_mask[row, : len(ids)] = 1
        self.attention_mask[len(batch) :, 0] = 1
        self.token_type_ids = np.zeros_like(self.input_ids)


def _row_buckets() -> Iterator[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, ...: powers of two and 1.5 times them, so a batch
    padded to its bucket carries at most a third of filler rows (none below 4 rows)."""
    power = 1
    while True:
        yield power
        if power >= 2:
            yield power * 3 // 2
        power *= 2


@dataclass(frozen=True)
class ShapeBuckets:
    """The shapes an engine is fed: rows rounded up to `_row_buckets`, tokens up to a multiple
    of `token_step` (never past the model's window, `max_tokens`, when the batch fits in it).

    Why: an engine that compiles kernels per input shape (OpenVINO's CPU plugin) pays for every
    new (rows, tokens) it sees and keeps a bounded cache of them. A service's batches take
    whatever shape arrivals give them, thousands of distinct ones, so the cache never warms:
    on an Intel Xeon with AMX, static int8 ran mixed batches 1.6x faster and in a quarter of
    the memory when rounded to these buckets (docs/benchmarks.md)."""

    max_tokens: int
    token_step: int = 16

    def shape(self, rows: int, tokens: int) -> tuple[int, int]:
        bucket_rows = next(bucket for bucket in _row_buckets() if bucket >= rows)
        bucket_tokens = -(-tokens // self.token_step) * self.token_step
        if tokens <= self.max_tokens:
            bucket_tokens = min(bucket_tokens, self.max_tokens)
        return bucket_rows, bucket_tokens

    def rows_at_most(self, rows: int) -> int:
        """The largest row bucket of at most `rows` rows: a batch cut to it carries no filler row."""
        return max(itertools.takewhile(lambda bucket: bucket <= max(rows, 1), _row_buckets()))

    def shapes(self, max_rows: int, token_budget: int) -> list[tuple[int, int]]:
        """Every shape that batches of at most `max_rows` texts of the model's window, and at
        most `token_budget` padded tokens (rows x longest, as the batcher counts), are fed in:
        what a replica would have to warm to meet no cold shape (bench/embedder/shapes.py)."""
        found = {
            self.shape(rows, tokens)
            for rows in range(1, max_rows + 1)
            for tokens in range(1, min(self.max_tokens, token_budget // rows) + 1)
        }
        return sorted(found)


class EncoderBackend(abc.ABC):
    """An inference backend: a Hugging Face tokenizer plus a forward pass. Subclasses load their
    model, fill `info` and implement `encode`."""

    info: ModelInfo
    # Batches the engine runs at once to advantage (OpenVINO's throughput streams); the batcher
    # keeps that many in flight. Engines that spread one batch over every core keep 1.
    concurrent_batches: int = 1

    def __init__(self, tokenizer, max_tokens: int) -> None:  # type: ignore[no-untyped-def]
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._pad_id = tokenizer.pad_token_id or 0

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids per text, special tokens included; cut to max_tokens when `truncate`."""
        encoded = self._tokenizer(
            texts,
            truncation=truncate,
            max_length=self._max_tokens if truncate else None,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    @property
    def special_tokens(self) -> int:
        """Tokens the tokenizer adds to every text (for BERT-like models, [CLS] and [SEP])."""
        return int(self._tokenizer.num_special_tokens_to_add(pair=False))

    def windows(self, texts: list[str], size: int, overlap: int) -> list[Windows]:
        """Character spans of windows of at most `size` tokens sharing `overlap` tokens, cut on
        token boundaries: a window runs from its first token's first character to its last
        token's last character. A text that fits is one window over the whole text. The token
        counts come from the same pass, so chunking a text costs one tokenization, not two."""
        encoded = self._tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False
        )
        special = self.special_tokens
        result = []
        for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
            if len(offsets) <= size:
                result.append(Windows(len(offsets) + special, [(0, len(text))]))
                continue
            spans = []
            for first in range(0, len(offsets), size - overlap):
                last = min(first + size, len(offsets)) - 1
                spans.append((int(offsets[first][0]), int(offsets[last][1])))
                if last == len(offsets) - 1:
                    break
            result.append(Windows(len(offsets) + special, spans))
        return result

    # Set by engines that compile per input shape: every batch is padded to its bucket.
    shape_buckets: ShapeBuckets | None = None

    def pad(self, batch: list[list[int]]) -> PaddedBatch:
        """`batch` padded to its longest row, or to its bucket when the engine has buckets
        (then with filler rows: keep only the first `len(batch)` outputs)."""
        shape = None
        if self.shape_buckets is not None:
            shape = self.shape_buckets.shape(len(batch), max(len(ids) for ids in batch))
        return PaddedBatch(batch, self._pad_id, shape)

    @abc.abstractmethod
    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        """Unnormalized embeddings of one batch of token id lists, shape (len(batch), dimension)."""
