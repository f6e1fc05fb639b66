"""eval: RM score and KL of sampled responses, corpus NLL / perplexity, RM accuracy per labeler group."""

import gc
import json
import math
import weakref

import pytest
import torch
from torch import nn

import trainers.evaluate
from trainers.cli import main
from trainers.common import metric_series, read_metrics
from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.evaluate import EvalConfig, run_eval
from trainers.generate import decode_response, sample_responses
from trainers.models import load_causal_lm, load_scalar_model, load_tokenizer
from trainers.reward import score_texts

from conftest import WORDS, prompt_rows, write_jsonl

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def perturbed_dir(tiny_dir, tmp_path_factory):
    """The tiny model with noise on every weight: a 'policy' that has moved away from the reference."""
    model = load_causal_lm(str(tiny_dir))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    out = tmp_path_factory.mktemp("perturbed") / "model"
    model.save_pretrained(out)
    load_tokenizer(str(tiny_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rm_dir(tiny_dir, tmp_path_factory):
    """A decoder RM folder (the tiny backbone with a seeded score head)."""
    torch.manual_seed(3)
    rm = load_scalar_model(str(tiny_dir))
    out = tmp_path_factory.mktemp("rm") / "model"
    rm.save_pretrained(out)
    load_tokenizer(str(tiny_dir)).save_pretrained(out)
    return out


CORPUS = ("The red cat sat by the river.\nThe blue dog ran over the hill.\n\n"
          "A bird\n\n"
          + " ".join(WORDS * 30) + "\n\n"  # longer than max_length: cut to its first tokens
          "Sun, tree and house.\n")


def test_two_policies_rm_score_kl_and_corpus(tiny_dir, perturbed_dir, rm_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(10))
    corpus = tmp_path / "heldout.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    cfg = EvalConfig(model=f"{tiny_dir},{perturbed_dir}", model_name="sft,ppo", reference=str(tiny_dir),
                     reward_model=str(rm_dir), prompts=str(prompts), corpus=str(corpus), out=str(tmp_path / "ev"),
                     max_new_tokens=6, batch_size=4, max_length=64, seed=5)
    res = run_eval(cfg)
    assert json.loads((tmp_path / "ev" / "results.json").read_text()) == res
    assert set(res) == {"models", "rm_accuracy", "prompts", "documents"}
    assert res["rm_accuracy"] is None and (res["prompts"], res["documents"]) == (10, 4)
    sft, ppo = res["models"]["sft"], res["models"]["ppo"]
    keys = {"rm_score", "kl", "response_length", "corpus_nll", "corpus_ppl", "corpus_tokens"}
    assert set(sft) == set(ppo) == keys
    assert sft["kl"] == pytest.approx(0.0, abs=1e-5)  # the reference against itself
    assert ppo["kl"] > 0.05
    assert 1 <= sft["response_length"] <= 6 and isinstance(sft["corpus_tokens"], int)
    assert sft["corpus_ppl"] == pytest.approx(math.exp(sft["corpus_nll"]))
    assert sft["corpus_nll"] != ppo["corpus_nll"]

    # the RM score is the mean score of the responses each model samples from the seed
    tok = load_tokenizer(str(tiny_dir))
    rm = load_scalar_model(str(rm_dir)).eval()
    msgs = [[{"role": "user", "content": r["prompt"]}] for r in prompt_rows(10)]
    for name, path in (("sft", tiny_dir), ("ppo", perturbed_dir)):
        torch.manual_seed(5)
        model = load_causal_lm(str(path)).eval()
        texts, lengths = [], []
        for s in range(0, 10, 4):
            samples = sample_responses(model, tok, msgs[s:s + 4], 6, 1.0, CPU, 64)
            texts += [decode_response(tok, x.response_ids) for x in samples]
            lengths += [len(x.response_ids) for x in samples]
        want = float(score_texts(rm, tok, msgs, texts, CPU, 64).mean())
        assert res["models"][name]["rm_score"] == pytest.approx(want, abs=1e-5)
        assert res["models"][name]["response_length"] == pytest.approx(sum(lengths) / 10)

    # metrics.jsonl: progress rows up to 1, then one row per result; config.json
    rows = read_metrics(tmp_path / "ev")
    prog = [v for _, v in metric_series(rows, "progress")]
    assert prog == sorted(prog) and prog[0] > 0 and prog[-1] == 1.0 and len(prog) > 5
    assert metric_series(rows, "eval/ppo/kl")[0][1] == pytest.approx(ppo["kl"])
    names = {r["name"] for r in rows}
    assert {f"eval/{m}/{k}" for m in ("sft", "ppo") for k in keys - {"corpus_tokens"}} <= names
    assert json.loads((tmp_path / "ev" / "config.json").read_text())["kind"] == "EvalConfig"


def test_greedy_kl_of_the_reference_against_itself_is_zero(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(5))
    res = run_eval(EvalConfig(model=str(tiny_dir), reference=str(tiny_dir), prompts=str(prompts),
                              out=str(tmp_path / "ev"), temperature=0.0, max_new_tokens=5, batch_size=2))
    m = res["models"]["model"]
    assert m["kl"] == pytest.approx(0.0, abs=1e-5) and m["rm_score"] is None and m["corpus_nll"] is None


def test_corpus_nll_matches_a_direct_computation(tiny_dir, tmp_path):
    corpus = tmp_path / "heldout.jsonl"  # rows with 'text', as a .txt corpus gives the same documents
    docs = [d for d in CORPUS.split("\n\n")]
    write_jsonl(corpus, [{"text": d} for d in docs] + [{"text": "never read"}])
    res = run_eval(EvalConfig(model=str(tiny_dir), corpus=str(corpus), out=str(tmp_path / "ev"),
                              max_length=40, max_documents=4, batch_size=3))
    tok = load_tokenizer(str(tiny_dir))
    model = load_causal_lm(str(tiny_dir)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for d in docs:  # each document alone, its first 40 tokens, mean CE over its next-token targets
            ids = torch.tensor([tok(d)["input_ids"][:40]])
            n = ids.shape[1] - 1
            total += float(model(input_ids=ids, labels=ids).loss) * n
            count += n
    m = res["models"]["model"]
    assert m["corpus_tokens"] == count
    assert m["corpus_nll"] == pytest.approx(total / count, rel=1e-5)
    assert m["corpus_ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert m["rm_score"] is m["kl"] is m["response_length"] is None
    assert res["documents"] == 4 and res["prompts"] is None


class LengthRM(nn.Module):
    """A scripted RM: the score is the number of tokens, so a longer response always wins."""

    def forward(self, ids, mask):
        return mask.sum(-1).float()


def _ranking(rid, group, words, ranked):
    """A native row whose completion i has ``words[i]`` words; ``ranked`` buckets of indexes, best first."""
    comps = [{"id": i, "text": " ".join(["cat"] * n), "model": None} for i, n in enumerate(words)]
    row = {"ranking_id": rid, "prompt_id": rid, "prompt": f"Say {rid}", "completions": comps, "ranked": ranked}
    if group is not None:
        row["labeler_group"] = group
    return row


def test_rm_accuracy_per_labeler_group_with_a_scripted_rm(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainers.evaluate, "load_scalar_model", lambda name, dtype=torch.float32: LengthRM())
    rows = [
        _ranking(1, "train", [3, 2, 1], [[0], [1], [2]]),       # longest first: agrees with the RM, 3 pairs
        _ranking(2, "train", [4, 1, 2], [[0, 2], [1]]),         # a tie in the top bucket: 2 pairs, both right
        _ranking(3, "heldout", [1, 2, 3], [[0], [1], [2]]),     # shortest first: the RM gets all 3 wrong
        _ranking(4, "heldout", [1, 5], [[0, 1]]),               # all tied: no pair, and not an error
        _ranking(5, None, [2, 1], [[0], [1]]),                  # no labeler group: counted in "all" only
    ]
    data = write_jsonl(tmp_path / "cmp.jsonl", rows)
    res = run_eval(EvalConfig(model=str(tiny_dir), reward_model=str(tiny_dir), comparisons=str(data),
                              out=str(tmp_path / "ev"), batch_size=2))
    acc = res["rm_accuracy"]
    assert acc["pairs"] == {"all": 9, "train": 5, "heldout": 3}
    assert (acc["train"], acc["heldout"]) == (1.0, 0.0)
    assert acc["all"] == pytest.approx(6 / 9)
    assert res["models"] == {"model": dict.fromkeys(["rm_score", "kl", "response_length", "corpus_nll",
                                                     "corpus_ppl", "corpus_tokens"])}
    assert metric_series(read_metrics(tmp_path / "ev"), "eval/rm_accuracy/heldout") == [(3, 0.0)]

    # pairwise rows (what TRL reads) carry no group: train / heldout are null, with 0 pairs
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p", "chosen": "cat cat cat", "rejected": "cat", "ranking_id": 1},
        {"prompt": "p", "chosen": "cat cat cat", "rejected": "cat cat", "ranking_id": 1},
        {"prompt": "q", "chosen": "cat", "rejected": "cat cat"},
    ])
    acc = run_eval(EvalConfig(model=str(tiny_dir), reward_model=str(tiny_dir), comparisons=str(pairs),
                              out=str(tmp_path / "ev2")))["rm_accuracy"]
    assert acc == {"all": pytest.approx(2 / 3), "train": None, "heldout": None,
                   "pairs": {"all": 3, "train": 0, "heldout": 0}}


def test_loads_one_policy_at_a_time(tiny_dir, perturbed_dir, tmp_path, monkeypatch):
    loaded: list[weakref.ref] = []

    def load(name, dtype=torch.float32):
        gc.collect()
        assert all(r() is None for r in loaded), "the previous policy is still in memory"
        model = load_causal_lm(name, dtype)
        if name != str(tiny_dir):  # the reference stays loaded, the policies come and go
            loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(trainers.evaluate, "load_causal_lm", load)
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3))
    res = run_eval(EvalConfig(model=f"{perturbed_dir},{perturbed_dir}", model_name="a,b", reference=str(tiny_dir),
                              prompts=str(prompts), out=str(tmp_path / "ev"), max_new_tokens=4))
    assert len(loaded) == 2 and res["models"]["a"]["kl"] == pytest.approx(res["models"]["b"]["kl"])


@pytest.mark.parametrize("values, message", [
    ({}, "nothing to evaluate"),
    ({"prompts": "p.jsonl"}, "--prompts needs --reward-model"),
    ({"comparisons": "c.jsonl", "reference": "ref"}, "--comparisons needs --reward-model"),
    ({"corpus": "c.txt", "model": "a,b", "model_name": "x"}, "--model-name gives 1 name(s) for 2 model(s)"),
    ({"corpus": "c.txt", "model": "runs/1/model,runs/2/model"}, "two models would be reported under the same name"),
    ({"corpus": "c.txt", "model": "a,,b"}, "--model: an empty entry"),
    ({"corpus": "c.txt", "temperature": -1}, "temperature must be >= 0"),
    ({"corpus": "c.txt", "max_documents": 0}, "must be at least 1"),
])
def test_config_errors(values, message):
    with pytest.raises(ConfigError) as e:
        build_config(EvalConfig, {"model": "m", "out": "o", **values})
    assert message in str(e.value)


def test_command_line_prints_the_results_and_errors_are_one_line(tiny_dir, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_dir), "--model-name", "base", "--corpus", str(corpus),
                 "--out", str(out), "--max-length", "32"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((out / "results.json").read_text())
    assert printed["models"]["base"]["corpus_tokens"] > 0
    assert main(["eval", "--model", str(tiny_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nothing to evaluate" in err and err.count("\n") == 1
    (tmp_path / "sft").mkdir()  # another trainer's run folder is not overwritten
    (tmp_path / "sft" / "config.json").write_text(json.dumps({"kind": "SFTConfig"}))
    assert main(["eval", "--model", str(tiny_dir), "--corpus", str(corpus), "--out", str(tmp_path / "sft")]) == 2
    assert "another run's folder" in capsys.readouterr().err
    assert not (tmp_path / "sft" / "metrics.jsonl").exists()
