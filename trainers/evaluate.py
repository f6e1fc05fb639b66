"""``python -m trainers eval``: automatic evaluations of policies, as InstructGPT measured them.

For each model of ``--model`` (one in memory at a time, each sampling from the same seed):

- ``--prompts``: one response per prompt (plain temperature sampling, as ``generate`` and PPO);
  the mean RM score of the responses (``--reward-model``, bias included, scored as PPO scores
  them: decoded, re-encoded with the RM's tokenizer) and the mean per-response KL to
  ``--reference``: sum over the response tokens (up to and including EOS) of
  log pi(y_t) - log pi_ref(y_t), both at the sampling temperature (temperature 0: greedy
  responses, log-probs at temperature 1), as PPO's ``eval/kl``;
- ``--corpus``: the token-weighted mean next-token negative log-likelihood of held-out
  pretraining documents, each tokenized on its own and cut to its first ``max_length`` tokens as
  PPO's ptx term does, and perplexity = exp(nll): the "alignment tax";

and once, for the RM: ``--comparisons``, its pairwise accuracy on held-out comparisons, overall and
per ``labeler_group`` (``train`` / ``heldout``; the paper's 72.4% vs 69.6%). Ties give no pair.

Writes ``<out>/results.json`` (docs/formats.md, "eval results"), ``<out>/metrics.jsonl``
(``progress`` rows, then one ``eval/...`` row per result) and ``<out>/config.json``.
"""

from __future__ import annotations

import gc
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from trainers.common import Metrics, init_distributed, progress, resolve_dtype, set_seed
from trainers.config import write_config
from trainers.configs import EvalConfig
from trainers.data import (
    Messages, PromptExample, RankGroup, RowError, group_preferences, parse_preference, parse_prompt, read_file,
    read_pretrain,
)
from trainers.errors import ConfigError, DataError
from trainers.generate import decode_response, sample_responses
from trainers.models import load_causal_lm, load_scalar_model, load_tokenizer, pad_batch
from trainers.reward import score_texts
from trainers.rollout import build_batch, policy_forward

GROUPS = ("train", "heldout")


# ---------------------------------------------------------------- corpus NLL


def corpus_ids(tok: Any, docs: list[str], max_length: int) -> list[list[int]]:
    """Each document tokenized on its own with the default special tokens (as PPO's ptx term),
    cut to its first ``max_length`` tokens; documents of under 2 tokens (no target) are left out."""
    out = []
    for text in docs:
        ids = list(tok(text, add_special_tokens=True)["input_ids"][:max_length])
        if len(ids) >= 2:
            out.append(ids)
    return out


