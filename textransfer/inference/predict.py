"""Batch prediction over a file of any size: ``textransfer predict MODEL --input FILE --text-column C``.

```
textransfer predict runs/demo --input reviews.parquet --text-column text --output predictions.csv
```

Why our own loop rather than ``transformers.pipeline``: the pipeline tokenizes, pads and
post-processes one row at a time, pads every batch to its longest row in file order, and needs
the whole input as a Python list. Here the file is read in chunks with pyarrow (csv/tsv
streaming reader, parquet row batches, JSON-lines blocks), so memory is bounded by the chunk,
not the file; each chunk is tokenized in one batched call of the fast (Rust) tokenizer on a
background thread while the model works on the previous chunk; rows are sorted by length inside
the chunk so each batch pads to nearly its own length (with IMDB reviews cut at 256 tokens,
batches in file order pad almost every row to 256); and the results are put back in file order.
The model sees exactly the tokens the pipeline gives it (same tokenizer, truncation and
attention mask), so the labels are the same; only the wasted padding is gone. The forward pass
itself is a backend's (``--backend torch|onnxruntime``, see ``backends.py``): everything above is
shared, so the ONNX Runtime backend reads the same tokens in the same batches.

The input is checked before anything is written (and, from the command line, before the model
loads): it exists and can be read, has the text column (and any ``--keep-columns``), decodes in
``--encoding`` and has rows. Output rows are written as they are produced to a temp file next to
``--output`` and renamed into place at the end, so an interrupted run never leaves half an output
file. Rows whose text is empty or null are kept, with an empty label and ``error = "empty
text"``, and counted on stderr; so are the rows longer than ``max_length`` tokens, which the
model reads truncated (as in training). ``--keep-columns`` copies input columns into the output
after ``row`` (one named like an output column is written as ``input_<name>``).
"""

from __future__ import annotations

import codecs
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..data.encoding import suggest_encoding
from ..data.tokenization import model_max_length
from ..errors import ConfigError, DataError, OutputDirError
from ..files import follow_umask, resolve_model
from ..formats import FORMATS, PREDICT_FORMATS
from .backends import TorchBackend, check_backend, make_backend
from .defaults import (DEFAULT_BACKEND, DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS, DEFAULT_ENCODING, DEFAULT_MAX_BATCH_TOKENS,
                       KEEP_ALL)

# extension -> the reader predict uses (.json and .ndjson files are read as JSON lines)
_EXT = {ext: f.chunk_reader for f in FORMATS.values() if f.chunk_reader for ext in f.extensions}
EMPTY_TEXT = "empty text"
READ_BLOCK_BYTES = 1 << 20  # pyarrow reader block: what is read ahead of the chunk being parsed
_SHOWN_EMPTY_ROWS = 10  # empty-text rows listed in the warning before "..."
# --keep-columns: "all", or the listed columns
KeepColumns = Union[str, Sequence[str], None]


