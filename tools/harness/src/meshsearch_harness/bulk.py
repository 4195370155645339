"""Bulk loads as benchmarks send them: column-wise BulkUpsert batches built while they stream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from meshsearch.search.v1 import search_pb2 as pb

BATCH = 1000  # the search service's largest batch (MAX_BATCH_POINTS)


def column_batches(
    data: np.ndarray,
    collection: str,
    *,
    id_prefix: str = "p",
    text: Callable[[int], str] | None = None,
    metadata: Callable[[int], dict[str, Any]] | None = None,
    model: pb.EmbeddingModel | None = None,
    batch: int = BATCH,
) -> Iterator[pb.BulkUpsertRequest]:
    """One packed matrix per message, row i's id `<id_prefix><i>`, with text and metadata (as
    JSON) when given. A generator, as a real client streams: each message is built while the
    previous ones are in flight, so building them is part of what a load measures."""
    for start in range(0, len(data), batch):
        rows = range(start, min(start + batch, len(data)))
        columns = pb.PointColumns(
            ids=[f"{id_prefix}{i}" for i in rows],
            vectors=data[start : rows.stop].tobytes(),
            dimension=data.shape[1],
            texts=[text(i) for i in rows] if text else [],
            metadata_json=[json.dumps(metadata(i)) for i in rows] if metadata else [],
        )
        yield pb.BulkUpsertRequest(collection=collection if start == 0 else "", model=model, columns=columns)
