"""Blind human evaluations: create one (a generate run builds its batch), and compute its results.

Results, as the paper reports them (Figure 1): each model's win rate against the baseline, ties
counting half, with a 95% bootstrap interval over prompts; per prompt category the win rate and
the Likert mean (with intervals) and flag rates per model; and the evaluators' agreement on the
tasks several of them judged.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.datasets.agreement import agreement_report, bootstrap_ci
from app.errors import Conflict, InvalidInput, NotFound
from app.evals.models import Evaluation, EvaluationModel
from app.labeling.models import FLAGS, Batch, Ranking, RankingEntry, RankingFlag, Task, TaskStatus
from app.prompts.models import Completion, Prompt
from app.registry import service as registry
from app.registry.models import RegisteredModel
from app.runs import planning
from app.runs.models import Run
from app.users.models import User


@dataclass
class EvalRequest:
    name: str
    models: list[str | int]  # registered policies (name or id), 2 to 9
    baseline: str | int | None = None  # one of the models; default the first
    split: str | None = "test"  # the paper's held-out customers
    category: str | None = None
    source: str | None = None
    limit: int | None = None
    heldout_only: bool = True  # judged by held-out labelers
    overlap_share: float = 0.0  # share of tasks judged by several evaluators (agreement)
    overlap_count: int = 1
    options: dict = field(default_factory=dict)  # sampling options of the generate run (temperature, max_new_tokens ...)


def create_evaluation(db: Session, settings: Settings, request: EvalRequest, *, actor: User | None = None) -> Evaluation:
    """Register the evaluation and queue the generate run that samples each model's response to
    each prompt and builds the evaluation batch; everything is validated before anything is queued."""
    name = (request.name or "").strip()
    if not 1 <= len(name) <= 150:
        raise InvalidInput("Give the evaluation a name of 1-150 characters.", field="name")
    if db.scalar(select(Evaluation.id).where(Evaluation.name == name)):
        raise Conflict(f"An evaluation named {name!r} already exists.", field="name")
    if not 2 <= len(request.models) <= 9:
        raise InvalidInput("Choose 2 to 9 models to compare (one of them the baseline).", field="models")
    models = [registry.find_model(db, ref, "models") for ref in request.models]
    baseline = models[0] if request.baseline in (None, "") else registry.find_model(db, request.baseline, "baseline")
    if baseline.id not in {m.id for m in models}:
        raise InvalidInput(f"The baseline {baseline.name} must be one of the compared models.", field="baseline")
    options = {
        **request.options, "purpose": "evaluation", "heldout_only": request.heldout_only, "split": request.split,
        "category": request.category, "source": request.source, "limit": request.limit,
        "overlap_share": request.overlap_share, "overlap_count": request.overlap_count,
        "batch_name": f"eval: {name}", "priority": request.options.get("priority", 10),
    }
    run = planning.launch_run(db, settings, planning.RunRequest(
        kind="generate", name=f"eval: {name}", inputs={"model": [m.id for m in models]},
        options={k: v for k, v in options.items() if v is not None}), actor=actor)
    evaluation = Evaluation(
        name=name, baseline_model_id=baseline.id, run_id=run.id, heldout_only=request.heldout_only,
        prompt_selection={k: run.generation.get(k) for k in ("split", "category", "source", "limit")},
        created_by_id=actor.id if actor else None,
    )
    db.add(evaluation)
    db.flush()
    db.add_all(EvaluationModel(evaluation_id=evaluation.id, model_id=m.id, position=i) for i, m in enumerate(models))
    db.flush()
    audit.record(db, actor.id if actor else None, "eval.create", "evaluation", evaluation.id,
                 f"{name}: {', '.join(m.name for m in models)} vs {baseline.name}")
    return evaluation


def attach_batch(db: Session, run: Run, batch: Batch) -> None:
    """Called when an evaluation's generate run built its batch."""
    evaluation = db.scalar(select(Evaluation).where(Evaluation.run_id == run.id))
    if evaluation is not None:
        evaluation.batch_id = batch.id
        db.flush()


