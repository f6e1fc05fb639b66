"""Loading models and tokenizers; the scalar-head reward/value model; batching helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.errors import ConfigError
from trainers.losses import last_token_index, position_ids_from_mask


def _check_source(name: str) -> None:
    if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in name:
        raise ConfigError(f"model {name!r}: no such folder (and the hub is offline)")


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    _check_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer from {name!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.sep_token
    return tok


def load_causal_lm(name: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    _check_source(name)
    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load causal LM from {name!r}: {str(e).splitlines()[0]}") from None


def compile_blocks(model: nn.Module) -> int:
    """Regional ``torch.compile``: compile each transformer block in place (they share one compiled
    graph, so the warm-up is that of one block, not the whole model). Falls back to compiling the
    whole model when no block list is found. Returns the number of compiled modules."""
    blocks = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks", "layer"):
            blocks = mod
            break
    # dynamic=True: one graph for every sequence width and micro-batch size (no recompiles)
    if blocks is None:
        model.compile(dynamic=True)
        return 1
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


def apply_residual_dropout(model: nn.Module, p: float) -> int:
    """Dropout on each attention and MLP branch output, before it joins the residual stream.

    Returns the number of hooked modules (active only in ``train()`` mode).
    """
    if p <= 0:
        return 0
    n = 0
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        in_layer = any(part.isdigit() for part in name.split(".")[:-1])
        if in_layer and leaf in ("mlp", "self_attn", "attn"):

            def hook(m, inp, out):
                if isinstance(out, tuple):
                    return (F.dropout(out[0], p, m.training),) + tuple(out[1:])
                return F.dropout(out, p, m.training)

            mod.register_forward_hook(hook)
            n += 1
    return n


class ScalarHeadModel(nn.Module):
    """A transformers sequence-classification model (num_labels=1) used as RM or value model.

    Decoder backbones (the head is called ``score``): the head reads the hidden state of the last
    real token, found from the attention mask, with positions counted over real tokens, so the
    score is the same for left or right padding and when pad == eos. Encoder backbones (BERT,
    MiniLM ...) use the model's own classification head. ``reward_bias`` (saved in the model
    config) is added to every score: it is set after RM training so demonstrations score mean 0.
    """

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.is_decoder = isinstance(getattr(hf_model, "score", None), nn.Linear)

    @property
    def bias(self) -> float:
        return float(getattr(self.hf.config, "reward_bias", 0.0) or 0.0)

    def set_bias(self, value: float) -> None:
        self.hf.config.reward_bias = float(value)

    @property
    def max_length(self) -> int | None:
        """The token limit the RM was trained at (saved in its config), or None when unknown."""
        value = getattr(self.hf.config, "reward_max_length", None)
        return int(value) if value else None

    def set_max_length(self, value: int) -> None:
        self.hf.config.reward_max_length = int(value)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.hf.base_model(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        )
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        if not self.is_decoder:
            if per_token:
                raise ConfigError("an encoder reward model cannot serve as a per-token value model")
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float() + self.bias
        h = self.hidden(input_ids, attention_mask)
        if per_token:
            return self.hf.score(h).squeeze(-1).float()
        idx = last_token_index(attention_mask)
        last = h[torch.arange(h.shape[0], device=h.device), idx]
        return self.hf.score(last).squeeze(-1).float() + self.bias

    def save_pretrained(self, path: str | Path, **kw: Any) -> None:
        self.hf.save_pretrained(path, **kw)


def set_dropout(config: Any, model: nn.Module | None, p: float) -> int:
    """Set every dropout probability of a transformers config (``hidden_dropout_prob``,
    ``attention_dropout``, ``classifier_dropout`` ...) and every ``nn.Dropout`` of ``model`` to
    ``p``. Returns the number of config fields changed."""
    n = 0
    for key, value in list(config.to_dict().items()):
        if "dropout" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(config, key, float(p))
            n += 1
        elif key == "classifier_dropout":  # None means "use hidden_dropout_prob"
            setattr(config, key, float(p))
            n += 1
    if model is not None:
        for mod in model.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = float(p)
            elif hasattr(mod, "dropout_prob") and isinstance(mod.dropout_prob, float):
                mod.dropout_prob = float(p)  # attention modules that pass their rate to SDPA
    return n


def load_scalar_model(name: str, dtype: torch.dtype = torch.float32, dropout: float | None = None) -> ScalarHeadModel:
    """Load any backbone (causal LM folder, RM folder, encoder) with a 1-output head.

    ``dropout`` sets every dropout rate of the backbone and head (0 turns dropout off, as TRL's
    ``disable_dropout`` does; None keeps the backbone's own rates)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _check_source(name)
    try:
        kw: dict[str, Any] = {}
        if dropout is not None:
            config = AutoConfig.from_pretrained(name, num_labels=1)
            set_dropout(config, None, dropout)
            kw["config"] = config
        else:
            kw["num_labels"] = 1
        hf = AutoModelForSequenceClassification.from_pretrained(name, dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a reward-model backbone from {name!r}: {str(e).splitlines()[0]}") from None
    if dropout is not None:
        set_dropout(hf.config, hf, dropout)
    if hf.config.pad_token_id is None:
        hf.config.pad_token_id = hf.config.eos_token_id
    hf.config.problem_type = "regression"
    return ScalarHeadModel(hf)


def pad_batch(
    seqs: list[list[int]], pad_id: int, side: str = "right", device: torch.device | None = None, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) padded on ``side`` (width rounded up to ``multiple``)."""
    width = max(len(s) for s in seqs)
    width = -(-width // multiple) * multiple
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        else:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    if device is not None:
        ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    return ids, mask


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
