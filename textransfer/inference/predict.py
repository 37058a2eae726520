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
attention mask), so the labels are the same; only the wasted padding is gone.

Output rows are written as they are produced to a temp file next to ``--output`` and renamed
into place at the end, so an interrupted run never leaves half an output file. Rows whose text is
empty or null are kept, with an empty label and ``error = "empty text"``, and counted on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..data.tokenization import model_max_length
from ..errors import ConfigError, DataError, OutputDirError
from ..files import resolve_model
from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS
from ..formats import FORMATS, PREDICT_FORMATS

# extension -> the reader predict uses (.json and .ndjson files are read as JSON lines)
_EXT = {ext: f.chunk_reader for f in FORMATS.values() if f.chunk_reader for ext in f.extensions}
EMPTY_TEXT = "empty text"
READ_BLOCK_BYTES = 1 << 20  # pyarrow reader block: what is read ahead of the chunk being parsed
_SHOWN_EMPTY_ROWS = 10  # empty-text rows listed in the warning before "..."


# ---------------------------------------------------------------------------- the model
@dataclass
class Predictor:
    """A sequence-classification model and its tokenizer, ready to label texts fast.

    Args:
        model (`PreTrainedModel`): the classifier (put in eval mode here).
        tokenizer: its fast tokenizer.
        max_length (`int`): tokens kept per text (truncation), as in training.
        batch_size (`int`, *optional*, defaults to 64): rows per forward pass.

    Example:

    ```python
    p = Predictor.from_pretrained("runs/demo")
    labels, scores = p.predict(["A wonderful little gadget.", "Broke after a day."])
    ```
    """

    model: torch.nn.Module
    tokenizer: object
    max_length: int
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_pretrained(cls, model: str, max_length: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                        revision: Optional[str] = None) -> "Predictor":
        """Load a run directory, a saved model folder or a Hub id.

        ``max_length`` defaults to the run's ``model.max_length`` for a run directory, else to
        the longest input the model accepts (its tokenizer's and position embeddings' limit).
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..modeling.loading import quiet_transformers

        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}.")
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
        return cls(mdl, tok, int(max_length), batch_size)

    @property
    def label_names(self) -> List[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]

    def tokenize(self, texts: Sequence[str]) -> Dict[str, list]:
        """One batched call of the fast tokenizer: unpadded ids for every text."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)

    def _pad(self, encoded: Dict[str, list], rows: Sequence[int]) -> Dict[str, torch.Tensor]:
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
            out[key] = torch.from_numpy(arr)
        return out

    def predict_encoded(self, encoded: Dict[str, list]) -> np.ndarray:
        """Class probabilities for already-tokenized rows, in their given order."""
        n = len(encoded["input_ids"])
        probs = np.empty((n, self.model.config.num_labels), dtype=np.float32)
        if n == 0:
            return probs
        lengths = np.fromiter((len(x) for x in encoded["input_ids"]), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the first batch shows peak memory
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                logits = self.model(**self._pad(encoded, rows)).logits.float()
                probs[rows] = torch.softmax(logits, dim=-1).numpy()
        return probs

    def predict(self, texts: Sequence[str]) -> Tuple[List[str], np.ndarray]:
        """Labels and class probabilities for ``texts`` (none may be empty)."""
        probs = self.predict_encoded(self.tokenize(texts))
        names = self.label_names
        return [names[i] for i in probs.argmax(axis=1)], probs


# ---------------------------------------------------------------------------- reading
def file_format(path: str, fmt: Optional[str] = None) -> str:
    """The reader for ``path``: ``fmt`` if given, else told by the extension (``.json`` is read
    as JSON lines)."""
    if fmt:
        if fmt not in PREDICT_FORMATS:
            raise ConfigError(f"unknown format '{fmt}'; use one of {', '.join(PREDICT_FORMATS)}.")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in _EXT:
        raise ConfigError(f"cannot tell the format of '{path}' from its extension '{ext or '(none)'}'; "
                          f"use .csv, .tsv, .jsonl or .parquet, or pass --format.")
    return _EXT[ext]


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


def _parquet_batches(path: str, columns: List[str], chunk_rows: int):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    _check_columns(path, columns, pf.schema_arrow.names)
    return pf.iter_batches(batch_size=chunk_rows, columns=columns)


def _csv_batches(path: str, columns: List[str], fmt: str, block_bytes: int):
    import pyarrow.csv as pcsv

    # newlines_in_values: reviews hold line breaks inside quoted fields. use_threads=False:
    # the threaded reader reads ahead, and peak memory then grew with the file (measured).
    parse = pcsv.ParseOptions(delimiter=FORMATS[fmt].delimiter, newlines_in_values=True)

    def open_csv(convert):
        return pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=block_bytes, use_threads=False),
                             parse_options=parse, convert_options=convert)

    _check_columns(path, columns, open_csv(pcsv.ConvertOptions(column_types={})).schema.names)
    return open_csv(pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns}))


