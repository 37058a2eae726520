"""Content hashes of what a stage trains on: tokenized splits and plain files.

The stage cache (``training/stage_cache.py``) keys a finished stage by what determines it, and
the data is most of that. Why not ``Dataset._fingerprint``: for local files ``datasets`` derives
it from the files' paths and modification times, and for in-memory tables from a random seed
in some versions, so it is neither stable across machines nor sure to change with the content.
Hashing the tokenized rows themselves covers every way a task reaches a stage (a local file, a
Hub dataset, filters, ``k_per_class`` sampling, label maps, the tokenizer, ``max_length``) and
their order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Optional

import pyarrow as pa
from datasets import Dataset

# rows hashed per Arrow batch: large enough that the per-batch cost is nothing, small enough to
# keep memory flat on a large source task
HASH_BATCH_ROWS = 8192
FILE_CHUNK_BYTES = 1 << 20


def dataset_fingerprint(ds) -> Optional[str]:
    """SHA-256 of a table's column names, types and rows in order; None for a stream (an
    `IterableDataset` has no content to hash before it is read)."""
    if not isinstance(ds, Dataset):
        return None
    digest = hashlib.sha256()
    digest.update(str(ds.features).encode())
    digest.update(str(len(ds)).encode())
    for batch in ds.with_format("arrow").iter(batch_size=HASH_BATCH_ROWS):
        digest.update(_ipc_bytes(batch))
    return digest.hexdigest()


def _ipc_bytes(table: pa.Table) -> bytes:
    """The Arrow IPC serialisation of ``table`` without its schema metadata (which records
    things like the dataset's info, not its rows); sliced columns serialise only their rows."""
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def files_fingerprint(paths: Iterable[str]) -> str:
    """SHA-256 over the bytes of each file (or each file under a folder), in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        for file in _files_under(Path(path)):
            digest.update(file.name.encode())
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(FILE_CHUNK_BYTES), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _files_under(path: Path):
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []
