"""The one table of data-file formats: names, extensions, and how ``datasets`` reads each.

Used by task loading (``data/``), unlabelled-text files (``strategies/``), ``predict`` and
``evaluate`` (``inference/``), and by config checks; it imports nothing heavy, so a config
error about a format is reported before torch loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class DataFormat:
    """One readable format.

    Args:
        name (`str`): the name used in configs (``format: tsv``).
        builder (`str`): the ``datasets`` builder that reads it (``csv`` reads tsv too).
        extensions (`tuple[str]`): file extensions that imply it.
        delimiter (`str`, *optional*): the delimiter of a delimited-text format (csv, tsv).
        chunk_reader (`str`, *optional*): the format ``predict`` and ``evaluate`` read it as, a
            chunk at a time with pyarrow (``json`` files are read as JSON lines); None if they
            cannot read it.
    """

    name: str
    builder: str
    extensions: Tuple[str, ...]
    delimiter: Optional[str] = None
    builder_kwargs: Dict[str, str] = field(default_factory=dict)
    chunk_reader: Optional[str] = None


FORMATS: Dict[str, DataFormat] = {f.name: f for f in (
    DataFormat("csv", "csv", (".csv",), delimiter=",", chunk_reader="csv"),
    DataFormat("tsv", "csv", (".tsv",), delimiter="\t", chunk_reader="tsv"),
    DataFormat("json", "json", (".json",), chunk_reader="jsonl"),
    DataFormat("jsonl", "json", (".jsonl", ".ndjson"), chunk_reader="jsonl"),
    DataFormat("parquet", "parquet", (".parquet",), chunk_reader="parquet"),
    DataFormat("txt", "text", (".txt",)),
)}
# formats a labelled task can be read from (a plain-text file has no label column)
DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
# formats `predict` reads and writes a chunk at a time (`--input-format`; a .json file is read as jsonl)
PREDICT_FORMATS = tuple(f.name for f in FORMATS.values() if f.chunk_reader == f.name)
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def extension(path: str) -> str:
    """The lower-cased extension of ``path``, ignoring a compression suffix (``x.csv.gz`` -> ``.csv``)."""
    name = str(path).lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return os.path.splitext(name)[1]


def by_extension(allowed=DATA_FORMATS) -> Dict[str, DataFormat]:
    """Extension -> format, for the formats in ``allowed`` (``{".csv": FORMATS["csv"], ...}``)."""
    return {ext: FORMATS[name] for name in allowed for ext in FORMATS[name].extensions}


def format_of(path: str, allowed=DATA_FORMATS) -> Optional[DataFormat]:
    """The format implied by ``path``'s extension among ``allowed``, or None."""
    ext = extension(path)
    for name in allowed:
        if ext in FORMATS[name].extensions:
            return FORMATS[name]
    return None
