"""Corpora larger than memory: a source task read as a ``datasets`` stream, trained by steps.

With ``source.streaming: true`` the training split is a ``datasets.IterableDataset``
(``load_dataset(..., streaming=True)``, local files or a Hub id): rows are read, filtered,
label-mapped, joined and tokenized lazily, a batch at a time, and never held in memory or
written to the Arrow cache. The budget is ``source_training.max_steps`` (a stream has no
length, so no epochs); a stream that ends before the budget is read again, reshuffled.

Validation and test are small and are materialised as ordinary Arrow tables (cached by
``datasets`` under a fingerprint of the task and its files, so their tokenization cache is
reused between runs):

* from the task's own validation / test splits (files or Hub splits) when it has them, capped
  at ``max_eval_samples`` rows;
* otherwise from the head of the stream: the first ``n`` rows are test, the next ``n``
  validation, and training reads the stream after them (``skip(2 * n)``), so no row is in two
  splits. ``n`` is ``max_eval_samples`` (1,000 when unset). The head of a file is not a random
  sample: shuffle a sorted file beforehand, or give the splits as files.

The training stream is re-tokenized on every run: it is never materialised, so there is no
Arrow table to cache; reading and tokenizing a row costs far less than a training step spends
on it (``benchmarks/scale.py`` prints both rates).

Batches: :class:`LengthGroupedStream` shuffles the stream in a buffer
(``IterableDataset.shuffle(seed, buffer_size)``), then groups each window of
``50 * batch_size`` examples by length into batches and shuffles the batches within the
window, the streaming counterpart of ``LengthGroupedBatchSampler``. Under several processes
each process reads its own part of the stream (``datasets.distributed.split_dataset_by_node``),
so no two processes train on the same row.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import asdict
from typing import Any, Dict, Iterator, List, Optional

import datasets
import torch
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset
from datasets.distributed import split_dataset_by_node
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader

from .batching import Collator
from ..config import TaskConfig
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_EVAL_ROWS = 1000  # rows each of validation and test taken from the stream's head
WINDOW_BATCHES = 50  # batches per length-grouping window (as LengthGroupedBatchSampler's mega-batch)


# ---------------------------------------------------------------------------- loading
def check_streaming_task(task: TaskConfig) -> None:
    """Options that need the whole table cannot be applied to a stream: say so before reading."""
    if task.k_per_class is not None:
        raise ConfigError(
            f"task '{task.name}': `k_per_class` samples per class from the whole training split, which a stream "
            f"(`streaming: true`) does not have. Remove `k_per_class` or set `streaming: false`."
        )


def _file_identity(paths: List[str]) -> List[Any]:
    """Path, size and mtime of each file: a changed file must not reuse an old cached split."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


def _open_stream(task: TaskConfig, split: str, files: Optional[Dict[str, List[str]]], cache_dir) -> IterableDataset:
    from .loading import _BUILDERS, _infer_format

    if files is None:
        try:
            return datasets.load_dataset(task.path, task.dataset_config, split=split, streaming=True,
                                         cache_dir=cache_dir)
        except Exception as err:  # the Hub client raises many types; all mean the same to a user
            raise DataError(
                f"task '{task.name}': could not stream split '{split}' of '{task.path}': {type(err).__name__}: "
                f"{err}. If the Hub cannot be reached, point `path` or `data_files` at local files."
            ) from None
    paths = files[split]
    formats = {_infer_format(p, task) for p in paths}
    if len(formats) > 1:
        raise DataError(f"task '{task.name}': data files mix formats {sorted(formats)}; use one format per task.")
    fmt = formats.pop()
    kwargs: Dict[str, Any] = {}
    if fmt in ("csv", "tsv"):
        kwargs["delimiter"] = task.delimiter or ("\t" if fmt == "tsv" else ",")
        if task.quoting is not None:
            kwargs["quoting"] = task.quoting
        if task.column_names:
            kwargs["column_names"] = list(task.column_names)
    return datasets.load_dataset(_BUILDERS[fmt], data_files={"train": paths}, split="train", streaming=True,
                                 cache_dir=cache_dir, **kwargs)