# ---------------------------------------------------------------------------- the model
@dataclass
class Predictor:
    """A sequence-classification model and its tokenizer, ready to label texts fast.

    Args:
        model (`PreTrainedModel`): the classifier (put in eval mode here).
        tokenizer: its fast tokenizer.
        max_length (`int`): tokens kept per text (truncation), as in training.
        batch_size (`int`, *optional*, defaults to 64): the most rows in one forward pass.
        max_batch_tokens (`int`, *optional*, defaults to 512): the most tokens (rows x padded
            length) in one forward pass: long texts go fewer at a time, which is faster on a CPU
            (see ``defaults.py``); at least one row always goes. ``None``: ``batch_size`` alone.
        backend (*optional*): what runs the forward pass, a `TorchBackend` (the default: ``model``
            itself) or an `OnnxBackend` (``from_pretrained(..., backend="onnxruntime")``).

    Example:

    ```python
    p = Predictor.from_pretrained("runs/demo")
    labels, scores = p.predict(["A wonderful little gadget.", "Broke after a day."])
    fast = Predictor.from_pretrained("runs/demo", backend="onnxruntime")   # runs/demo/model/onnx/model.onnx
    ```
    """

    model: torch.nn.Module
    tokenizer: object
    max_length: int
    batch_size: int = DEFAULT_BATCH_SIZE
    backend: Any = None
    max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS

    def __post_init__(self):
        if self.backend is None:
            self.backend = TorchBackend(self.model)

    @classmethod
    def from_pretrained(cls, model: str, max_length: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                        revision: Optional[str] = None, backend: str = DEFAULT_BACKEND,
                        quantize: Optional[str] = None, threads: Optional[int] = None,
                        max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> "Predictor":
        """Load a run directory, a saved model folder or a Hub id.

        ``max_length`` defaults to the run's ``model.max_length`` for a run directory, else to
        the longest input the model accepts (its tokenizer's and position embeddings' limit).
        ``backend="onnxruntime"`` (a local model only) runs the export in ``<model>/onnx/``,
        exported on first use; ``quantize="int8"`` its int8 version; ``threads`` sets the
        cores ONNX Runtime uses (default: torch's count), one batch on each.
        """
        check_backend(backend, quantize)  # before the model loads: a missing extra answers at once
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..modeling.loading import quiet_transformers

        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}.")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"--max-batch-tokens must be >= 1 (or `none`: --batch-size alone), got {max_batch_tokens}.")
        where = resolve_model(model)
        try:
            with quiet_transformers():
                tok = AutoTokenizer.from_pretrained(where.path, revision=revision, use_fast=True)
                mdl = AutoModelForSequenceClassification.from_pretrained(where.path, revision=revision)
        except (OSError, ValueError) as err:
            raise ConfigError(f"model '{model}': cannot load it ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}).") from None
        if max_length is None and where.run_config:
            max_length = (where.run_config.get("model") or {}).get("max_length")
        if max_length is None:
            max_length = model_max_length(tok, mdl.config)
        mdl.eval()
        return cls(mdl, tok, int(max_length), batch_size, make_backend(mdl, tok, where.path, backend, quantize, threads),
                   max_batch_tokens)

    @property
    def label_names(self) -> List[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]

    def tokenize(self, texts: Sequence[str]) -> Dict[str, list]:
        """One batched call of the fast tokenizer: unpadded ids for every text."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)

    def _pad(self, encoded: Dict[str, list], rows: Sequence[int]) -> Dict[str, np.ndarray]:
        # Padding by hand with numpy: tokenizer.pad converts row by row in Python, which costs
        # more than the model on short texts. Pad values as the tokenizer would use them.
        width = max(len(encoded["input_ids"][i]) for i in rows)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = {}
        for key, values in encoded.items():
            if key not in ("input_ids", "attention_mask", "token_type_ids"):
                continue
            fill = (self.tokenizer.pad_token_id or 0) if key == "input_ids" else 0
            arr = np.full((len(rows), width), fill, dtype=np.int64)
            for j, i in enumerate(rows):
                v = values[i]
                if left:
                    arr[j, width - len(v):] = v
                else:
                    arr[j, : len(v)] = v
            out[key] = arr
        return out

    def predict_encoded(self, encoded: Dict[str, list]) -> np.ndarray:
        """Class probabilities for already-tokenized rows, in their given order."""
        n = len(encoded["input_ids"])
        logits = np.empty((n, self.model.config.num_labels), dtype=np.float32)
        if n == 0:
            return logits
        lengths = np.fromiter((len(x) for x in encoded["input_ids"]), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the first batch shows peak memory
        batches = list(self.batches(order, lengths))
        padded = (self._pad(encoded, rows) for rows in batches)
        for rows, batch_logits in zip(batches, self._logits_in_order(padded)):
            logits[rows] = batch_logits
        # Softmax in torch for both backends (the same post-processing, bit for bit), once for the
        # whole call: a torch call per batch on this thread while ONNX Runtime's workers ran cost
        # them 7-8% (measured: 42.3-42.9 rows/s against 45.1-45.4, MiniLM, 2 workers).
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    def _logits_in_order(self, padded: Iterator[Dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        # one batch after another (torch spreads each operation over its threads), unless the
        # backend runs several at once (OnnxBackend.logits_in_order)
        in_order = getattr(self.backend, "logits_in_order", None)
        return in_order(padded) if in_order is not None else map(self.backend.logits, padded)

    def batches(self, order: np.ndarray, lengths: np.ndarray):
        """``order`` (row numbers, longest first) cut into forward passes of at most
        ``batch_size`` rows and ``max_batch_tokens`` tokens (at least one row each). With a
        backend that runs several batches at once, a call with few rows is cut into at least
        that many batches, so every worker has one."""
        workers = getattr(self.backend, "workers", 1)
        most_rows = min(self.batch_size, -(-len(order) // workers))
        start = 0
        while start < len(order):
            size = most_rows
            if self.max_batch_tokens is not None:  # longest first: a batch's first row sets its width
                size = max(1, min(size, self.max_batch_tokens // max(1, int(lengths[order[start]]))))
            yield order[start : start + size]
            start += size

    def count_truncated(self, texts: Sequence[str], encoded) -> int:
        """How many of ``texts`` were longer than ``max_length`` tokens (``tokenize`` cut them)."""
        encodings = getattr(encoded, "encodings", None)
        if encodings is not None:  # a fast tokenizer keeps what truncation cut off
            return sum(1 for e in encodings if e.overflowing)
        full = self.tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
        return sum(len(ids) > self.max_length for ids in full)

    def predict(self, texts: Sequence[str]) -> Tuple[List[str], np.ndarray]:
        """Labels and class probabilities for ``texts`` (none may be empty)."""
        probs = self.predict_encoded(self.tokenize(texts))
        names = self.label_names
        return [names[i] for i in probs.argmax(axis=1)], probs


# ---------------------------------------------------------------------------- reading
def file_format(path: str, fmt: Optional[str] = None, option: str = "--input") -> str:
    """The reader for ``path``: ``fmt`` if given, else told by the extension (``.json`` is read
    as JSON lines). ``option`` is the flag that named the file, for the error."""
    if fmt:
        if fmt not in PREDICT_FORMATS:
            raise ConfigError(f"unknown format '{fmt}'; use one of {', '.join(PREDICT_FORMATS)}.")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in _EXT:
        known = ", ".join(sorted(_EXT))
        if option == "--output":
            raise ConfigError(f"cannot tell the format of --output '{path}' from its extension '{ext or '(none)'}'; "
                              f"end its name with one of {known} (or leave --output out: csv on stdout).")
        raise ConfigError(f"cannot tell the format of {option} '{path}' from its extension '{ext or '(none)'}'; "
                          f"use one of {known}, or pass --input-format ({', '.join(PREDICT_FORMATS)}).")
    return _EXT[ext]


def check_encoding_name(encoding: str) -> str:
    """``encoding``'s canonical codec name; a `ConfigError` naming ``--encoding`` if Python knows no such codec."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"--encoding '{encoding}' is not an encoding Python knows; use e.g. utf-8, latin-1, "
                          f"cp1252 or utf-16.") from None


