"""Sharding at scale: peak memory per GPU and tokens/s of SFT and PPO with --fsdp, and the DDP attempt.

    python benchmarks/fsdp_scale.py                      # a node with N >= 2 GPUs: SFT 7B, PPO 3B on all of them
    python benchmarks/fsdp_scale.py --gpus 4 --sft-size 13b --ppo-size 7b
    python benchmarks/fsdp_scale.py --smoke              # CPU: tiny model, 2 gloo processes (proves the script)

Builds Llama models from config with random weights (nothing is downloaded; the point is memory
and throughput), then runs the trainers' own command lines under torchrun, once with ``--fsdp`` and
once without (DDP: every process holds the whole model, its gradients and AdamW state), and prints
one table:

- peak memory per GPU: the largest ``memory.used`` that ``nvidia-smi`` reported for any of the run's
  GPUs, sampled every 200 ms (CUDA context and the allocator's cache included);
- tokens/s: SFT's ``train/tokens_per_s`` (real prompt + response tokens over all processes, whole
  timed loop) and its steady state without the first 2 steps; PPO's episodes/s times the mean tokens
  of an episode (prompt + response), and its share of time in rollouts;
- status: ok, OOM (the run died of CUDA out-of-memory, as DDP should at these sizes), or the error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainers.common import metric_series, read_metrics  # noqa: E402

WORDS = ("red blue green cat dog bird tree house river sun good bad happy sad one two three four five six "
         "seven eight nine ten apple pear road car city sea wind rain snow").split()
# Llama shapes (multi-head attention, vocabulary 32,000): hidden, layers, heads, MLP width
PRESETS = {
    "tiny": (64, 2, 4, 128),
    "1b": (2048, 16, 32, 5632),     # 0.95B, the throughput benchmark's GPU model
    "3b": (3072, 26, 24, 8192),     # 3.1B
    "7b": (4096, 32, 32, 11008),    # 6.7B, Llama-2-7B's shape
    "13b": (5120, 40, 40, 13824),   # 13.0B
}


def build_llama(out: Path, preset: str, seed: int = 0) -> str:
    """A random Llama of ``preset``'s shape with the tiny BPE tokenizer, saved in bf16 (the trainers
    load it as fp32 master weights). Built on the GPU when there is one (fast), else on the CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.tiny import TinyConfig, init_tiny

    if (out / "config.json").is_file():
        return str(out)
    hidden, layers, heads, inter = PRESETS[preset]
    init_tiny(TinyConfig(out=str(out), max_positions=4096, seed=seed))  # the tokenizer (and the tiny model)
    if preset == "tiny":
        return str(out)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = tok.pad_token_id
    for f in out.glob("model*.safetensors"):
        f.unlink()
    model.save_pretrained(out, safe_serialization=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return str(out)


def n_params(model_dir: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).parameters())


