"""Reading the export formats of docs/formats.md: JSONL, gzipped JSONL and Parquet (and, for
pretraining text only, plain-text corpora: .txt and .txt.gz).

Every reader checks each row and raises :class:`DataError` naming the file, the line (1-based;
the row number for Parquet) and the field, before any training starts. With
``skip_bad_rows=True`` bad rows are counted in :class:`ReadReport` instead.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from trainers.errors import DataError

Messages = list[dict[str, str]]


@dataclass
class SFTExample:
    messages: Messages  # prompt turns, then the assistant completion as the last message
    split: str | None = None


@dataclass
class RankGroup:
    """One prompt with its K distinct completions and the preference pairs between them."""

    prompt: Messages
    completions: list[str]
    pairs: list[tuple[int, int]]  # (winner index, loser index) into ``completions``
    split: str | None = None


@dataclass
class PromptExample:
    messages: Messages
    text: str
    prompt_id: int | None = None
    split: str | None = None


@dataclass
class ReadReport:
    path: str
    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.path}: {self.rows} rows read"
        if self.skipped:
            s += f", {self.skipped} bad rows skipped (first: {self.errors[0]})"
        return s


# ---------------------------------------------------------------- raw rows


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded row) for .jsonl, .jsonl.gz (.json.gz) and .parquet files."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    name = p.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:  # pyarrow raises many types for corrupt files
            raise DataError(f"{p}: cannot read Parquet file: {e}") from None
        for i, row in enumerate(table.to_pylist(), start=1):
            yield i, row
        return
    if name.endswith(".gz"):
        opener = lambda: gzip.open(p, "rt", encoding="utf-8")  # noqa: E731
    elif name.endswith((".jsonl", ".json", ".ndjson")):
        opener = lambda: p.open("r", encoding="utf-8")  # noqa: E731
    else:
        raise DataError(f"{p}: unknown file type (expected .jsonl, .jsonl.gz or .parquet)")
    try:
        with opener() as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, _BadJSON(str(e))
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"{p}: cannot read file: {e}") from None


class _BadJSON:
    def __init__(self, msg: str):
        self.msg = msg


class RowError(ValueError):
    """Raised by row parsers; turned into DataError with file and line by :func:`read_file`."""

    def __init__(self, fld: str, msg: str):
        super().__init__(f"field {fld!r}: {msg}")


def read_file(
    path: str | Path, parse: Callable[[dict], Any], skip_bad_rows: bool = False
) -> tuple[list[Any], ReadReport]:
    report = ReadReport(str(path))
    out: list[Any] = []
    for line, row in iter_rows(path):
        try:
            if isinstance(row, _BadJSON):
                raise ValueError(f"invalid JSON: {row.msg}")
            if not isinstance(row, dict):
                raise ValueError("a row must be a JSON object")
            out.append(parse(row))
            report.rows += 1
        except ValueError as e:
            msg = f"{path}:{line}: {e}"
            if not skip_bad_rows:
                raise DataError(msg + " (use --skip-bad-rows to skip bad rows)") from None
            report.skipped += 1
            report.errors.append(msg)
    if not out:
        raise DataError(f"{path}: no usable rows")
    return out, report


# ---------------------------------------------------------------- field checks


def _str(row: dict, key: str, allow_empty: bool = False) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise RowError(key, "missing or not a string" if v is None else f"expected a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise RowError(key, "empty")
    return v


def check_messages(v: Any, key: str) -> Messages:
    if not isinstance(v, list) or not v:
        raise RowError(key, "expected a non-empty list of messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise RowError(f"{key}[{i}]", "expected {'role': ..., 'content': str}")
        if m.get("role") not in ("system", "user", "assistant"):
            raise RowError(f"{key}[{i}].role", f"expected system/user/assistant, got {m.get('role')!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _split(row: dict) -> str | None:
    s = row.get("split")
    return s if isinstance(s, str) else None


# ---------------------------------------------------------------- row kinds


def parse_sft(row: dict) -> SFTExample:
    if row.get("messages") is not None:
        msgs = check_messages(row["messages"], "messages")
        if msgs[-1]["role"] != "assistant":
            raise RowError("messages", "the last message must be the assistant's completion")
        if len(msgs) < 2:
            raise RowError("messages", "needs at least one prompt turn before the completion")
        return SFTExample(msgs, _split(row))
    if "prompt" not in row and "completion" not in row:
        raise RowError("prompt", "a row needs 'prompt' and 'completion', or 'messages'")
    prompt = _str(row, "prompt")
    completion = _str(row, "completion")
    return SFTExample([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], _split(row))


def _prompt_messages(row: dict, text_key: str = "prompt", msg_key: str = "prompt_messages") -> Messages:
    if row.get(msg_key) is not None:
        return check_messages(row[msg_key], msg_key)
    v = row.get(text_key)
    if isinstance(v, list):
        return check_messages(v, text_key)
    return [{"role": "user", "content": _str(row, text_key)}]


def parse_comparison(row: dict) -> RankGroup:
    """A native comparison row: K completions and ranked buckets of ids (ties allowed)."""
    prompt = _prompt_messages(row)
    comps = row.get("completions")
    if not isinstance(comps, list) or len(comps) < 2:
        raise RowError("completions", "expected a list of at least 2 completions")
    ids: dict[Any, int] = {}
    texts: list[str] = []
    for i, c in enumerate(comps):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("text"), str):
            raise RowError(f"completions[{i}]", "expected {'id': int, 'text': str}")
        if c["id"] in ids:
            raise RowError(f"completions[{i}].id", f"duplicate id {c['id']!r}")
        ids[c["id"]] = i
        texts.append(c["text"])
    ranked = row.get("ranked")
    if not isinstance(ranked, list) or not all(isinstance(b, list) for b in ranked):
        raise RowError("ranked", "expected a list of buckets (lists of completion ids)")
    seen: set = set()
    buckets: list[list[int]] = []
    for bi, bucket in enumerate(ranked):
        idx = []
        for cid in bucket:
            if cid not in ids:
                raise RowError(f"ranked[{bi}]", f"unknown completion id {cid!r}")
            if cid in seen:
                raise RowError(f"ranked[{bi}]", f"completion id {cid!r} ranked twice")
            seen.add(cid)
            idx.append(ids[cid])
        if idx:
            buckets.append(idx)
    pairs = [(w, l) for i, bw in enumerate(buckets) for bl in buckets[i + 1:] for w in bw for l in bl]
    if not pairs:
        raise RowError("ranked", "the ranking gives no pair (all tied or a single bucket)")
    return RankGroup(prompt, texts, pairs, _split(row))


def parse_pairwise(row: dict) -> tuple[Messages, str, str, str | None, Any]:
    """(prompt messages, chosen, rejected, split, ranking id) from a plain or message-style row."""
    prompt = _prompt_messages(row)

    def response(key: str) -> str:
        v = row.get(key)
        if isinstance(v, list):
            msgs = check_messages(v, key)
            if msgs[-1]["role"] != "assistant":
                raise RowError(key, "expected the assistant turn")
            return msgs[-1]["content"]
        return _str(row, key, allow_empty=True)

    return prompt, response("chosen"), response("rejected"), _split(row), row.get("ranking_id")


def parse_preference(row: dict) -> Any:
    """Native comparison rows hold ``completions``; everything else must be pairwise."""
    if "completions" in row or "ranked" in row:
        return parse_comparison(row)
    if "chosen" not in row and "rejected" not in row:
        raise RowError("chosen", "a row needs 'completions'+'ranked' (native) or 'chosen'+'rejected' (pairwise)")
    return parse_pairwise(row)


def group_preferences(items: list[Any]) -> list[RankGroup]:
    """Native groups pass through; pairwise rows are regrouped by prompt into K-wise groups.

    Rows that carry a ``ranking_id`` (the app's exports) are grouped by prompt and ranking, which
    rebuilds each labeler's ranking exactly; rows without one (external data) by prompt alone.
    Rows of one prompt in different splits form separate groups, so that every row is used in the
    split it is marked with (see :func:`prompts_in_several_splits` for the warning that deserves).
    """
    groups: list[RankGroup] = []
    by_prompt: dict[str, RankGroup] = {}
    for it in items:
        if isinstance(it, RankGroup):
            groups.append(it)
            continue
        prompt, chosen, rejected, split, ranking_id = it
        key = json.dumps([prompt, ranking_id, split], sort_keys=True)
        g = by_prompt.get(key)
        if g is None:
            g = RankGroup(prompt, [], [], split)
            by_prompt[key] = g
            groups.append(g)
        idx = []
        for text in (chosen, rejected):
            if text not in g.completions:
                g.completions.append(text)
            idx.append(g.completions.index(text))
        if idx[0] != idx[1] and (idx[0], idx[1]) not in g.pairs:
            g.pairs.append((idx[0], idx[1]))
    return [g for g in groups if g.pairs]


def prompts_in_several_splits(groups: list[RankGroup]) -> int:
    """How many prompts have groups in more than one split (a held-out prompt also trained on)."""
    splits: dict[str, set] = {}
    for g in groups:
        splits.setdefault(json.dumps(g.prompt, sort_keys=True), set()).add(_split_kind(g.split))
    return sum(1 for s in splits.values() if len(s) > 1)


def _split_kind(split: str | None) -> str:
    return "valid" if split in ("valid", "validation", "test") else "train"


def parse_prompt(row: dict) -> PromptExample:
    if row.get("messages") is not None:
        msgs = check_messages(row["messages"], "messages")
        if msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        if not msgs:
            raise RowError("messages", "no prompt turn")
        text = row["prompt"] if isinstance(row.get("prompt"), str) else msgs[-1]["content"]
    else:
        text = _str(row, "prompt")
        msgs = [{"role": "user", "content": text}]
    pid = row.get("prompt_id")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise RowError("prompt_id", "expected an integer")
    return PromptExample(msgs, text, pid, _split(row))


def parse_pretrain(row: dict) -> str:
    """Pretraining text: a ``text`` field, else an SFT row rendered as prompt + completion."""
    if "text" in row:
        return _str(row, "text")
    ex = parse_sft(row)
    return "\n\n".join(m["content"] for m in ex.messages)


TEXT_SUFFIXES = (".txt", ".txt.gz")


def is_text_corpus(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(TEXT_SUFFIXES)


def iter_text_documents(path: str | Path) -> Iterator[tuple[int, str]]:
    """(first line number, document) for a UTF-8 plain-text corpus, .txt or .txt.gz, streamed.

    Documents are separated by one or more blank lines (empty, or only whitespace). A document is
    its lines joined with "\n": line ends ("\n" or "\r\n") are dropped, everything else is kept as
    is (indentation, trailing spaces). A UTF-8 byte order mark at the start of the file is dropped.
    The file is read line by line, once; a line that is not UTF-8 raises DataError with its number.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    opener = (lambda: gzip.open(p, "rb")) if p.name.lower().endswith(".gz") else (lambda: p.open("rb"))  # noqa: E731
    lines: list[str] = []
    first = 0
    try:
        with opener() as fh:
            for i, raw in enumerate(fh, start=1):
                if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{p}:{i}: not UTF-8 text (byte {e.start + 1} of the line: {e.reason})") from None
                line = line.rstrip("\n")
                if line.endswith("\r"):
                    line = line[:-1]
                if line.strip():
                    if not lines:
                        first = i
                    lines.append(line)
                elif lines:
                    yield first, "\n".join(lines)
                    lines = []
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read file: {e}") from None
    if lines:
        yield first, "\n".join(lines)


def read_pretrain(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[str], ReadReport]:
    """Pretraining documents: one per blank-line-separated block of a .txt/.txt.gz corpus, or one per
    row (:func:`parse_pretrain`) of a .jsonl/.jsonl.gz/.parquet file. ``skip_bad_rows`` applies to
    rows only: a text file that is not UTF-8 is always refused."""
    p = Path(path)
    if not is_text_corpus(p):
        if not p.name.lower().endswith((".parquet", ".gz", ".jsonl", ".json", ".ndjson")) and p.is_file():
            raise DataError(f"{p}: unknown file type for pretraining text "
                            "(expected .txt, .txt.gz, .jsonl, .jsonl.gz or .parquet)")
        return read_file(p, parse_pretrain, skip_bad_rows)
    report = ReadReport(str(p))
    docs = [doc for _, doc in iter_text_documents(p)]
    if not docs:
        raise DataError(f"{p}: empty corpus (no text: the file is empty or holds only blank lines)")
    report.rows = len(docs)
    return docs, report


def split_train_valid(items: list, valid_fraction: float, seed: int) -> tuple[list, list]:
    """Use the rows' own ``split`` when any row is valid/test, else a seeded random fraction."""
    if any(getattr(x, "split", None) in ("valid", "validation", "test") for x in items):
        train = [x for x in items if getattr(x, "split", None) not in ("valid", "validation", "test")]
        valid = [x for x in items if getattr(x, "split", None) in ("valid", "validation", "test")]
        return train, valid
    if valid_fraction <= 0 or len(items) < 2:
        return list(items), []
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(round(len(items) * valid_fraction)))
    valid_idx = set(order[:n_valid])
    return ([x for i, x in enumerate(items) if i not in valid_idx],
            [x for i, x in enumerate(items) if i in valid_idx])
