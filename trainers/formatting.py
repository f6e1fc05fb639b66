"""Turning messages into token ids: the tokenizer's chat template, or the plain format.

Plain format (docs/formats.md, when the tokenizer has no chat template)::

    System: {system}\\n\\n            (only when there is a system message)
    User: {prompt}\\n\\nAssistant: {completion}<eos>

A prompt is encoded once and the response appended as separately encoded ids, so the ids the
trainer masks as "prompt" are exactly the ids that generation is conditioned on.
"""

from __future__ import annotations

from typing import Any

from trainers.data import Messages

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def plain_prompt(messages: Messages) -> str:
    """Render prompt turns and open the assistant turn (``...Assistant:``)."""
    parts = [f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in messages]
    return "\n\n".join(parts + ["Assistant:"])


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: Any, messages: Messages) -> str:
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    text = prompt_text(tokenizer, messages)
    # a chat template writes its own special tokens; the plain format gets the tokenizer's BOS
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def encode_response(tokenizer: Any, messages: Messages, response: str, add_eos: bool = True) -> list[int]:
    """Ids of the assistant response that follows :func:`encode_prompt`, ending with EOS."""
    if has_chat_template(tokenizer):
        p = prompt_text(tokenizer, messages)
        full = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}], tokenize=False
        )
        text = full[len(p):] if full.startswith(p) else response
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        eos = tokenizer.eos_token_id
        if add_eos and eos is not None and (not ids or ids[-1] != eos):
            # templates end the turn with their own end token; keep EOS as the stop token
            ids = ids + [eos]
        return ids
    ids = list(tokenizer(" " + response, add_special_tokens=False)["input_ids"])
    end = end_token_id(tokenizer)
    if add_eos and end is not None:
        ids.append(end)
    return ids


def end_token_id(tokenizer: Any) -> int | None:
    """The token that closes a response: EOS, or for an encoder without one (BERT, MiniLM) its
    [SEP], so that an encoder reads ``[CLS] prompt [SEP] response [SEP]``, its own pair format."""
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return getattr(tokenizer, "sep_token_id", None)


def _leading_special(tokenizer: Any, ids: list[int]) -> int:
    """1 when ``ids`` starts with the tokenizer's BOS or [CLS] (kept through left truncation)."""
    starts = {getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "cls_token_id", None)} - {None}
    return 1 if ids and ids[0] in starts else 0


def encode_pair(
    tokenizer: Any, messages: Messages, response: str, max_length: int, add_eos: bool = True
) -> tuple[list[int], int]:
    """(prompt + response ids, prompt length), truncated to ``max_length``.

    The prompt is cut from the left (its end is what the response follows), keeping a leading BOS
    or [CLS]; the response from the right; a long prompt keeps at least half of ``max_length``,
    the response the rest.
    """
    p = encode_prompt(tokenizer, messages)
    r = encode_response(tokenizer, messages, response, add_eos=add_eos)
    if len(p) + len(r) > max_length:
        keep_r = min(len(r), max_length - min(len(p), max_length // 2))
        r = r[:keep_r]
        room = max_length - keep_r
        head = _leading_special(tokenizer, p) if room > 1 else 0
        p = p[:head] + p[len(p) - (room - head):] if room > 0 else []
    return p + r, len(p)
