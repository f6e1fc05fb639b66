"""Labeler agreement and quality: pairwise inter-annotator agreement with a bootstrap interval,
Krippendorff's alpha for the Likert ratings, throughput and time per task, flag rates per model.

Agreement is measured on tasks ranked by two labelers or more (the overlap share of a batch):
for every two labelers of a task, every pair of responses both of them ordered strictly (ties
in either ranking are excluded) counts once, and agrees when both put the same response first.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from app.datasets.pairs import compare
from app.labeling.models import Batch, Demonstration, Ranking, RankingEntry, RankingFlag
from app.prompts.models import Completion
from app.users.models import User

GROUPS = ("train", "heldout")


@dataclass
class TaskLabels:
    task_id: int
    # labeler id -> (group, {completion id: bucket}, {completion id: likert})
    by_labeler: dict[int, tuple[str, dict[int, int], dict[int, int]]] = field(default_factory=dict)


def _batch_filter(stmt, batch: str | None):
    if batch:
        stmt = stmt.join(Batch, Batch.id == Ranking.batch_id)
        stmt = stmt.where(Batch.id == int(batch) if batch.isdigit() else Batch.name == batch)
    return stmt


def load_overlap(db: Session, *, batch: str | None = None) -> list[TaskLabels]:
    """Every task ranked by >= 2 labelers, with each labeler's buckets and ratings."""
    multi = (
        select(Ranking.task_id)
        .where(Ranking.task_id.is_not(None), Ranking.labeler_id.is_not(None))
        .group_by(Ranking.task_id)
        .having(func.count(func.distinct(Ranking.labeler_id)) >= 2)
    )
    multi = _batch_filter(multi, batch)
    stmt = (
        select(
            Ranking.task_id, Ranking.labeler_id, cast(User.labeler_group, String),
            RankingEntry.completion_id, RankingEntry.bucket, RankingEntry.likert,
        )
        .join(RankingEntry, RankingEntry.ranking_id == Ranking.id)
        .join(User, User.id == Ranking.labeler_id)
        .where(Ranking.task_id.in_(multi))
        .order_by(Ranking.task_id, Ranking.id)
    )
    tasks: dict[int, TaskLabels] = {}
    for task_id, labeler_id, group, cid, bucket, likert in db.execute(stmt.execution_options(yield_per=5000)):
        t = tasks.setdefault(task_id, TaskLabels(task_id))
        _, order, ratings = t.by_labeler.setdefault(labeler_id, (group, {}, {}))
        order[cid] = bucket
        if likert is not None:
            ratings[cid] = likert
    return list(tasks.values())


def task_agreements(db: Session, *, batch: str | None = None) -> dict[int, float | None]:
    """Per task: the share of comparable response pairs its labelers ordered the same way (None
    when no pair was comparable, e.g. every labeler tied everything)."""
    out: dict[int, float | None] = {}
    for t in load_overlap(db, batch=batch):
        agree = total = 0
        for (_, (_, a, _)), (_, (_, b, _)) in combinations(sorted(t.by_labeler.items()), 2):
            x, n = compare(a, b)
            agree += x
            total += n
        out[t.task_id] = agree / total if total else None
    return out