def write_data(tmp: Path, rows: int, words: int, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    sft = [{"prompt": "Continue: " + " ".join(rng.choice(WORDS) for _ in range(words // 4)),
            "completion": " ".join(rng.choice(WORDS) for _ in range(words))} for _ in range(rows)]
    prompts = [{"prompt": r["prompt"], "prompt_id": i} for i, r in enumerate(sft)]
    for path, data in ((tmp / "sft.jsonl", sft), (tmp / "prompts.jsonl", prompts)):
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return tmp / "sft.jsonl", tmp / "prompts.jsonl"


class GpuMemory:
    """The largest ``memory.used`` (MiB) per GPU while it runs, from ``nvidia-smi -lms 200``."""

    def __init__(self, gpus: int):
        self.gpus, self.peak, self.proc = gpus, {}, None

    def __enter__(self):
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                i, used = (int(x) for x in line.split(","))
            except ValueError:
                continue
            if i < self.gpus:
                self.peak[i] = max(self.peak.get(i, 0), used)

    def __exit__(self, *exc):
        if self.proc:
            time.sleep(0.5)
            self.proc.terminate()
            self.proc.wait()

    def max_gib(self) -> float | None:
        return max(self.peak.values()) / 1024 if self.peak else None


def run_trainer(kind: str, args: list[str], nproc: int, out: Path, timeout: int, planned_steps: int) -> dict:
    """``torchrun --nproc-per-node N -m trainers KIND ARGS``; status, seconds, peak memory, its metrics."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(29500 + random.Random().randint(0, 2000)), "-m", "trainers", kind, *args]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    with GpuMemory(nproc) as mem:
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    secs = time.time() - t0
    (out.parent / f"{out.name}.stderr.txt").write_text(err or "", encoding="utf-8")
    oom = "OutOfMemoryError" in err or "CUDA out of memory" in err
    metrics = read_metrics(out) if (out / "metrics.jsonl").is_file() else []
    last = (err.strip().splitlines() or ["?"])[-1][:100]
    if rc == 0:
        status = "ok"
    elif oom:
        status = "OOM"
    elif metrics and max(r["step"] for r in metrics) >= planned_steps:  # e.g. the checkpoint filled the disk
        status = f"trained; exit {rc} after: {last}"
    else:
        status = f"failed ({rc}): {last}"
    return {"status": status, "seconds": secs, "peak_gib": mem.max_gib(), "metrics": metrics}


def sft_row(res: dict) -> dict:
    m = res["metrics"]
    row = {"tokens_per_s": None, "steady": None}
    tps = metric_series(m, "train/tokens_per_s")
    if tps:
        el = dict(metric_series(m, "train/elapsed_s"))
        seen = {s: v * el[s] for s, v in tps}
        n = max(el)
        row["tokens_per_s"] = tps[-1][1]
        row["steady"] = (seen[n] - seen[2]) / (el[n] - el[2]) if n > 3 else None
        row["steps"] = n
    return row


def ppo_row(res: dict, prompt_tokens: float) -> dict:
    m = res["metrics"]
    eps = metric_series(m, "episodes_per_s")
    if not eps:
        return {"tokens_per_s": None}
    resp = [v for _, v in metric_series(m, "response/length")]
    per_episode = prompt_tokens + sum(resp) / len(resp)
    return {"tokens_per_s": eps[-1][1] * per_episode, "episodes_per_s": eps[-1][1], "steps": eps[-1][0],
            "rollout_share": metric_series(m, "time/generation_share")[-1][1]}


def mean_prompt_tokens(model_dir: str, prompts: Path, limit: int) -> float:
    from trainers.formatting import encode_prompt
    from trainers.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    rows = [json.loads(x) for x in prompts.read_text().splitlines()[:limit]]
    return sum(len(encode_prompt(tok, [{"role": "user", "content": r["prompt"]}])) for r in rows) / len(rows)


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict]) -> None:
    print(f"| {'trainer':<7} | {'model':<12} | {'mode':<5} | {'procs':>5} | {'status':<10} | {'peak GiB/GPU':>12} | "
          f"{'tokens/s':>10} | {'steady tokens/s':>15} | notes |")
    print("|---|---|---|---:|---|---:|---:|---:|---|")
    for r in rows:
        notes = []
        if r.get("episodes_per_s") is not None:
            notes.append(f"{r['episodes_per_s']:.2f} episodes/s, rollouts {r['rollout_share']:.0%} of time")
        if r.get("steps"):
            notes.append(f"{r['steps']} steps in {r['seconds']:.0f} s (launch and load included)")
        print(f"| {r['trainer']:<7} | {r['model']:<12} | {r['mode']:<5} | {r['procs']:>5} | {r['status'][:60]:<10} | "
              f"{fmt(r.get('peak_gib')):>12} | {fmt(r.get('tokens_per_s'), ',.0f'):>10} | "
              f"{fmt(r.get('steady'), ',.0f'):>15} | {'; '.join(notes)} |")


def versions() -> str:
    import platform

    import transformers

    s = f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}"
    if torch.cuda.is_available():
        s += (f", CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name()}, "
              f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    else:
        s += f", CPU only ({os.cpu_count()} cores, gloo)"
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=torch.cuda.device_count(), help="processes per run (default: all GPUs)")
    ap.add_argument("--sft-size", default="7b", choices=PRESETS)
    ap.add_argument("--ppo-size", default="3b", choices=PRESETS, help="PPO holds four models of this size")
    ap.add_argument("--only", choices=("sft", "ppo"), help="run one trainer only")
    ap.add_argument("--skip-ddp", action="store_true", help="leave out the DDP attempts")
    ap.add_argument("--sft-rows", type=int, default=0, help="SFT rows (default: 8 per process per step, 20 steps)")
    ap.add_argument("--words", type=int, default=600, help="words per SFT completion (~800 tokens per row)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--ppo-steps", type=int, default=4)
    ap.add_argument("--ppo-new-tokens", type=int, default=128)
    ap.add_argument("--sft-args", default="", help="extra SFT flags, e.g. '--no-compile --gradient-checkpointing'")
    ap.add_argument("--ppo-args", default="", help="extra PPO flags")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--workdir", help="keep models and runs here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--smoke", action="store_true", help="CPU check of the script: tiny model, 2 processes, 2 steps")
    a = ap.parse_args()
    if a.smoke:
        a.gpus, a.sft_size, a.ppo_size, a.words, a.max_length, a.micro_batch = 2, "tiny", "tiny", 24, 128, 2
        a.ppo_steps, a.ppo_new_tokens, a.sft_rows = 2, 8, 32
    if a.gpus < 2:
        sys.exit(f"fsdp_scale needs at least 2 processes (GPUs) to shard over; this machine shows {a.gpus} GPU(s). "
                 "Use --smoke on CPU.")
    gpu = torch.cuda.is_available() and not a.smoke
    if a.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainers' processes take the CPU path (gloo)
    n = a.gpus
    steps = 2 if a.smoke else 20
    sft_rows = a.sft_rows or 8 * n * steps
    batch = sft_rows // steps
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(a.workdir or d)
        tmp.mkdir(parents=True, exist_ok=True)
        sft_data, prompts = write_data(tmp, max(sft_rows, 64), a.words)
        models = {}
        for trainer, size in (("sft", a.sft_size), ("ppo", a.ppo_size)):
            if a.only in (None, trainer) and size not in models:
                print(f"building the {size} model ...", flush=True)
                models[size] = build_llama(tmp / f"model-{size}", size)
        plan = [("sft", "fsdp"), ("sft", "ddp"), ("ppo", "fsdp"), ("ppo", "ddp")]
        for trainer, mode in plan:
            if (a.only and trainer != a.only) or (a.skip_ddp and mode == "ddp"):
                continue
            size = a.sft_size if trainer == "sft" else a.ppo_size
            model = models[size]
            out = tmp / f"{trainer}-{mode}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            common = ["--out", str(out), "--keep-checkpoints", "1"] + (["--fsdp"] if mode == "fsdp" else [])
            if trainer == "sft":
                args = ["--model", model, "--data", str(sft_data), "--epochs", "1", "--batch-size", str(batch),
                        "--micro-batch-size", str(a.micro_batch), "--max-length", str(a.max_length),
                        "--valid-fraction", "0", "--max-steps", str(steps), *common, *a.sft_args.split()]
            else:  # a random RM and value model from the same folder: four models of the same size
                args = ["--policy", model, "--reward-model", model, "--prompts", str(prompts), "--ptx-coef", "0",
                        "--steps", str(a.ppo_steps), "--rollout-batch-size", str(8 * n),
                        "--generation-batch-size", "8", "--minibatch-size", str(2 * n),
                        "--max-new-tokens", str(a.ppo_new_tokens), "--eval-prompts", "0", *common,
                        *a.ppo_args.split()]
            res = run_trainer(trainer, args, n, out, a.timeout, steps if trainer == "sft" else a.ppo_steps)
            params = n_params(model)
            shown = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
            row = {"trainer": trainer, "model": f"{size} ({shown})", "mode": mode, "procs": n,
                   "status": res["status"], "peak_gib": res["peak_gib"], "seconds": res["seconds"]}
            row.update(sft_row(res) if trainer == "sft" else ppo_row(res, mean_prompt_tokens(model, prompts, 64)))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items()}), flush=True)
            for written in ("checkpoints", "model"):  # a 7B run writes ~135 GB of them: keep metrics and logs only
                shutil.rmtree(out / written, ignore_errors=True)
    print()
    print(f"machine: {versions()}" + ("" if gpu else " (smoke: CPU, gloo; no memory figures)"))
    print_table(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
