"""Loading a classification task into train / validation / test splits with integer labels.

A task is a Hub dataset id or local files (csv, tsv, json, jsonl, parquet). Loading goes
through ``datasets.load_dataset`` so the Arrow cache and fingerprints of the Hugging Face
stack apply; this module adds what a transfer run needs on top: joined text columns, label
maps (ints, 1-based ints or strings), row filters, seeded splits made on the fly, per-class
sampling, and checks that name the file, split, column and row when something is wrong.

Every split that comes out has the columns ``text`` (and ``text_pair`` for pair tasks),
``labels`` (0-based ints) and ``row`` (the example's 1-based row number in its source split,
used in error messages and reports), and no other: the user's columns, whatever their names
(``labels``, ``text`` and ``row`` included), are read once and dropped (``transforms.ToSchema``).

A task with ``streaming: true`` is handed to ``streaming.load_stream_task``; what both read
and check alike is in ``sources`` (files, formats) and ``transforms`` (columns, filters, text).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Tuple

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from ..config import TaskConfig
from ..errors import DataError
from .labels import MapLabels, check_labels, column, label_set, rows_str
from .sources import files_format, load_files, local_files, reader_options_named
from .streaming import load_stream_task
from .task import TaskData
from .transforms import (LABEL_VALUE, LABELS, ROW, TEXT, TEXT_PAIR, RowFilter, ToSchema, check_columns,
                         filter_column, fresh_column, parse_filter, schema_features)

__all__ = ["TaskData", "load_raw", "load_task", "sample_per_class"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- raw loading
def _load_hub(task: TaskConfig, cache_dir: Optional[str]) -> Tuple[DatasetDict, Dict[str, str]]:
    try:
        raw = datasets.load_dataset(task.path, task.dataset_config, cache_dir=cache_dir)
    except Exception as err:  # the Hub client raises many types; all mean the same to a user
        raise DataError(
            f"task '{task.name}': could not load the dataset '{task.path}'"
            f"{' (' + task.dataset_config + ')' if task.dataset_config else ''}: {type(err).__name__}: {err}. "
            f"If the Hub cannot be reached, point `{task.option_name('path')}` or `{task.option_name('data_files')}` "
            f"at local files."
        ) from None
    if not isinstance(raw, DatasetDict):
        raw = DatasetDict({"train": raw})
    return raw, {split: f"{task.path}[{split}]" for split in raw}


def load_raw(task: TaskConfig, cache_dir: Optional[str] = None) -> Tuple[DatasetDict, Dict[str, str]]:
    """Load the task's data as it is, returning the splits and where each came from."""
    files = local_files(task)
    if files is None:
        return _load_hub(task, cache_dir)
    fmt = files_format(task, [p for paths in files.values() for p in paths])
    # One load per split: splits of real corpora do not always share columns (SST-2's test.tsv
    # has `index,sentence` and no `label`), and a single load_dataset call over all files
    # fails on that with a schema error that hides the actual problem. Loaded apart, each
    # split is checked on its own and a missing label column gets its own clear message.
    raw = DatasetDict()
    for split, paths in files.items():
        try:
            raw[split] = load_files(task, paths, fmt, cache_dir)
        except DataError:  # ours (a file not valid in its encoding) already names the file and the fix
            raise
        except Exception as err:  # parse errors come from pandas/pyarrow with many types
            raise DataError(
                f"task '{task.name}': could not read {fmt} file(s) {', '.join(paths)} (split '{split}'): "
                f"{type(err).__name__}: {err}. Check {reader_options_named(task)}."
            ) from None
    origin = {split: ", ".join(paths) for split, paths in files.items()}
    return raw, origin


# ---------------------------------------------------------------------------- the pipeline
def load_task(task: TaskConfig, cache_dir: Optional[str] = None) -> TaskData:
    """Load, check and split a task.

    Args:
        task (`TaskConfig`): where the data is and how to read it.
        cache_dir (`str`, *optional*): the datasets cache folder.

    Returns:
        `TaskData` with ``train``, ``validation`` and ``test`` splits.

    Example:

    ```python
    from textransfer import TaskConfig, load_task
    news = load_task(TaskConfig(name="news", data_files="news.csv", label_names=["world", "sports"]))
    ```
    """
    filters = [parse_filter(f, task) for f in task.filters]  # config errors before reading data
    if task.streaming:  # larger than memory: train is read lazily (streaming.py)
        return load_stream_task(task, cache_dir=cache_dir)
    raw, origin = load_raw(task, cache_dir=cache_dir)
    info: Dict[str, Any] = {"origin": origin, "dropped_empty": {}, "carved": []}
    wanted = _check_split_names(task, raw)
    used = _assign_splits(task, raw, wanted, info)
    splits = {role: _select_rows(task, raw[split], split, origin.get(split, split), filters)
              for role, split in used.items()}
    names, mapping = label_set(task, splits["train"], origin.get(task.train_split, task.train_split))
    for role, split in used.items():
        splits[role], dropped = _finish_split(task, splits[role], split, origin.get(split, split), names, mapping)
        if dropped:
            info["dropped_empty"][role] = dropped
    _carve_missing(task, splits, wanted, len(names), info)
    _limit_sizes(task, splits, names)
    info["rows"] = {role: len(ds) for role, ds in splits.items()}
    info["class_counts"] = {role: _class_counts(ds, len(names)) for role, ds in splits.items()}
    return TaskData(name=task.name, splits=DatasetDict(splits), label_names=names, info=info)