def bootstrap_ci(units: list[tuple[int, int]], *, reps: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile interval of sum(agree)/sum(total) resampling units (tasks) with replacement."""
    units = [u for u in units if u[1] > 0]
    if not units:
        return None
    rng = random.Random(seed)
    n = len(units)
    stats = []
    for _ in range(reps):
        a = t = 0
        for _ in range(n):
            x, y = units[rng.randrange(n)]
            a += x
            t += y
        stats.append(a / t)
    stats.sort()
    lo = stats[int((1 - level) / 2 * reps)]
    hi = stats[min(reps - 1, int((1 + level) / 2 * reps))]
    return [lo, hi]


def krippendorff_alpha_interval(units: list[list[float]]) -> float | None:
    """Krippendorff's alpha with the interval metric. ``units``: the values given to each unit
    (one per coder; missing values left out). Units with fewer than two values are not pairable."""
    units = [u for u in units if len(u) >= 2]
    values = [v for u in units for v in u]
    n = len(values)
    if n < 2:
        return None
    d_o = 0.0
    for u in units:
        m = len(u)
        s = sum((a - b) ** 2 for i, a in enumerate(u) for j, b in enumerate(u) if i != j)
        d_o += s / (m - 1)
    d_o /= n
    # Expected disagreement over all pairs of pairable values: sum_{i != j} (v_i - v_j)^2 = 2(n*S2 - S1^2).
    s1 = sum(values)
    s2 = sum(v * v for v in values)
    d_e = 2 * (n * s2 - s1 * s1) / (n * (n - 1))
    if d_e == 0:
        return 1.0 if d_o == 0 else None
    return 1 - d_o / d_e


def _ratio(a: int, t: int) -> float | None:
    return a / t if t else None


def agreement_report(
    db: Session, *, batch: str | None = None, reps: int = 1000, seed: int = 0, usernames: bool = True
) -> dict:
    """All agreement numbers as a JSON-safe dict (the page renders it; manifests embed it)."""
    tasks = load_overlap(db, batch=batch)
    names = dict(db.execute(select(User.id, User.username)).all()) if usernames else {}
    overall_units: list[tuple[int, int]] = []
    group_units: dict[str, list[tuple[int, int]]] = {g: [] for g in GROUPS}
    per_labeler: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    labeler_group: dict[int, str] = {}
    likert_units: list[list[float]] = []
    for t in tasks:
        ta = tt = 0
        ga: dict[str, list[int]] = {g: [0, 0] for g in GROUPS}
        items = sorted(t.by_labeler.items())
        for lid, (group, _, _) in items:
            labeler_group[lid] = group
        for (la, (g1, a, _)), (lb, (g2, b, _)) in combinations(items, 2):
            x, n = compare(a, b)
            ta += x
            tt += n
            for lid in (la, lb):
                per_labeler[lid][0] += x
                per_labeler[lid][1] += n
            if g1 == g2 and g1 in ga:
                ga[g1][0] += x
                ga[g1][1] += n
        overall_units.append((ta, tt))
        for g in GROUPS:
            if ga[g][1]:
                group_units[g].append((ga[g][0], ga[g][1]))
        completions = {cid for _, (_, _, r) in items for cid in r}
        for cid in sorted(completions):
            likert_units.append([r[cid] for _, (_, _, r) in items if cid in r])

    def summary(units):
        a = sum(u[0] for u in units)
        t = sum(u[1] for u in units)
        return {"agreement": _ratio(a, t), "pairs": t, "tasks": sum(1 for u in units if u[1]),
                "ci95": bootstrap_ci(units, reps=reps, seed=seed)}

    labelers = []
    for lid, (a, t) in sorted(per_labeler.items()):
        entry = {"labeler_id": lid, "group": labeler_group.get(lid), "agreement": _ratio(a, t), "pairs": t}
        if usernames:
            entry["username"] = names.get(lid)
        labelers.append(entry)
    return {
        "overall": summary(overall_units),
        "groups": {g: summary(group_units[g]) for g in GROUPS},
        "labelers": labelers,
        "krippendorff_alpha_likert": krippendorff_alpha_interval(likert_units),
        "overlap_tasks": len(tasks),
    }


def throughput(db: Session) -> list[dict]:
    """Per labeler: rankings and demonstrations submitted, mean seconds per task, tasks per hour."""
    out: dict[int, dict] = {}
    group = cast(User.labeler_group, String)
    for model, when in ((Ranking, Ranking.labeler_id), (Demonstration, Demonstration.author_id)):
        stmt = (
            select(User.id, User.username, group, func.count(), func.sum(model.time_spent_s))
            .join(model, when == User.id)
            .group_by(User.id, User.username, group)
        )
        if model is Ranking:
            stmt = stmt.where(Ranking.task_id.is_not(None))
        for uid, username, g, n, spent in db.execute(stmt):
            row = out.setdefault(uid, {"labeler_id": uid, "username": username, "group": g, "rankings": 0,
                                       "demonstrations": 0, "seconds": 0.0})
            row["rankings" if model is Ranking else "demonstrations"] += n
            row["seconds"] += float(spent or 0)
    rows = []
    for row in sorted(out.values(), key=lambda r: r["username"]):
        tasks = row["rankings"] + row["demonstrations"]
        row["tasks"] = tasks
        row["mean_s_per_task"] = row["seconds"] / tasks if tasks else None
        row["tasks_per_hour"] = tasks * 3600 / row["seconds"] if row["seconds"] else None
        rows.append(row)
    return rows


def flag_rates(db: Session) -> list[dict]:
    """Per model: responses rated, share flagged (any flag), and the rate of each flag."""
    model = func.coalesce(Completion.model_name, "(unknown)")
    totals = dict(
        db.execute(
            select(model, func.count(RankingEntry.id))
            .join(Completion, Completion.id == RankingEntry.completion_id)
            .group_by(model)
        ).all()
    )
    flagged = dict(
        db.execute(
            select(model, func.count(func.distinct(RankingFlag.entry_id)))
            .join(RankingEntry, RankingEntry.id == RankingFlag.entry_id)
            .join(Completion, Completion.id == RankingEntry.completion_id)
            .group_by(model)
        ).all()
    )
    per_flag: dict[str, dict[str, int]] = defaultdict(dict)
    for m, flag, n in db.execute(
        select(model, RankingFlag.flag, func.count())
        .join(RankingEntry, RankingEntry.id == RankingFlag.entry_id)
        .join(Completion, Completion.id == RankingEntry.completion_id)
        .group_by(model, RankingFlag.flag)
    ):
        per_flag[m][flag] = n
    rows = []
    for m, n in sorted(totals.items()):
        rows.append({
            "model": m, "responses": n, "flagged_rate": flagged.get(m, 0) / n if n else None,
            "flags": {f: c / n for f, c in sorted(per_flag[m].items())},
        })
    return rows


def manifest_summary(db: Session, report: dict | None = None, *, secret: str) -> dict:
    """The agreement numbers for a dataset manifest, with pseudonymous labeler ids only."""
    from app.datasets.export import pseudonym

    report = report or agreement_report(db, usernames=False, reps=500)
    return {
        "overall": report["overall"],
        "groups": report["groups"],
        "krippendorff_alpha_likert": report["krippendorff_alpha_likert"],
        "labelers": [
            {"labeler": pseudonym(secret, e["labeler_id"]), "group": e["group"], "agreement": e["agreement"], "pairs": e["pairs"]}
            for e in report["labelers"]
        ],
    }