def check_readable(path: str) -> None:
    """A `DataError` unless ``path`` is a file this process can read, with something in it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"input file not found: '{path}'.")
    if not p.is_file():
        raise DataError(f"input '{path}' is a folder, not a file; name a csv, tsv, jsonl or parquet file.")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as err:
        raise DataError(f"input file '{path}' cannot be read ({err.strerror or err}); check its permissions.") from None
    if p.stat().st_size == 0:
        raise DataError(f"input '{path}' is empty (0 bytes): there is nothing to label.")


def undecodable(path: str, encoding: str) -> Optional[Tuple[int, Optional[int], bytes]]:
    """Where ``path`` first fails to decode in ``encoding``: ``(byte offset, 1-based line or None,
    the bytes)``; None if the whole file decodes. One pass, a block at a time."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    one_byte_newline = "\n".encode(encoding) == b"\n"  # else (UTF-16/32) lines cannot be counted as bytes
    offset, line = 0, 1
    with open(path, "rb") as f:
        while True:
            block = f.read(READ_BLOCK_BYTES)
            pending = decoder.getstate()[0]  # the start of a character cut by the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                data = pending + block
                where = line + data[:err.start].count(b"\n") if one_byte_newline else None
                return offset - len(pending) + err.start, where, data[err.start:err.end]
            if not block:
                return None
            offset += len(block)
            line += block.count(b"\n")


