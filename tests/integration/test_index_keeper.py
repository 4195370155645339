"""Deferred HNSW indexes (`IndexKeeper`) against the session's real PostgreSQL + pgvector: a lease
holds off the index of an empty collection, searches stay correct meanwhile, and the index is
built when the writer asks or when the lease runs out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from meshsearch_common.errors import InvalidArgument, NotFound
from meshsearch_search.domain import CollectionSpec, Point
from meshsearch_search.index_keeper import IndexKeeper
from meshsearch_search.points import PointLimits
from meshsearch_search.retrieval import QuerySpec
from meshsearch_search.settings import SearchSettings
from tests import waiting
from tests.integration.search_core import SearchCore, search_core

DIMENSION = 16
LIMITS = PointLimits.from_settings(SearchSettings())


@pytest.fixture
async def core(database_url: str) -> AsyncIterator[SearchCore]:
    async with search_core(database_url, LIMITS) as core:
        yield core


@pytest.fixture
def keeper(core: SearchCore) -> IndexKeeper:
    return IndexKeeper(core.db, core.collections, "64MB", 0)


async def new_collection(core: SearchCore) -> str:
    name = f"keeper_{uuid.uuid4().hex[:8]}"
    await core.collections.create(CollectionSpec(name=name, dimension=DIMENSION))
    return name


async def store(core: SearchCore, name: str, count: int, seed: int = 3) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    points = [Point(id=f"p{i:04d}", text=f"point {i}", metadata={}, vector=vectors[i]) for i in range(count)]
    written, errors, _ = await core.points.upsert(name, points, None)
    assert written == count and not errors
    return vectors


async def nearest(core: SearchCore, name: str, vector: np.ndarray) -> str:
    hits = await core.retriever.query(name, QuerySpec(vector=vector, k=1))
    return hits[0].point.id


async def test_a_deferred_index_is_absent_while_loading_and_built_when_the_writer_ends_it(
    core: SearchCore, keeper: IndexKeeper
) -> None:
    name = await new_collection(core)
    first = await keeper.defer(name, 60)
    assert first is not None
    described = await core.collections.get(name)
    assert (described.index_ready, described.index_deferred) == (False, True)

    vectors = await store(core, name, 400)
    assert await nearest(core, name, vectors[17]) == "p0017"  # exact search meanwhile: still right
    await keeper.sweep()  # builds what other tests left lapsed, but a deferral in force is left alone:
    assert not (await core.collections.get(name)).index_ready

    renewed = await keeper.defer(name, 120)  # the collection holds points now, but the lease is in force
    assert renewed is not None and renewed > first

    assert await keeper.build(await keeper.end_deferral(name)) > 0
    described = await core.collections.get(name)
    assert (described.index_ready, described.index_deferred, described.point_count) == (True, False, 400)
    assert await nearest(core, name, vectors[17]) == "p0017"
    assert await keeper.defer(name, 60) is None  # ended: a collection with points keeps its index


async def test_a_collection_holding_points_keeps_its_index(core: SearchCore, keeper: IndexKeeper) -> None:
    name = await new_collection(core)
    await store(core, name, 5)
    assert await keeper.defer(name, 60) is None
    described = await core.collections.get(name)
    assert (described.index_ready, described.index_deferred) == (True, False)


async def test_a_lapsed_lease_is_built_by_the_sweep(core: SearchCore, keeper: IndexKeeper) -> None:
    """A writer that dies stops renewing: its lease runs out and the sweep builds the index."""
    name = await new_collection(core)
    assert await keeper.defer(name, 1) is not None
    await store(core, name, 50)

    async def lapsed() -> bool:
        return not (await core.collections.get(name)).index_deferred

    await waiting.until(lapsed, timeout_s=10, what="the 1 s lease lapses")
    described = await core.collections.get(name)
    assert (described.index_ready, described.index_deferred) == (False, False)
    assert await keeper.sweep() >= 1
    assert (await core.collections.get(name)).index_ready


async def test_concurrent_writers_of_one_empty_collection_share_the_deferral(
    core: SearchCore, keeper: IndexKeeper
) -> None:
    name = await new_collection(core)
    leases = await asyncio.gather(*(keeper.defer(name, 60) for _ in range(4)))
    assert all(lease is not None for lease in leases), leases
    await keeper.build_soon(name)

    async def ready() -> bool:
        return (await core.collections.get(name)).index_ready

    await waiting.until(ready, what="the index is built")


@pytest.mark.parametrize("lease_s", [0.0, 0.5, 3601.0])
async def test_a_lease_out_of_range_is_invalid(core: SearchCore, keeper: IndexKeeper, lease_s: float) -> None:
    name = await new_collection(core)
    with pytest.raises(InvalidArgument, match="lease"):
        await keeper.defer(name, lease_s)
    assert (await core.collections.get(name)).index_ready  # nothing was dropped


async def test_deferring_a_missing_collection_is_not_found(keeper: IndexKeeper) -> None:
    with pytest.raises(NotFound):
        await keeper.defer("keeper_missing", 60)
