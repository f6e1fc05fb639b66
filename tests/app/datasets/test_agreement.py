"""Agreement numbers against hand-computed examples."""

from __future__ import annotations

import pytest

from app.datasets.agreement import agreement_report, bootstrap_ci, krippendorff_alpha_interval, task_agreements
from tests.factories import make_ranking, make_ranking_task, make_user


def test_krippendorff_alpha_by_hand():
    assert krippendorff_alpha_interval([[1, 1], [5, 5], [7, 7]]) == 1.0
    # Two units, each rated 1 and 2: D_o = (2 + 2) / 4 = 1; values 1,2,1,2: D_e = 2 * (4*10 - 36) / 12 = 2/3.
    assert krippendorff_alpha_interval([[1, 2], [1, 2]]) == pytest.approx(1 - 1 / (2 / 3))
    # Units with a single value are not pairable.
    assert krippendorff_alpha_interval([[3], [4]]) is None


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    units = [(2, 3), (3, 3), (1, 3), (3, 3), (2, 3)]
    lo, hi = bootstrap_ci(units, reps=500, seed=1)
    assert lo <= 11 / 15 <= hi
    assert bootstrap_ci(units, reps=500, seed=1) == [lo, hi]
    assert bootstrap_ci([(0, 0)]) is None


def test_agreement_overall_per_labeler_per_group_by_hand(db):
    a, b = make_user(db, "labeler"), make_user(db, "labeler")
    h1, h2 = make_user(db, "labeler", group="heldout"), make_user(db, "labeler", group="heldout")
    # Task 1 (train labelers a, b): a: 0>1>2, b: 1>0>2 -> 2 of 3 pairs agree.
    t1, c1 = make_ranking_task(db, k=3, required=2)
    make_ranking(db, task=t1, completions=c1, labeler=a, buckets=[[0], [1], [2]], likerts=[7, 4, 1])
    make_ranking(db, task=t1, completions=c1, labeler=b, buckets=[[1], [0], [2]], likerts=[6, 5, 1])
    # Task 2 (held-out h1, h2): h2 ties 0 and 1 -> (0,1) excluded; 2 of 2 agree.
    t2, c2 = make_ranking_task(db, k=3, required=2)
    make_ranking(db, task=t2, completions=c2, labeler=h1, buckets=[[0], [1], [2]])
    make_ranking(db, task=t2, completions=c2, labeler=h2, buckets=[[0, 1], [2]])
    # Task 3 (a and h1, all bad and all tied by a): nothing comparable.
    t3, c3 = make_ranking_task(db, k=3, required=2)
    make_ranking(db, task=t3, completions=c3, labeler=a, buckets=[[0, 1, 2]], all_bad=True)
    make_ranking(db, task=t3, completions=c3, labeler=h1, buckets=[[2], [1], [0]])
    # A task ranked once does not count.
    make_ranking(db, k=3, labeler=b)

    report = agreement_report(db, reps=200)
    assert report["overlap_tasks"] == 3
    assert report["overall"]["agreement"] == pytest.approx(4 / 5)
    assert report["overall"]["pairs"] == 5 and report["overall"]["tasks"] == 2
    assert report["groups"]["train"]["agreement"] == pytest.approx(2 / 3)
    assert report["groups"]["heldout"]["agreement"] == pytest.approx(1.0)
    per = {e["labeler_id"]: e for e in report["labelers"]}
    assert per[a.id]["agreement"] == pytest.approx(2 / 3) and per[a.id]["pairs"] == 3
    assert per[h2.id]["agreement"] == pytest.approx(1.0) and per[h2.id]["pairs"] == 2
    assert per[h1.id]["pairs"] == 2  # task 3 gave h1 no comparable pair
    # Likert: only task 1 has ratings: units [7,6], [4,5], [1,1].
    assert report["krippendorff_alpha_likert"] == pytest.approx(krippendorff_alpha_interval([[7, 6], [4, 5], [1, 1]]))
    per_task = task_agreements(db)
    assert per_task[t1.id] == pytest.approx(2 / 3) and per_task[t2.id] == 1.0 and per_task[t3.id] is None
