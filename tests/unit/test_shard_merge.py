"""How a sharded search asks its shards: the rows each sends, the query vector as text, and the
ef_search tier whose foreign servers it reads them through."""

from __future__ import annotations

import numpy as np
import pytest

from meshsearch_common.errors import Unavailable
from meshsearch_search.settings import SearchSettings
from meshsearch_search.shards import (
    RERUN_PROBABILITY,
    EfTiers,
    Shard,
    Shards,
    foreign_server,
    per_shard_limit,
    vector_literal,
)


def overflow_rate(wanted: int, count: int, limit: int, draws: int = 200_000) -> float:
    """How often, with the best `wanted` rows placed at random on `count` shards, some shard
    holds more than `limit` of them."""
    placed = np.random.default_rng(7).multinomial(wanted, [1.0 / count] * count, size=draws)
    return float((placed.max(axis=1) > limit).mean())


@pytest.mark.parametrize(("wanted", "count"), [(10, 4), (20, 4), (20, 2), (40, 8), (100, 3)])
def test_the_per_shard_limit_is_the_smallest_that_rarely_needs_asking_again(wanted: int, count: int) -> None:
    limit = per_shard_limit(wanted, count)
    assert wanted / count < limit < wanted
    assert overflow_rate(wanted, count, limit) <= RERUN_PROBABILITY * 1.1
    assert overflow_rate(wanted, count, limit - 1) > RERUN_PROBABILITY


def test_one_shard_or_huge_requests_are_asked_for_everything() -> None:
    assert per_shard_limit(10, 1) == 10
    assert per_shard_limit(10, 0) == 10
    assert per_shard_limit(4000, 4) <= 4000  # no overflow in the binomial's terms


def test_the_query_vector_as_text_is_exact_for_float32() -> None:
    values = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    values[:4] = [1e-38, -3.4e38, 0.0, 1 / 3]
    text = vector_literal(values.tolist())
    parsed = np.array(text.strip("[]").split(","), dtype=np.float32)
    assert np.array_equal(parsed, values)
    assert len(text) < len("[" + ",".join(map(str, values.tolist())) + "]")


def test_a_query_is_served_by_the_smallest_ef_search_tier_at_least_its_own() -> None:
    tiers = EfTiers(default=40, tiers=(100, 400, 1000))
    assert [tiers.serving(ef) for ef in (1, 40, 41, 100, 101, 400, 999, 1000)] == [
        None,
        None,
        100,
        100,
        400,
        400,
        1000,
        1000,
    ]
    assert tiers.serving(5000) == 1000  # past the largest: the largest
    # Tiers at or below the default would only serve less than the default servers do.
    assert EfTiers(default=200, tiers=(100, 200, 400)).serving(150) is None
    assert EfTiers(default=200, tiers=(100, 200, 400)).serving(250) == 400
    assert EfTiers(default=40).serving(400) is None  # no tiers: the default servers
    assert EfTiers(default=200, tiers=(400, 100, 200, 400)).tiers == (400,)  # only those that can serve


def test_tier_servers_and_tables_are_named_apart_from_the_defaults() -> None:
    assert foreign_server(3) == "meshsearch_shard_3" and foreign_server(3, 400) == "meshsearch_shard_3_ef400"
    assert foreign_server(3, None) == foreign_server(3)


def test_ef_search_tiers_are_read_sorted_and_refused_when_not_pgvectors_range() -> None:
    assert SearchSettings(shard_ef_search_tiers=" 400,100,400 ").ef_search_tiers == (100, 400)
    assert SearchSettings(shard_ef_search_tiers="").ef_search_tiers == ()
    for wrong in ("100,abc", "0", "1001", "-5"):
        with pytest.raises(ValueError, match="hnsw.ef_search"):
            SearchSettings(shard_ef_search_tiers=wrong)


@pytest.mark.parametrize("server", ["meshsearch_shard_1", "meshsearch_shard_1_ef400"])
def test_a_shard_unreached_through_any_of_its_servers_is_named_by_number_only(server: str) -> None:
    shards = Shards([Shard(index, f"postgresql://u:secret@10.0.0.{index}:5432/db", None) for index in range(3)])  # type: ignore[arg-type]
    error = Unavailable("the search database is unavailable")
    error.__cause__ = RuntimeError(f'could not connect to server "{server}": connection refused at 10.0.0.1')
    named = shards.named(error)
    assert named.message.startswith("shard 1 is unavailable") and named.reason == "SHARD_UNAVAILABLE"
    assert "10.0.0" not in named.message and "meshsearch_shard" not in named.message
