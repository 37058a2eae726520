"""Where a task's rows come from: its local files (found, checked, their format told from the
table in ``textransfer.formats``) or a Hub id, and how ``datasets`` reads them.

Shared by ``loading`` (whole tables) and ``streaming`` (streams), so that a file is found,
named in errors and parsed the same way by both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import datasets

from ..config import TaskConfig
from ..errors import ConfigError, DataError
from ..formats import DATA_FORMATS, FORMATS, by_extension, extension
from .encoding import check_encoding

# extension -> format of the files a labelled task can be read from
TASK_EXTENSIONS = by_extension(DATA_FORMATS)
_FORMAT_LIST = f"{', '.join(DATA_FORMATS[:-1])} or {DATA_FORMATS[-1]}"  # "csv, tsv, json, jsonl or parquet"
TEXT_BUILDERS = ("csv", "json")  # the readers of text files, which take the task's `encoding`


def task_format(path: str, task: TaskConfig) -> str:
    """The format name of one of the task's files: ``task.format``, else told by its extension
    (a compression suffix such as ``.gz`` is looked through)."""
    if task.format:
        return task.format
    ext = extension(path)
    if ext not in TASK_EXTENSIONS:
        raise DataError(
            f"task '{task.name}': cannot tell the format of '{path}' from its extension '{ext or '(none)'}'. "
            f"Set `{task.option_name('format')}` to one of {', '.join(DATA_FORMATS)}, or rename the file."
        )
    return TASK_EXTENSIONS[ext].name


def files_format(task: TaskConfig, paths: Sequence[str]) -> str:
    """The one format of ``paths`` (a task is read with one reader)."""
    formats = {task_format(p, task) for p in paths}
    if len(formats) > 1:
        raise DataError(f"task '{task.name}': data files mix formats {sorted(formats)}; use one format per task "
                        f"(`{task.option_name('data_files')}`).")
    return formats.pop()


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or _suffix(s) in TASK_EXTENSIONS or os.sep + os.sep in s


def _files_from_path(task: TaskConfig):
    """``task.path`` as data files: one file, a folder's data files by split (the file's stem),
    or None for a Hub id."""
    p = Path(task.path)
    if p.is_file():
        return str(p)
    if p.is_dir():
        found = sorted(str(f) for f in p.iterdir() if _suffix(f.name) in TASK_EXTENSIONS)
        if not found:
            raise DataError(f"task '{task.name}': folder '{p}' (`{task.option_name('path')}`) holds no {_FORMAT_LIST} "
                            f"file.")
        return {Path(f).name.split(".")[0]: f for f in found}
    if _looks_like_path(task.path):
        raise DataError(
            f"task '{task.name}': file not found: '{task.path}'. Check `{task.option_name('path')}` (relative "
            f"paths are resolved against the config file's folder and the current directory)."
        )
    return None


def local_files(task: TaskConfig) -> Optional[Dict[str, List[str]]]:
    """The task's local files as {split: [paths]}, or None for a Hub dataset."""
    files = task.data_files if task.data_files is not None else _files_from_path(task)
    if files is None:
        return None
    if isinstance(files, str):
        files = {"train": files}
    if not isinstance(files, dict):
        option = task.option_name("data_files")
        raise ConfigError(f"task '{task.name}': `{option}` must be a path or a mapping split -> path.", option=option)
    out = {}
    for split, paths in files.items():
        paths = [paths] if isinstance(paths, str) else list(paths)
        for p in paths:
            if not Path(p).is_file():
                raise DataError(
                    f"task '{task.name}': file not found for split '{split}': '{p}'. "
                    f"Fix `{task.option_name('data_files')}.{split}` (relative paths are resolved against the "
                    f"config file's folder)."
                )
        out[str(split)] = paths
    return out


def reader_options(task: TaskConfig, fmt: str) -> Dict[str, Any]:
    """The reader's options from the task: the encoding of a text format, and the csv reader's
    delimiter, quoting and header names."""
    if FORMATS[fmt].builder not in TEXT_BUILDERS:
        return {}
    options: Dict[str, Any] = {"encoding": task.encoding}
    if FORMATS[fmt].builder != "csv":
        return options
    options["delimiter"] = task.delimiter or FORMATS[fmt].delimiter
    if task.quoting is not None:
        options["quoting"] = task.quoting
    if task.column_names:
        options["column_names"] = list(task.column_names)
    return options


def reader_options_named(task: TaskConfig) -> str:
    """The options that decide how a file is parsed, as the user writes them."""
    names = [f"`{task.option_name(o)}`" for o in ("format", "delimiter", "quoting", "column_names", "encoding")]
    return ", ".join(names[:-1]) + " and " + names[-1]


def load_files(task: TaskConfig, paths: List[str], fmt: str, cache_dir: Optional[str] = None,
               streaming: bool = False):
    """One split's files through ``datasets.load_dataset``: a ``Dataset``, or an
    ``IterableDataset`` with ``streaming``. Text files are checked against ``encoding`` first
    (``encoding.py``), so that one that does not decode is named with its line."""
    if FORMATS[fmt].builder in TEXT_BUILDERS:
        for path in paths:
            check_encoding(task, path)
    # Read under datasets' neutral name `train`: the user's split names (`dev-2024`, `all`)
    # need not follow datasets' rules for split names.
    return datasets.load_dataset(FORMATS[fmt].builder, data_files={"train": paths}, split="train",
                                 cache_dir=cache_dir, streaming=streaming, **reader_options(task, fmt))
