"""Where a task's files are: paths relative to the config file, and files shipped in the package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # task.py imports this module: a runtime import would be a cycle
    from .task import TaskConfig

PACKAGE_PREFIX = "textransfer:"


def package_file(path: str) -> str:
    """``textransfer:sample_data/news.csv`` -> the file inside the installed package."""
    return str(Path(__file__).resolve().parent.parent / path[len(PACKAGE_PREFIX):])


def map_task_paths(task: "TaskConfig", fn) -> None:
    """Apply ``fn`` to every path of a task: ``path`` and ``data_files`` (one path, a list of
    paths, or ``{split: path or list of paths}``)."""

    def one(v):
        if isinstance(v, str):
            return fn(v)
        if isinstance(v, (list, tuple)):
            return [fn(p) if isinstance(p, str) else p for p in v]
        return v

    if isinstance(task.path, str):
        task.path = fn(task.path)
    if isinstance(task.data_files, dict):
        task.data_files = {k: one(v) for k, v in task.data_files.items()}
    else:
        task.data_files = one(task.data_files)


def relative_to(base_dir: Path):
    """A function mapping a relative path that exists under ``base_dir`` to that file."""

    def resolve(p: str) -> str:
        candidate = base_dir / p
        return str(candidate) if not Path(p).is_absolute() and candidate.exists() else p

    return resolve


def resolve_task_paths(task, base_dir: Path) -> None:
    """Make relative local paths relative to the config file, not to the current directory.

    (Paths starting with ``textransfer:`` name files shipped inside the package, the sample
    corpus; ``TaskConfig`` resolves those itself.)
    """
    map_task_paths(task, relative_to(base_dir))


