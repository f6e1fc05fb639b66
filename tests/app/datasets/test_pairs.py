"""Expansion of rankings (buckets, ties) into preference pairs."""

from __future__ import annotations

from math import comb

from hypothesis import given
from hypothesis import strategies as st

from app.datasets.pairs import buckets_from_entries, compare, expand_pairs, n_pairs, position_map


def test_singleton_buckets_give_every_pair_best_first():
    assert expand_pairs([[10], [20], [30]]) == [(10, 20), (10, 30), (20, 30)]


def test_ties_give_no_pair():
    # 1 > {2, 3} > 4: C(4,2) = 6 minus the tie (2,3) = 5 pairs.
    assert expand_pairs([[1], [2, 3], [4]]) == [(1, 2), (1, 3), (1, 4), (2, 4), (3, 4)]


def test_all_tied_ranking_gives_nothing():
    # An "all bad" ranking where the labeler put everything in one bucket.
    assert expand_pairs([[1, 2, 3, 4]]) == []


def test_bucket_numbers_need_not_be_contiguous():
    assert buckets_from_entries([(5, 3), (6, 0), (7, 3), (8, 9)]) == [[6], [5, 7], [8]]


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=9))
def test_expansion_of_random_rankings_is_c_k_2_minus_tied_pairs(bucket_of):
    entries = list(enumerate(bucket_of))
    buckets = buckets_from_entries(entries)
    pairs = expand_pairs(buckets)
    k = len(bucket_of)
    tied = sum(comb(bucket_of.count(b), 2) for b in set(bucket_of))
    assert len(pairs) == comb(k, 2) - tied == n_pairs(len(b) for b in buckets)
    assert len(set(pairs)) == len(pairs)
    for w, lo in pairs:
        assert bucket_of[w] < bucket_of[lo]


def test_compare_counts_agreeing_and_comparable_pairs_by_hand():
    a = position_map([[1], [2], [3]])
    assert compare(a, position_map([[1], [2], [3]])) == (3, 3)
    # (1,2) flipped; (1,3) and (2,3) agree.
    assert compare(a, position_map([[2], [1], [3]])) == (2, 3)
    # B ties 1 and 2: that pair is excluded, the other two agree.
    assert compare(a, position_map([[1, 2], [3]])) == (2, 2)
    # B ties everything (all bad): nothing comparable.
    assert compare(a, position_map([[1, 2, 3]])) == (0, 0)
