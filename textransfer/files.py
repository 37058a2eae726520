"""What the package writes and reads on disk, in one place: atomic writes, the output-folder
check, and the resolver that turns a run directory, a model folder or a Hub id into a model.

A leaf (no torch), used by training checkpoints, outputs, ``predict``, ``evaluate`` and ``push``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ConfigError, OutputDirError

RESULTS_FILE = "results.json"
RUN_CONFIG_FILE = "config.yaml"
MODEL_FOLDER = "model"


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (0644 / 0755 under umask 022).

    Why: ``tempfile`` makes its files 0600 and folders 0700 whatever the umask, and our
    outputs are written through temp files; without this, another user or a container could
    not read ``results.json`` or the model.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def follow_umask_tree(root: Path) -> None:
    """:func:`follow_umask` on ``root`` and everything below it (a model folder before its rename)."""
    root = Path(root)
    follow_umask(root, directory=True)
    for path in root.rglob("*"):
        follow_umask(path, directory=path.is_dir())


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A temp folder inside ``parent`` (renamed into place later) with the umask's mode."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    follow_umask(tmp, directory=True)
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(output_dir: Optional[str], overwrite: bool, option: str = "--output-dir") -> Optional[Path]:
    """Refuse a non-empty output directory unless ``overwrite`` is set (nothing is run or lost)."""
    if output_dir is None:
        return None
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} '{path}' is a file, not a directory. Choose another path.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputDirError(
            f"{option} '{path}' is not empty ({', '.join(sorted(p.name for p in path.iterdir())[:5])}); "
            f"nothing was run and nothing was overwritten. Choose a new directory, or pass --overwrite "
            f"(`overwrite_output_dir: true`) to replace its results."
        )
    return path


@dataclass
class ModelLocation:
    """Where a model is: ``path`` is what ``from_pretrained`` takes; a run directory also has
    its ``results.json`` and resolved ``config.yaml``."""

    path: str
    run_dir: Optional[Path] = None
    results: Optional[Dict[str, Any]] = None
    run_config: Optional[Dict[str, Any]] = None

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()


def resolve_model(model: str, hub_ids: bool = True) -> ModelLocation:
    """A run directory (``model/`` inside), a saved model folder (``config.json``), or a Hub id.

    With ``hub_ids=False`` (``push``: the upload needs local files) anything that is not a
    local model is an error.
    """
    path = Path(model)
    if (path / MODEL_FOLDER / "config.json").is_file():
        results = json.loads((path / RESULTS_FILE).read_text()) if (path / RESULTS_FILE).is_file() else None
        run_config = None
        if (path / RUN_CONFIG_FILE).is_file():
            import yaml

            run_config = yaml.safe_load((path / RUN_CONFIG_FILE).read_text())
        return ModelLocation(str(path / MODEL_FOLDER), path, results, run_config)
    if (path / "config.json").is_file():
        return ModelLocation(str(path))
    if path.is_dir() or not hub_ids:
        raise ConfigError(
            f"model '{model}': {'the folder' if path.is_dir() else 'no such folder; it'} has neither config.json "
            f"(a saved model) nor model/config.json (a run directory). Pass a run directory"
            f"{', a saved model folder or a Hub id' if hub_ids else ' or a saved model folder'}."
        )
    if path.suffix in (".json", ".yaml", ".bin", ".safetensors") or model.startswith((".", "/", "~")):
        raise ConfigError(f"model '{model}': no such folder. Pass a run directory, a saved model folder or a Hub id.")
    return ModelLocation(model)
