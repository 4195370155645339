"""Retrieval quality through the public api: index a BEIR set with IndexDocuments, ask its test
queries with Search, score the rankings with nDCG@10 and recall@100 (BEIR's definitions:
graded gains, log2 discounts, ideal ranking from the judgments). Used by bench/quality/run.py
and, on a subset, by the regression gate in tests/e2e/test_retrieval_quality.py."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_harness.datasets import SHARED_DATA

MODES = {
    "exact": (pb.SEARCH_MODE_VECTOR, True),
    "hnsw": (pb.SEARCH_MODE_VECTOR, False),
    "keyword": (pb.SEARCH_MODE_KEYWORD, False),
    "hybrid": (pb.SEARCH_MODE_HYBRID, False),
}


@dataclass(frozen=True)
class BeirSet:
    corpus: dict[str, str]  # id -> "title text", as MTEB encodes a document
    queries: dict[str, str]  # test query id -> text
    qrels: dict[str, dict[str, int]]  # test query id -> {document id: grade}


def load_scifact(root: Path = SHARED_DATA / "scifact") -> BeirSet:
    corpus = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row.get('title', '')} {row['text']}".strip()
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query_id, document_id, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[document_id] = int(grade)
    queries = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    return BeirSet(corpus, queries, qrels)


def ndcg_at(ranked: list[str], grades: dict[str, int], k: int = 10) -> float:
    gain = sum(grades.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(grades.values(), reverse=True)[:k]))
    return gain / ideal if ideal else 0.0


def recall_at(ranked: list[str], grades: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, g in grades.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


async def index_corpus(
    channel: grpc.aio.Channel,
    collection: str,
    corpus: dict[str, str],
    batch: int = 32,
    writers: int = 4,
    progress: Callable[[int], None] | None = None,
    truncate: bool = False,
    storage: pb.Storage = pb.STORAGE_UNSPECIFIED,
) -> None:
    """Create `collection` and index `corpus` into it with `writers` concurrent IndexDocuments
    calls, retrying load refusals with backoff. `truncate`: embed only each document's first
    window, as MTEB does, instead of splitting long ones into chunks (the default). `storage`:
    the collection's vector storage (pb.Storage; float16 halves it, at what cost the gate says)."""
    collections, documents = pb_grpc.CollectionServiceStub(channel), pb_grpc.DocumentServiceStub(channel)
    spec = pb.Collection(name=collection, chunking=pb.Chunking(truncate=truncate), storage=storage)
    await collections.CreateCollection(pb.CreateCollectionRequest(collection=spec), timeout=30)
    items = list(corpus.items())
    batches = asyncio.Queue[list[tuple[str, str]]]()
    for start in range(0, len(items), batch):
        batches.put_nowait(items[start : start + batch])

    async def writer() -> None:
        while not batches.empty():
            chunk = batches.get_nowait()
            request = pb.IndexDocumentsRequest(
                collection=collection, documents=[pb.Document(id=i, text=t) for i, t in chunk]
            )
            for attempt in range(20):
                try:
                    response = await documents.IndexDocuments(request, timeout=120)
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                        raise
                    await asyncio.sleep(min(0.5 * 2**attempt, 5))
            else:
                raise RuntimeError("indexing kept being refused")
            assert not response.errors, response.errors
            if progress:
                progress(len(chunk))

    await asyncio.gather(*(writer() for _ in range(writers)))


async def evaluate(
    channel: grpc.aio.Channel, collection: str, data: BeirSet, mode: str, concurrency: int = 8
) -> tuple[float, float]:
    """Mean nDCG@10 and recall@100 of `mode` (a key of MODES) over the set's test queries."""
    search = pb_grpc.SearchServiceStub(channel)
    search_mode, exact = MODES[mode]
    gate = asyncio.Semaphore(concurrency)

    async def one(query_id: str) -> tuple[float, float]:
        request = pb.SearchRequest(
            collection=collection,
            query=data.queries[query_id],
            top_k=100,
            mode=search_mode,
            exact=exact,
            include_text=False,
            include_metadata=False,
        )
        async with gate:
            response = await search.Search(request, timeout=60)
        assert not response.degraded, response.degraded_reason
        ranked = [hit.document.id for hit in response.hits]
        return ndcg_at(ranked, data.qrels[query_id]), recall_at(ranked, data.qrels[query_id])

    scores = await asyncio.gather(*(one(query_id) for query_id in data.queries))
    return sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores)
