"""Public preference data: Anthropic HH transcripts and OpenAssistant message trees."""

from __future__ import annotations

import hashlib
import re

from app.datasets.imports import ImportSummary, PromptSpec, RankingSpec, bad
from app.prompts.service import messages_to_text

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def hh_turns(transcript: str) -> list[dict] | None:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages; None when it is not such a transcript."""
    s = transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip("\n")
    parts = _HH_TURN.split(s)
    if parts[0].strip() or len(parts) < 3:
        return None
    return [{"role": _HH_ROLE[role], "content": text.strip()} for role, text in zip(parts[1::2], parts[2::2])]


def parse_hh(line: int, row: dict, summary: ImportSummary) -> RankingSpec | None:
    """One HH row -> a K=2 ranking (chosen above rejected) of the two final responses, or a skip."""
    for key in ("chosen", "rejected"):
        if key not in row:
            raise bad(line, key, "missing (an HH row has 'chosen' and 'rejected' transcripts)")
        if not isinstance(row[key], str):
            raise bad(line, key, f"expected a transcript text, got {type(row[key]).__name__}")
    chosen, rejected = hh_turns(row["chosen"]), hh_turns(row["rejected"])
    if chosen is None or rejected is None:
        summary.skip(line, "not a Human/Assistant transcript")
        return None
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant" or len(chosen) < 2 or len(rejected) < 2:
        summary.skip(line, "no final Assistant response")
        return None
    if chosen[:-1] != rejected[:-1]:
        summary.skip(line, "earlier turns differ")
        return None
    if chosen[0]["role"] != "user":
        summary.skip(line, "not a Human/Assistant transcript")
        return None
    a, b = chosen[-1]["content"], rejected[-1]["content"]
    if not a or not b:
        summary.skip(line, "empty final response")
        return None
    if a == b:
        summary.skip(line, "identical final responses")
        return None
    messages = chosen[:-1]
    text = messages_to_text(messages)
    origin = "hh:" + hashlib.sha256(messages[0]["content"].encode()).hexdigest()[:12]
    prompt = PromptSpec(text, messages if len(messages) > 1 else None, None, origin)
    return RankingSpec(line, prompt, [(a, None, None), (b, None, None)], [[0], [1]], labeler="hh")


_OA_ROLE = {"prompter": "user", "assistant": "assistant"}


def _oa_message(line: int, node, where: str) -> dict:
    if not isinstance(node, dict):
        raise bad(line, where, "expected a message object")
    if node.get("role") not in _OA_ROLE:
        raise bad(line, f"{where}.role", f"expected 'prompter' or 'assistant', got {node.get('role')!r}")
    if not isinstance(node.get("text"), str):
        raise bad(line, f"{where}.text", "expected a text")
    replies = node.get("replies") or []
    if not isinstance(replies, list):
        raise bad(line, f"{where}.replies", "expected a list")
    rank = node.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise bad(line, f"{where}.rank", "expected an integer or null")
    return node


def parse_oasst(line: int, row: dict, summary: ImportSummary, *, include_synthetic: bool = False) -> list[RankingSpec]:
    """One message tree -> one ranking per prompter message whose assistant replies are ranked
    (rank 0 = best; equal ranks are ties), with the conversation up to it as the prompt."""
    if isinstance(row.get("prompt"), dict):
        root, where = row["prompt"], "prompt"
    elif "replies" in row and "role" in row:
        root, where = row, "message"
    else:
        raise bad(line, "prompt", "not an OpenAssistant message tree (needs a 'prompt' message with 'replies')")
    origin = "oasst:" + str(_oa_message(line, root, where).get("user_id") or row.get("message_tree_id") or line)
    specs: list[RankingSpec] = []
    stack = [(root, where, [])]
    while stack:
        node, path, convo = stack.pop()
        _oa_message(line, node, path)
        if node.get("deleted"):
            continue
        convo = convo + [{"role": _OA_ROLE[node["role"]], "content": node["text"].strip()}]
        replies = node.get("replies") or []
        for i, child in enumerate(replies):
            stack.append((child, f"{path}.replies[{i}]", convo))
        if node["role"] != "prompter":
            continue
        ranked = [
            _oa_message(line, r, f"{path}.replies[{i}]") for i, r in enumerate(replies)
            if isinstance(r, dict) and r.get("role") == "assistant" and r.get("rank") is not None and not r.get("deleted")
        ]
        if len(ranked) < 2:
            continue
        kept = [r for r in ranked if include_synthetic or not r.get("synthetic")]
        if len(kept) < 2:
            summary.skip(line, "fewer than 2 ranked replies once synthetic ones are left out")
            continue
        if any(not r["text"].strip() for r in kept):
            summary.skip(line, "empty reply in a ranked group")
            continue
        kept.sort(key=lambda r: r["rank"])
        buckets: list[list[int]] = []
        last = None
        for i, r in enumerate(kept):
            if r["rank"] != last:
                buckets.append([])
                last = r["rank"]
            buckets[-1].append(i)
        completions = [
            (r["text"].strip(), (r.get("model_name") or "synthetic") if r.get("synthetic") else None, None) for r in kept
        ]
        text = messages_to_text(convo)
        prompt = PromptSpec(text, convo if len(convo) > 1 else None, None, origin)
        specs.append(RankingSpec(line, prompt, completions, buckets, labeler="oasst"))
    return specs