def _jsonl_batches(path: str, columns: List[str], block_bytes: int):
    import pyarrow.json as pjson

    # The text column (the first) gets an explicit type: inference on the first block
    # would read a text column that starts with nulls as null-typed and fail on the
    # first string further on. Other columns (labels) keep their inferred types.
    schema = pa.schema([(columns[0], pa.string())])
    return pjson.open_json(path, read_options=pjson.ReadOptions(block_size=block_bytes),
                           parse_options=pjson.ParseOptions(explicit_schema=schema,
                                                            unexpected_field_behavior="infer"))


def read_chunks(path: str, columns: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS, fmt: Optional[str] = None,
                block_bytes: int = READ_BLOCK_BYTES) -> Iterator[pa.Table]:
    """Stream ``columns`` of a csv/tsv/jsonl/parquet file as tables of at most ``chunk_rows`` rows.

    Never holds more than a chunk (plus one reader block of ``block_bytes``) in memory. Raises a
    `DataError` naming the file and the available columns when a column is missing.
    """
    fmt = file_format(path, fmt)
    if not Path(path).is_file():
        raise DataError(f"input file not found: '{path}'.")
    columns = list(columns)
    try:
        if fmt == "parquet":
            batches = _parquet_batches(path, columns, chunk_rows)
        elif fmt == "jsonl":
            batches = _jsonl_batches(path, columns, block_bytes)
        else:
            batches = _csv_batches(path, columns, fmt, block_bytes)
        for i, table in enumerate(_rechunk(iter(batches), chunk_rows)):
            if fmt == "jsonl" and i == 0:
                _check_jsonl_columns(path, columns, table)
            yield table.select(columns)
    except pa.ArrowInvalid as err:
        raise DataError(f"cannot read '{path}' as {fmt}: {err}") from None


