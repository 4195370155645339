"""EstimateIngest's tally, kept as the sample streams in: each message's documents are checked
and their texts tokenized before the next message is read, and only counts are kept (a digest
per id, to find repeats). A sample of any length therefore costs the api one message's memory,
not the whole sample's."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from meshsearch_api.documents import document_problem
from meshsearch_api.domain import Chunking, Document, LimitViolation
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.ingest.domain import Estimate
from meshsearch_common.errors import InvalidArgument, MeshError

log = logging.getLogger(__name__)

TEXTS_PER_TOKENIZE = 256
EXAMPLE_IDS = 5
MAX_ESTIMATE_DOCUMENTS = 100_000  # a sample this size says all an estimate can say


@dataclass
class EstimateTally:
    """What the documents seen so far would cost; `add` each message's, then `finish`."""

    chunking: Chunking
    embedder: EmbedderClient
    max_text_bytes: int
    documents: int = 0
    tokens: int = 0
    chunks: int = 0
    total_documents: int = 0
    _seen: set[bytes] = field(default_factory=set)
    _violations: dict[str, LimitViolation] = field(default_factory=dict)

    async def add(self, documents: list[Document]) -> None:
        self.documents += len(documents)
        if self.documents > MAX_ESTIMATE_DOCUMENTS:
            raise InvalidArgument(
                f"more than {MAX_ESTIMATE_DOCUMENTS} documents to estimate; send a sample and total_documents",
                field="documents",
            )
        valid: list[str] = []
        for document in documents:
            broken = document_problem(document, self.max_text_bytes)
            digest = hashlib.blake2b(document.id.encode("utf-8", "surrogateescape"), digest_size=16).digest()
            if broken is None and digest in self._seen:
                broken = LimitViolation("duplicate_id", "ids must be unique within a job; repeats become dead letters")
            if broken is None:
                self._seen.add(digest)
                valid.append(document.text)
                continue
            violation = self._violations.setdefault(
                broken.limit, LimitViolation(broken.limit, broken.description, 0, [])
            )
            violation.documents += 1
            if violation.example_ids is not None and len(violation.example_ids) < EXAMPLE_IDS:
                violation.example_ids.append(document.id)
        for start in range(0, len(valid), TEXTS_PER_TOKENIZE):
            await self._measure(valid[start : start + TEXTS_PER_TOKENIZE])

    async def _measure(self, texts: list[str]) -> None:
        chunking = self.chunking
        size = chunking.chunk_tokens if not chunking.truncate else 0
        counts, pieces = await self.embedder.measure(texts, size, chunking.overlap_tokens if size else 0)
        if chunking.truncate:
            self.tokens += sum(min(count, chunking.chunk_tokens) for count in counts)
            self.chunks += len(texts)
        else:
            self.tokens += sum(counts)
            self.chunks += sum(max(1, n) for n in pieces)

    async def finish(self) -> Estimate:
        """The estimate, scaled from the sample to `total_documents` when that is larger."""
        if not self.documents:
            raise InvalidArgument("send at least one document to estimate", field="documents")
        scale = self.total_documents / self.documents if self.total_documents > self.documents else 1.0
        rate = 0.0
        try:
            rate = await self.embedder.tokens_per_second()
        except MeshError:
            log.info("the embedder's throughput is unknown; the estimate has no duration")
        scaled_tokens = round(self.tokens * scale)
        return Estimate(
            documents=max(self.total_documents, self.documents),
            chunks=round(self.chunks * scale),
            tokens=scaled_tokens,
            duration_s=scaled_tokens / rate if rate > 0 else None,
            tokens_per_second=rate,
            violations=list(self._violations.values()),
        )
