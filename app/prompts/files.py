"""Reading prompt and completion files: CSV, JSONL (optionally gzipped) or Parquet, one record per row.

Files are streams (an upload's spooled temporary file, a path, or bytes), read and, for ``.gz``,
decompressed chunk by chunk with the decompressed size capped (``max_decompressed``) and each
line's length checked while reading (app/datasets/readers.py).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from app.datasets.readers import MAX_LINE_BYTES, iter_lines, open_stream, peek, read_records
from app.errors import InvalidInput

MAX_CSV_LINES = 5_000_000  # physical lines, blank ones included


def parse_records(source: Path | bytes | BinaryIO, filename: str, *, max_decompressed: int | None = None) -> list[dict]:
    """Records of a CSV, JSONL, gzipped JSONL or Parquet file (chosen by the name, else sniffed).

    JSONL and Parquet go through the datasets importer's reader, so every import door refuses
    the same bad input (not UTF-8, not JSON, not an object, a huge line) with its line number.
    """
    name = (filename or "").lower()
    plain_name = name[:-3] if name.endswith(".gz") else name
    if plain_name.endswith(".csv") or not plain_name.endswith((".jsonl", ".json", ".parquet")):
        stream = open_stream(source, name, max_decompressed=max_decompressed)
        try:
            if plain_name.endswith(".csv") or _looks_like_csv(peek(stream, 64)):
                return _parse_csv(stream)
        finally:
            if isinstance(source, (str, Path)) or stream is not source:
                stream.close()
        if not isinstance(source, (bytes, bytearray, str, Path)):
            source.seek(0)
    return [record for _, record in read_records(source, name, max_decompressed=max_decompressed)]


def _looks_like_csv(head: bytes) -> bool:
    if head.startswith(b"PAR1"):
        return False
    return not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def _text_lines(stream: BinaryIO) -> Iterator[str]:
    for n, raw in iter_lines(stream, skip_blank=False):
        if n > MAX_CSV_LINES:
            raise InvalidInput(f"line {n}: more than {MAX_CSV_LINES:,} lines in one CSV file.", field="file")
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"line {n}: not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8.", field="file"
            ) from None


def _parse_csv(stream: BinaryIO) -> list[dict]:
    reader = csv.DictReader(_text_lines(stream))
    records = []
    try:
        if not reader.fieldnames or not ({"prompt", "messages", "completion"} & set(reader.fieldnames)):
            raise InvalidInput("The CSV file needs a header row with a 'prompt' (or 'messages') column.", field="file")
        for row in reader:
            n = reader.line_num
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
    except csv.Error as exc:
        limit = csv.field_size_limit()
        hint = f" (a field may hold at most {limit:,} characters)" if "field limit" in str(exc) else ""
        raise InvalidInput(f"line {reader.line_num + 1}: not valid CSV: {exc}{hint}.", field="file") from None
    return records


__all__ = ["parse_records", "MAX_LINE_BYTES"]