def _check_columns(path: str, wanted: Sequence[str], have: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        raise DataError(f"'{path}' has no column {', '.join(repr(c) for c in missing)}; its columns are "
                        f"{list(have)}. Pass --text-column with one of them.")


def _check_jsonl_columns(path: str, columns: Sequence[str], table: pa.Table) -> None:
    # With an explicit schema a missing key reads as null everywhere; a column null in every
    # row of the first chunk is almost surely a misspelt name, so say so instead of labelling
    # nothing.
    for c in columns:
        if c not in table.column_names or table.column(c).null_count == table.num_rows:
            with open(path) as f:
                first = json.loads(f.readline() or "{}")
            if c not in first:
                _check_columns(path, [c], list(first))


def count_rows(path: str, fmt: Optional[str] = None) -> Optional[int]:
    """Row count when it is free (parquet metadata); ``None`` otherwise (the bar then counts up)."""
    if file_format(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


# ---------------------------------------------------------------------------- writing
class _Writer:
    """Rows out as they come: csv/tsv/jsonl/parquet (by ``output``'s extension; csv on stdout
    without one) through a temp file renamed at the end."""

    def __init__(self, output: Optional[str], schema: pa.Schema):
        self.output = output
        self.fmt = file_format(output) if output else "csv"
        if output:
            target = Path(output)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
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
                self.handle.write(json.dumps(row) + "\n")

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
    """What ``predict_file`` did: rows written, the 1-based rows with empty text, the output."""

    rows: int
    empty_rows: List[int]
    output: Optional[str]


def check_output_file(output: Optional[str], overwrite: bool) -> None:
    """Refuse to replace an existing ``--output`` unless asked (checked before the model loads)."""
    if output and Path(output).exists() and not overwrite:
        raise OutputDirError(f"--output '{output}' already exists; nothing was written. Choose another file or "
                             f"pass --overwrite to replace it.")


def _output_schema(names: List[str], all_scores: bool) -> pa.Schema:
    fields = [("row", pa.int64()), ("label", pa.string()), ("score", pa.float64())]
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


def _labelled_table(probs: np.ndarray, n: int, keep: List[int], first_row: int, names: List[str],
                    all_scores: bool, schema: pa.Schema) -> Tuple[pa.Table, List[int]]:
    """The output rows of one chunk of ``n`` input rows, of which those at ``keep`` had text and
    have ``probs``; and the row numbers of those without text."""
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
    cols = {"row": pa.array(rows, pa.int64()), "label": pa.array(label, pa.string()), "score": _nullable(score)}
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


def predict_file(predictor: Predictor, input_path: str, text_column: str = "text", output: Optional[str] = None,
                 all_scores: bool = False, overwrite: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 input_format: Optional[str] = None, progress: bool = True) -> PredictSummary:
    """Label every row of ``input_path`` and write ``row, label, score[, score_<label>...], error``.

    Args:
        predictor (`Predictor`): the model.
        input_path (`str`): a csv, tsv, jsonl or parquet file.
        text_column (`str`): the column holding the text.
        output (`str`, *optional*): csv/tsv/jsonl/parquet file (by extension); stdout (csv) if not set.
        all_scores (`bool`): also write each class's probability.
        overwrite (`bool`): replace an existing ``output``.
        chunk_rows (`int`): rows read, tokenized and sorted together; memory is bounded by it.
        input_format (`str`, *optional*): the input's format when its extension does not tell.

    Returns:
        A `PredictSummary`: rows written and the 1-based row numbers of rows with empty text.
    """
    check_output_file(output, overwrite)
    if chunk_rows < 1:
        raise ConfigError(f"chunk size must be >= 1, got {chunk_rows}.")
    names = predictor.label_names
    schema = _output_schema(names, all_scores)
    chunks = read_chunks(input_path, [text_column], chunk_rows=chunk_rows, fmt=input_format)

    def prepare(table: pa.Table):
        texts = table.column(text_column).to_pylist()
        keep = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        return len(texts), keep, predictor.tokenize([texts[i] for i in keep])

    writer = _Writer(output, schema)
    ok, empty, done = False, [], 0
    bar = tqdm(total=count_rows(input_path, input_format), unit="rows", desc="predict", disable=not progress,
               file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for n, keep, encoded in _read_ahead(pool, chunks, prepare):
            probs = predictor.predict_encoded(encoded)
            table, empty_rows = _labelled_table(probs, n, keep, done + 1, names, all_scores, schema)
            empty.extend(empty_rows)
            writer.write(table)
            done += n
            bar.update(n)
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        writer.close(ok)
    _warn_empty(empty, done)
    return PredictSummary(rows=done, empty_rows=empty, output=output)


# ---------------------------------------------------------------------------- command line
def command(args) -> int:
    """``textransfer predict`` (its arguments are defined in ``cli``)."""
    check_output_file(args.output, args.overwrite)  # before loading the model
    predictor = Predictor.from_pretrained(args.model, max_length=args.max_length, batch_size=args.batch_size,
                                          revision=args.revision)
    summary = predict_file(predictor, args.input, text_column=args.text_column, output=args.output,
                           all_scores=args.all_scores, overwrite=args.overwrite, chunk_rows=args.chunk_size,
                           input_format=args.input_format)
    if args.output:
        print(f"{summary.rows} rows labelled -> {args.output}", file=sys.stderr)
    return 0
