"""The loop closes: labels leave the app as exports, the trainers learn from them, and the new
policy's samples come back as a ranking batch a labeler can take. Tiny models on CPU."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

pytest.importorskip("torch")

from app.datasets.export import export_to_file  # noqa: E402
from app.datasets.schemas import ExportFilters  # noqa: E402
from app.labeling.assignment import lease_next  # noqa: E402
from app.labeling.batches import BatchOptions, create_batch  # noqa: E402
from app.labeling.models import Task, TaskItem, TaskKind  # noqa: E402
from app.prompts.models import Completion  # noqa: E402
from app.prompts.service import import_completions  # noqa: E402
from tests.factories import make_demonstration, make_prompt, make_ranking, make_user  # noqa: E402
from trainers.generate import GenerateConfig, generate_completions  # noqa: E402
from trainers.reward import RMConfig, train_rm  # noqa: E402
from trainers.sft import SFTConfig, train_sft  # noqa: E402
from trainers.tiny import TinyConfig, init_tiny  # noqa: E402


def test_export_train_generate_and_rank_again(db, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINERS_NO_PROGRESS", "1")
    writer, ranker, next_labeler = (make_user(db, "labeler") for _ in range(3))
    prompts = [make_prompt(db, f"Name a colour, please ({i}).") for i in range(6)]
    for i, prompt in enumerate(prompts):
        make_demonstration(db, prompt=prompt, author=writer, text=f"A fine colour is blue, number {i}.")
        make_ranking(db, labeler=ranker, k=4, prompt=prompt)

    secret = settings.require_secret()
    files = {}
    for kind in ("sft", "comparisons", "prompts"):
        files[kind] = tmp_path / f"{kind}.jsonl"
        stats, digest = export_to_file(db, files[kind], kind, "jsonl", ExportFilters(), secret=secret)
        assert stats.rows == 6 and len(digest) == 64

    tiny = init_tiny(TinyConfig(out=str(tmp_path / "tiny"), hidden_size=32, num_layers=1, intermediate_size=64))
    sft = train_sft(SFTConfig(model=str(tiny), data=str(files["sft"]), out=str(tmp_path / "sft"), epochs=1,
                              batch_size=3, max_length=64, valid_fraction=0.0))
    sft_model = str(tmp_path / "sft" / "model")
    rm = train_rm(RMConfig(model=sft_model, data=str(files["comparisons"]), out=str(tmp_path / "rm"), epochs=1,
                           batch_size=2, max_length=64, valid_fraction=0.34, demonstrations=str(files["sft"])))
    assert sft and rm
    out = tmp_path / "round2.jsonl"
    generate_completions(GenerateConfig(model=sft_model, prompts=str(files["prompts"]), out=str(out), k=4,
                                        max_new_tokens=6, model_name="sft-round-1"))
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == 6 * 4

    summary = import_completions(db, samples, settings=settings)
    assert summary.prompts == 6 and summary.imported + summary.duplicates == 24
    assert summary.imported >= 6 * 2  # a tiny random model repeats itself, but not everywhere

    batch = create_batch(db, BatchOptions(name="round 2", kind=TaskKind.ranking, k=4, model="sft-round-1", priority=10))
    round2 = db.get(Task, lease_next(db, next_labeler, TaskKind.ranking)["task_id"])
    assert round2.batch_id == batch.id
    sampled = {s["completion"].replace("\x00", "").strip() for s in samples}
    shown = db.scalars(select(Completion).join(TaskItem, TaskItem.completion_id == Completion.id)
                       .where(TaskItem.task_id == round2.id)).all()
    assert len(shown) == 4 and all(c.model_name == "sft-round-1" for c in shown)
    assert all(c.text.strip() in sampled for c in shown)
