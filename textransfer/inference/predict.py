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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, OutputDirError
from ..files import resolve_model

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXT = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
EMPTY_TEXT = "empty text"


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
    batch_size: int = 64

    @classmethod
    def from_pretrained(cls, model: str, max_length: Optional[int] = None, batch_size: int = 64,
                        revision: Optional[str] = None) -> "Predictor":
        """Load a run directory, a saved model folder or a Hub id.

        ``max_length`` defaults to the run's ``model.max_length`` for a run directory, else to
        the smaller of the tokenizer's ``model_max_length`` and the model's position limit.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..modeling.loading import quiet_transformers

        where = resolve_model(model)
        path, run_config = where.path, where.run_config
        try:
            with quiet_transformers():
                tok = AutoTokenizer.from_pretrained(path, revision=revision, use_fast=True)
                mdl = AutoModelForSequenceClassification.from_pretrained(path, revision=revision)
        except (OSError, ValueError) as err:
            raise ConfigError(f"model '{model}': cannot load it ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}).") from None
        if max_length is None and run_config:
            max_length = (run_config.get("model") or {}).get("max_length")
        if max_length is None:
            limits = [tok.model_max_length, getattr(mdl.config, "max_position_embeddings", None)]
            max_length = min(int(x) for x in limits if x and x < 1_000_000)
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}.")
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
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")
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


def read_chunks(path: str, columns: Sequence[str], chunk_rows: int = 4096, fmt: Optional[str] = None,
                block_bytes: int = 1 << 20) -> Iterator[pa.Table]:
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
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            _check_columns(path, columns, pf.schema_arrow.names)
            batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
        elif fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            # newlines_in_values: reviews hold line breaks inside quoted fields. use_threads=False:
            # the threaded reader reads ahead, and peak memory then grew with the file (measured).
            parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
            header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=block_bytes, use_threads=False),
                                   parse_options=parse,
                                   convert_options=pcsv.ConvertOptions(column_types={})).schema.names
            _check_columns(path, columns, header)
            convert = pcsv.ConvertOptions(include_columns=columns,
                                          column_types={c: pa.string() for c in columns})
            batches = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=block_bytes, use_threads=False),
                                    parse_options=parse, convert_options=convert)
        else:
            import pyarrow.json as pjson

            # The text column (the first) gets an explicit type: inference on the first block
            # would read a text column that starts with nulls as null-typed and fail on the
            # first string further on. Other columns (labels) keep their inferred types.
            schema = pa.schema([(columns[0], pa.string())])
            batches = pjson.open_json(path, read_options=pjson.ReadOptions(block_size=block_bytes),
                                      parse_options=pjson.ParseOptions(explicit_schema=schema,
                                                                       unexpected_field_behavior="infer"))
        seen = 0
        for table in _rechunk(iter(batches), chunk_rows):
            if fmt == "jsonl" and seen == 0:
                _check_jsonl_columns(path, columns, table)
            seen += table.num_rows
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
    """Rows out as they come: csv/tsv/jsonl/parquet through a temp file renamed at the end."""

    def __init__(self, output: Optional[str], fmt: Optional[str], schema: pa.Schema):
        self.output = output
        self.schema = schema
        self.fmt = file_format(output, fmt) if output else "csv"
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

            self.writer = pcsv.CSVWriter(self.sink, schema,
                                         write_options=pcsv.WriteOptions(delimiter="\t" if self.fmt == "tsv" else ","))
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


@dataclass
class PredictSummary:
    rows: int
    empty_rows: List[int]
    output: Optional[str]


def predict_file(predictor: Predictor, input_path: str, text_column: str = "text", output: Optional[str] = None,
                 all_scores: bool = False, overwrite: bool = False, chunk_rows: int = 4096,
                 input_format: Optional[str] = None, output_format: Optional[str] = None,
                 progress: bool = True) -> PredictSummary:
    """Label every row of ``input_path`` and write ``row, label, score[, score_<label>...], error``.

    Args:
        predictor (`Predictor`): the model.
        input_path (`str`): a csv, tsv, jsonl or parquet file.
        text_column (`str`): the column holding the text.
        output (`str`, *optional*): csv/tsv/jsonl/parquet file (by extension); stdout (csv) if not set.
        all_scores (`bool`): also write each class's probability.
        overwrite (`bool`): replace an existing ``output``.
        chunk_rows (`int`): rows read, tokenized and sorted together; memory is bounded by it.

    Returns:
        A `PredictSummary`: rows written and the 1-based row numbers of rows with empty text.
    """
    if output and Path(output).exists() and not overwrite:
        raise OutputDirError(f"--output '{output}' already exists; nothing was written. Choose another file or "
                             f"pass --overwrite to replace it.")
    if chunk_rows < 1:
        raise ConfigError(f"chunk size must be >= 1, got {chunk_rows}.")
    names = predictor.label_names
    fields = [("row", pa.int64()), ("label", pa.string()), ("score", pa.float64())]
    if all_scores:
        fields += [(f"score_{n}", pa.float64()) for n in names]
    fields.append(("error", pa.string()))
    schema = pa.schema(fields)
    chunks = read_chunks(input_path, [text_column], chunk_rows=chunk_rows, fmt=input_format)

    def prepare(table: pa.Table):
        texts = table.column(text_column).to_pylist()
        keep = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        return len(texts), keep, predictor.tokenize([texts[i] for i in keep])

    writer = _Writer(output, output_format, schema)
    ok = False
    empty: List[int] = []
    done = 0
    bar = tqdm(total=count_rows(input_path, input_format), unit="rows", desc="predict", disable=not progress,
               file=sys.stderr)
    # The next chunk is read and tokenized on a worker thread while the model runs on this one:
    # the Rust tokenizer and pyarrow release the GIL, so the two overlap on separate cores.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pending = pool.submit(lambda: next((prepare(t) for t in chunks), None))
        while True:
            item = pending.result()
            if item is None:
                break
            pending = pool.submit(lambda: next((prepare(t) for t in chunks), None))
            n, keep, encoded = item
            probs = predictor.predict_encoded(encoded)
            label = np.full(n, None, dtype=object)
            score = np.full(n, np.nan)
            error = np.full(n, EMPTY_TEXT, dtype=object)
            if keep:
                idx = np.asarray(keep)
                top = probs.argmax(axis=1)
                label[idx] = np.asarray(names, dtype=object)[top]
                score[idx] = probs[np.arange(len(keep)), top]
                error[idx] = None
            rows = np.arange(done + 1, done + n + 1)
            empty.extend(int(r) for r in rows[error != None])  # noqa: E711 (elementwise)
            cols = {"row": pa.array(rows, pa.int64()), "label": pa.array(label, pa.string()),
                    "score": pa.array(score, pa.float64(), mask=np.isnan(score))}
            if all_scores:
                full = np.full((n, len(names)), np.nan)
                if keep:
                    full[np.asarray(keep)] = probs
                for j, name in enumerate(names):
                    cols[f"score_{name}"] = pa.array(full[:, j], pa.float64(), mask=np.isnan(full[:, j]))
            cols["error"] = pa.array(error, pa.string())
            writer.write(pa.table(cols, schema=schema))
            done += n
            bar.update(n)
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        writer.close(ok)
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        print(f"warning: {len(empty)} of {done} rows have empty text (rows {shown}); they are in the output "
              f"with an empty label and error='{EMPTY_TEXT}'.", file=sys.stderr)
    return PredictSummary(rows=done, empty_rows=empty, output=output)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser):
    parser.add_argument("model", help="run directory, saved model folder or Hub id")
    parser.add_argument("--input", required=True, help="csv, tsv, jsonl or parquet file")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--output", help="csv/tsv/jsonl/parquet file, by extension (default: csv on stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--all-scores", action="store_true", help="also write each label's probability")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default: 64)")
    parser.add_argument("--max-length", type=int, help="tokens kept per text (default: as trained)")
    parser.add_argument("--chunk-size", type=int, default=4096,
                        help="rows read, tokenized and length-sorted together; bounds memory (default: 4096)")
    parser.add_argument("--input-format", choices=FORMATS, help="when the extension does not tell")
    parser.add_argument("--revision", help="Hub revision of MODEL")
    parser.set_defaults(func=command)
    return parser


def command(args) -> int:
    if args.output and Path(args.output).exists() and not args.overwrite:  # before loading the model
        raise OutputDirError(f"--output '{args.output}' already exists; nothing was written. Choose another "
                             f"file or pass --overwrite to replace it.")
    predictor = Predictor.from_pretrained(args.model, max_length=args.max_length, batch_size=args.batch_size,
                                          revision=args.revision)
    summary = predict_file(predictor, args.input, text_column=args.text_column, output=args.output,
                           all_scores=args.all_scores, overwrite=args.overwrite, chunk_rows=args.chunk_size,
                           input_format=args.input_format)
    if args.output:
        print(f"{summary.rows} rows labelled -> {args.output}", file=sys.stderr)
    return 0
