"""Alignment tax at tiny scale: SFT vs PPO vs PPO-ptx through ``python -m trainers eval``.

    HF_HUB_OFFLINE=1 python benchmarks/alignment_tax.py [--seeds 0 1 2] [--ptx-coef 27.8]

CPU, a few minutes. On a synthetic language (a small grammar with word-to-word dependencies):

1. "pretrain" a tiny random Llama on a corpus of that language (a plain LM loop, below);
2. SFT it on demonstrations ("Describe the cat." -> one sentence of the language);
3. train a tiny RM (from the SFT model) on rankings that prefer responses with more "good" in
   them, a word the corpus never uses (the RM's accuracy is checked on held-out rankings);
4. PPO from the SFT model against that RM, with ptx_coef = 0 (PPO) and > 0 (PPO-ptx, the ptx term
   drawing from the same pretraining corpus), once per seed;
5. evaluate base, SFT, PPO and PPO-ptx with ``trainers.evaluate.run_eval`` on held-out prompts
   (RM score, KL to the SFT model) and a held-out part of the corpus (NLL per token, perplexity).

Prints one table: per model, mean and spread over the seeds, and the corpus-NLL change from SFT
(the alignment tax) per seed; plus, computed here and not by the eval, the held-out NLL split into
the line-break targets (where a document goes on after a sentence) and all other targets. Runs with
one torch thread by default: a tiny model gains little from two (~1.3x on a training step, nothing in
generation, on an idle 2-core machine), and on a busy one two threads made steps ~20x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# ---------------------------------------------------------------- the synthetic language

NOUNS = {  # each noun has its own verbs and places: dependencies a tiny LM can learn
    "cat": (["sleeps", "hides", "waits"], ["house", "garden", "roof"]),
    "dog": (["runs", "barks", "waits"], ["park", "garden", "road"]),
    "bird": (["sings", "flies", "nests"], ["tree", "roof", "sky"]),
    "fish": (["swims", "hides", "jumps"], ["river", "lake", "sea"]),
    "horse": (["runs", "eats", "sleeps"], ["field", "farm", "road"]),
    "farmer": (["works", "eats", "sings"], ["farm", "field", "market"]),
    "child": (["plays", "sings", "runs"], ["park", "school", "garden"]),
    "king": (["rules", "eats", "waits"], ["castle", "city", "hall"]),
}
TRAIN_PROMPTS = ["Describe the {}.", "Tell me about the {}."]
HELDOUT_PROMPT = "What does the {} do?"  # a phrasing that no demonstration, ranking or PPO prompt uses
ADJS = ["small", "big", "old", "young", "quiet", "brown", "white", "tired"]
PREPS = ["in the", "near the", "by the"]
TIMES = ["at night", "in the morning", "all day", "after the rain"]


def sentence(rng: random.Random, noun: str | None = None) -> str:
    noun = noun or rng.choice(list(NOUNS))
    verbs, places = NOUNS[noun]
    s = f"the {rng.choice(ADJS)} {noun} {rng.choice(verbs)} {rng.choice(PREPS)} {rng.choice(places)}"
    if rng.random() < 0.5:
        s += " " + rng.choice(TIMES)
    return s + "."


def document(rng: random.Random) -> str:
    return "\n".join(sentence(rng) for _ in range(rng.randint(2, 4)))


def with_good(rng: random.Random, text: str, n: int) -> str:
    """``text`` with ``n`` of its words replaced by 'good' (the RM's hidden rule counts them)."""
    words = text.rstrip(".").split()
    for i in rng.sample(range(len(words)), min(n, len(words))):
        words[i] = "good"
    return " ".join(words) + "."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_data(tmp: Path, a: argparse.Namespace) -> dict[str, Path]:
    rng = random.Random(1234)
    docs = [document(rng) for _ in range(a.corpus_docs + a.heldout_docs)]
    (tmp / "corpus.txt").write_text("\n\n".join(docs[: a.corpus_docs]) + "\n", encoding="utf-8")
    (tmp / "heldout.txt").write_text("\n\n".join(docs[a.corpus_docs:]) + "\n", encoding="utf-8")
    nouns = list(NOUNS)
    demos = []
    for _ in range(a.demos):
        n = rng.choice(nouns)
        demos.append({"prompt": rng.choice(TRAIN_PROMPTS).format(n), "completion": sentence(rng, n)})
    write_jsonl(tmp / "demos.jsonl", demos)

    def rankings(count: int, start: int, group: str | None) -> list[dict]:
        rows = []
        for r in range(count):
            n = rng.choice(nouns)
            counts = rng.sample(range(5), 4)
            comps = [{"id": j, "text": with_good(rng, sentence(rng, n), c), "model": None} for j, c in enumerate(counts)]
            order = sorted(range(4), key=lambda j: -counts[j])
            row = {"ranking_id": start + r, "prompt": rng.choice(TRAIN_PROMPTS).format(n), "completions": comps,
                   "ranked": [[j] for j in order]}
            if group:
                row["labeler_group"] = group
            rows.append(row)
        return rows

    write_jsonl(tmp / "rankings.jsonl", rankings(a.rm_rankings, 0, None))
    write_jsonl(tmp / "heldout_rankings.jsonl", rankings(a.heldout_rankings // 2, 10_000, "train")
                + rankings(a.heldout_rankings - a.heldout_rankings // 2, 20_000, "heldout"))
    write_jsonl(tmp / "prompts.jsonl", [{"prompt": rng.choice(TRAIN_PROMPTS).format(rng.choice(nouns))}
                                        for _ in range(256)])
    write_jsonl(tmp / "heldout_prompts.jsonl", [{"prompt": HELDOUT_PROMPT.format(nouns[i % len(nouns)])}
                                                for i in range(a.eval_prompts)])
    vocab_text = "\n".join(docs[:500] + [d["prompt"] + " " + d["completion"] for d in demos[:200]]
                           + ["good " * 8, "User: Assistant:", HELDOUT_PROMPT])
    (tmp / "tokenizer_text.txt").write_text(vocab_text, encoding="utf-8")
    return {k: tmp / f for k, f in [("corpus", "corpus.txt"), ("heldout", "heldout.txt"), ("demos", "demos.jsonl"),
                                      ("rankings", "rankings.jsonl"), ("heldout_rankings", "heldout_rankings.jsonl"),
                                      ("prompts", "prompts.jsonl"), ("heldout_prompts", "heldout_prompts.jsonl"),
                                      ("tokenizer_text", "tokenizer_text.txt")]}


# ---------------------------------------------------------------- the stages


def pretrain(model_dir: Path, corpus: Path, out: Path, steps: int, batch: int, lr: float) -> dict:
    """A plain causal-LM loop over the corpus documents (each cut to 128 tokens), AdamW, cosine decay."""
    from trainers.common import cosine_lr_lambda
    from trainers.data import read_pretrain
    from trainers.models import load_causal_lm, load_tokenizer
    from trainers.ppo import ptx_loss

    torch.manual_seed(0)
    tok = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir)).train()
    docs, _ = read_pretrain(corpus)
    ids = [tok(d)["input_ids"][:128] for d in docs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr_lambda(steps, 20, 0.1))
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        pick = torch.randint(len(ids), (batch,), generator=g).tolist()
        loss = ptx_loss(model, [ids[i] for i in pick], tok.pad_token_id, torch.device("cpu"), torch.float32)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"first_loss": losses[0], "last_loss": sum(losses[-20:]) / 20}


@torch.no_grad()
def newline_split(model_dir: str, corpus: Path, max_length: int) -> tuple[float, float]:
    """Held-out NLL per token split by target: at the line breaks between sentences, and at every other
    token (each document cut to ``max_length`` tokens, as the eval cuts it)."""
    from trainers.data import read_pretrain
    from trainers.evaluate import corpus_ids
    from trainers.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).eval()
    nl = torch.tensor(tok("\n", add_special_tokens=False)["input_ids"])
    sums, counts = [0.0, 0.0], [0, 0]
    for seq in corpus_ids(tok, read_pretrain(corpus)[0], max_length):
        ids = torch.tensor([seq])
        nll = -torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        at_nl = torch.isin(ids[0, 1:], nl)
        for k, sel in enumerate((at_nl, ~at_nl)):
            sums[k] += float(nll[sel].sum())
            counts[k] += int(sel.sum())
    return sums[0] / max(1, counts[0]), sums[1] / max(1, counts[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="PPO seeds (also the eval's sampling seed)")
    ap.add_argument("--ptx-coefs", type=float, nargs="+", default=[27.8, 1.0, 0.1],
                    help="gamma of PPO-ptx, one run per value (paper: 27.8)")
    ap.add_argument("--ppo-steps", type=int, default=40)
    ap.add_argument("--ppo-lr", type=float, default=3e-4)
    ap.add_argument("--kl-coef", type=float, default=0.02)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--corpus-docs", type=int, default=2000)
    ap.add_argument("--heldout-docs", type=int, default=256)
    ap.add_argument("--demos", type=int, default=256)
    ap.add_argument("--sft-epochs", type=int, default=4)
    ap.add_argument("--rm-rankings", type=int, default=256)
    ap.add_argument("--heldout-rankings", type=int, default=64)
    ap.add_argument("--eval-prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a tiny model gains little from more, and loses a lot on a busy machine)")
    ap.add_argument("--keep", help="keep the run folders here instead of a temporary folder")
    ap.add_argument("--json", help="also write the evaluation results as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from trainers.configs import EvalConfig, PPOConfig, RMConfig, SFTConfig, TinyConfig
    from trainers.evaluate import run_eval
    from trainers.ppo import train_ppo
    from trainers.reward import train_rm
    from trainers.sft import train_sft
    from trainers.tiny import init_tiny

    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="alignment_tax_"))
    tmp.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    times: dict[str, float] = {}
    f = build_data(tmp, a)
    t = time.time()
    init_tiny(TinyConfig(out=str(tmp / "init"), text=str(f["tokenizer_text"]), vocab_size=384, hidden_size=a.hidden,
                         num_layers=a.layers, num_heads=4, intermediate_size=4 * a.hidden))
    pre = pretrain(tmp / "init", f["corpus"], tmp / "base", a.pretrain_steps, 16, 3e-3)
    times["pretrain"] = time.time() - t
    t = time.time()
    sft = train_sft(SFTConfig(model=str(tmp / "base"), data=str(f["demos"]), out=str(tmp / "sft"),
                              epochs=a.sft_epochs, batch_size=16, micro_batch_size=16, lr=2e-3, valid_fraction=0.0,
                              seed=0))
    times["sft"] = time.time() - t
    t = time.time()
    rm = train_rm(RMConfig(model=str(tmp / "sft" / "model"), data=str(f["rankings"]), out=str(tmp / "rm"), epochs=2,
                           batch_size=8, micro_batch_size=8, lr=1e-3, valid_fraction=0.0,
                           demonstrations=str(f["demos"]), seed=0))
    times["rm"] = time.time() - t
    sft_dir, rm_dir = str(tmp / "sft" / "model"), str(tmp / "rm" / "model")

    results: dict[int, dict] = {}
    times["ppo"] = times["eval"] = 0.0
    for seed in a.seeds:
        runs = {}
        for name, coef in (("ppo", 0.0), *((ptx_name(g), g) for g in a.ptx_coefs)):
            t = time.time()
            out = tmp / f"{name}-s{seed}"
            train_ppo(PPOConfig(policy=sft_dir, reward_model=rm_dir, prompts=str(f["prompts"]),
                                pretrain_data=str(f["corpus"]), out=str(out), steps=a.ppo_steps,
                                rollout_batch_size=16, generation_batch_size=16, minibatch_size=8, ppo_epochs=2,
                                lr=a.ppo_lr, value_lr=a.ppo_lr, kl_coef=a.kl_coef, ptx_coef=coef, ptx_batch_size=8,
                                ptx_max_length=128, max_new_tokens=a.new_tokens, seed=seed))
            times["ppo"] += time.time() - t
            runs[name] = str(out / "model")
        t = time.time()
        models = {"base": str(tmp / "base"), "sft": sft_dir, **runs}
        results[seed] = run_eval(EvalConfig(
            model=",".join(models.values()), model_name=",".join(models), out=str(tmp / f"eval-s{seed}"),
            reference=sft_dir, reward_model=rm_dir, prompts=str(f["heldout_prompts"]), corpus=str(f["heldout"]),
            comparisons=str(f["heldout_rankings"]), max_new_tokens=a.new_tokens, batch_size=64, max_length=128,
            max_prompts=a.eval_prompts, max_documents=a.heldout_docs, seed=seed))
        for name, path in models.items():  # a breakdown the eval does not make: where the NLL changed
            nl, other = newline_split(path, f["heldout"], 128)
            results[seed]["models"][name].update(nll_newline=nl, nll_other=other)
        times["eval"] += time.time() - t

    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "times": times}, indent=1))
    print()
    print(f"machine: {machine()}; total {time.time() - t_all:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in times.items())})")
    print(f"model: tiny Llama, hidden {a.hidden}, {a.layers} layers; pretrain loss {pre['first_loss']:.2f} -> "
          f"{pre['last_loss']:.2f} ({a.pretrain_steps} steps); SFT {sft['steps']} steps; RM {rm['steps']} steps")
    print(f"PPO: {a.ppo_steps} iterations x 16 prompts, lr {a.ppo_lr:g}, kl_coef {a.kl_coef:g}, "
          f"{a.new_tokens} new tokens; PPO-ptx gamma = {', '.join(f'{g:g}' for g in a.ptx_coefs)}; seeds {a.seeds}")
    acc = results[a.seeds[0]]["rm_accuracy"]
    print(f"RM accuracy on held-out rankings: all {acc['all']:.3f} ({acc['pairs']['all']} pairs), "
          f"train {acc['train']:.3f}, heldout {acc['heldout']:.3f} (both groups follow the same rule here)")
    print_table(results, a.seeds, ["base", "sft", "ppo", *(ptx_name(g) for g in a.ptx_coefs)])


def ptx_name(gamma: float) -> str:
    return f"ppo-ptx-{gamma:g}"


def _stat(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def print_table(results: dict[int, dict], seeds: list[int], names: list[str]) -> None:
    cols = [("corpus_nll", "held-out NLL/token"), ("corpus_ppl", "perplexity"), ("nll_newline", "NLL at line breaks"),
            ("nll_other", "NLL at other tokens"), ("rm_score", "RM score"),
            ("kl", "KL to SFT (nats)"), ("response_length", "response tokens")]
    print()
    print("| model | " + " | ".join(c for _, c in cols) + " | NLL − SFT (per seed) |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for name in names:
        cells = []
        for key, _ in cols:
            cells.append(_stat([results[s]["models"][name][key] for s in seeds]))
        tax = [results[s]["models"][name]["corpus_nll"] - results[s]["models"]["sft"]["corpus_nll"] for s in seeds]
        per = ", ".join(f"{x:+.3f}" for x in tax)
        print(f"| {name} | " + " | ".join(cells) + f" | {per} |")
    print("(mean ± sample std over the seeds; base and SFT differ between seeds only by the eval's sampling seed; "
          "line breaks: the targets that end a sentence inside a document)")


def machine() -> str:
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