def get_evaluation(db: Session, evaluation_id: int) -> Evaluation:
    evaluation = db.get(Evaluation, evaluation_id)
    if evaluation is None:
        raise NotFound(f"No evaluation with id {evaluation_id}.")
    return evaluation


def find_evaluation(db: Session, ref: str | int) -> Evaluation:
    if isinstance(ref, int) or str(ref).isdigit():
        return get_evaluation(db, int(ref))
    evaluation = db.scalar(select(Evaluation).where(Evaluation.name == str(ref)))
    if evaluation is None:
        raise NotFound(f"No evaluation named {ref!r}.")
    return evaluation


def list_evaluations(db: Session) -> Sequence[Evaluation]:
    return db.scalars(select(Evaluation).order_by(Evaluation.id.desc())).all()


def compared_models(db: Session, evaluation: Evaluation) -> list[RegisteredModel]:
    return list(db.scalars(
        select(RegisteredModel).join(EvaluationModel, EvaluationModel.model_id == RegisteredModel.id)
        .where(EvaluationModel.evaluation_id == evaluation.id).order_by(EvaluationModel.position)
    ))


# --- results --------------------------------------------------------------------------------------

@dataclass
class Judgment:
    """One evaluator's verdict on one task: per model, its bucket (0 best), Likert and flags."""

    prompt_id: int
    category: str
    labeler_id: int | None
    bucket: dict[int, int]
    likert: dict[int, int | None]
    flags: dict[int, set[str]]


def load_judgments(db: Session, batch_id: int) -> list[Judgment]:
    rows = db.execute(
        select(Ranking.id, Ranking.prompt_id, Ranking.labeler_id, Prompt.category, Completion.model_id,
               RankingEntry.id, RankingEntry.bucket, RankingEntry.likert)
        .join(RankingEntry, RankingEntry.ranking_id == Ranking.id)
        .join(Completion, Completion.id == RankingEntry.completion_id)
        .join(Prompt, Prompt.id == Ranking.prompt_id)
        .where(Ranking.batch_id == batch_id).order_by(Ranking.id)
    ).all()
    flags: dict[int, set[str]] = defaultdict(set)
    entry_ids = [r[5] for r in rows]
    for start in range(0, len(entry_ids), 5000):
        for entry_id, flag in db.execute(
            select(RankingFlag.entry_id, RankingFlag.flag).where(RankingFlag.entry_id.in_(entry_ids[start:start + 5000]))
        ):
            flags[entry_id].add(flag)
    judgments: dict[int, Judgment] = {}
    for rid, pid, lid, category, mid, eid, bucket, likert in rows:
        j = judgments.get(rid)
        if j is None:
            j = judgments[rid] = Judgment(pid, str(category), lid, {}, {}, {})
        j.bucket[mid], j.likert[mid], j.flags[mid] = bucket, likert, flags.get(eid, set())
    return list(judgments.values())


def _win_units(judgments: list[Judgment], model_id: int, baseline_id: int) -> list[tuple[int, int]]:
    """Per prompt: (half-points won, half-points possible); a win is 2, a tie 1, a loss 0."""
    units: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for j in judgments:
        if model_id in j.bucket and baseline_id in j.bucket:
            a, b = j.bucket[model_id], j.bucket[baseline_id]
            units[j.prompt_id][0] += 2 if a < b else (1 if a == b else 0)
            units[j.prompt_id][1] += 2
    return [tuple(u) for u in units.values()]


def _likert_units(judgments: list[Judgment], model_id: int) -> list[tuple[float, int]]:
    units: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for j in judgments:
        if j.likert.get(model_id) is not None:
            units[j.prompt_id][0] += j.likert[model_id]
            units[j.prompt_id][1] += 1
    return [tuple(u) for u in units.values()]


