"""Rankings as buckets, and their expansion into preference pairs (docs/formats.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def buckets_from_entries(entries: Iterable[tuple[int, int]]) -> list[list[int]]:
    """(completion_id, bucket) pairs -> buckets best first (bucket numbers need not be contiguous);
    ids inside a bucket ascending."""
    by_bucket: dict[int, list[int]] = {}
    for cid, bucket in entries:
        by_bucket.setdefault(bucket, []).append(cid)
    return [sorted(by_bucket[b]) for b in sorted(by_bucket)]


def expand_pairs(buckets: list[list[int]]) -> list[tuple[int, int]]:
    """Every (winner, loser) with the winner in an earlier bucket than the loser. Ties give no pair:
    K responses in singleton buckets give C(K, 2) pairs; a bucket of size t removes C(t, 2)."""
    pairs: list[tuple[int, int]] = []
    for i, better in enumerate(buckets):
        for worse in buckets[i + 1:]:
            for w in better:
                for loser in worse:
                    pairs.append((w, loser))
    return pairs


def n_pairs(bucket_sizes: Iterable[int]) -> int:
    sizes = list(bucket_sizes)
    k = sum(sizes)
    return k * (k - 1) // 2 - sum(t * (t - 1) // 2 for t in sizes)


def position_map(buckets: list[list[int]]) -> dict[int, int]:
    """completion id -> bucket index (0 = best)."""
    return {cid: i for i, bucket in enumerate(buckets) for cid in bucket}


def compare(a: Mapping[int, int], b: Mapping[int, int]) -> tuple[int, int]:
    """How two labelers' rankings of the same responses agree: (agreeing pairs, comparable pairs).

    A pair of responses is comparable when both labelers ordered it strictly (a tie in either
    ranking excludes the pair); it agrees when both put the same response first.
    """
    common = sorted(set(a) & set(b))
    agree = total = 0
    for i, x in enumerate(common):
        ax, bx = a[x], b[x]
        for y in common[i + 1:]:
            da = ax - a[y]
            db = bx - b[y]
            if da == 0 or db == 0:
                continue
            total += 1
            if (da < 0) == (db < 0):
                agree += 1
    return agree, total