def read_error(path: str, fmt: str, encoding: str, err: Exception) -> DataError:
    """The error for a file pyarrow could not read: where it does not decode in ``encoding`` when
    that is why (with an encoding it does decode in), else pyarrow's own message."""
    bad = undecodable(path, encoding) if fmt != "parquet" else None
    if bad is None:
        return DataError(f"cannot read '{path}' as {fmt}: {str(err).splitlines()[0] if str(err) else err}")
    offset, line, data = bad
    where = f"line {line}, byte offset {offset}" if line else f"byte offset {offset}"
    what = f"the byte(s) {' '.join(f'0x{b:02x}' for b in data)}" if data else "a character cut short"
    better = suggest_encoding(path, encoding)
    return DataError(f"'{path}' is not valid {encoding} (--encoding {encoding}): {where} has {what}, which "
                     f"{encoding} cannot decode. The file decodes as {better}: pass --encoding {better}, or save "
                     f"the file as {encoding}.")


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches of whatever size the reader makes, regrouped into tables of ``rows`` rows."""
    pending: List[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def _parquet_batches(path: str, columns: List[str], chunk_rows: int, flags: Dict[str, str], all_columns: bool):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    _check_columns(path, columns, pf.schema_arrow.names, flags)
    return pf.iter_batches(batch_size=chunk_rows, columns=None if all_columns else columns)


def _csv_batches(path: str, columns: List[str], fmt: str, block_bytes: int, encoding: str,
                 flags: Dict[str, str], all_columns: bool):
    import pyarrow.csv as pcsv

    # newlines_in_values: reviews hold line breaks inside quoted fields. use_threads=False:
    # the threaded reader reads ahead, and peak memory then grew with the file (measured).
    # pyarrow transcodes any encoding but its own "utf8" through Python's codecs (slower).
    parse = pcsv.ParseOptions(delimiter=FORMATS[fmt].delimiter, newlines_in_values=True)
    read = pcsv.ReadOptions(block_size=block_bytes, use_threads=False,
                            encoding="utf8" if encoding == "utf-8" else encoding)

    def open_csv(convert):
        return pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)

    names = open_csv(pcsv.ConvertOptions(column_types={})).schema.names
    _check_columns(path, columns, names, flags)
    wanted = names if all_columns else columns  # every column is read as text: copied as written, never re-typed
    return open_csv(pcsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted}))


def _jsonl_batches(path: str, columns: List[str], block_bytes: int, encoding: str):
    import pyarrow.json as pjson

    # The text column (the first) gets an explicit type: inference on the first block
    # would read a text column that starts with nulls as null-typed and fail on the
    # first string further on. Other columns (labels) keep their inferred types.
    # pyarrow reads JSON as UTF-8 only: another encoding is transcoded on the way in.
    source = path if encoding == "utf-8" else pa.transcoding_input_stream(pa.input_stream(path), encoding, "utf-8")
    schema = pa.schema([(columns[0], pa.string())])
    return pjson.open_json(source, read_options=pjson.ReadOptions(block_size=block_bytes),
                           parse_options=pjson.ParseOptions(explicit_schema=schema,
                                                            unexpected_field_behavior="infer"))


def read_chunks(path: str, columns: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS, fmt: Optional[str] = None,
                block_bytes: int = READ_BLOCK_BYTES, encoding: str = DEFAULT_ENCODING, all_columns: bool = False,
                flags: Optional[Dict[str, str]] = None) -> Iterator[pa.Table]:
    """Stream ``columns`` of a csv/tsv/jsonl/parquet file as tables of at most ``chunk_rows`` rows.

    Never holds more than a chunk (plus one reader block of ``block_bytes``) in memory.
    ``columns[0]`` is the text column; ``all_columns`` reads every column of the file (``columns``
    must still be there). Raises a `DataError` naming the file and its columns when a column is
    missing (and the option that named it, from ``flags``: column -> option), and naming the file,
    the place and ``--encoding`` when the file does not decode in ``encoding``.
    """
    fmt = file_format(path, fmt)
    encoding = check_encoding_name(encoding)
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {chunk_rows}.")
    check_readable(path)
    columns = list(dict.fromkeys(columns))
    flags = {columns[0]: "--text-column", **(flags or {})}
    try:
        if fmt == "parquet":
            batches = _parquet_batches(path, columns, chunk_rows, flags, all_columns)
        elif fmt == "jsonl":
            batches = _jsonl_batches(path, columns, block_bytes, encoding)
        else:
            batches = _csv_batches(path, columns, fmt, block_bytes, encoding, flags, all_columns)
        for i, table in enumerate(_rechunk(iter(batches), chunk_rows)):
            if fmt == "jsonl":
                table.validate(full=True)  # pyarrow's JSON parser lets invalid UTF-8 into strings; this finds it
                if i == 0:
                    _check_jsonl_columns(path, columns, table, encoding, flags)
            yield table if all_columns else table.select(columns)
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise read_error(path, fmt, encoding, err) from None


def _check_columns(path: str, wanted: Sequence[str], have: Sequence[str], flags: Dict[str, str]) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        options = sorted({flags.get(c, "") for c in missing} - {""})
        fix = f" Pass {' / '.join(options)} with one of them." if options else ""
        raise DataError(f"'{path}' has no column {', '.join(repr(c) for c in missing)}; its columns are "
                        f"{list(have)}.{fix}")


def _check_jsonl_columns(path: str, columns: Sequence[str], table: pa.Table, encoding: str,
                         flags: Dict[str, str]) -> None:
    # With an explicit schema a missing key reads as null everywhere; a column null in every
    # row of the first chunk is almost surely a misspelt name, so say so instead of labelling
    # nothing.
    for c in columns:
        if c not in table.column_names or table.column(c).null_count == table.num_rows:
            with open(path, encoding=encoding) as f:
                first = json.loads(f.readline() or "{}")
            if c not in first:
                _check_columns(path, [c], list(first), flags)


def open_input(path: str, text_column: str, keep: KeepColumns = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
               fmt: Optional[str] = None, encoding: str = DEFAULT_ENCODING) -> Iterator[pa.Table]:
    """The input's chunks, checked before the caller writes anything: the file exists, can be
    read, has the text column and every kept one, decodes, and has rows. Each chunk holds the
    text column and the kept ones (every column for ``keep="all"``)."""
    listed = [] if keep in (None, KEEP_ALL) else list(keep)
    flags = {c: "--keep-columns" for c in listed}
    chunks = read_chunks(path, [text_column, *listed], chunk_rows=chunk_rows, fmt=fmt, encoding=encoding,
                         all_columns=keep == KEEP_ALL, flags=flags)
    first = next(chunks, None)
    if first is None:
        raise DataError(f"input '{path}' has no rows (a header at most): there is nothing to label.")
    return chain([first], chunks)


def count_rows(path: str, fmt: Optional[str] = None) -> Optional[int]:
    """Row count when it is free (parquet metadata); ``None`` otherwise (the bar then counts up)."""
    if file_format(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def parse_keep_columns(value: Optional[str]) -> KeepColumns:
    """``--keep-columns``: None, ``"all"``, or the comma-separated names."""
    if value is None:
        return None
    if value.strip() == KEEP_ALL:
        return KEEP_ALL
    names = [c.strip() for c in value.split(",") if c.strip()]
    if not names:
        raise ConfigError(f"--keep-columns '{value}' names no column; pass `all` or a comma-separated list.")
    return names


# ---------------------------------------------------------------------------- writing
class _Writer:
    """Rows out as they come: csv/tsv/jsonl/parquet (by ``output``'s extension; csv on stdout
    without one) through a temp file renamed at the end."""

    def __init__(self, output: Optional[str], schema: pa.Schema):
        self.output = output
        self.fmt = file_format(output, option="--output") if output else "csv"
        if output:
            target = Path(output)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            follow_umask(self.tmp)  # mkstemp's 0600 would hide the output from other users
            self.sink = self.tmp
        else:
            self.tmp = None
            self.sink = sys.stdout.buffer
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.sink, schema)
        elif self.fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            options = pcsv.WriteOptions(delimiter=FORMATS[self.fmt].delimiter)
            self.writer = pcsv.CSVWriter(self.sink, schema, write_options=options)
        else:
            self.writer = None
            self.handle = open(self.sink, "w") if self.tmp else sys.stdout

    def write(self, table: pa.Table) -> None:
        if self.writer is not None:
            self.writer.write_table(table)
        else:
            for row in table.to_pylist():
                self.handle.write(json.dumps(row, default=str) + "\n")

    def close(self, ok: bool) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            elif self.tmp:
                self.handle.close()
            else:
                sys.stdout.flush()
        finally:
            if self.tmp:
                if ok:
                    os.replace(self.tmp, self.output)
                else:
                    Path(self.tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- predicting a file
@dataclass
class PredictSummary:
    """What ``predict_file`` did: rows written, the 1-based rows with empty text, the output, and
    how many rows were longer than ``max_length`` tokens (read truncated)."""

    rows: int
    empty_rows: List[int]
    output: Optional[str]
    truncated_rows: int = 0


def check_output_file(output: Optional[str], overwrite: bool) -> None:
    """Refuse to replace an existing ``--output`` unless asked, or one whose format its name does not
    tell (checked before the model loads)."""
    if output:
        file_format(output, option="--output")
    if output and Path(output).exists() and not overwrite:
        raise OutputDirError(f"--output '{output}' already exists; nothing was written. Choose another file or "
                             f"pass --overwrite to replace it.")


def output_columns(kept: Sequence[str], names: List[str], all_scores: bool) -> Dict[str, str]:
    """Kept input column -> its output name: its own, or ``input_<name>`` when predict writes a column of that name."""
    ours = {"row", "label", "score", "error"} | ({f"score_{n}" for n in names} if all_scores else set())
    renamed = {}
    for column in kept:
        name = column
        while name in ours or name in renamed.values():
            name = f"input_{name}"
        renamed[column] = name
    return renamed


def _output_schema(names: List[str], all_scores: bool, kept: Optional[pa.Schema] = None) -> pa.Schema:
    fields = [("row", pa.int64())] + [(f.name, f.type) for f in (kept or [])]
    fields += [("label", pa.string()), ("score", pa.float64())]
    if all_scores:
        fields += [(f"score_{n}", pa.float64()) for n in names]
    fields.append(("error", pa.string()))
    return pa.schema(fields)


def _read_ahead(pool: ThreadPoolExecutor, tables: Iterator[pa.Table], prepare: Callable):
    """``prepare(table)`` for each table, the next one prepared on ``pool`` while the caller
    works on this one: the Rust tokenizer and pyarrow release the GIL, so the two overlap on
    separate cores."""

    def prepare_next():
        table = next(tables, None)
        return None if table is None else prepare(table)

    pending = pool.submit(prepare_next)
    while True:
        item = pending.result()
        if item is None:
            return
        pending = pool.submit(prepare_next)
        yield item


def _nullable(values: np.ndarray) -> pa.Array:
    """Floats with NaN written as null (no score for a row without text)."""
    return pa.array(values, pa.float64(), mask=np.isnan(values))


@dataclass
class _Chunk:
    """One chunk of input, tokenized: its row count, the rows with text, their tokens, how many
    were cut at ``max_length``, and the input columns copied into the output."""

    rows: int
    keep: List[int]
    encoded: Any
    truncated: int
    kept: Optional[pa.Table]


def _labelled_table(probs: np.ndarray, chunk: _Chunk, first_row: int, names: List[str],
                    all_scores: bool, schema: pa.Schema) -> Tuple[pa.Table, List[int]]:
    """The output rows of one chunk, whose rows with text have ``probs``; and the row numbers of
    those without text."""
    n, keep = chunk.rows, chunk.keep
    label = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    error = np.full(n, EMPTY_TEXT, dtype=object)
    full = np.full((n, len(names)), np.nan)
    if keep:
        idx = np.asarray(keep)
        top = probs.argmax(axis=1)
        label[idx] = np.asarray(names, dtype=object)[top]
        score[idx] = probs[np.arange(len(keep)), top]
        error[idx] = None
        full[idx] = probs
    rows = np.arange(first_row, first_row + n)
    cols = {"row": pa.array(rows, pa.int64())}
    if chunk.kept is not None:
        cols.update({name: column for name, column in zip(chunk.kept.column_names, chunk.kept.columns)})
    cols.update({"label": pa.array(label, pa.string()), "score": _nullable(score)})
    if all_scores:
        cols.update({f"score_{name}": _nullable(full[:, j]) for j, name in enumerate(names)})
    cols["error"] = pa.array(error, pa.string())
    empty_rows = [int(r) for r in rows[error != None]]  # noqa: E711 (elementwise)
    return pa.table(cols, schema=schema), empty_rows


def _warn_empty(empty: List[int], rows: int) -> None:
    if empty:
        shown = ", ".join(map(str, empty[:_SHOWN_EMPTY_ROWS])) + (", ..." if len(empty) > _SHOWN_EMPTY_ROWS else "")
        print(f"warning: {len(empty)} of {rows} rows have empty text (rows {shown}); they are in the output "
              f"with an empty label and error='{EMPTY_TEXT}'.", file=sys.stderr)


def _report_truncated(truncated: int, rows: int, max_length: int) -> None:
    if truncated:
        print(f"note: {truncated} of {rows} rows are longer than {max_length} tokens; the model read only their "
              f"first {max_length} (the length it was trained with, unless --max-length says otherwise).",
              file=sys.stderr)


def _kept_columns(first: pa.Table, keep: KeepColumns, names: List[str], all_scores: bool) -> Dict[str, str]:
    """Kept input column -> output name, and a note on stderr for each one renamed."""
    kept = first.column_names if keep == KEEP_ALL else list(keep or [])
    renamed = output_columns(kept, names, all_scores)
    for column, name in renamed.items():
        if column != name:
            print(f"note: input column '{column}' is written as '{name}' (predict writes its own '{column}').",
                  file=sys.stderr)
    return renamed


def predict_file(predictor: Predictor, input_path: str, text_column: str = "text", output: Optional[str] = None,
                 all_scores: bool = False, overwrite: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 input_format: Optional[str] = None, progress: bool = True, keep_columns: KeepColumns = None,
                 encoding: str = DEFAULT_ENCODING) -> PredictSummary:
    """Label every row of ``input_path`` and write ``row[, kept columns], label, score[, score_<label>...], error``.

    Args:
        predictor (`Predictor`): the model.
        input_path (`str`): a csv, tsv, jsonl or parquet file.
        text_column (`str`): the column holding the text.
        output (`str`, *optional*): csv/tsv/jsonl/parquet file (by extension); stdout (csv) if not set.
        all_scores (`bool`): also write each class's probability.
        overwrite (`bool`): replace an existing ``output``.
        chunk_rows (`int`): rows read, tokenized and sorted together; memory is bounded by it.
        input_format (`str`, *optional*): the input's format when its extension does not tell.
        keep_columns (`str` or `list[str]`, *optional*): input columns copied into the output, or ``"all"``.
        encoding (`str`): the input's text encoding (csv/tsv/jsonl).

    Returns:
        A `PredictSummary`: rows written, the 1-based row numbers of rows with empty text, and the
        number of rows longer than the predictor's ``max_length``.
    """
    check_output_file(output, overwrite)
    chunks = open_input(input_path, text_column, keep_columns, chunk_rows, input_format, encoding)
    first = next(chunks)
    names = predictor.label_names
    renamed = _kept_columns(first, keep_columns, names, all_scores)
    kept_schema = pa.schema([first.schema.field(c).with_name(n) for c, n in renamed.items()])

    def prepare(table: pa.Table) -> _Chunk:
        texts = table.column(text_column).to_pylist()
        keep = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        encoded = predictor.tokenize([texts[i] for i in keep])
        kept = table.select(list(renamed)).rename_columns(list(renamed.values())) if renamed else None
        return _Chunk(len(texts), keep, encoded, predictor.count_truncated([texts[i] for i in keep], encoded), kept)

    summary = _label_chunks(predictor, chain([first], chunks), prepare, output,
                            _output_schema(names, all_scores, kept_schema), all_scores,
                            count_rows(input_path, input_format) if progress else None, progress)
    _warn_empty(summary.empty_rows, summary.rows)
    _report_truncated(summary.truncated_rows, summary.rows, predictor.max_length)
    return summary


def _label_chunks(predictor: Predictor, tables: Iterator[pa.Table], prepare: Callable[[pa.Table], _Chunk],
                  output: Optional[str], schema: pa.Schema, all_scores: bool, total: Optional[int],
                  progress: bool) -> PredictSummary:
    """Tokenize each table on a background thread, label it, write it; the output is renamed into
    place only when every chunk is written."""
    names = predictor.label_names
    writer = _Writer(output, schema)
    ok, summary = False, PredictSummary(rows=0, empty_rows=[], output=output)
    bar = tqdm(total=total, unit="rows", desc="predict", disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for chunk in _read_ahead(pool, tables, prepare):
            probs = predictor.predict_encoded(chunk.encoded)
            table, empty_rows = _labelled_table(probs, chunk, summary.rows + 1, names, all_scores, schema)
            summary.empty_rows.extend(empty_rows)
            summary.truncated_rows += chunk.truncated
            writer.write(table)
            summary.rows += chunk.rows
            bar.update(chunk.rows)
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        writer.close(ok)
    return summary


# ---------------------------------------------------------------------------- command line
def command(args) -> int:
    """``textransfer predict`` (its arguments are defined in ``cli``)."""
    check_output_file(args.output, args.overwrite)  # before loading the model
    check_backend(args.backend, args.quantize)
    keep = parse_keep_columns(args.keep_columns)
    # the input is checked before the model loads: a missing file or column answers at once
    next(open_input(args.input, args.text_column, keep, args.chunk_size, args.input_format, args.encoding))
    predictor = Predictor.from_pretrained(args.model, max_length=args.max_length, batch_size=args.batch_size,
                                          revision=args.revision, backend=args.backend, quantize=args.quantize,
                                          max_batch_tokens=args.max_batch_tokens)
    summary = predict_file(predictor, args.input, text_column=args.text_column, output=args.output,
                           all_scores=args.all_scores, overwrite=args.overwrite, chunk_rows=args.chunk_size,
                           input_format=args.input_format, keep_columns=keep, encoding=args.encoding)
    if args.output:
        print(f"{summary.rows} rows labelled -> {args.output}", file=sys.stderr)
    return 0
