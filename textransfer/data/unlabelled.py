"""Unlabelled text from files: what adaptive pretraining (``adaptive_pretraining.files``) and the
domain-adaptation strategies (``strategy.unlabelled_files``) read besides the tasks' splits.

A file is csv/tsv/json/jsonl/parquet with a text column, or plain text (one text a line).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import datasets

from ..errors import ConfigError, DataError
from ..formats import FORMATS, extension, format_of

# the formats an unlabelled-text file may have: the labelled ones, and plain text (one text a line)
UNLABELLED_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "txt")


def read_text_files(files: List[str], text_column: str, cache_dir: Optional[str] = None,
                    option: str = "unlabelled_files", column_option: str = "unlabelled_text_column") -> datasets.Dataset:
    """The non-empty texts of ``files`` (one format among `UNLABELLED_FORMATS`) as a ``text`` column.

    Args:
        files (`list[str]`): the files, all of one format.
        text_column (`str`): their text column (ignored for txt files: one text a line).
        cache_dir (`str`, *optional*): the datasets cache.
        option / column_option (`str`): the config options that named the files and the column,
            for error messages (e.g. ``adaptive_pretraining.files``).
    """
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ConfigError(f"`{option}`: not found: {missing}.", option=option)
    found = [format_of(f, UNLABELLED_FORMATS) for f in files]
    names = {fmt.name if fmt else None for fmt in found}
    if len(names) != 1 or None in names:
        extensions = sorted(ext for name in UNLABELLED_FORMATS for ext in FORMATS[name].extensions)
        raise ConfigError(f"`{option}` must share one extension among {extensions}; "
                          f"got {sorted({extension(f) for f in files})}.", option=option)
    fmt = found[0]
    kw = {"delimiter": fmt.delimiter} if fmt.delimiter else {}
    ds = datasets.load_dataset(fmt.builder, data_files=files, split="train", cache_dir=cache_dir, **kw)
    column = "text" if fmt.name == "txt" else text_column
    if column not in ds.column_names:
        raise DataError(f"`{option}` {files}: no column '{column}' (columns: {ds.column_names}); "
                        f"set `{column_option}`.")
    ds = ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds.select_columns(["text"])
    ds = ds.filter(lambda b: [isinstance(t, str) and t.strip() != "" for t in b["text"]], batched=True)
    if len(ds) == 0:
        raise DataError(f"`{option}` {files}: no non-empty text.")
    return ds


def cap_examples(ds, cap: Optional[int], seed: int):
    """At most ``cap`` examples of ``ds``, a seeded random sample when it has more."""
    return ds.shuffle(seed=seed).select(range(cap)) if cap and len(ds) > cap else ds


def concatenate_on_shared_columns(parts: List[datasets.Dataset]) -> datasets.Dataset:
    """``parts`` in one set, on the columns they all have, cast to the first part's types.

    Texts from several places (two tasks' train splits, pseudo-labelled rows and a task's split)
    carry different bookkeeping columns; only the shared ones can be stacked."""
    columns = [c for c in parts[0].column_names if all(c in p.column_names for p in parts)]
    parts = [p.select_columns(columns) for p in parts]
    features = parts[0].features
    return datasets.concatenate_datasets([p.cast(features) if p.features != features else p for p in parts])
