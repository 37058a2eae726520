"""What the benchmarks keep as they go: ``OUT.partial``, rewritten after every run, so that a
stopped benchmark resumes with ``--resume`` instead of starting over.

A partial file is ``{"runs": {unit: result}, "settings": {...}}``; it is resumed only under the same
settings (mixed budgets in one table would mislead).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional


def load_partial(resume: bool, settings: dict, partial: Path, finished: Optional[Path] = None) -> dict:
    """The runs of a stopped benchmark (``--resume``), or none for a fresh start; exits with the fix
    when the partial file was written with other settings, or exists and ``--resume`` was not given.

    ``finished``: the benchmark's final JSON, read when there is no partial file: its ``runs`` let a
    later invocation add arms, sources or seeds to a finished table without training it again."""
    source = partial if partial.is_file() else finished
    if resume and source is not None and source.is_file() and "runs" in json.loads(source.read_text()):
        previous = json.loads(source.read_text())
        if previous.get("settings") != settings:
            sys.exit(f"--resume: {source} was written with other settings:\n  {previous.get('settings')}\nnow:\n"
                     f"  {settings}\nrun without --resume, or with the same options.")
        return previous["runs"]
    if partial.exists():
        sys.exit(f"{partial} exists (a stopped run): pass --resume to go on from it, or delete it.")
    return {}


def save_partial(partial: Path, runs: dict, settings: dict) -> None:
    """Rewrite ``partial`` with every finished run, through a temp file: a benchmark killed while
    writing leaves the previous partial file whole."""
    write_atomically(partial, {"runs": runs, "settings": settings}, indent=None)


def write_final(out: Path, record: dict, partial: Path, work: Path) -> None:
    """Write the finished benchmark's JSON (``record`` keeps its ``runs``, so a later ``--resume``
    can extend it), then drop the partial file and the work folder (the source models)."""
    write_atomically(out, record, indent=2)
    partial.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)


def write_atomically(path: Path, record: dict, indent: Optional[int]) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(record, indent=indent))
    os.replace(tmp, path)
