"""Sampling responses: K samples per prompt, from one model or several in turn, into a
completions file the app imports (and a metrics.jsonl progress stream beside it).

Sampling is plain temperature sampling (no top-k, no top-p) so that PPO can recompute the
same log-probabilities; generation stops at EOS, and a response that reaches
``max_new_tokens`` without EOS is reported as such (``has_eos``). ``--engine`` picks who samples:
transformers' ``generate`` (default) or vLLM where it is installed and a GPU is present
(trainers/engines.py).
"""

from __future__ import annotations

import gc
import gzip
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from trainers.common import Metrics, init_distributed, is_main, progress, resolve_dtype, set_seed
from trainers.configs import GenerateConfig
from trainers.data import PromptExample, parse_prompt, read_file
from trainers.engines import Sample, check_engine, make_engine, sample_responses  # noqa: F401 (re-exported)
from trainers.errors import ConfigError
from trainers.models import load_causal_lm, load_tokenizer


def decode_response(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_completions(cfg: GenerateConfig) -> dict[str, Any]:
    """K samples per prompt from each model of ``cfg.model`` in turn, one model in memory at a time.

    Rows come model by model, each model's rows in prompt order; every model starts from the same
    seed. ``metrics.jsonl`` beside ``out`` gets ``generate/rows`` (rows written so far) after each
    batch, with a ``progress`` row (0..1) for the app's worker.
    """
    cfg.validate()  # a config built directly (not by build_config) is checked too
    check_engine(cfg.engine)  # vllm without vllm or a GPU: say so before anything is loaded or written
    _, _, device = init_distributed()
    set_seed(cfg.seed)
    prompts, report = read_file(cfg.prompts, parse_prompt, cfg.skip_bad_rows)
    models, names = cfg.models(), cfg.model_names()
    toks = [load_tokenizer(m) for m in models]  # small; a missing model fails before anything is written
    dtype = resolve_dtype(cfg.dtype, device)
    settings = {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                "top_k": None, "top_p": None, "engine": cfg.engine}
    jobs: list[PromptExample] = [p for p in prompts for _ in range(cfg.k)]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if (out.parent / "config.json").exists():
        raise ConfigError(f"--out {out}: its folder is another trainer's run folder (it holds config.json), "
                          "whose metrics.jsonl generate would overwrite; write the completions elsewhere")
    if is_main():  # the resolved config beside the output: <out>.config.json
        payload = {"kind": type(cfg).__name__, **asdict(cfg)}
        out.with_name(out.name + ".config.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    total = len(jobs) * len(models)
    metrics = Metrics(out.parent)  # <out folder>/metrics.jsonl, started afresh
    metrics.total_steps = total
    opener = gzip.open if out.name.endswith(".gz") else open
    n_eos = done = 0
    per_model: list[dict[str, Any]] = []
    with opener(out, "wt", encoding="utf-8") as fh, progress(total, "generate") as bar:
        for path, name, tok in zip(models, names, toks):
            set_seed(cfg.seed)
            model = load_causal_lm(path, dtype).to(device) if cfg.engine == "transformers" else None
            engine = make_engine(cfg.engine, model=model, model_path=path, tokenizer=tok, device=device, dtype=dtype,
                                 batch_size=cfg.batch_size, seed=cfg.seed,
                                 max_model_len=cfg.max_prompt_length + cfg.max_new_tokens,
                                 gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
            if len(models) > 1:
                bar.set_description(f"generate {name}")
            m_eos = 0
            for start in range(0, len(jobs), cfg.batch_size):
                batch = jobs[start:start + cfg.batch_size]
                samples = engine.sample([p.messages for p in batch], cfg.max_new_tokens, cfg.temperature,
                                        cfg.max_prompt_length)
                for p, s in zip(batch, samples):
                    row: dict[str, Any] = {"prompt": p.text, "completion": decode_response(tok, s.response_ids),
                                           "model": name, "settings": {**settings, "finished": s.has_eos}}
                    if p.prompt_id is not None:
                        row = {"prompt_id": p.prompt_id, **row}
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    m_eos += s.has_eos
                done += len(batch)
                metrics.log(done, {"generate/rows": done})
                bar.update(len(batch))
            n_eos += m_eos
            per_model.append({"model": path, "name": name, "rows": len(jobs), "finished_with_eos": m_eos})
            engine.close()  # free it before the next one is loaded
            del model, engine
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = {"rows": total, "finished_with_eos": n_eos, "input": report.summary(), "out": str(out)}
    if len(models) > 1:
        result["models"] = per_model
    if is_main():
        print(json.dumps(result))
    return result
