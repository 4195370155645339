"""Quality benchmark: BEIR SciFact through the public api (api -> embedder -> search).

Starts the embedded stack (or uses --api), indexes the 5,183 abstracts with IndexDocuments
twice: as meshsearch stores them by default (long ones split into overlapping chunks, each
document found by its best chunk) and as MTEB encodes them (truncated to the model's window).
Scores the 300 test queries in each search mode: exact vector search, HNSW, keyword (BM25) and
hybrid. Prints nDCG@10 and recall@100 beside the published figures and the CPU.
Targets: exact on the truncated layout within 0.002 of 0.64508 (MTEB, all-MiniLM-L6-v2); HNSW
within 0.005 of exact; keyword >= 0.62 (BM25 0.665, BEIR paper); hybrid above both.
The embedded stack runs the torch backend unless told otherwise: the published figures are
float32, and the other backends are compared with torch, not with them. With
`--storage float32,float16` every layout is indexed twice more into float16 (halfvec) collections,
side by side: the gate for halfvec is each mode's nDCG@10 within 0.005 of float32's. Usage:
  .venv/bin/python bench/quality/run.py [--api HOST:PORT] [--backend torch|auto|onnx|onnx-int8]
      [--storage float32|float16|float32,float16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from tqdm import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402
from meshsearch_harness.evaluation import MODES, evaluate, index_corpus, load_scifact  # noqa: E402
from meshsearch_harness.figures import cpu_description  # noqa: E402

PUBLISHED = {"exact": 0.64508, "hnsw": 0.64508, "keyword": 0.665}  # MTEB (vector), BEIR paper (BM25)
# Collection layouts, indexed in this order (the second reuses the first's cached embeddings):
# long documents split into chunks (meshsearch's default), or truncated to the window (MTEB).
LAYOUTS = {"chunked": False, "truncated": True}


async def run(api_target: str, storages: list[str]) -> None:
    data = load_scifact()
    suffix = uuid.uuid4().hex[:8]
    collections = {
        (layout, storage): f"scifact_{layout}_{storage}_{suffix}" for storage in storages for layout in LAYOUTS
    }
    async with grpc.aio.insecure_channel(api_target) as channel:
        for (layout, storage), name in collections.items():
            started = time.perf_counter()
            with tqdm(total=len(data.corpus), unit="doc", desc=f"indexing SciFact ({layout}, {storage})") as bar:
                await index_corpus(
                    channel,
                    name,
                    data.corpus,
                    progress=bar.update,
                    truncate=LAYOUTS[layout],
                    storage=pb.Storage.Value(f"STORAGE_{storage.upper()}"),
                )
            print(
                f"indexed {len(data.corpus)} documents ({layout}, {storage}) in {time.perf_counter() - started:.0f} s"
            )
        described = await pb_grpc.CollectionServiceStub(channel).GetCollection(
            pb.GetCollectionRequest(name=next(iter(collections.values()))), timeout=30
        )
        print(f"\n{cpu_description()}; embedded as {described.collection.model.numerics}\n")
        print(f"SciFact test ({len(data.queries)} queries) through the public api")
        print(f"{'layout':10} {'storage':8} {'mode':8} {'nDCG@10':>8} {'recall@100':>11} {'published':>10}")
        for (layout, storage), name in collections.items():
            for mode in MODES:
                ndcg, recall = await evaluate(channel, name, data, mode)
                published = f"{PUBLISHED[mode]:.5f}" if mode in PUBLISHED else "-"
                print(f"{layout:10} {storage:8} {mode:8} {ndcg:8.5f} {recall:11.4f} {published:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", help="use a running api at HOST:PORT instead of starting the embedded stack")
    parser.add_argument(
        "--backend",
        default="torch",
        help="embedder backend of the embedded stack: torch (default; the published figures are float32), "
        "or auto, onnx, onnx-int8 to measure what they cost in retrieval quality",
    )
    parser.add_argument(
        "--storage",
        default="float32",
        help="the collections' vector storage, one set of collections each: float32, float16 (halfvec, half "
        "the memory; this gate decides whether it may be the default) or float32,float16 side by side (the "
        "second set reuses the first's cached embeddings)",
    )
    args = parser.parse_args()
    storages = args.storage.split(",")
    if not set(storages) <= {"float32", "float16"}:
        parser.error("--storage takes float32, float16 or both, comma-separated")
    if args.api:
        asyncio.run(run(args.api, storages))
        return
    with tempfile.TemporaryDirectory(prefix="meshsearch-quality-") as directory:
        stack = EmbeddedStack(
            Path(directory), Ports.ephemeral(), extra_env={"MESHSEARCH_EMBEDDER_BACKEND": args.backend}
        )
        stack.start()
        try:
            asyncio.run(run(f"127.0.0.1:{stack.ports.api}", storages))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
