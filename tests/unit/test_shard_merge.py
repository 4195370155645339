"""How a sharded search asks its shards: the rows each sends, and the query vector as text."""

from __future__ import annotations

import numpy as np
import pytest

from meshsearch_search.shards import RERUN_PROBABILITY, per_shard_limit, vector_literal


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
