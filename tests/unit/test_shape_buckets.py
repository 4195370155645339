"""Batches fed to engines that compile per shape are padded to a few bucketed shapes."""

from __future__ import annotations

import numpy as np

from meshsearch_embedder.backend import PaddedBatch, ShapeBuckets


def test_rows_round_up_to_powers_of_two_and_one_and_a_half_times_them() -> None:
    buckets = ShapeBuckets(max_tokens=256)
    rows = sorted({buckets.shape(n, 10)[0] for n in range(1, 65)})
    assert rows == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert all(buckets.shape(n, 10)[0] <= max(n * 3 // 2, n + 1) for n in range(1, 65))


def test_tokens_round_up_to_the_step_but_not_past_the_model_window() -> None:
    buckets = ShapeBuckets(max_tokens=250)
    assert buckets.shape(1, 1) == (1, 16)
    assert buckets.shape(1, 16) == (1, 16)
    assert buckets.shape(1, 17) == (1, 32)
    assert buckets.shape(1, 245) == (1, 250)  # 256 would run past the model's positions
    assert buckets.shape(1, 300) == (1, 304)  # an untruncated text is the caller's choice


def test_the_row_bucket_a_batch_fills_is_the_largest_at_most_its_rows() -> None:
    buckets = ShapeBuckets(max_tokens=256)
    assert [buckets.rows_at_most(n) for n in (1, 2, 3, 5, 7, 17, 23, 24, 31, 33)] == [1, 2, 3, 4, 6, 16, 16, 24, 24, 32]
    assert all(buckets.shape(buckets.rows_at_most(n), 16)[0] == buckets.rows_at_most(n) for n in range(1, 100))


def test_the_shapes_a_batch_budget_allows_are_each_bucket_a_batch_within_it_reaches() -> None:
    buckets = ShapeBuckets(max_tokens=256)
    shapes = buckets.shapes(max_rows=32, token_budget=4096)
    assert (1, 16) in shapes and (1, 256) in shapes and (32, 128) in shapes
    assert (32, 176) in shapes and (32, 192) not in shapes  # 25 rows of 177 tokens are past it
    assert (24, 176) in shapes  # 17 rows of 161 tokens fit, and pad up to it
    assert all(rows in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) and tokens % 16 == 0 for rows, tokens in shapes)
    assert buckets.shapes(max_rows=1, token_budget=4096) == [(1, t) for t in range(16, 257, 16)]


def test_a_padded_batch_hides_extra_columns_and_gives_filler_rows_one_visible_token() -> None:
    padded = PaddedBatch([[5, 6, 7], [8]], pad_id=0, shape=(3, 16))
    assert padded.input_ids.shape == padded.attention_mask.shape == padded.token_type_ids.shape == (3, 16)
    assert padded.input_ids[0, :3].tolist() == [5, 6, 7] and padded.input_ids[1, 0] == 8
    assert padded.attention_mask.sum(axis=1).tolist() == [3, 1, 1]
    assert not padded.attention_mask[:, 3:].any()
    assert np.array_equal(PaddedBatch([[5, 6, 7]], 0, shape=(1, 2)).input_ids, [[5, 6, 7]])  # never cut
