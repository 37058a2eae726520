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
``LENGTH_GROUP_BATCHES * batch_size`` examples (see ``batching.py``) by length into batches and
shuffles the batches within the window, the streaming counterpart of ``LengthGroupedBatchSampler``.
Under several processes each process reads its own part of the stream
(``datasets.distributed.split_dataset_by_node``), so no two processes train on the same row.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import datasets
import torch
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset
from datasets.distributed import split_dataset_by_node
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader

from ..config import TaskConfig
from ..errors import ConfigError, DataError
from .batching import LENGTH_GROUP_BATCHES, Collator
from .sources import files_format, load_files, local_files, reader_options_named
from .task import TaskData
from .transforms import (LABEL_VALUE, LABELS, ROW, TEXT, TEXT_PAIR, RowFilter, ToSchema, check_columns,
                         filter_column, fresh_column, parse_filter, schema_features)

DEFAULT_EVAL_ROWS = 1000  # rows each of validation and test taken from the stream's head


# ---------------------------------------------------------------------------- loading
def check_streaming_task(task: TaskConfig) -> None:
    """Options that need the whole table cannot be applied to a stream: say so before reading."""
    if task.k_per_class is not None:
        raise ConfigError(
            f"task '{task.name}': `{task.option_name('k_per_class')}` samples per class from the whole training "
            f"split, which a stream (`{task.option_name('streaming')}: true`) does not have. Remove "
            f"`{task.option_name('k_per_class')}` or set `{task.option_name('streaming')}: false`.",
            option=task.option_name("k_per_class"))


def _file_identity(paths: List[str]) -> List[Any]:
    """Path, size and mtime of each file: a changed file must not reuse an old cached split."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


class _Source:
    """The task's data, opened a split at a time as a stream: local files or a Hub dataset."""

    def __init__(self, task: TaskConfig, cache_dir: Optional[str]):
        self.task, self.cache_dir = task, cache_dir
        self.files = local_files(task)
        self.available = list(self.files) if self.files is not None else None  # None: a Hub id's splits are unknown

    def origin(self, split: str) -> str:
        """Where ``split`` comes from, as error messages name it."""
        return ", ".join(self.files[split]) if self.files is not None else f"{self.task.path}[{split}]"

    def identity(self, split: str) -> List[Any]:
        """What a split materialised from ``split`` is cached under."""
        if self.files is not None:
            return _file_identity(self.files[split])
        return [self.task.path, self.task.dataset_config, split]

    def open(self, split: str) -> IterableDataset:
        task = self.task
        if self.files is not None:
            paths = self.files[split]
            return load_files(task, paths, files_format(task, paths), self.cache_dir, streaming=True)
        try:
            return datasets.load_dataset(task.path, task.dataset_config, split=split, streaming=True,
                                         cache_dir=self.cache_dir)
        except Exception as err:  # the Hub client raises many types; all mean the same to a user
            raise DataError(
                f"task '{task.name}': could not stream split '{split}' of '{task.path}': {type(err).__name__}: "
                f"{err}. If the Hub cannot be reached, point `{task.option_name('path')}` or "
                f"`{task.option_name('data_files')}` at local files."
            ) from None

    def has_split(self, split: str) -> bool:
        """Whether the data has ``split`` (for a Hub id: whether it can be opened and read)."""
        if self.available is not None:
            return split in self.available
        try:
            _first_row(self.task, self.open(split), split, self.origin(split))
        except DataError:
            return False
        return True


def _first_row(task: TaskConfig, ds: IterableDataset, split: str, origin: str) -> Dict[str, Any]:
    try:
        row = next(iter(ds.take(1)), None)
    except Exception as err:  # parse errors come from pandas/pyarrow with many types
        raise DataError(f"task '{task.name}': could not read split '{split}' ({origin}): {type(err).__name__}: "
                        f"{err}. Check {reader_options_named(task)}.") from None
    if row is None:
        raise DataError(f"task '{task.name}': split '{split}' ({origin}) has no rows.")
    return row


class _AddRow:
    """The 1-based row number of each example in its split, in ``column``."""

    def __init__(self, column: str):
        self.column = column

    def __call__(self, batch, indices):
        return {self.column: [i + 1 for i in indices]}


class _StreamLabels:
    """Label ids for a stream, checked row by row (a stream cannot be checked up front)."""

    def __init__(self, task: TaskConfig, split: str, origin: str, names: List[str], mapping):
        self.task_name, self.split, self.origin = task.name, split, origin
        self.column, self.base, self.names, self.mapping = task.label_column, task.label_base, names, mapping
        self.label_names_option, self.base_option = task.option_name("label_names"), task.option_name("label_base")

    def __call__(self, batch):
        out = []
        for v, r in zip(batch[LABEL_VALUE], batch[ROW]):
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
                    f"{'' if self.mapping is not None else f' (`{self.base_option}: {self.base}`)'}. Fix the data, "
                    f"add it to `{self.label_names_option}`, or filter the row out."
                )
            out.append(y)
        return {LABELS: out}