def _first_row(task: TaskConfig, ds: IterableDataset, split: str, origin: str) -> Dict[str, Any]:
    try:
        row = next(iter(ds.take(1)), None)
    except Exception as err:  # parse errors come from pandas/pyarrow with many types
        raise DataError(f"task '{task.name}': could not read split '{split}' ({origin}): {type(err).__name__}: "
                        f"{err}. Check `format`, `delimiter`, `quoting` and `column_names`.") from None
    if row is None:
        raise DataError(f"task '{task.name}': split '{split}' ({origin}) has no rows.")
    return row


class _AddRow:
    def __call__(self, batch, indices):
        return {"row": [i + 1 for i in indices]}


class _StreamLabels:
    """Label ids for a stream, checked row by row (a stream cannot be checked up front)."""

    def __init__(self, task: TaskConfig, split: str, origin: str, names: List[str], mapping):
        self.task_name, self.split, self.origin = task.name, split, origin
        self.column, self.base, self.names, self.mapping = task.label_column, task.label_base, names, mapping

    def __call__(self, batch):
        out = []
        for v, r in zip(batch[self.column], batch["row"]):
            if self.mapping is not None:
                y = self.mapping.get(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
                y = int(v) - self.base
                y = y if 0 <= y < len(self.names) else None
            else:
                y = None
            if y is None:
                raise DataError(
                    f"task '{self.task_name}': split '{self.split}' ({self.origin}), column '{self.column}': label "
                    f"{v!r} in row {r} is not in the declared label set {self.names}"
                    f"{'' if self.mapping is not None else f' (label_base: {self.base})'}. Fix the data, add it to "
                    f"`label_names`, or filter the row out."
                )
            out.append(y)
        return {"labels": out}


class _NonEmpty:
    """Keep rows with text; with ``empty_text: error`` an empty one stops the run, naming its row."""

    def __init__(self, task: TaskConfig, split: str, origin: str, pair: bool):
        self.task_name, self.split, self.origin, self.pair, self.mode = task.name, split, origin, pair, task.empty_text

    def __call__(self, batch):
        keep = [bool(t) and (not self.pair or bool(p)) for t, p in
                zip(batch["text"], batch["text_pair"] if self.pair else batch["text"])]
        if self.mode == "error" and not all(keep):
            row = batch["row"][keep.index(False)]
            raise DataError(f"task '{self.task_name}': split '{self.split}' ({self.origin}): empty or null text in "
                            f"row {row}. Fix the data, or set `{self.task_name}.empty_text: drop` to drop such rows.")
        return keep


def _pipeline(task: TaskConfig, ds: IterableDataset, split: str, origin: str, names, mapping) -> IterableDataset:
    """The lazy counterpart of ``load_task``'s per-split steps: rows, filters, labels, text."""
    from .loading import _JoinText, _RowFilter, _check_columns, parse_filter

    first = _first_row(task, ds, split, origin)
    columns = list(first)

    class _Cols:  # _check_columns reads `.column_names`, which a stream may not know before reading
        column_names = columns

    _check_columns(task, _Cols, split, origin, need_label=True)
    if "row" in columns:
        ds = ds.remove_columns("row")
    # One example per call (batch_size=1): a batched step over a stream names each output batch by
    # joining its examples' keys, so stacked batched steps build ever longer key strings (1,000
    # joined keys of 1,000 joined keys...): that cut the pipeline to ~3k rows/s. Only the
    # tokenizer, last, runs on real batches.
    one = dict(batched=True, batch_size=1)
    ds = ds.map(_AddRow(), with_indices=True, **one)
    for column, op, value in (parse_filter(f, task.name) for f in task.filters):
        if column not in columns:
            raise DataError(f"task '{task.name}': filter on column '{column}', which split '{split}' ({origin}) "
                            f"does not have. Columns there: {columns}.")
        ds = ds.filter(_RowFilter(column, op, value), **one)
    ds = ds.map(_StreamLabels(task, split, origin, names, mapping), **one)
    ds = ds.map(_JoinText(task.text_columns, task.text_separator, task.text_pair_column), **one,
                remove_columns=[c for c in columns if c not in ("row",)])
    # (labels stay plain ids here: a stream's features are often unknown until read, so the
    # ClassLabel cast is done on the materialised validation/test tables)
    return ds.filter(_NonEmpty(task, split, origin, bool(task.text_pair_column)), **one)


def _label_set(task: TaskConfig, ds: IterableDataset, first: Dict[str, Any]):
    """Label names and the value -> id mapping (for string labels), from the declared names and
    the first row only: inferring the set would need a pass over the whole stream."""
    feature = (ds.features or {}).get(task.label_column)
    if task.label_names is not None:
        names = list(task.label_names)
    elif isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        raise ConfigError(
            f"task '{task.name}': with `streaming: true` the label set cannot be inferred (that needs a pass over "
            f"the whole training split); declare it: `{task.name}.label_names: [...]` in id order."
        )
    # string labels map through the names; integer ones (and ClassLabel ids) index into them
    is_string = isinstance(first.get(task.label_column), str)
    return names, ({name: i for i, name in enumerate(names)} if is_string else None)


def _rows(stream: IterableDataset, n: Optional[int]) -> Iterator[Dict[str, Any]]:
    yield from (stream if n is None else stream.take(n))


def _materialise(stream: IterableDataset, n: Optional[int], key: List[Any], cache_dir) -> Dataset:
    """A small split of the stream as an Arrow table, cached under ``key`` (task, files, rows)
    so that a second run reuses it and the tokenization cached on it."""
    try:
        return Dataset.from_generator(_rows, gen_kwargs={"stream": stream, "n": n}, features=stream.features,
                                      cache_dir=cache_dir, fingerprint=Hasher.hash(key + ["stream-split-v1"]))
    except DatasetGenerationError as err:  # our own DataError (a bad label or empty text) is the message
        cause = err.__cause__
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def load_stream_task(task: TaskConfig, cache_dir: Optional[str] = None):
    """``load_task`` for ``streaming: true``: train is an ``IterableDataset``; validation and test
    are small ``Dataset`` tables (see the module docstring for where they come from)."""
    from .loading import TaskData, _local_files

    check_streaming_task(task)
    files = _local_files(task)
    available = list(files) if files is not None else None
    if available is not None and task.train_split not in available:
        raise DataError(f"task '{task.name}': split '{task.train_split}' not found; the data has splits "
                        f"{available}. Set `train_split`.")

    def origin_of(split):
        return ", ".join(files[split]) if files is not None else f"{task.path}[{split}]"

    def identity(split):
        return _file_identity(files[split]) if files is not None else [task.path, task.dataset_config, split]

    train = _open_stream(task, task.train_split, files, cache_dir)
    names, mapping = _label_set(task, train, _first_row(task, train, task.train_split, origin_of(task.train_split)))
    train = _pipeline(task, train, task.train_split, origin_of(task.train_split), names, mapping)
    config_key = [asdict(task)]

    own = {}
    for role in ("validation", "test"):
        split = getattr(task, f"{role}_split")
        if split == task.train_split or split in own.values():
            continue  # never two roles for one split
        if available is not None and split not in available:
            if split != role:  # a split the user named must exist (as in load_task)
                raise DataError(f"task '{task.name}': {role} split '{split}' (from `{role}_split`) not found; the "
                                f"data has splits {available}. Name one of those, or remove the option to hold out "
                                f"the stream's first rows as the {role} split.")
            continue
        if available is None:
            try:
                stream = _open_stream(task, split, None, cache_dir)
                _first_row(task, stream, split, origin_of(split))
            except DataError:
                continue  # the Hub dataset has no such split: carve it from the stream's head
        own[role] = split

    splits, info = {}, {"origin": {task.train_split: origin_of(task.train_split)}, "streaming": True, "carved": []}
    n_eval = task.max_eval_samples or DEFAULT_EVAL_ROWS
    for role, split in own.items():
        stream = _pipeline(task, _open_stream(task, split, files, cache_dir), split, origin_of(split), names, mapping)
        splits[role] = _materialise(stream, task.max_eval_samples, config_key + [identity(split), role], cache_dir)
        info["origin"][split] = origin_of(split)
    head = [role for role in ("test", "validation") if role not in own]
    for i, role in enumerate(head):
        # test is the first n rows, validation the next n: the same rows whatever the other role does
        part = train.skip(i * n_eval).take(n_eval)
        splits[role] = _materialise(part, None, config_key + [identity(task.train_split), "head", i, n_eval],
                                    cache_dir)
        info["carved"].append(role)
    if head:
        train = train.skip(len(head) * n_eval)  # training never sees the rows held out above
    for role in ("validation", "test"):
        if len(splits[role]) == 0:
            raise DataError(f"task '{task.name}': the {role} split is empty; the stream has too few rows.")
        splits[role] = splits[role].cast_column("labels", ClassLabel(names=names))
    if task.max_train_samples is not None:
        train = train.take(task.max_train_samples)  # the stream's first rows, not a seeded sample
    splits["train"] = train
    info["rows"] = {"validation": len(splits["validation"]), "test": len(splits["test"]), "train": None}
    info["heldout_head_rows"] = len(head) * n_eval
    return TaskData(name=task.name, splits=DatasetDict(splits), label_names=names, info=info)


# ---------------------------------------------------------------------------- batches
class LengthGroupedStream(torch.utils.data.IterableDataset):
    """Endless batches (lists of examples) from a tokenized ``IterableDataset``.

    Args:
        ds (`datasets.IterableDataset`): tokenized examples with a ``length`` column.
        batch_size (`int`): examples per batch (per process).
        seed (`int`): seed of the shuffle buffer and of the batch order; pass ``p`` over the
            stream uses ``seed + p`` (``IterableDataset.set_epoch``).
        buffer_size (`int`, *optional*): shuffle buffer; defaults to the window size.
        group_by_length (`bool`): group each window by length (else windows keep stream order).
        rank / world_size (`int`): this process and the number of processes; each reads its own
            part of the stream (``split_dataset_by_node``).
        skip_batches (`int`): batches to skip first (a resumed run replays the seeded stream and
            drops what was already trained on, so it continues with the very next batch).

    Passes over the stream repeat forever; the trainer stops at ``max_steps``. Memory is one
    shuffle buffer plus one window of examples, whatever the corpus size.
    """

    def __init__(self, ds: IterableDataset, batch_size: int, seed: int = 0, buffer_size: Optional[int] = None,
                 group_by_length: bool = True, rank: int = 0, world_size: int = 1, skip_batches: int = 0,
                 window_batches: int = WINDOW_BATCHES):
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.window = window_batches * batch_size
        self.skip_batches = skip_batches
        ds = ds.shuffle(seed=seed, buffer_size=buffer_size or self.window)
        # the same seeded shuffle on every process, then each keeps its own shard or every
        # world_size-th example: disjoint parts of one global order
        self.ds = split_dataset_by_node(ds, rank=rank, world_size=world_size) if world_size > 1 else ds
        self.passes = 0  # completed passes over the stream

    def _window_batches(self, window: List[Dict], g: torch.Generator) -> List[List[Dict]]:
        if self.group_by_length:
            lengths = torch.as_tensor([ex["length"] for ex in window])
            order = torch.sort(lengths, descending=True, stable=True).indices.tolist()
            window = [window[i] for i in order]
        batches = [window[i: i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def batches(self) -> Iterator[List[Dict]]:
        for p in itertools.count():
            self.ds.set_epoch(p)  # a new shuffle of the stream on every pass
            g = torch.Generator().manual_seed(self.seed + p)  # not the global RNG: dropout's stream stays as it is
            yielded = False
            examples = iter(self.ds)
            while True:
                window = list(itertools.islice(examples, self.window))
                if not window:
                    break
                for batch in self._window_batches(window, g):
                    yielded = True
                    yield batch
            if not yielded:
                raise DataError("the training stream has no rows (after filters and the held-out head).")
            self.passes = p + 1

    def __iter__(self) -> Iterator[List[Dict]]:
        return itertools.islice(self.batches(), self.skip_batches, None)


def stream_dataloader(ds: IterableDataset, tokenizer, batch_size: int, seed: int, group_by_length: bool = True,
                      rank: int = 0, world_size: int = 1, skip_batches: int = 0) -> DataLoader:
    """A DataLoader of padded batches from a tokenized stream (``batch_size=None``: the dataset
    yields whole batches, which the collator pads)."""
    stream = LengthGroupedStream(ds, batch_size, seed=seed, group_by_length=group_by_length, rank=rank,
                                 world_size=world_size, skip_batches=skip_batches)
    return DataLoader(stream, batch_size=None, collate_fn=Collator(tokenizer))


def is_stream(ds) -> bool:
    return isinstance(ds, IterableDataset)
