"""Long documents: split on the model's token boundaries (by the embedder, which owns the
tokenizer) and embedded chunk by chunk, so no text is lost to the model's window.

A document that fits in one chunk is embedded whole, as before; only longer ones are stored
as chunks. Chunks overlap so that a passage cut by a boundary is whole in one of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meshsearch_api.domain import Chunking, Document, ModelIdentity
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_common import context
from meshsearch_common.errors import DEFAULT_RETRY_AFTER_S, InvalidArgument, ResourceExhausted, Unavailable

DEFAULT_OVERLAP_TOKENS = 32
TEXTS_PER_EMBED_CALL = 256  # under the embedder's per-request limit (512 by default)
MIN_BACKGROUND_CALL = 16


async def _wait_out(refusal: ResourceExhausted) -> None:
    """Sleep the refusal's RetryInfo delay, or re-raise it when the deadline comes first."""
    delay = refusal.retry_after_s or DEFAULT_RETRY_AFTER_S
    remaining = context.remaining_seconds()
    if remaining is not None and delay >= remaining:
        raise refusal
    await asyncio.sleep(delay)


def resolve(chunking: Chunking | None, window_tokens: int) -> Chunking:
    """The chunking in force: as asked, checked against the model's window; all zero (or not
    given) means the whole window with DEFAULT_OVERLAP_TOKENS of overlap."""
    if chunking is not None and chunking.truncate:
        return Chunking(window_tokens, 0, truncate=True)
    if chunking is None or (chunking.chunk_tokens == 0 and chunking.overlap_tokens == 0):
        return Chunking(window_tokens, min(DEFAULT_OVERLAP_TOKENS, window_tokens // 4))
    size = chunking.chunk_tokens or window_tokens
    if not 1 <= size <= window_tokens:
        raise InvalidArgument(
            f"chunking.chunk_tokens {size} is out of range: 1 to {window_tokens}, the model's window",
            field="collection.chunking.chunk_tokens",
        )
    if chunking.overlap_tokens >= size:
        raise InvalidArgument(
            f"chunking.overlap_tokens {chunking.overlap_tokens} must be less than chunk_tokens {size}",
            field="collection.chunking.overlap_tokens",
        )
    return Chunking(size, chunking.overlap_tokens)


@dataclass(frozen=True)
class EmbeddedDocument:
    document: Document
    vector: npt.NDArray[np.float32] | None  # the whole text, when it fits in one chunk
    chunks: list[tuple[npt.NDArray[np.float32], int, int]]  # else (vector, start, end) per chunk


@dataclass(frozen=True)
class EmbeddedBatch:
    documents: list[EmbeddedDocument]
    model: ModelIdentity
    queue_s: float
    backlog_s: float


async def embed_documents(
    embedder: EmbedderClient, documents: list[Document], chunking: Chunking, background: bool = False
) -> EmbeddedBatch:
    """Each document's vector, or its chunks' vectors and spans (none when truncating: the
    embedder then reads the first window of each text).

    Background work (bulk ingestion) is batched after interactive work in the embedder, and is
    patient: a call the embedder refuses for load (RESOURCE_EXHAUSTED) is sent again after its
    RetryInfo delay, in calls half the size, so the texts already embedded are not lost and a
    crowded embedder gets work it can promise to finish. The caller's deadline still applies."""
    spans = [[(0, len(d.text))] for d in documents]
    if not chunking.truncate:
        # Only texts that may be longer than a window are sent to be cut: every tokenizer in use
        # (WordPiece, byte-level BPE, SentencePiece with byte fallback) makes at most one token
        # per byte of UTF-8, so a text of at most chunk_tokens bytes fits in one window.
        long = [i for i, d in enumerate(documents) if len(d.text.encode("utf-8")) > chunking.chunk_tokens]
        if long:
            cut = await embedder.windows(
                [documents[i].text for i in long], chunking.chunk_tokens, chunking.overlap_tokens
            )
            for i, windows in zip(long, cut, strict=True):
                spans[i] = windows
    texts: list[str] = []
    for document, windows in zip(documents, spans, strict=True):
        texts.extend([document.text] if len(windows) == 1 else [document.text[s:e] for s, e in windows])
    vectors: list[npt.NDArray[np.float32]] = []
    queue_s = backlog_s = 0.0
    model: ModelIdentity | None = None
    call_size, start = TEXTS_PER_EMBED_CALL, 0
    while start < len(texts):
        try:
            embedded = await embedder.embed(texts[start : start + call_size], background=background)
        except ResourceExhausted as exc:
            if not background:
                raise
            await _wait_out(exc)
            call_size = max(MIN_BACKGROUND_CALL, call_size // 2)
            continue
        start += call_size
        if model is not None and embedded.model != model:
            raise Unavailable("the embedder's model changed while this batch was embedded; retry the call")
        model = embedded.model
        vectors.extend(embedded.vectors)
        queue_s += embedded.queue_s
        backlog_s = max(backlog_s, embedded.backlog_s)
    assert model is not None
    result, position = [], 0
    for document, windows in zip(documents, spans, strict=True):
        if len(windows) == 1:
            result.append(EmbeddedDocument(document, vectors[position], []))
            position += 1
        else:
            chunks = [(vectors[position + i], s, e) for i, (s, e) in enumerate(windows)]
            result.append(EmbeddedDocument(document, None, chunks))
            position += len(windows)
    return EmbeddedBatch(result, model, queue_s, backlog_s)
