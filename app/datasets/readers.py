"""Reading import files: JSONL, gzipped JSONL or Parquet, into (line number, record) pairs.

Every problem names its line: a line that is not UTF-8, not JSON, not an object, or longer than
the limit is refused before anything is written.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from app.errors import InvalidInput

MAX_LINE_BYTES = 2_000_000  # one record; a longer line is refused with its number
MAX_RECORDS = 2_000_000


def _open(source: Path | bytes | BinaryIO, name: str) -> BinaryIO:
    if isinstance(source, (bytes, bytearray)):
        raw: BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        raw = open(source, "rb")
    else:
        raw = source
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b" or name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    return raw


def _read_jsonl(f: BinaryIO) -> Iterator[tuple[int, dict]]:
    n = 0
    while True:
        try:
            raw = f.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise InvalidInput(f"line {n + 1}: the file is not valid gzip ({exc}).", field="file") from None
        if not raw:
            return
        n += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise InvalidInput(
                f"line {n}: the record is longer than {MAX_LINE_BYTES:,} bytes; split it or shorten it.", field="file"
            )
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"line {n}: not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8.", field="file"
            ) from None
        if not text.strip():
            continue
        if n > MAX_RECORDS:
            raise InvalidInput(f"line {n}: more than {MAX_RECORDS:,} records in one import.", field="file")
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"line {n}: not valid JSON ({exc}).", field="file") from None
        if not isinstance(record, dict):
            raise InvalidInput(f"line {n}: expected a JSON object, got {type(record).__name__}.", field="file")
        yield n, record


def _read_parquet(f: BinaryIO) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
        n = 0
        for batch in pf.iter_batches(batch_size=5000):
            for record in batch.to_pylist():
                n += 1
                yield n, record
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"not a readable Parquet file ({exc}).", field="file") from None


def read_records(source: Path | bytes | BinaryIO, name: str = "") -> list[tuple[int, dict]]:
    """All records of the file, each with its line (or Parquet row) number."""
    name = (name or (str(source) if isinstance(source, (str, Path)) else "")).lower()
    f = _open(source, name)
    try:
        if name.endswith(".parquet"):
            return list(_read_parquet(f))
        head = f.read(4)
        f.seek(0)
        if head == b"PAR1":
            return list(_read_parquet(f))
        return list(_read_jsonl(f))
    finally:
        f.close()