@torch.no_grad()
def corpus_nll(model: Any, seqs: list[list[int]], pad_id: int, device: torch.device, batch_size: int,
               on_batch: Callable[[], None] | None = None) -> tuple[float, int]:
    """(summed next-token NLL in nats, number of predicted tokens) over ``seqs``.

    Right-padded batches (longest first, so little padding); pads carry no target. The mean is
    the sum over the count: token-weighted, so longer documents weigh more (as the ptx loss).
    """
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    total = 0.0
    count = 0
    for s in range(0, len(order), batch_size):
        ids, mask = pad_batch([seqs[i] for i in order[s:s + batch_size]], pad_id, "right", device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((labels != -100).sum())
        if on_batch is not None:
            on_batch()
    return total, count


# ---------------------------------------------------------------- sampled responses


@dataclass
class Responses:
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens, EOS included
    kls: list[float] = field(default_factory=list)    # per response; empty without a reference


@torch.no_grad()
def sample_and_measure(policy: Any, tok: Any, ref: Any | None, prompts: list[Messages], cfg: EvalConfig,
                       device: torch.device, on_batch: Callable[[], None] | None = None) -> Responses:
    """One response per prompt; with ``ref``, each response's summed log-ratio log pi - log pi_ref."""
    policy.eval()
    t = cfg.temperature if cfg.temperature > 0 else 1.0
    res = Responses()
    for s in range(0, len(prompts), cfg.batch_size):
        samples = sample_responses(policy, tok, prompts[s:s + cfg.batch_size], cfg.max_new_tokens, cfg.temperature,
                                   device, cfg.max_length)
        res.texts += [decode_response(tok, x.response_ids) for x in samples]
        res.lengths += [len(x.response_ids) for x in samples]
        if ref is not None:
            ids, mask, width, rmask = build_batch(samples, tok.pad_token_id, device)
            logp, _ = policy_forward(policy, ids, mask, width, t)
            ref_logp, _ = policy_forward(ref, ids, mask, width, t)
            res.kls += ((logp.float() - ref_logp.float()) * rmask).sum(-1).double().tolist()
        if on_batch is not None:
            on_batch()
    return res


# ---------------------------------------------------------------- RM accuracy


def _all_tied(row: dict) -> bool:
    ranked = row.get("ranked")
    return ("completions" in row and isinstance(ranked, list) and all(isinstance(b, list) for b in ranked)
            and sum(1 for b in ranked if b) < 2)


def _parse_comparison(row: dict) -> tuple[Any, str | None] | None:
    """(native group or pairwise tuple, labeler group); None for a ranking that is all ties (no pair)."""
    group = row.get("labeler_group")
    if group is not None and group not in GROUPS:
        raise RowError("labeler_group", f"expected 'train' or 'heldout', got {group!r}")
    try:
        item = parse_preference(row)
    except RowError as e:
        if str(e).startswith("field 'ranked':") and _all_tied(row):
            return None  # ties give no pair; counted, not an error
        raise
    return item, group


def read_comparisons(path: str, skip_bad_rows: bool = False) -> tuple[dict[str | None, list[RankGroup]], dict]:
    """Held-out rankings by labeler group (None: the row names none, e.g. pairwise exports).

    Pairwise rows are regrouped by prompt (and ``ranking_id``) within their labeler group, as the
    RM trainer regroups them; every pair is counted once either way.
    """
    rows, report = read_file(path, _parse_comparison, skip_bad_rows)
    items: dict[str | None, list[Any]] = {}
    for r in rows:
        if r is not None:
            items.setdefault(r[1], []).append(r[0])
    groups = {g: group_preferences(v) for g, v in items.items()}
    info = {"rows": report.rows, "all_tied": sum(r is None for r in rows), "input": report.summary()}
    return {g: v for g, v in groups.items() if v}, info


@torch.no_grad()
def rm_accuracy(rm: Any, tok: Any, by_group: dict[str | None, list[RankGroup]], device: torch.device,
                max_length: int, batch_size: int, on_batch: Callable[[], None] | None = None) -> dict[str, Any]:
    """Share of pairs (winner, loser) the RM scores strictly higher for the winner: all, train, heldout."""
    rm.eval()
    correct = {"all": 0, **{g: 0 for g in GROUPS}}
    pairs = {"all": 0, **{g: 0 for g in GROUPS}}
    for label, groups in by_group.items():
        for s in range(0, len(groups), batch_size):
            chunk = groups[s:s + batch_size]
            prompts = [g.prompt for g in chunk for _ in g.completions]
            texts = [c for g in chunk for c in g.completions]
            scores = score_texts(rm, tok, prompts, texts, device, max_length, batch_size).tolist()
            off = 0
            for g in chunk:
                n_ok = sum(scores[off + w] > scores[off + lo] for w, lo in g.pairs)
                for key in ("all", label):
                    if key in correct:
                        correct[key] += n_ok
                        pairs[key] += len(g.pairs)
                off += len(g.completions)
            if on_batch is not None:
                on_batch()
    acc = {k: (correct[k] / pairs[k] if pairs[k] else None) for k in correct}
    return {**acc, "pairs": pairs}


# ---------------------------------------------------------------- the command


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every model of ``cfg.model``; returns (and writes) the results.json content."""
    cfg.validate()  # a config built directly (not by build_config) is checked too
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("eval runs in a single process: start it with python -m trainers eval, not torchrun")
    _, _, device = init_distributed()
    out = Path(cfg.out)
    prior = out / "config.json"
    if prior.is_file():
        try:
            kind = json.loads(prior.read_text(encoding="utf-8")).get("kind")
        except (ValueError, AttributeError):
            kind = None
        if kind != EvalConfig.__name__:
            raise ConfigError(f"--out {out}: it is another run's folder (its config.json is a {kind or 'unknown'} "
                              "config); write the evaluation elsewhere")
    models, names = cfg.models(), cfg.model_names()

    # Every input is read and checked before a model is loaded: a bad row costs no model time.
    prompts: list[PromptExample] = []
    docs: list[str] = []
    by_group: dict[str | None, list[RankGroup]] = {}
    if cfg.prompts:
        prompts = read_file(cfg.prompts, parse_prompt, cfg.skip_bad_rows)[0][: cfg.max_prompts]
    if cfg.corpus:
        docs = read_pretrain(cfg.corpus, cfg.skip_bad_rows)[0][: cfg.max_documents]
    if cfg.comparisons:
        by_group, _ = read_comparisons(cfg.comparisons, cfg.skip_bad_rows)
        if not by_group:
            raise DataError(f"{cfg.comparisons}: no preference pair (every ranking is all ties)")
    per_model = bool(prompts or docs)
    toks = [load_tokenizer(m) for m in models] if per_model else []
    use_ref = bool(prompts and cfg.reference)
    use_rm = bool(cfg.reward_model and (prompts or by_group))
    ref_tok = load_tokenizer(cfg.reference) if use_ref else None
    rm_tok = load_tokenizer(cfg.reward_model) if use_rm else None
    if ref_tok is not None:
        vocab = ref_tok.get_vocab()
        for path, tok in zip(models, toks):
            if tok.get_vocab() != vocab:
                raise ConfigError(f"--reference {cfg.reference} and --model {path} have different vocabularies: "
                                  "the KL needs the same tokenizer")
    doc_ids = [corpus_ids(tok, docs, cfg.max_length) for tok in toks] if docs else []
    for path, ids in zip(models, doc_ids):
        if not ids:
            raise DataError(f"{cfg.corpus}: no document of 2 tokens or more for {path}'s tokenizer")

    write_config(cfg, out)
    dtype = resolve_dtype(cfg.dtype, device)
    batches = lambda n: -(-n // cfg.batch_size)  # noqa: E731
    total = sum(batches(len(prompts)) + (batches(len(doc_ids[i])) if docs else 0) for i in range(len(toks)))
    total += batches(len(prompts)) * len(toks) if use_rm else 0  # RM scoring of each model's responses
    total += sum(batches(len(g)) for g in by_group.values())
    metrics = Metrics(out)
    metrics.total_steps = max(1, total)
    done = 0
    bar = progress(metrics.total_steps, "eval")

    def tick() -> None:
        nonlocal done
        done += 1
        metrics.log(done, {})  # a progress row for the app's worker
        bar.update(1)

    results: dict[str, dict[str, Any]] = {
        n: {"rm_score": None, "kl": None, "response_length": None, "corpus_nll": None, "corpus_ppl": None,
            "corpus_tokens": None} for n in names}
    responses: dict[str, Responses] = {}
    ref = load_causal_lm(cfg.reference, dtype).to(device).eval() if use_ref else None
    for i, (path, name, tok) in enumerate(zip(models, names, toks)):
        bar.set_description(f"eval {name}")
        set_seed(cfg.seed)
        policy = load_causal_lm(path, dtype).to(device).eval()
        if prompts:
            r = sample_and_measure(policy, tok, ref, [p.messages for p in prompts], cfg, device, tick)
            responses[name] = r
            results[name]["response_length"] = _mean([float(x) for x in r.lengths])
            results[name]["kl"] = _mean(r.kls)
        if docs:
            nll_sum, n_tok = corpus_nll(policy, doc_ids[i], tok.pad_token_id, device, cfg.batch_size, tick)
            nll = nll_sum / n_tok
            results[name].update(corpus_nll=nll, corpus_ppl=math.exp(min(nll, 700.0)), corpus_tokens=n_tok)
        del policy  # free it before the next one is loaded
        _free()
    if ref is not None:
        del ref
        _free()

    accuracy: dict[str, Any] | None = None
    if use_rm:
        bar.set_description("eval rm")
        rm = load_scalar_model(cfg.reward_model, dtype).to(device).eval()
        for name, r in responses.items():
            msgs = [p.messages for p in prompts]
            scores: list[float] = []
            for s in range(0, len(msgs), cfg.batch_size):
                scores += score_texts(rm, rm_tok, msgs[s:s + cfg.batch_size], r.texts[s:s + cfg.batch_size], device,
                                      cfg.max_length, cfg.batch_size).double().tolist()
                tick()
            results[name]["rm_score"] = _mean(scores)
        if by_group:
            accuracy = rm_accuracy(rm, rm_tok, by_group, device, cfg.max_length, cfg.batch_size, tick)
        del rm
        _free()
    bar.close()

    final: dict[str, float] = {}
    for name, vals in results.items():
        for key in ("rm_score", "kl", "response_length", "corpus_nll", "corpus_ppl"):
            if vals[key] is not None:
                final[f"eval/{name}/{key}"] = vals[key]
    if accuracy is not None:
        for key in ("all", *GROUPS):
            if accuracy[key] is not None:
                final[f"eval/rm_accuracy/{key}"] = accuracy[key]
    metrics.log(metrics.total_steps, final)
    payload: dict[str, Any] = {"models": results, "rm_accuracy": accuracy,
                               "prompts": len(prompts) if prompts else None,
                               "documents": len(docs) if docs else None}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "results.json")
    return payload