def _check_split_names(task: TaskConfig, raw: DatasetDict) -> Dict[str, str]:
    """The split named for validation and test; a named split must exist, except under its
    default name (``validation``, ``test``): that one is carved from train when absent."""
    if task.train_split not in raw:
        raise DataError(
            f"task '{task.name}': split '{task.train_split}' not found; the data has splits {list(raw)}. "
            f"Set `{task.option_name('train_split')}`."
        )
    wanted = {"validation": task.validation_split, "test": task.test_split}
    for role, split in wanted.items():
        if split not in raw and split != role:
            raise DataError(
                f"task '{task.name}': {role} split '{split}' (from `{task.option_name(role + '_split')}`) not found; "
                f"the data has splits {list(raw)}. Name one of those, or remove the option to carve a {role} split "
                f"from train."
            )
    return wanted


def _assign_splits(task: TaskConfig, raw: DatasetDict, wanted: Dict[str, str], info: Dict[str, Any]) -> Dict[str, str]:
    """Role -> split, for the roles the data has a split for (the others are carved later)."""
    # A split never serves two roles: a validation or test split that names the train split,
    # or a validation split that names the test split (the Hub's SST-2 recipe tests on
    # `validation`), is carved from train instead, so that neither early stopping nor model
    # selection ever sees test rows and the test metrics are not measured on training rows.
    used = {"train": task.train_split}
    for role in ("test", "validation"):  # test first: `test_split: validation` keeps that split for test
        split = wanted[role]
        shared = [r for r, s in used.items() if s == split]
        if split in raw and shared:
            logger.info("task '%s': %s split '%s' is also the %s split; carving a %s split from train instead.",
                        task.name, role, split, shared[0], role)
            info["shared_split"] = {**info.get("shared_split", {}), role: shared[0]}
            continue
        if split in raw:
            used[role] = split
    return used


def _select_rows(task: TaskConfig, ds: Dataset, split: str, origin: str, filters) -> Dataset:
    """One split's rows as configured, in the package's schema: its columns checked, row numbers
    added, filters applied, then only ``row``, ``text`` (``text_pair``) and the raw label kept."""
    check_columns(task, ds.column_names, split, origin)
    columns = ds.column_names
    row_column = fresh_column(ROW, columns)  # beside the user's columns until they are dropped
    ds = ds.add_column(row_column, list(range(1, len(ds) + 1)))
    for name, op, value in filters:
        read = filter_column(task, name, columns, row_column, split, origin)
        try:
            ds = ds.filter(RowFilter(read, op, value), batched=True)
        except TypeError as err:  # e.g. "rating >= '4'" on a numeric column
            raise DataError(
                f"task '{task.name}': filter `{name} {op} {value!r}` cannot compare column '{name}' "
                f"({ds.features[read]}) of split '{split}' ({origin}) with "
                f"{type(value).__name__} {value!r}: {err}. Fix the value's type in `{task.option_name('filters')}`."
            ) from None
    if len(ds) == 0:
        raise DataError(
            f"task '{task.name}': split '{split}' ({origin}) has no rows"
            f"{' after filters ' + str(task.filters) if task.filters else ''}."
        )
    return ds.map(ToSchema(task, row_column), batched=True, remove_columns=ds.column_names,
                  features=schema_features(task, ds.features))


def _finish_split(task: TaskConfig, ds: Dataset, split: str, origin: str, names: List[str],
                  mapping) -> Tuple[Dataset, int]:
    """Labels checked and mapped to ids, rows with empty text handled; returns the split
    (columns ``text``[, ``text_pair``], ``labels``, ``row``) and how many rows were dropped."""
    check_labels(task, ds, split, origin, names, mapping)
    ds = ds.map(MapLabels(mapping, task.label_base), batched=True, remove_columns=[LABEL_VALUE])
    ds, dropped = _drop_empty_text(task, ds, split, origin)
    return ds.cast_column(LABELS, ClassLabel(names=names)), dropped


