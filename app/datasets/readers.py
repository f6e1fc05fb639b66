"""Reading import files: JSONL, gzipped JSONL or Parquet, into (line number, record) pairs.

Files are read as streams, never whole: an upload stays in its spooled temporary file and a
``.gz`` file is decompressed chunk by chunk, its decompressed size capped while it is read
(``max_decompressed``: the server passes ``settings.max_decompressed_bytes``). Lines are cut from
chunks (a run of blank lines costs one scan, not one step per line) and a line longer than
``MAX_LINE_BYTES`` is refused as soon as that many bytes are seen.

Every problem names its line: a line that is not UTF-8, not JSON, not an object, or longer than
the limit is refused before anything is written.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from app.errors import InvalidInput, TooLarge

MAX_LINE_BYTES = 2_000_000  # one record; a longer line is refused with its number
MAX_RECORDS = 2_000_000
CHUNK_BYTES = 1 << 20
_BLANK = b" \t\r\n\f\v"
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


class CappedReader(io.RawIOBase):
    """A read-only stream over ``inner`` that refuses (413, field 'file') to yield more than ``cap``
    bytes: a small .gz cannot expand into memory or disk without bound."""

    def __init__(self, inner: BinaryIO, cap: int):
        self.inner, self.cap, self.total = inner, cap, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.cap + 1 - self.total  # never more than one byte past the cap in one call
        data = self.inner.read(max(0, min(n, self.cap + 1 - self.total)) or 1)
        self.total += len(data)
        if self.total > self.cap:
            raise TooLarge(
                f"The file decompresses to more than {_mib(self.cap)} (the server's RLHF_MAX_DECOMPRESSED_BYTES "
                "setting); split it, or import it with `rlhf import`.", field="file",
            )
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


def open_stream(source: Path | bytes | BinaryIO, name: str = "", *, max_decompressed: int | None = None) -> BinaryIO:
    """A binary stream of the file's content, gunzipped (as a stream) when it is gzip data or the
    name ends in .gz. The caller closes it (which closes an underlying file it opened)."""
    if isinstance(source, (bytes, bytearray)):
        raw: BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        raw = open(source, "rb")
    else:
        raw = source
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b" or name.lower().endswith(".gz"):
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")
        if max_decompressed is not None:
            stream = CappedReader(stream, max_decompressed)
        return stream
    return raw


def peek(stream: BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of a seekable stream (gzip streams rewind by decompressing again)."""
    try:
        head = stream.read(n)
    except _GZIP_ERRORS:
        head = b""
    stream.seek(0) if not isinstance(stream, CappedReader) else _rewind(stream)
    return head


def _rewind(stream: CappedReader) -> None:
    stream.inner.seek(0)
    stream.total = 0


def iter_lines(f: BinaryIO, *, max_line: int = MAX_LINE_BYTES, skip_blank: bool = True) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a binary stream, read in chunks. ``skip_blank`` drops lines of only
    whitespace without a Python step per line. A line over ``max_line`` bytes raises at once."""
    buf, pos, line_no, eof = b"", 0, 0, False

    def more() -> bytes:
        try:
            return f.read(CHUNK_BYTES)
        except _GZIP_ERRORS as exc:
            raise InvalidInput(f"line {line_no + 1}: the file is not valid gzip ({exc}).", field="file") from None

    while True:
        if skip_blank:
            start = _first_non_blank(buf, pos)
            line_no += buf.count(b"\n", pos, start)
            if start == len(buf):
                if eof:
                    return
                buf, pos = more(), 0
                eof = not buf
                continue
            pos = start
        nl = buf.find(b"\n", pos)
        if nl == -1:
            if len(buf) - pos > max_line:
                raise _too_long(line_no + 1, max_line)
            if eof:
                if pos < len(buf):
                    yield line_no + 1, buf[pos:]
                return
            chunk = more()
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0
            continue
        if nl - pos > max_line:
            raise _too_long(line_no + 1, max_line)
        line_no += 1
        yield line_no, buf[pos:nl + 1]
        pos = nl + 1


def _first_non_blank(buf: bytes, pos: int) -> int:
    """The index of the first non-whitespace byte at or after ``pos`` (``len(buf)`` if none), in
    C-speed strides that grow with the run: a gap costs time in proportion to its length."""
    window, end = 64, len(buf)
    while pos < end:
        part = buf[pos:pos + window]
        stripped = part.lstrip()  # ASCII whitespace: the bytes of _BLANK (several times faster than naming them)
        if stripped:
            return pos + len(part) - len(stripped)
        pos += len(part)
        window = min(window * 4, CHUNK_BYTES)
    return end


def _too_long(n: int, max_line: int) -> InvalidInput:
    return InvalidInput(f"line {n}: the record is longer than {max_line:,} bytes; split it or shorten it.", field="file")


def _read_jsonl(f: BinaryIO) -> Iterator[tuple[int, dict]]:
    count = 0
    for n, raw in iter_lines(f):
        if count == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"line {n}: not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8.", field="file"
            ) from None
        if not text.strip():
            continue
        count += 1
        if count > MAX_RECORDS:
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


def read_records(
    source: Path | bytes | BinaryIO, name: str = "", *, max_decompressed: int | None = None,
) -> list[tuple[int, dict]]:
    """All records of the file, each with its line (or Parquet row) number."""
    name = (name or (str(source) if isinstance(source, (str, Path)) else "")).lower()
    f = open_stream(source, name, max_decompressed=max_decompressed)
    try:
        if name.endswith(".parquet") or peek(f, 4) == b"PAR1":
            return list(_read_parquet(f))
        return list(_read_jsonl(f))
    finally:
        if isinstance(source, (str, Path)) or f is not source:
            f.close()
