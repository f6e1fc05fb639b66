"""What a trainer writes into its run folder, as the worker reads it: the new lines of
``metrics.jsonl`` since the last look, and the end of ``trainer.log`` as a person would have seen
it on a terminal. The same for every launcher: a Slurm job's trainers write into the run folder on
the shared filesystem, and the worker reads it there."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MetricsTail:
    """Reads the lines appended to a metrics.jsonl file since the last call.

    A resumed trainer truncates the file to its checkpoint's step and writes on from there: when
    the file no longer holds the bytes read last (it shrank or was rewritten), the tail starts
    over from the beginning. Rows read twice are harmless: metrics are upserted per step.
    """

    path: Path
    offset: int = 0
    last_progress: float | None = None
    buffer: bytes = field(default=b"")
    mark: bytes = field(default=b"")  # the last bytes read, which end at ``offset``

    def read_new(self) -> list[tuple[int, str, float]]:
        try:
            fh = self.path.open("rb")
        except OSError:  # not written yet, or the output folder is not a folder
            return []
        with fh:
            if self._rewritten(fh):
                self.offset, self.buffer, self.mark = 0, b"", b""
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        self.mark = (self.mark + chunk)[-64:]
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return [row for row in map(self._parse, lines) if row is not None]

    def _rewritten(self, fh) -> bool:
        if not self.mark:
            return False
        if os.fstat(fh.fileno()).st_size < self.offset:
            return True
        fh.seek(self.offset - len(self.mark))
        return fh.read(len(self.mark)) != self.mark

    def _parse(self, line: bytes) -> tuple[int, str, float] | None:
        try:
            item = json.loads(line)
            row = (int(item["step"]), str(item["name"]), float(item["value"]))
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign line is not a metric
        if row[1] == "progress":
            self.last_progress = row[2]
        return row


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# tqdm: "desc:  40%|████      | 4/10 [00:01<00:02, 3.1it/s]" or, without a total, "desc: 7it [00:01, ...]"
_BAR = re.compile(r"^(.*?):?\s*(?:\d{1,3}%\||\d+(?:\.\d+)?[kMG]?(?:it|B) \[)")


def clean_log(text: str) -> str:
    """A log as a person would have seen it on a terminal: tqdm redraws its bar with '\\r', so
    each line keeps only what follows its last '\\r'; colour escapes go; consecutive lines of the
    same bar (one per redraw when a bar writes newlines) collapse into the last one."""
    lines: list[str] = []
    last_bar: str | None = None
    for raw in _ANSI.sub("", text).split("\n"):
        segments = [s for s in raw.split("\r") if s.strip()]
        line = segments[-1].rstrip() if segments else ""
        bar = _bar_key(line)
        if bar is not None and bar == last_bar:
            lines[-1] = line
        else:
            lines.append(line)
        last_bar = bar
    return "\n".join(lines)


def _bar_key(line: str) -> str | None:
    match = _BAR.match(line)
    return match.group(1).strip() if match else None


def log_tail(path: Path, max_chars: int = 3000, read_bytes: int = 64 * 1024) -> str:
    """The cleaned end of the trainer's log. More is read than kept: a progress bar's redraws
    can fill tens of kilobytes that clean to one line."""
    try:
        with path.open("rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - read_bytes)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return ""
    if start > 0:  # begin at a line or redraw boundary, not inside one
        cuts = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
        data = data[min(cuts):] if cuts else b""
    text = clean_log(data.decode("utf-8", errors="replace")).strip("\n")
    if len(text) > max_chars:  # keep whole lines
        text = text[-max_chars:]
        text = text.split("\n", 1)[1] if "\n" in text else text
    return text
