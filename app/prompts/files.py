"""Reading prompt and completion files: CSV, JSONL (optionally gzipped) or Parquet, one record per row."""

from __future__ import annotations

import csv
import gzip
import io
import json

from app.errors import InvalidInput


def parse_records(data: bytes, filename: str) -> list[dict]:
    """Records of a CSV, JSONL, gzipped JSONL or Parquet file (chosen by the name, else sniffed).

    JSONL and Parquet go through the datasets importer's reader, so every import door refuses
    the same bad input (not UTF-8, not JSON, not an object, a huge line) with its line number.
    """
    from app.datasets.readers import read_records

    name = (filename or "").lower()
    plain_name = name[:-3] if name.endswith(".gz") else name
    if plain_name.endswith(".csv") or (not plain_name.endswith((".jsonl", ".json", ".parquet")) and _looks_like_csv(data, name)):
        if name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except OSError:
                raise InvalidInput("The file ends in .gz but is not gzip data.", field="file") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("The file is not UTF-8 text.", field="file") from None
        return _parse_csv(text)
    return [record for _, record in read_records(data, name)]


def _looks_like_csv(data: bytes, name: str) -> bool:
    head = data[:4]
    if head.startswith(b"\x1f\x8b"):
        try:
            head = gzip.decompress(data)[:64]
        except OSError:
            return False
    if head.startswith(b"PAR1"):
        return False
    return not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


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
