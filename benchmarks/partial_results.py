"""What the benchmarks keep as they go: ``OUT.partial``, rewritten after every run, so that a
stopped benchmark resumes with ``--resume`` instead of starting over.

A partial file is ``{"runs": {unit: result}, "settings": {...}}``; it is resumed only under the same
settings (mixed budgets in one table would mislead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_partial(resume: bool, settings: dict, partial: Path) -> dict:
    """The runs of a stopped benchmark (``--resume``), or none for a fresh start; exits with the fix
    when the partial file was written with other settings, or exists and ``--resume`` was not given."""
    if resume and partial.is_file():
        previous = json.loads(partial.read_text())
        if previous.get("settings") != settings:
            sys.exit(f"--resume: {partial} was written with other settings:\n  {previous.get('settings')}\nnow:\n"
                     f"  {settings}\nrun without --resume, or with the same options.")
        return previous["runs"]
    if partial.exists():
        sys.exit(f"{partial} exists (a stopped run): pass --resume to go on from it, or delete it.")
    return {}