class _NonEmpty:
    """Keep rows with text; with ``empty_text: error`` an empty one stops the run, naming its row."""

    def __init__(self, task: TaskConfig, split: str, origin: str, pair: bool):
        self.task_name, self.split, self.origin, self.pair, self.mode = task.name, split, origin, pair, task.empty_text
        self.option = task.option_name("empty_text")

    def __call__(self, batch):
        keep = [bool(t) and (not self.pair or bool(p)) for t, p in
                zip(batch[TEXT], batch[TEXT_PAIR] if self.pair else batch[TEXT])]
        if self.mode == "error" and not all(keep):
            row = batch[ROW][keep.index(False)]
            raise DataError(f"task '{self.task_name}': split '{self.split}' ({self.origin}): empty or null text in "
                            f"row {row}. Fix the data, or set `{self.option}: drop` to drop such rows.")
        return keep


def _pipeline(task: TaskConfig, ds: IterableDataset, split: str, origin: str, names, mapping) -> IterableDataset:
    """The lazy counterpart of ``load_task``'s per-split steps: rows, filters, the package's
    schema (the user's columns dropped, whatever their names), labels, text."""
    columns = list(_first_row(task, ds, split, origin))  # a stream may not know its columns before reading
    check_columns(task, columns, split, origin)
    row_column = fresh_column(ROW, columns)  # beside the user's columns until they are dropped
    # One example per call (batch_size=1): a batched step over a stream names each output batch by
    # joining its examples' keys, so stacked batched steps build ever longer key strings (1,000
    # joined keys of 1,000 joined keys...): that cut the pipeline to ~3k rows/s. Only the
    # tokenizer, last, runs on real batches.
    one = dict(batched=True, batch_size=1)
    features = ds.features
    ds = ds.map(_AddRow(row_column), with_indices=True, **one)
    for column, op, value in (parse_filter(f, task) for f in task.filters):
        ds = ds.filter(RowFilter(filter_column(task, column, columns, row_column, split, origin), op, value), **one)
    ds = ds.map(ToSchema(task, row_column), **one, remove_columns=columns + [row_column],
                features=schema_features(task, features))
    ds = ds.map(_StreamLabels(task, split, origin, names, mapping), **one, remove_columns=[LABEL_VALUE])
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
            f"the whole training split); declare it: `{task.option_name('label_names')}: [...]` in id order.",
            option=task.option_name("label_names"))
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


def load_stream_task(task: TaskConfig, cache_dir: Optional[str] = None) -> TaskData:
    """``load_task`` for ``streaming: true``: train is an ``IterableDataset``; validation and test
    are small ``Dataset`` tables (see the module docstring for where they come from)."""
    check_streaming_task(task)
    source = _Source(task, cache_dir)
    if source.available is not None and task.train_split not in source.available:
        raise DataError(f"task '{task.name}': split '{task.train_split}' not found; the data has splits "
                        f"{source.available}. Set `{task.option_name('train_split')}`.")
    origin = source.origin(task.train_split)
    train = source.open(task.train_split)
    names, mapping = _label_set(task, train, _first_row(task, train, task.train_split, origin))
    train = _pipeline(task, train, task.train_split, origin, names, mapping)
    info: Dict[str, Any] = {"origin": {task.train_split: origin}, "streaming": True, "carved": []}
    splits = _own_eval_splits(task, source, names, mapping, info)
    train, held_out = _hold_out_head(task, source, train, splits, info)
    for role in ("validation", "test"):
        if len(splits[role]) == 0:
            raise DataError(f"task '{task.name}': the {role} split is empty; the stream has too few rows.")
        splits[role] = splits[role].cast_column(LABELS, ClassLabel(names=names))
    if task.max_train_samples is not None:
        train = train.take(task.max_train_samples)  # the stream's first rows, not a seeded sample
    splits["train"] = train
    info["rows"] = {"validation": len(splits["validation"]), "test": len(splits["test"]), "train": None}
    info["heldout_head_rows"] = held_out
    return TaskData(name=task.name, splits=DatasetDict(splits), label_names=names, info=info)