def _rate(units, *, reps: int, seed: int) -> dict:
    total = sum(t for _, t in units)
    if not total:
        return {"value": None, "ci": None, "prompts": 0}
    return {"value": sum(a for a, _ in units) / total, "ci": bootstrap_ci(units, reps=reps, seed=seed),
            "prompts": len(units)}


def _model_stats(judgments: list[Judgment], model: RegisteredModel, baseline_id: int, *, reps: int, seed: int) -> dict:
    seen = [j for j in judgments if model.id in j.bucket]
    flag_counts = {f: sum(1 for j in seen if f in j.flags.get(model.id, ())) for f in FLAGS}
    out = {
        "model_id": model.id, "model": model.name, "kind": model.kind.value, "judgments": len(seen),
        "likert": _rate(_likert_units(judgments, model.id), reps=reps, seed=seed),
        "flag_rates": {f: (n / len(seen) if seen else None) for f, n in flag_counts.items()},
    }
    if model.id != baseline_id:
        out["win_rate"] = _rate(_win_units(judgments, model.id, baseline_id), reps=reps, seed=seed)
    return out


def results(db: Session, evaluation: Evaluation, *, reps: int = 1000, seed: int = 0) -> dict:
    """Everything the results page, `GET /api/evals/{id}` and `rlhf eval results` show."""
    models = compared_models(db, evaluation)
    baseline = next(m for m in models if m.id == evaluation.baseline_model_id)
    run = db.get(Run, evaluation.run_id) if evaluation.run_id else None
    out: dict = {
        "id": evaluation.id, "name": evaluation.name, "baseline": baseline.name, "prompt_selection": evaluation.prompt_selection,
        "heldout_only": evaluation.heldout_only, "run_id": evaluation.run_id, "run_status": run.status.value if run else None,
        "batch_id": evaluation.batch_id, "tasks": 0, "tasks_done": 0, "judgments": 0, "models": [], "categories": {},
        "agreement": None, "flags": FLAGS,
    }
    if evaluation.batch_id is None:
        out["models"] = [{"model_id": m.id, "model": m.name, "kind": m.kind.value, "judgments": 0} for m in models]
        return out
    tasks = db.execute(select(Task.status).where(Task.batch_id == evaluation.batch_id)).scalars().all()
    out["tasks"], out["tasks_done"] = len(tasks), sum(1 for s in tasks if s == TaskStatus.done)
    judgments = load_judgments(db, evaluation.batch_id)
    out["judgments"] = len(judgments)
    out["models"] = [_model_stats(judgments, m, baseline.id, reps=reps, seed=seed) for m in models]
    for category in sorted({j.category for j in judgments}):
        subset = [j for j in judgments if j.category == category]
        out["categories"][category] = [_model_stats(subset, m, baseline.id, reps=reps, seed=seed) for m in models]
    report = agreement_report(db, batch=str(evaluation.batch_id), reps=reps, seed=seed, usernames=False)
    out["agreement"] = {**report["overall"], "krippendorff_alpha_likert": report["krippendorff_alpha_likert"]}
    return out


CSV_COLUMNS = ["evaluation", "category", "model", "kind", "is_baseline", "judgments", "win_rate", "win_ci_low",
               "win_ci_high", "win_prompts", "likert_mean", "likert_ci_low", "likert_ci_high", *FLAGS]


def results_csv(res: dict) -> str:
    """One row per model overall and per category: win rate, Likert and flag rates."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    sections = [("all", res["models"])] + list(res["categories"].items())
    for category, stats in sections:
        for s in stats:
            win = s.get("win_rate") or {}
            likert = s.get("likert") or {}
            wci, lci = win.get("ci") or [None, None], likert.get("ci") or [None, None]
            writer.writerow([
                res["name"], category, s["model"], s["kind"], s["model"] == res["baseline"], s["judgments"],
                win.get("value"), wci[0], wci[1], win.get("prompts"), likert.get("value"), lci[0], lci[1],
                *[(s.get("flag_rates") or {}).get(f) for f in FLAGS],
            ])
    return buf.getvalue()