def _drop_empty_text(task: TaskConfig, ds: Dataset, split: str, origin: str) -> Tuple[Dataset, int]:
    """Rows whose text is empty: an error, or dropped with ``empty_text: drop``."""
    # A pair task needs both texts: an empty second text is as unusable as an empty first one.
    text_cols = [TEXT, TEXT_PAIR] if task.text_pair_column else [TEXT]
    keep = [all(parts) for parts in zip(*(column(ds, c) for c in text_cols))]
    empty = [r for k, r in zip(keep, column(ds, ROW)) if not k]
    if not empty:
        return ds, 0
    if task.empty_text == "error":
        columns = list(task.text_columns) + ([task.text_pair_column] if task.text_pair_column else [])
        raise DataError(
            f"task '{task.name}': split '{split}' ({origin}), column(s) "
            f"{columns}: empty or null text in row(s) {rows_str(empty)}. "
            f"Fix the data, or set `{task.option_name('empty_text')}: drop` to drop them."
        )
    logger.warning("task '%s': dropped %d row(s) with empty text from split '%s'.", task.name, len(empty), split)
    return ds.select([i for i, k in enumerate(keep) if k]), len(empty)


def _carve_missing(task: TaskConfig, splits: Dict[str, Dataset], wanted: Dict[str, str], num_labels: int,
                   info: Dict[str, Any]) -> None:
    """Carve the splits the data lacks from train, stratified and seeded, test first so that
    validation never sees test rows."""
    for role, fraction in (("test", task.test_fraction), ("validation", task.validation_fraction)):
        if role in splits:
            continue
        if fraction <= 0:
            raise DataError(
                f"task '{task.name}': the data has no '{wanted[role]}' split and "
                f"`{task.option_name(role + '_fraction')}` is 0. Name an existing split in "
                f"`{task.option_name(role + '_split')}` or set `{task.option_name(role + '_fraction')}`."
            )
        train = splits["train"]
        n_carved = math.ceil(fraction * len(train))  # as datasets sizes it
        if n_carved >= len(train):
            raise DataError(
                f"task '{task.name}': the training split has {len(train)} row(s), too few to carve a {role} split "
                f"from (`{task.option_name(role + '_fraction')}: {fraction}`). Give the {role} split as a file "
                f"(`{task.option_name('data_files')}`), or use more data."
            )
        # datasets' stratified sampler needs two examples of each class, and room for one of each
        # class on both sides; a tiny split is carved unstratified instead of failing
        if min(_class_counts(train, num_labels)) >= 2 and num_labels <= min(n_carved, len(train) - n_carved):
            splits["train"], splits[role] = _stratified_split(train, fraction, task.split_seed)
        else:
            parts = train.train_test_split(test_size=fraction, seed=task.split_seed)
            splits["train"], splits[role] = parts["train"], parts["test"]
        info["carved"].append(role)


def _limit_sizes(task: TaskConfig, splits: Dict[str, Dataset], names: List[str]) -> None:
    """``k_per_class``, ``max_train_samples`` and ``max_eval_samples``: seeded subsets."""
    if task.k_per_class is not None:
        splits["train"] = sample_per_class(splits["train"], task.k_per_class, task.split_seed, task.name, names,
                                           option=task.option_name("k_per_class"))
    if task.max_train_samples is not None and len(splits["train"]) > task.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=task.split_seed).select(range(task.max_train_samples))
    if task.max_eval_samples is not None:
        for role in ("validation", "test"):
            if len(splits[role]) > task.max_eval_samples:
                splits[role] = splits[role].shuffle(seed=task.split_seed).select(range(task.max_eval_samples))


def _stratified_split(ds: Dataset, fraction: float, seed: int) -> Tuple[Dataset, Dataset]:
    """``ds.train_test_split(test_size=fraction, seed=seed, stratify_by_column="labels")``, fast.

    The same indices as ``datasets`` (same sizes, generator and sampling function), but the
    labels are read through Arrow: ``train_test_split`` reads them row by row, which took
    ~20 s on SST-2's 67k rows.
    """
    n = len(ds)
    n_test = math.ceil(fraction * n)
    n_train = n - n_test
    y = np.asarray(column(ds, LABELS))
    train_idx, test_idx = next(
        stratified_shuffle_split_generate_indices(y, n_train, n_test, rng=np.random.default_rng(seed))
    )
    return ds.select(train_idx), ds.select(test_idx)


def _class_counts(ds: Dataset, num_labels: int) -> List[int]:
    counts = [0] * num_labels
    for y in column(ds, LABELS):
        counts[y] += 1
    return counts


def sample_per_class(ds: Dataset, k: int, seed: int, task_name: str, names: List[str],
                     option: str = "k_per_class") -> Dataset:
    """Keep ``k`` examples of each class, chosen with ``seed``; error if a class has fewer
    (naming ``option``, e.g. ``target.k_per_class``)."""
    counts = _class_counts(ds, len(names))
    short = [(names[c], n) for c, n in enumerate(counts) if n < k]
    if short:
        listed = ", ".join(f"'{name}' has {n}" for name, n in short)
        raise DataError(
            f"task '{task_name}': `{option}: {k}` is larger than the training split allows ({listed}). "
            f"Lower `{option}` to at most {min(counts)}."
        )
    shuffled = ds.shuffle(seed=seed)
    taken = [0] * len(names)
    keep = []
    for i, y in enumerate(column(shuffled, LABELS)):
        if taken[y] < k:
            taken[y] += 1
            keep.append(i)
    return shuffled.select(sorted(keep))