def _own_eval_splits(task: TaskConfig, source: _Source, names, mapping, info: Dict[str, Any]) -> Dict[str, Dataset]:
    """Validation and test from the data's own splits, where it has them, as small tables."""
    own: Dict[str, str] = {}
    for role in ("validation", "test"):
        split = getattr(task, f"{role}_split")
        if split == task.train_split or split in own.values():
            continue  # never two roles for one split
        if source.available is not None and split not in source.available and split != role:
            # a split the user named must exist (as in load_task)
            raise DataError(f"task '{task.name}': {role} split '{split}' (from `{task.option_name(role + '_split')}`) "
                            f"not found; the "
                            f"data has splits {source.available}. Name one of those, or remove the option to hold "
                            f"out the stream's first rows as the {role} split.")
        if source.has_split(split):  # else: carved from the stream's head
            own[role] = split
    splits = {}
    for role, split in own.items():
        stream = _pipeline(task, source.open(split), split, source.origin(split), names, mapping)
        key = [asdict(task), source.identity(split), role]
        splits[role] = _materialise(stream, task.max_eval_samples, key, source.cache_dir)
        info["origin"][split] = source.origin(split)
    return splits


def _hold_out_head(task: TaskConfig, source: _Source, train: IterableDataset, splits: Dict[str, Dataset],
                   info: Dict[str, Any]) -> Tuple[IterableDataset, int]:
    """The validation / test splits the data lacks, from the stream's first rows; returns the
    training stream after them and how many rows were held out."""
    n_eval = task.max_eval_samples or DEFAULT_EVAL_ROWS
    head = [role for role in ("test", "validation") if role not in splits]
    for i, role in enumerate(head):
        # test is the first n rows, validation the next n: the same rows whatever the other role does
        part = train.skip(i * n_eval).take(n_eval)
        key = [asdict(task), source.identity(task.train_split), "head", i, n_eval]
        splits[role] = _materialise(part, None, key, source.cache_dir)
        info["carved"].append(role)
    if not head:
        return train, 0
    return train.skip(len(head) * n_eval), len(head) * n_eval  # training never sees the rows held out above


# ---------------------------------------------------------------------------- batches
class LengthGroupedStream(torch.utils.data.IterableDataset):
    """Endless batches (lists of examples) from a tokenized ``IterableDataset``.

    Args:
        ds (`datasets.IterableDataset`): tokenized examples with a ``length`` column.
        batch_size (`int`): examples per batch (per process).
        seed (`int`): seed of the shuffle buffer and of the batch order; pass ``p`` over the
            stream uses ``seed + p`` (``IterableDataset.set_epoch``).
        group_by_length (`bool`): group each window by length (else windows keep stream order).
        rank / world_size (`int`): this process and the number of processes; each reads its own
            part of the stream (``split_dataset_by_node``).
        skip_batches (`int`): batches to skip first (a resumed run replays the seeded stream and
            drops what was already trained on, so it continues with the very next batch).
        window_batches (`int`): batches per length-grouping window, and so the shuffle buffer's
            size in batches.

    Passes over the stream repeat forever; the trainer stops at ``max_steps``. Memory is one
    shuffle buffer plus one window of examples, whatever the corpus size.
    """

    def __init__(self, ds: IterableDataset, batch_size: int, seed: int = 0, group_by_length: bool = True,
                 rank: int = 0, world_size: int = 1, skip_batches: int = 0,
                 window_batches: int = LENGTH_GROUP_BATCHES):
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.window = window_batches * batch_size
        self.skip_batches = skip_batches
        ds = ds.shuffle(seed=seed, buffer_size=self.window)
        # the same seeded shuffle on every process, then each keeps its own shard or every
        # world_size-th example: disjoint parts of one global order
        self.ds = split_dataset_by_node(ds, rank=rank, world_size=world_size) if world_size > 1 else ds

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

    def __iter__(self) -> Iterator[List[Dict]]:
        return itertools.islice(self.batches(), self.skip_batches, None)


def stream_dataloader(ds: IterableDataset, tokenizer, batch_size: int, seed: int, group_by_length: bool = True,
                      rank: int = 0, world_size: int = 1, skip_batches: int = 0,
                      pad_to_multiple_of: Optional[int] = None) -> DataLoader:
    """A DataLoader of padded batches from a tokenized stream (``batch_size=None``: the dataset
    yields whole batches, which the collator pads, to a multiple of ``pad_to_multiple_of`` if set)."""
    stream = LengthGroupedStream(ds, batch_size, seed=seed, group_by_length=group_by_length, rank=rank,
                                 world_size=world_size, skip_batches=skip_batches)
    return DataLoader(stream, batch_size=None, collate_fn=Collator(tokenizer, pad_to_multiple_of))


def is_stream(ds) -> bool:
    return isinstance(ds, IterableDataset)
