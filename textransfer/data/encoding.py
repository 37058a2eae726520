"""A task's text files checked against its ``encoding`` before ``datasets`` reads them.

Why a check of our own: a file that does not decode fails deep inside pandas or pyarrow, and
``datasets`` reports it as ``DatasetGenerationError`` without the file, the place or the
option; in a stream the failure would only come mid-training. Decoding the file first names
the file, the line and byte offset, the option (``target.encoding``) and an encoding under
which the file does decode, so that the hint works when followed.

The check is one pass of the codec over the file, a chunk at a time (memory stays one chunk
whatever the file's size), and a file already checked unchanged is not read again.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import os
import re
from dataclasses import dataclass
from typing import IO, Optional, Set, Tuple

from ..config import TaskConfig
from ..errors import DataError

_CHUNK = 1 << 20  # bytes decoded at a time: the check holds one chunk, whatever the file's size
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # compressed files the check reads through
# Bytes 0x80-0x9f are control characters in latin-1 but letters and punctuation in cp1252
# (€, curly quotes, dashes): a file that has them is cp1252 text; one without them reads the
# same in both, and latin-1 is the name users know.
_CP1252_ONLY = re.compile(rb"[\x80-\x9f]")
# Byte-order marks and the codec a file that starts with one is in (UTF-32's before UTF-16's:
# ff fe 00 00 starts with ff fe).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_SHOWN_CHARS = 60  # characters of the offending line quoted in the message
# (path, size, mtime, encoding) of files that decoded: a stream's file opened again is not re-read
_CHECKED: Set[Tuple[str, int, int, str]] = set()


@dataclass
class BadBytes:
    """Where a file first fails to decode: 1-based line (None if unknown), byte offset, the bytes."""

    line: Optional[int]
    offset: int
    data: bytes
    line_bytes: bytes


def _checkable(path: str) -> bool:
    """Whether the check can read the file: not a compression the standard library lacks (.zst)."""
    return not str(path).lower().endswith(".zst")


def _open(path: str) -> IO[bytes]:
    """The file's bytes, decompressed."""
    name = str(path).lower()
    for suffix, opener in _OPENERS.items():
        if name.endswith(suffix):
            return opener(path, "rb")
    return open(path, "rb")


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes a newline as the byte 0x0a (not UTF-16/32, not with a BOM)."""
    return codecs.encode("\n", encoding) == b"\n"


def decodes(path: str, encoding: str) -> bool:
    """Whether the whole file decodes in ``encoding``."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    with _open(path) as f:
        try:
            while chunk := f.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeError:  # UnicodeDecodeError, or UTF-16's "stream does not start with BOM"
            return False
    return True


def _locate(path: str, encoding: str) -> BadBytes:
    """The first place the file fails to decode (only called on a file that does fail)."""
    with _open(path) as f:
        if not _ascii_compatible(encoding):  # UTF-16/32: lines cannot be split as bytes
            data = f.read()
            try:
                data.decode(encoding)
            except UnicodeDecodeError as err:
                line = data[: err.start].decode(encoding, errors="replace").count("\n") + 1
                return BadBytes(line, err.start, data[err.start: err.end], b"")
            except UnicodeError:  # no byte-order mark: the first bytes already fail
                pass
            return BadBytes(None, 0, b"", b"")
        offset = 0
        for number, line in enumerate(f, 1):  # "\n" never occurs inside a multi-byte character here
            try:
                line.decode(encoding)
            except UnicodeDecodeError as err:
                return BadBytes(number, offset + err.start, line[err.start: err.end], line)
            offset += len(line)
        return BadBytes(None, offset, b"", b"")  # a sequence cut short at the end of the file


def suggest_encoding(path: str, current: str) -> str:
    """An encoding the file decodes in: the one its byte-order mark names, else utf-8 when it
    decodes, else cp1252 or latin-1 (see ``_CP1252_ONLY``); latin-1 decodes any byte, so the
    suggestion always reads the file."""
    with _open(path) as f:
        head = f.read(4)
    marked = [name for bom, name in _BOMS if head.startswith(bom)][:1]
    for candidate in marked + ["utf-8"]:
        if codecs.lookup(candidate).name != codecs.lookup(current).name and decodes(path, candidate):
            return candidate
    with _open(path) as f:
        has_cp1252_bytes = any(_CP1252_ONLY.search(chunk) for chunk in iter(lambda: f.read(_CHUNK), b""))
    if has_cp1252_bytes and decodes(path, "cp1252"):
        return "cp1252"
    return "latin-1"


def check_encoding(task: TaskConfig, path: str) -> None:
    """Raise a `DataError` naming the file, the line and byte offset and ``encoding`` when
    ``path`` does not decode in the task's encoding, with an encoding it does decode in."""
    if not _checkable(path):
        return  # left to the reader
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, task.encoding)
    if key in _CHECKED or decodes(path, task.encoding):
        _CHECKED.add(key)
        return
    bad, better = _locate(path, task.encoding), suggest_encoding(path, task.encoding)
    option = task.option_name("encoding")
    where = f"line {bad.line}, byte offset {bad.offset}" if bad.line else f"byte offset {bad.offset}"
    if bad.data:
        where += f" has the byte(s) {' '.join(f'0x{b:02x}' for b in bad.data)}, which {task.encoding} cannot decode"
    else:  # a character cut short at the end, or UTF-16/32 without a byte-order mark
        where += f": {task.encoding} cannot decode the file from there"
    # the line as the suggested encoding reads it, so the user sees the fix is right (a line of
    # UTF-16 cut at a 0x0a byte is no line: not shown)
    shown = bad.line_bytes.decode(better, errors="replace").rstrip("\r\n") if _ascii_compatible(better) else ""
    shown = shown if len(shown) <= _SHOWN_CHARS else shown[:_SHOWN_CHARS] + "..."
    reads = f" (line {bad.line} then reads {shown!r})" if shown else ""
    raise DataError(
        f"task '{task.name}': file '{path}' is not valid {task.encoding} (`{option}`): {where}. The file decodes "
        f"as {better}: set `{option}: {better}`{reads}, or save the file as {task.encoding}."
    )
