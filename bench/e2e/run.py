"""End-to-end benchmark: the query path through the whole mesh at 100k documents.

In one run, on the embedded stack: a collection is created through the api, and 100k
embedding-like vectors (bench/datasets.embedding_like_vectors, 384 dims) with short texts are
bulk-loaded through the search service (BulkUpsert; the HNSW index is built once at the end).
Then SciFact test claims are sent one at a time, in rounds that interleave four paths so a
drifting machine favours none:
  (a) embedder alone: Embed of the claim;
  (b) search alone: Query with the claim's embedding (computed beforehand), k = 10;
  (c) api, cold cache: Search with a never-seen variant of the claim (api -> embedder -> search);
  (d) api, warm cache: Search with a claim already asked (the embedding comes from Redis).
Prints p50 and p99 of each, the api's own hop ((c) - (a) - (b) and (d) - (b), at p50), and
the CPU. Usage:
  .venv/bin/python bench/e2e/run.py [--count 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2 as epb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc  # noqa: E402
from meshsearch.search.v1 import search_pb2 as spb  # noqa: E402
from meshsearch.search.v1 import search_pb2_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402
from meshsearch_harness.bulk import column_batches  # noqa: E402
from meshsearch_harness.datasets import embedding_like_vectors, scifact_queries  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def run(stack: EmbeddedStack, count: int, queries: int) -> None:
    api = grpc.insecure_channel(f"127.0.0.1:{stack.ports.api}")
    embedder = embedder_pb2_grpc.EmbedderServiceStub(stack.sync_channel("embedder"))
    search = search_pb2_grpc.VectorStoreServiceStub(stack.sync_channel("search"))
    searcher = api_pb2_grpc.SearchServiceStub(api)
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    api_pb2_grpc.CollectionServiceStub(api).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=60
    )
    described = search.GetCollection(spb.GetCollectionRequest(name=name), timeout=30).collection
    data = embedding_like_vectors(count, described.dimension, clusters=200, seed=11)
    started = time.perf_counter()
    batches = column_batches(data, name, id_prefix="d", text=lambda i: f"synthetic document {i}", model=described.model)
    loaded = search.BulkUpsert(batches, timeout=7200)
    print(
        f"bulk-loaded {loaded.upserted_count} documents in {time.perf_counter() - started:.0f} s "
        f"(HNSW build {loaded.index_build_seconds:.0f} s)"
    )

    claims = [q["text"] for q in scifact_queries()[:queries]]
    vectors = {}
    for claim in claims:  # embeddings for the search-alone path, and a warm cache for (d)
        answer = embedder.Embed(epb.EmbedRequest(texts=[claim]), timeout=30).embeddings
        vectors[claim] = spb.Vector(data=answer.vectors, dimension=answer.dimension)
        searcher.Search(pb.SearchRequest(collection=name, query=claim), timeout=30)
    paths: dict[str, Callable[[str], object]] = {
        "(a) embedder alone": lambda c: embedder.Embed(
            epb.EmbedRequest(texts=[f"{c} {uuid.uuid4().hex[:6]}"]), timeout=30
        ),
        "(b) search alone": lambda c: search.Query(
            spb.QueryRequest(collection=name, vector=vectors[c], k=10, model=described.model), timeout=30
        ),
        "(c) api, cold cache": lambda c: searcher.Search(
            pb.SearchRequest(collection=name, query=f"{c} {uuid.uuid4().hex[:6]}"), timeout=30
        ),
        "(d) api, warm cache": lambda c: searcher.Search(pb.SearchRequest(collection=name, query=c), timeout=30),
    }
    latencies: dict[str, list[float]] = {label: [] for label in paths}
    for round_index, claim in enumerate(claims):
        order = list(paths) if round_index % 2 == 0 else list(reversed(paths))
        for label in order:
            latencies[label].append(timed(lambda: paths[label](claim)))  # noqa: B023 - called at once

    print(f"\n{cpu_description()}\n")
    print(f"{count} documents, {len(claims)} SciFact claims, one call at a time, paths interleaved")
    p50 = {}
    for label, values in latencies.items():
        ms = [v * 1000 for v in values]
        p50[label] = percentile(ms, 50)
        print(f"{label:22} p50 {p50[label]:7.2f} ms   p99 {percentile(ms, 99):7.2f} ms")
    cold_hop = p50["(c) api, cold cache"] - p50["(a) embedder alone"] - p50["(b) search alone"]
    warm_hop = p50["(d) api, warm cache"] - p50["(b) search alone"]
    print(f"api hop at p50: cold cache {cold_hop:.2f} ms, warm cache {warm_hop:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshsearch-e2e-") as directory:
        stack = EmbeddedStack(Path(directory), Ports.ephemeral())
        stack.start()
        try:
            run(stack, args.count, args.queries)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
