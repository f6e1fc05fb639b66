"""PPO generation engines: episodes/s and generation share with transformers' generate vs vLLM.

    python benchmarks/ppo_engines.py             # a CUDA GPU with the vllm extra: the ~1B Llama, both engines
    python benchmarks/ppo_engines.py --size 3b --new-tokens 256
    python benchmarks/ppo_engines.py --smoke     # CPU: tiny model, transformers only (proves the script)

The same policy (a Llama built from config with random weights: nothing is downloaded), the same
prompts, seed and PPO settings, once per engine (``--engine``), each in its own process so that one
engine's GPU memory does not weigh on the other. The reward and value models start from the same
folder (random, as large as the policy): PPO runs with its four models, as on a real run. Prints one
table per engine:

- episodes/s: PPO's ``episodes_per_s`` over the whole run, and steady state (without the first
  iteration: CUDA warm-up; vLLM's CUDA graphs are captured when it starts, before the first);
- sampling share: seconds in the engine's ``sample`` plus the weight push, over the iteration's
  seconds (``time/generation_s`` + ``time/training_s``); rollout share: PPO's own
  ``time/generation_share``, which also holds the log-prob, value and RM passes of the rollout;
- weight push: seconds per iteration copying the policy into vLLM (0 for transformers);
- engine start: seconds to build the engine (vLLM: load, profile, CUDA graphs), not in episodes/s;
- generate rows/s: ``python -m trainers generate`` with K samples per prompt, the same model.
A random model seldom samples EOS, so responses run to ``--new-tokens`` with either engine: both
decode the same number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRAINERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from fsdp_scale import PRESETS, build_llama, n_params, versions, write_data  # noqa: E402
from trainers.common import metric_series, read_metrics  # noqa: E402
from trainers.engines import missing_for  # noqa: E402


def _timed(cls, name: str, log: list[float]) -> None:
    """Wrap ``cls.name`` to append its seconds (after a CUDA sync) to ``log``: instrumentation only."""
    fn = getattr(cls, name)

    def wrapper(self, *args, **kw):
        t = time.perf_counter()
        out = fn(self, *args, **kw)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        log.append(time.perf_counter() - t)
        return out

    setattr(cls, name, wrapper)


def child_ppo(a: argparse.Namespace) -> dict:
    import trainers.engines as E
    import trainers.ppo as ppo

    samples: list[float] = []
    pushes: list[float] = []
    for cls in (E.TransformersEngine, E.VLLMEngine):
        _timed(cls, "sample", samples)
        _timed(cls, "load_weights", pushes)
    started: list[float] = []
    make = ppo.make_engine

    def timed_make(*args, **kw):
        t = time.perf_counter()
        engine = make(*args, **kw)
        started.append(time.perf_counter() - t)
        return engine

    ppo.make_engine = timed_make
    out = Path(a.out)
    cfg = ppo.PPOConfig(policy=a.model, reward_model=a.model, prompts=a.prompts, out=str(out), steps=a.steps,
                        rollout_batch_size=a.rollout_batch, generation_batch_size=a.generation_batch,
                        minibatch_size=a.minibatch, ppo_epochs=1, ptx_coef=0.0, max_new_tokens=a.new_tokens,
                        max_prompt_length=256, eval_prompts=0, engine=a.child,
                        vllm_gpu_memory_utilization=a.vllm_gpu_memory_utilization, keep_checkpoints=1, seed=0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    ppo.train_ppo(cfg)
    m = read_metrics(out)
    gen = [v for _, v in metric_series(m, "time/generation_s")]
    train = [v for _, v in metric_series(m, "time/training_s")]
    it = [g + t for g, t in zip(gen, train)]
    steady = it[1:] or it
    return {
        "engine": a.child, "steps": len(it), "episodes_per_s": metric_series(m, "episodes_per_s")[-1][1],
        "steady_episodes_per_s": a.rollout_batch * len(steady) / sum(steady),
        "sampling_share": (sum(samples) + sum(pushes)) / sum(it),
        "steady_sampling_share": (sum(samples[1:]) + sum(pushes[1:])) / sum(steady) if len(it) > 1 else None,
        "rollout_share": metric_series(m, "time/generation_share")[-1][1],
        "push_s": sum(pushes) / max(1, len(pushes)), "start_s": started[0] if started else None,
        "iteration_s": sum(steady) / len(steady), "response_length": metric_series(m, "response/length")[-1][1],
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None,
    }


def child_generate(a: argparse.Namespace) -> dict:
    from trainers.generate import GenerateConfig, generate_completions

    out = Path(a.out) / "completions.jsonl"
    t = time.perf_counter()
    res = generate_completions(GenerateConfig(model=a.model, prompts=a.prompts, out=str(out), k=a.k,
                                              max_new_tokens=a.new_tokens, batch_size=a.gen_batch, engine=a.child,
                                              vllm_gpu_memory_utilization=0.9))
    secs = time.perf_counter() - t  # engine start included: what a generate run costs
    return {"engine": a.child, "rows": res["rows"], "seconds": secs, "rows_per_s": res["rows"] / secs}


def run_child(kind: str, engine: str, a: argparse.Namespace, model: str, prompts: Path, out: Path) -> dict:
    result = out / "result.json"
    cmd = [sys.executable, __file__, "--child", engine, "--child-kind", kind, "--model", model, "--prompts",
           str(prompts), "--out", str(out), "--result", str(result)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
        if k in ("steps", "rollout_batch", "generation_batch", "minibatch", "new_tokens", "k", "gen_batch",
                 "vllm_gpu_memory_utilization")]
    print("$", " ".join(cmd[1:]), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    (out.parent / f"{out.name}.stderr.txt").write_text(p.stderr, encoding="utf-8")
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
        return {"engine": engine, "error": f"exit {p.returncode}: {last}"}
    return json.loads(result.read_text())


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def print_tables(ppo: list[dict], gen: list[dict]) -> None:
    print(f"| {'engine':<12} | {'episodes/s':>10} | {'steady episodes/s':>17} | {'sampling share':>14} | "
          f"{'rollout share':>13} | {'weight push s':>13} | {'engine start s':>14} | {'peak GiB':>8} | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in ppo:
        if "error" in r or "skipped" in r:
            print(f"| {r['engine']:<12} | {'-':>10} | {'-':>17} | {'-':>14} | {'-':>13} | {'-':>13} | {'-':>14} | "
                  f"{'-':>8} | {r.get('error') or r['skipped']} |")
            continue
        share = f"{r['sampling_share']:.0%}" + (f" ({r['steady_sampling_share']:.0%})" if r.get("steady_sampling_share") else "")
        print(f"| {r['engine']:<12} | {r['episodes_per_s']:>10.2f} | {r['steady_episodes_per_s']:>17.2f} | {share:>14} | "
              f"{r['rollout_share']:>13.0%} | {r['push_s']:>13.3f} | {fmt(r['start_s'], '.1f'):>14} | "
              f"{fmt(r['peak_reserved_gib'], '.1f'):>8} | {r['steps']} iterations, {r['iteration_s']:.2f} s each "
              f"(steady), responses {r['response_length']:.0f} tokens |")
    if gen:
        print()
        print(f"| {'engine':<12} | {'generate rows':>13} | {'seconds':>8} | {'rows/s':>8} | notes |")
        print("|---|---:|---:|---:|---|")
        for r in gen:
            if "error" in r or "skipped" in r:
                print(f"| {r['engine']:<12} | {'-':>13} | {'-':>8} | {'-':>8} | {r.get('error') or r['skipped']} |")
            else:
                print(f"| {r['engine']:<12} | {r['rows']:>13} | {r['seconds']:>8.1f} | {r['rows_per_s']:>8.1f} | "
                      "engine start and model load included |")


def vllm_version() -> str:
    try:
        from importlib.metadata import version

        return f"vllm {version('vllm')}"
    except Exception:  # noqa: BLE001
        return "vllm not installed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1b", choices=PRESETS, help="policy shape (default: the ~1B Llama)")
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--steps", type=int, default=6, help="PPO iterations per engine")
    ap.add_argument("--rollout-batch", type=int, default=64)
    ap.add_argument("--generation-batch", type=int, default=64, help="prompts per generate() call (transformers)")
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--k", type=int, default=4, help="generate: samples per prompt")
    ap.add_argument("--gen-prompts", type=int, default=128, help="generate: prompts (0 = skip the generate rows)")
    ap.add_argument("--gen-batch", type=int, default=128, help="generate: prompts per batch, both engines")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per engine")
    ap.add_argument("--workdir", help="keep the model and runs here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--smoke", action="store_true", help="CPU check of the script: tiny model, 2 iterations")
    # internal: one engine's run in its own process
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-kind", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--prompts", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = child_ppo(a) if a.child_kind == "ppo" else child_generate(a)
        Path(a.result).write_text(json.dumps(res))
        return
    if a.smoke:
        a.size, a.steps, a.rollout_batch, a.generation_batch, a.minibatch, a.new_tokens = "tiny", 2, 8, 8, 4, 8
        a.gen_prompts, a.gen_batch, a.k = 4, 4, 2
    ppo_rows: list[dict] = []
    gen_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(a.workdir or d)
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"building the {a.size} model ...", flush=True)
        model = build_llama(tmp / f"model-{a.size}", a.size)
        _, prompts = write_data(tmp, max(256, a.gen_prompts), 32)
        gen_prompts = tmp / "gen_prompts.jsonl"
        gen_prompts.write_text("".join(prompts.read_text().splitlines(keepends=True)[:a.gen_prompts]), encoding="utf-8")
        for engine in a.engines.split(","):
            missing = missing_for(engine)
            if missing:
                skipped = {"engine": engine, "skipped": "skipped: " + "; ".join(missing)}
                ppo_rows.append(skipped)
                if a.gen_prompts:
                    gen_rows.append(skipped)
                continue
            ppo_rows.append(run_child("ppo", engine, a, model, prompts, tmp / f"ppo-{engine}"))
            print(json.dumps(ppo_rows[-1]), flush=True)
            if a.gen_prompts:
                gen_rows.append(run_child("generate", engine, a, model, gen_prompts, tmp / f"generate-{engine}"))
                print(json.dumps(gen_rows[-1]), flush=True)
        params = n_params(model)
    print()
    print(f"machine: {versions()}, {vllm_version()}")
    size = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
    print(f"policy: {a.size} Llama from config ({size} parameters, random weights), four PPO models; "
          f"{a.steps} iterations of {a.rollout_batch} prompts, {a.new_tokens} new tokens, minibatch {a.minibatch}, "
          f"1 PPO epoch, temperature 1, γ_ptx = 0; transformers: {a.generation_batch} prompts per generate() call; "
          f"vLLM: colocated, gpu_memory_utilization {a.vllm_gpu_memory_utilization}")
    print_tables(ppo_rows, gen_rows)
    if a.json:
        Path(a.json).write_text(json.dumps({"ppo": ppo_rows, "generate": gen_rows}, indent=1))


if __name__ == "__main__":
    main()
