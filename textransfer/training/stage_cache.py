"""The stage cache: a finished stage, stored under a key of everything that determines it, and
reused by later runs instead of training it again.

A stage that starts from the pretrained encoder (the source stage of ``finetune``, ``l2sp``,
``features``, ``self_training`` and ``relational_distillation``, the no-transfer baselines, with
the adaptive pretraining before it where there is some) is a pure function of: the model (its
id, revision and the resolved files), the task's tokenized splits (their content, so the data
files' bytes, filters, sampling and the tokenizer are all in it), the stage's training config,
the seed, the metrics, the precision, the number of processes, the device and what on it sets
the order of float sums (a CPU's model and its intra-op thread count, a GPU's name), the
versions of textransfer, torch and transformers, and a digest of textransfer's own code. The key
is the SHA-256 of those, written as canonical JSON.

So ``textransfer compare`` with ``finetune,l2sp,features`` trains their common source stage once,
and a second run of the same config trains neither its source stage nor its baseline. A cached
stage is bit-identical to a fresh one by construction (same inputs, same seed; a test checks
it), and its record says where it came from (``from_cache``). ``--no-cache`` (``stage_cache:
false``) turns it off; ``textransfer cache info`` / ``clear`` show and empty it.

Layout: ``<root>/stages/<key>/`` holding ``model/`` (``save_pretrained``) and ``stage.json`` (the
stage's record and test predictions, its adaptive pretraining's record, the key's material and
when it was stored). An entry is written into a temp folder and renamed into place, so a killed
write never leaves one that a later run would trust.

Why not ``datasets``' own cache: it caches dataset transforms, not trained models; the
Hugging Face Hub cache holds downloads. Neither has a notion of "a training stage".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
import transformers
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..data.fingerprint import dataset_fingerprint, files_fingerprint
from ..files import follow_umask_tree, make_temp_dir, write_json
from ..modeling.loading import load_model_config, quiet_transformers, resolve_model_path

CACHE_ENV = "TEXTRANSFER_CACHE"
ENTRY_FILE = "stage.json"
ENTRY_MODEL = "model"
KEY_FORMAT = 3  # bumped when what a key covers changes, so old entries are never mistaken for new ones
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the textransfer package folder


def default_cache_dir() -> Path:
    """``$TEXTRANSFER_CACHE``, else ``$XDG_CACHE_HOME/textransfer`` (``~/.cache/textransfer``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textransfer"


def package_versions() -> Dict[str, str]:
    """The versions whose numerics a stage depends on, and the digest of textransfer's own code."""
    try:
        ours = metadata.version("textransfer")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown"
    return {"textransfer": ours, "textransfer_code": package_code_digest(),
            "torch": torch.__version__, "transformers": transformers.__version__}


@functools.lru_cache(maxsize=1)
def package_code_digest() -> str:
    """``code_digest`` of the textransfer package this process imported, once a process."""
    return code_digest(PACKAGE_ROOT)


def code_digest(root: Path) -> str:
    """SHA-256 of the Python files under ``root``: each one's relative path, length and bytes, in
    sorted order.

    Why beside the version number: an editable install or a source checkout keeps its version
    while its code changes (a new kernel, another order of float sums), and a stage trained by
    other code is not the stage this run would train. Reading the package's files takes a few
    milliseconds; a released install's files never change within a version, so it costs no reuse.
    Not ``files_fingerprint`` of the folder: that hashes every file under it, the compiled
    ``__pycache__`` files included, and names files without their folder."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def stage_key(material: Dict[str, Any]) -> str:
    """SHA-256 of ``material`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps({"key_format": KEY_FORMAT, **material}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CachedStage:
    """A stage as the cache holds it."""

    key: str
    model: PreTrainedModel
    record: Dict[str, Any]  # "summary", "test" and, where it ran, "pretraining"


@dataclass
class CacheEntryInfo:
    key: str
    role: str  # the task it trained on: "source" or "target"
    task: str
    model: str
    bytes: int
    stored: str


class StageCache:
    """Finished stages under ``root`` (default: `default_cache_dir`)."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def entry(self, key: str) -> Path:
        return self.stages / key

    def load(self, key: str) -> Optional[CachedStage]:
        """The stage stored under ``key``, or None (never stored, or an entry that does not read back)."""
        folder = self.entry(key)
        try:
            record = json.loads((folder / ENTRY_FILE).read_text())
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(folder / ENTRY_MODEL)
        except Exception:  # noqa: BLE001 - any entry that does not read back (truncated weights raise
            return None  # safetensors' own error type) is trained again rather than trusted
        return CachedStage(key, model, record)

    def store(self, key: str, model: PreTrainedModel, record: Dict[str, Any], material: Dict[str, Any]) -> None:
        """Store a finished stage under ``key`` (temp folder + rename; an entry already there is kept)."""
        if self.entry(key).exists():
            return
        self.stages.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(self.stages, prefix=f".{key[:12]}.")
        try:
            with quiet_transformers():
                model.save_pretrained(tmp / ENTRY_MODEL)
            write_json(tmp / ENTRY_FILE, {**record, "key_material": material,
                                          "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            follow_umask_tree(tmp)
            os.replace(tmp, self.entry(key))
        except OSError:
            if not self.entry(key).exists():  # another process storing the same key won the race otherwise
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def entries(self) -> List[CacheEntryInfo]:
        """What the cache holds, oldest first."""
        found = []
        for folder in sorted(self.stages.glob("*")) if self.stages.is_dir() else []:
            if folder.name.startswith(".") or not (folder / ENTRY_FILE).is_file():
                continue
            record = json.loads((folder / ENTRY_FILE).read_text())
            material = record.get("key_material", {})
            found.append(CacheEntryInfo(folder.name, material.get("task_role", "?"), record.get("summary", {}).get("task", "?"),
                                        material.get("model", {}).get("name_or_path", "?"), folder_bytes(folder),
                                        record.get("stored", "?")))
        return sorted(found, key=lambda e: e.stored)

    def clear(self) -> int:
        """Remove every entry (and any half-written one); returns the bytes freed."""
        if not self.stages.is_dir():
            return 0
        freed = folder_bytes(self.stages)
        shutil.rmtree(self.stages)
        return freed


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- what a key covers
def model_material(cfg) -> Dict[str, Any]:
    """The encoder in a key: every ``model:`` option (id, revision, ``max_length``, attention kernel)
    and what the id resolved to (a local folder's config and weight bytes; a Hub snapshot's commit)."""
    path = resolve_model_path(cfg.name_or_path)
    material = dataclasses.asdict(cfg)
    if os.path.isdir(path):
        material["files_sha256"] = _weights_fingerprint(*_weight_files(Path(path)))
    else:  # a Hub id: the commit its files came from, which `main` moving on changes
        material["commit"] = getattr(load_model_config(cfg), "_commit_hash", None)
    return material


def _weight_files(folder: Path):
    names = ("config.json", "model.safetensors", "pytorch_model.bin")
    files = [folder / n for n in names if (folder / n).is_file()]
    files += sorted(folder.glob("model-*.safetensors"))
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=16)
def _weights_fingerprint(*files) -> str:
    """Hashed once per process per (path, size, mtime) set: ``compare`` asks for it every stage."""
    return files_fingerprint(path for path, _, _ in files)


def splits_material(splits: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    """Each split's content hash; None when one is a stream (nothing to key it by)."""
    hashes = {name: dataset_fingerprint(ds) for name, ds in splits.items()}
    return None if any(h is None for h in hashes.values()) else hashes


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says); read once a
    process, not once a stage key (the file holds a block per core)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def arithmetic_material(device: torch.device) -> Dict[str, Any]:
    """What on ``device`` sets the order of a stage's float sums, beyond the code and the data.

    Why: a matrix product or a reduction split over more threads, or run by kernels chosen for
    another CPU or GPU, sums in another order. Measured on the demo's target stage: one intra-op
    thread against two left weights up to 1.4e-6 apart. A stage reused from the cache must be the
    one this run would train (``tests/test_stage_cache.py``), so a cache shared by machines or
    thread counts keeps their stages apart."""
    if device.type == "cpu":
        return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "intra_op_threads": torch.get_num_threads()}
    if device.type == "cuda":
        return {"gpu": torch.cuda.get_device_name(device)}
    return {}


def environment_material(cfg, accelerator) -> Dict[str, Any]:
    """What a run adds to every stage's key: seed, metrics, precision, processes, device (and what
    on it orders float sums), versions."""
    return {"seed": cfg.seed, "metrics": list(cfg.metrics), "mixed_precision": cfg.mixed_precision,
            "logging_steps": cfg.logging_steps, "num_processes": accelerator.num_processes,
            "device": accelerator.device.type, "arithmetic": arithmetic_material(accelerator.device),
            "versions": package_versions()}


def pretrained_stage_material(cfg, accelerator, task, task_key: str, splits: Mapping[str, Any], args,
                              pretraining=None) -> Optional[Dict[str, Any]]:
    """The key material of a stage that trains the pretrained encoder with a fresh head on ``task``
    (``RunContext.train_from_pretrained``); ``pretraining`` is ``(config, texts)`` when adaptive
    pretraining precedes it. None when any of its data is a stream."""
    data = splits_material(splits)
    if data is None:
        return None
    material = {"starts_from": "pretrained encoder, fresh head", "task_role": task_key, "task": task.name,
                "label_names": list(task.label_names), "data": data, "training": dataclasses.asdict(args),
                "model": model_material(cfg.model), **environment_material(cfg, accelerator)}
    if pretraining is not None:
        config, texts = pretraining
        text_data = splits_material({"train": texts.train, **({"heldout": texts.heldout} if texts.heldout else {})})
        if text_data is None:
            return None
        material["adaptive_pretraining"] = {"config": dataclasses.asdict(config), "texts": text_data}
    return material
