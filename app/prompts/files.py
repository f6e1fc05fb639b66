"""Reading prompt and completion files: JSONL (optionally gzipped) or CSV, one record per row."""

from __future__ import annotations

import csv
import gzip
import io
import json

from app.errors import InvalidInput


def parse_records(data: bytes, filename: str) -> list[dict]:
    """Records of a JSONL or CSV file (chosen by the name, else sniffed). Errors name the line."""
    name = (filename or "").lower()
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except OSError:
            raise InvalidInput("The file ends in .gz but is not gzip data.", field="file") from None
        name = name[:-3]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("The file is not UTF-8 text.", field="file") from None
    is_csv = name.endswith(".csv") or (not name.endswith((".jsonl", ".json")) and not text.lstrip().startswith("{"))
    if is_csv:
        return _parse_csv(text)
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {n}: not valid JSON ({exc.msg}).", field="file") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"line {n}: expected a JSON object.", field="file")
        records.append(value)
    return records


def _parse_csv(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not ({"prompt", "messages", "completion"} & set(reader.fieldnames)):
        raise InvalidInput("The CSV file needs a header row with a 'prompt' (or 'messages') column.", field="file")
    records = []
    for n, row in enumerate(reader, start=2):
        row = {k: v for k, v in row.items() if k is not None}
        if row.get("messages"):
            try:
                row["messages"] = json.loads(row["messages"])
            except json.JSONDecodeError:
                raise InvalidInput(f"line {n}: the 'messages' column must hold a JSON list.", field="file") from None
        if row.get("settings"):
            try:
                row["settings"] = json.loads(row["settings"])
            except json.JSONDecodeError:
                raise InvalidInput(f"line {n}: the 'settings' column must hold a JSON object.", field="file") from None
        records.append(row)
    return records
