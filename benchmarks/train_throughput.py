"""Training throughput: our SFT / RM / PPO-ptx vs TRL's SFTTrainer and RewardTrainer.

    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py            # CPU tiny model (+ GPU part when CUDA)
    python benchmarks/train_throughput.py --gpu-only --gpu-layers 16  # only the ~1B bf16 part

Prints one table. On the same data and model, in the same run:
- SFT tokens/s (real prompt + response tokens per second of the training loop) for ours and
  TRL's SFTTrainer (prompt/completion rows, completion-only loss), and the ratio;
- RM: one epoch on K = 4..9 rankings grouped by prompt (ours) vs the equivalent C(K,2)
  pairwise rows (TRL's RewardTrainer); epoch seconds, tokens/s, held-out pairwise accuracy;
- PPO-ptx episodes/s and the share of time spent in generation;
- on a GPU: a ~1B-parameter Llama built from config, bf16, with SFT MFU
  (6 * params + attention FLOPs per token, against the GPU's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainers.common import metric_series, read_metrics  # noqa: E402
from trainers.formatting import plain_prompt  # noqa: E402

WORDS = ("red blue green cat dog bird tree house river sun good bad happy sad one two three four five six "
         "seven eight nine ten apple pear road car city sea wind rain snow").split()
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_rows(n: int, words: int, rng: random.Random) -> list[dict]:
    return [{"prompt": "Continue: " + " ".join(rng.choice(WORDS) for _ in range(words // 4)),
             "completion": " ".join(rng.choice(WORDS) for _ in range(words))} for _ in range(n)]


def ranking_rows(n: int, rng: random.Random, length: int = 24, split: str = "train") -> list[dict]:
    """K in 4..9 per prompt, ranked by a hidden rule (count of 'good')."""
    rows = []
    for r in range(n):
        k = rng.randint(4, 9)
        counts = rng.sample(range(length // 2), k)
        comps = []
        for j, c in enumerate(counts):
            w = ["good"] * c + [rng.choice(WORDS[:10]) for _ in range(length - c)]
            rng.shuffle(w)
            comps.append({"id": j, "text": " ".join(w)})
        order = sorted(range(k), key=lambda j: -counts[j])
        rows.append({"ranking_id": r, "prompt": f"Describe item {r}", "completions": comps,
                     "ranked": [[j] for j in order], "split": split})
    return rows


def pairwise(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        flat = [b[0] for b in row["ranked"]]
        text = {c["id"]: c["text"] for c in row["completions"]}
        for i, w in enumerate(flat):
            for lo in flat[i + 1:]:
                out.append({"prompt": row["prompt"], "chosen": text[w], "rejected": text[lo], "ranking_id": row["ranking_id"]})
    return out


def count_tokens(tok, rows: list[dict]) -> int:
    from trainers.formatting import encode_pair

    return sum(len(encode_pair(tok, [{"role": "user", "content": r["prompt"]}], r["completion"], 4096)[0]) for r in rows)


def last(out: Path, name: str) -> float:
    return metric_series(read_metrics(out), name)[-1][1]


# ---------------------------------------------------------------- ours


def ours_sft(model: str, data: Path, out: Path, bs: int, mbs: int, lr: float, max_len: int, dtype: str, tokens: int,
             compile: bool | None = None):
    from trainers.sft import SFTConfig, train_sft

    train_sft(SFTConfig(model=model, data=str(data), out=str(out), epochs=1, batch_size=bs, micro_batch_size=mbs,
                        lr=lr, valid_fraction=0.0, max_length=max_len, dtype=dtype, keep_checkpoints=1, compile=compile))
    secs = last(out, "train/elapsed_s")
    # steady state: without the first 2 steps (CUDA warm-up, torch.compile)
    rows = read_metrics(out)
    el = dict(metric_series(rows, "train/elapsed_s"))
    seen = {s: v * el[s] for s, v in metric_series(rows, "train/tokens_per_s")}
    n = max(el)
    steady = (seen[n] - seen[2]) / (el[n] - el[2]) if n > 3 else tokens / secs
    # timed: from just before the first step to the end of the last optimiser step (compile warm-up
    # and the first steps included; model load, tokenisation and checkpoint saving not)
    return {"seconds": secs, "tokens_per_s": tokens / secs, "steady_tokens_per_s": steady, "steps": n,
            "first2_s": el[2] if n >= 2 else secs}


def ours_rm(model: str, data: Path, valid: Path, out: Path, bs: int, lr: float, dtype: str):
    from trainers.reward import RMConfig, train_rm

    res = train_rm(RMConfig(model=model, data=str(data), valid_data=str(valid), out=str(out), batch_size=bs,
                            micro_batch_size=bs, lr=lr, dtype=dtype, keep_checkpoints=1))
    secs = last(out, "train/elapsed_s")
    return {"seconds": secs, "tokens_per_s": last(out, "train/tokens_per_s"), "accuracy": res["valid/accuracy"]}


def ours_ppo(policy: str, rm: str, prompts: Path, pretrain: Path, out: Path, steps: int, batch: int, new_tokens: int,
             dtype: str):
    from trainers.ppo import PPOConfig, train_ppo

    train_ppo(PPOConfig(policy=policy, reward_model=rm, prompts=str(prompts), pretrain_data=str(pretrain),
                        out=str(out), steps=steps, rollout_batch_size=batch, generation_batch_size=batch,
                        minibatch_size=batch // 2, max_new_tokens=new_tokens, ptx_coef=1.0, ptx_batch_size=batch // 2,
                        eval_every=10**9, eval_prompts=0, dtype=dtype, keep_checkpoints=1))
    return {"episodes_per_s": last(out, "episodes_per_s"), "generation_share": last(out, "time/generation_share")}


# ---------------------------------------------------------------- TRL


def trl_sft(model_dir: str, rows: list[dict], out: Path, bs: int, lr: float, max_len: int, tokens: int, gpu: bool):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = Dataset.from_list([{"prompt": plain_prompt([{"role": "user", "content": r["prompt"]}]),
                             "completion": " " + r["completion"]} for r in rows])
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=bs, num_train_epochs=1, learning_rate=lr,
                     lr_scheduler_type="cosine", max_length=max_len, report_to="none", save_strategy="no",
                     gradient_checkpointing=False,
                     logging_steps=10**6, bf16=gpu, use_cpu=not gpu, disable_tqdm=True, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    secs = trainer.train().metrics["train_runtime"]
    return {"seconds": secs, "tokens_per_s": tokens / secs}


def trl_rm(model_dir: str, pairs: list[dict], valid_rows_path: Path, out: Path, bs: int, lr: float, gpu: bool):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from trainers.data import group_preferences, parse_preference, read_file
    from trainers.models import ScalarHeadModel
    from trainers.reward import encode_groups, evaluate

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    ds = Dataset.from_list([{"prompt": plain_prompt([{"role": "user", "content": p["prompt"]}]),
                             "chosen": " " + p["chosen"], "rejected": " " + p["rejected"]} for p in pairs])
    args = RewardConfig(output_dir=str(out), per_device_train_batch_size=bs, num_train_epochs=1, learning_rate=lr,
                        lr_scheduler_type="cosine", report_to="none", save_strategy="no", logging_steps=10**6,
                        gradient_checkpointing=False, bf16=gpu, use_cpu=not gpu, disable_tqdm=True, dataloader_num_workers=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    secs = trainer.train().metrics["train_runtime"]
    n_tokens = sum(len(x["chosen_ids"]) + len(x["rejected_ids"]) for x in trainer.train_dataset)
    device = next(model.parameters()).device
    groups = group_preferences(read_file(valid_rows_path, parse_preference)[0])
    acc = evaluate(ScalarHeadModel(model), encode_groups(tok, groups, 512), tok.pad_token_id, 8, device,
                   torch.bfloat16 if gpu else torch.float32)["valid/accuracy"]
    return {"seconds": secs, "tokens_per_s": n_tokens / secs, "accuracy": acc}


# ---------------------------------------------------------------- main


def build_model(out: Path, hidden: int, layers: int, heads: int, inter: int, vocab: int, text: str) -> str:
    from trainers.tiny import TinyConfig, init_tiny

    corpus = out.parent / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    cfg = TinyConfig(out=str(out), text=str(corpus), vocab_size=512, hidden_size=hidden, num_layers=layers,
                     num_heads=heads, intermediate_size=inter, max_positions=4096)
    path = init_tiny(cfg)
    if vocab > 512:  # a realistic unembedding for the ~1B model: resize the random model, keep the tokenizer
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(path)
        m.resize_token_embeddings(vocab)
        m.save_pretrained(path)
    return str(path)


def flops_per_token(model_dir: str, seq: int) -> tuple[float, int]:
    from transformers import AutoConfig, AutoModelForCausalLM

    c = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(c).parameters())
    return 6 * n + 6 * c.num_hidden_layers * c.hidden_size * seq, n  # causal attention: half of 12*L*d*T


def run_suite(name: str, model: str, tmp: Path, a: argparse.Namespace, gpu: bool, rng: random.Random) -> list[dict]:
    from trainers.models import load_tokenizer

    dtype = "bfloat16" if gpu else "float32"
    rows = sft_rows(a.sft_rows if not gpu else a.gpu_sft_rows, a.words if not gpu else a.gpu_words, rng)
    data = write_jsonl(tmp / f"{name}_sft.jsonl", rows)
    tok = load_tokenizer(model)
    tokens = count_tokens(tok, rows)
    max_len = 4096
    bs = a.batch if not gpu else a.gpu_batch
    mbs = bs if not gpu else a.gpu_micro_batch
    res = []
    compile = False if gpu and a.gpu_no_compile else None  # None: the trainer's default (on with CUDA)
    s_ours = ours_sft(model, data, tmp / f"{name}_sft_ours", bs, mbs, 1e-4, max_len, dtype, tokens, compile=compile)
    row = {"suite": name + (" eager" if compile is False else ""), "what": "SFT tokens/s",
           "ours": s_ours["tokens_per_s"], "steady": s_ours["steady_tokens_per_s"], "steps": s_ours["steps"],
           "seconds": s_ours["seconds"], "first2_s": s_ours["first2_s"]}

    def add_mfu(row, res, n_rows, n_tokens):
        fpt, nparams = flops_per_token(model, n_tokens // n_rows)
        dev = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in dev), None)
        if peak:
            row["mfu"] = res["tokens_per_s"] * fpt / peak
            row["steady_mfu"] = res["steady_tokens_per_s"] * fpt / peak
        row["params"] = nparams

    if gpu:
        add_mfu(row, s_ours, len(rows), tokens)
    if gpu and a.gpu_eager_rows:  # the same trainer with --no-compile, on the first rows
        erows = rows[:a.gpu_eager_rows]
        etok = count_tokens(tok, erows)
        edata = write_jsonl(tmp / f"{name}_sft_eager.jsonl", erows)
        e = ours_sft(model, edata, tmp / f"{name}_sft_eager", bs, mbs, 1e-4, max_len, dtype, etok, compile=False)
        erow = {"suite": name + " eager", "what": "SFT tokens/s", "ours": e["tokens_per_s"],
                "steady": e["steady_tokens_per_s"], "steps": e["steps"], "seconds": e["seconds"], "first2_s": e["first2_s"]}
        add_mfu(erow, e, len(erows), etok)
        res.append(erow)
    if not a.skip_trl and (not gpu or a.gpu_trl):
        try:
            t = trl_sft(model, rows, tmp / f"{name}_sft_trl", mbs, 1e-4, max_len, tokens, gpu)
        except Exception as e:  # TRL missing or incompatible there: report, keep our numbers
            print(f"TRL SFTTrainer failed: {type(e).__name__}: {e}", file=sys.stderr)
            res.append(row)
            return res
        row["trl"] = t["tokens_per_s"]
        row["ratio"] = s_ours["tokens_per_s"] / t["tokens_per_s"]
        if "mfu" in row:
            row["trl_mfu"] = row["mfu"] / row["ratio"]
    res.append(row)
    if gpu and not a.gpu_rm:
        return res
    rrng = random.Random(1)
    train_rows = ranking_rows(a.rm_groups, rrng)
    valid_rows = ranking_rows(a.rm_valid_groups, rrng, split="valid")
    rank = write_jsonl(tmp / f"{name}_rank.jsonl", train_rows)
    valid = write_jsonl(tmp / f"{name}_rank_valid.jsonl", valid_rows)
    r_ours = ours_rm(model, rank, valid, tmp / f"{name}_rm_ours", a.rm_batch, a.rm_lr, dtype)
    row = {"suite": name, "what": "RM epoch s (K=4..9)", "ours": r_ours["seconds"], "ours_acc": r_ours["accuracy"],
           "ours_tok_s": r_ours["tokens_per_s"]}
    if not a.skip_trl:
        pairs = pairwise(train_rows)
        t = trl_rm(model, pairs, valid, tmp / f"{name}_rm_trl", a.rm_pair_batch, a.rm_lr, gpu)
        row.update({"trl": t["seconds"], "trl_acc": t["accuracy"], "trl_tok_s": t["tokens_per_s"],
                    "ratio": t["seconds"] / r_ours["seconds"], "pairs": len(pairs)})
    res.append(row)
    prompts = write_jsonl(tmp / f"{name}_prompts.jsonl", [{"prompt": r["prompt"]} for r in rows[:256]])
    p = ours_ppo(str(tmp / f"{name}_sft_ours" / "model"), str(tmp / f"{name}_rm_ours" / "model"), prompts, data,
                 tmp / f"{name}_ppo", a.ppo_steps, a.ppo_batch, a.ppo_new_tokens, dtype)
    res.append({"suite": name, "what": "PPO-ptx episodes/s", "ours": p["episodes_per_s"],
                "gen_share": p["generation_share"]})
    return res


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict]) -> None:
    head = f"| {'suite':<18} | {'metric':<20} | {'ours':>10} | {'TRL':>10} | {'ours/TRL speed':>14} | {'held-out acc ours / TRL':>24} | {'notes':<30} |"
    print(head)
    print("|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        notes = []
        if "gen_share" in r:
            notes.append(f"generation {r['gen_share']:.0%} of time")
        if "mfu" in r:
            notes.append(f"MFU {r['mfu']:.1%}" + (f" (TRL {r['trl_mfu']:.1%})" if "trl_mfu" in r else "")
                         + f", steady-state {r['steady_mfu']:.1%}")
        elif "steady" in r:
            notes.append(f"steady-state {r['steady']:.0f} tok/s")
        if "steps" in r:
            notes.append(f"{r['steps']} steps in {r['seconds']:.1f} s (first 2: {r['first2_s']:.1f} s); "
                         f"steady {r['steady']:.0f} tok/s")
        if "params" in r:
            notes.append(f"{r['params'] / 1e9:.2f}B params")
        if "ours_tok_s" in r:
            notes.append(f"tok/s {r['ours_tok_s']:.0f} vs {fmt(r.get('trl_tok_s'), '.0f')}; {r.get('pairs', '-')} pairs")
        acc = f"{r['ours_acc']:.3f} / {fmt(r.get('trl_acc'), '.3f')}" if "ours_acc" in r else "-"
        print(f"| {r['suite']:<18} | {r['what']:<20} | {r['ours']:>10.2f} | {fmt(r.get('trl'), '.2f'):>10} | "
              f"{fmt(r.get('ratio'), '.2f') + 'x' if r.get('ratio') else '-':>14} | {acc:>24} | {'; '.join(notes):<30} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft-rows", type=int, default=256)
    ap.add_argument("--words", type=int, default=48, help="words per SFT completion")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rm-groups", type=int, default=96)
    ap.add_argument("--rm-valid-groups", type=int, default=32)
    ap.add_argument("--rm-batch", type=int, default=8, help="prompts per step (ours; our default)")
    ap.add_argument("--rm-pair-batch", type=int, default=16, help="pairs per step (TRL)")
    ap.add_argument("--rm-lr", type=float, default=1e-3)
    ap.add_argument("--ppo-steps", type=int, default=6)
    ap.add_argument("--ppo-batch", type=int, default=16)
    ap.add_argument("--ppo-new-tokens", type=int, default=32)
    ap.add_argument("--cpu-hidden", type=int, default=128)
    ap.add_argument("--cpu-layers", type=int, default=4)
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--gpu-hidden", type=int, default=2048)
    ap.add_argument("--gpu-layers", type=int, default=16)
    ap.add_argument("--gpu-inter", type=int, default=5632)
    ap.add_argument("--gpu-vocab", type=int, default=32000)
    ap.add_argument("--gpu-sft-rows", type=int, default=8192, help="SFT rows on the GPU (256 steps of 32: "
                    "long enough to amortise the compile warm-up the way a real SFT run does)")
    ap.add_argument("--gpu-words", type=int, default=700, help="words per completion (~1k tokens per row)")
    ap.add_argument("--gpu-batch", type=int, default=32)
    ap.add_argument("--gpu-micro-batch", type=int, default=16)
    ap.add_argument("--gpu-compile", action="store_true", help="(the default now; kept for old command lines)")
    ap.add_argument("--gpu-no-compile", action="store_true", help="run our SFT eager (--no-compile) on the GPU")
    ap.add_argument("--gpu-eager-rows", type=int, default=0,
                    help="also run our SFT with --no-compile on the first N GPU rows")
    ap.add_argument("--gpu-trl", action="store_true", help="also run TRL's SFTTrainer on the GPU model")
    ap.add_argument("--gpu-rm", action="store_true", help="also run RM and PPO on the GPU model")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    rows: list[dict] = []
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not a.gpu_only and not torch.cuda.is_available():  # the trainers use the GPU when there is one
            (tmp / "cpu").mkdir()
            model = build_model(tmp / "cpu" / "model", a.cpu_hidden, a.cpu_layers, 4, a.cpu_hidden * 2, 512, text)
            rows += run_suite(f"cpu tiny ({a.cpu_hidden}x{a.cpu_layers})", model, tmp / "cpu", a, False, rng)
        if torch.cuda.is_available():
            (tmp / "gpu").mkdir()
            model = build_model(tmp / "gpu" / "model", a.gpu_hidden, a.gpu_layers, a.gpu_hidden // 64, a.gpu_inter,
                                a.gpu_vocab, text)
            rows += run_suite(f"gpu ~1B bf16 ({a.gpu_hidden}x{a.gpu_layers})", model, tmp / "gpu", a, True, rng)
    print()
    print(f"machine: {machine()}")
    print_table(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def machine() -> str:
    import platform

    s = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name()}"
    return s


if __name__ == "__main__":
    main()
