"""Regression gate on retrieval quality: a SciFact subset indexed and searched through the
public api in every mode. The full run and its figures are bench/quality (docs/benchmarks.md);
this subset (the first 60 test queries, their judged documents and 340 others) catches a
ranking that breaks (an ANDed keyword query, a wrong metric, a lost chunk) in minutes."""

from __future__ import annotations

import uuid

import grpc

from meshsearch_cli.stack import EmbeddedStack
from meshsearch_harness.evaluation import BeirSet, evaluate, index_corpus, load_scifact

QUERIES = 60
DISTRACTORS = 340
# Measured with 540 distractors (exact 0.906, keyword 0.890, hybrid 0.925; fewer distractors
# only make it easier), less 0.05 for CPUs and backend numerics. A keyword query whose words
# are ANDed scores about 0.1, a broken vector path about 0.
FLOORS = {"exact": 0.85, "hnsw": 0.85, "keyword": 0.84, "hybrid": 0.87}


def subset(full: BeirSet) -> BeirSet:
    query_ids = sorted(full.queries, key=int)[:QUERIES]
    judged = {d for q in query_ids for d in full.qrels[q]}
    others = [d for d in full.corpus if d not in judged][:DISTRACTORS]
    corpus = {d: full.corpus[d] for d in [*sorted(judged), *others]}
    return BeirSet(corpus, {q: full.queries[q] for q in query_ids}, {q: full.qrels[q] for q in query_ids})


async def test_every_search_mode_keeps_its_quality_on_a_scifact_subset(stack: EmbeddedStack) -> None:
    data = subset(load_scifact())
    collection = f"quality_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as channel:
        await index_corpus(channel, collection, data.corpus)
        scores = {mode: (await evaluate(channel, collection, data, mode))[0] for mode in FLOORS}
    print(f"nDCG@10 on the subset: {scores}")
    for mode, floor in FLOORS.items():
        assert scores[mode] >= floor, f"{mode} nDCG@10 {scores[mode]:.4f} fell below {floor}: {scores}"
    assert scores["hybrid"] >= max(scores["exact"], scores["keyword"]) - 0.01, scores
    assert abs(scores["hnsw"] - scores["exact"]) <= 0.01, scores
