"""Checkpoints that survive a kill: write to a temp folder, mark complete, rename into place.

A run's ``checkpoints/`` folder holds, per stage (``source``, ``target``, ``baseline``):

* ``step-000120/``: the newest complete mid-stage checkpoint. Accelerate's ``save_state``
  writes the model, optimiser and each process's RNG states; we add ``loop.json`` (the
  trainer's :class:`~textransfer.training.loop_state.LoopState`: epoch, batch index within the
  epoch, running loss, patience count, history, steps), ``scheduler.json`` (the learning-rate
  schedule's ``state_dict``) and ``best.safetensors`` (the best validation weights kept in
  memory for ``load_best_model_at_end``). ``COMPLETE`` is written last.
* ``done.json`` (+ ``model/``): written when the stage has finished, with its summary and test
  predictions, so a resumed run skips finished stages.

A run that finishes removes the whole folder (``remove_checkpoints``) unless
``keep_checkpoints`` or a stage's ``save_checkpoints`` asks to keep it; a killed run never gets
that far, so ``--resume`` always finds what it needs.

Why our own layer over ``save_state``: Accelerate writes straight into the target folder, so a
kill mid-write leaves a folder that looks like a checkpoint. Here everything goes to
``.tmp-step-000120/`` first; only a folder with ``COMPLETE`` is ever renamed into place, and
``latest()`` ignores (and removes) anything else. ``os.rename`` of a folder within one file
system is atomic, so a reader sees either the old checkpoint or the new one, never half.

Why the schedule is ours to save, not registered with ``accelerator.register_for_checkpointing``:
one accelerator serves every stage of a run, and a registered object stays registered; a later
stage's checkpoint would then hold (and a resume would load) an earlier stage's schedule.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from ..errors import ConfigError, OutputDirError
from ..files import atomic_write_text, write_json
from ..modeling.loading import save_model_atomically
from .loop_state import LoopState

COMPLETE = "COMPLETE"
LOOP_STATE = "loop.json"
SCHEDULER_STATE = "scheduler.json"
BEST_WEIGHTS = "best.safetensors"
STAGE_DONE = "done.json"
STEP_PREFIX = "step-"
TMP_PREFIX = ".tmp-"


def capture_rng() -> Dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint:
    """What :meth:`StageCheckpoints.load` reads besides Accelerate's state."""

    loop: LoopState
    scheduler: Dict[str, Any]
    best_weights: Optional[Dict[str, torch.Tensor]] = None


class StageCheckpoints:
    """The checkpoints of one stage, in ``root`` (e.g. ``runs/x/checkpoints/target``).

    Every process calls :meth:`save` (``save_state`` is collective: each process writes its own
    RNG state); only the main process writes our files and renames.

    Args:
        root (`Path`): the stage's checkpoint folder.
        accelerator (`Accelerator`): the run's accelerator.
        keep (`int`, *optional*, defaults to 1): complete step checkpoints kept.
    """

    def __init__(self, root: Path, accelerator, keep: int = 1):
        self.root = Path(root)
        self.accelerator = accelerator
        self.keep = max(1, keep)

    # ------------------------------------------------------------------ write
    def save(self, loop: LoopState, scheduler: Dict[str, Any],
             best_weights: Optional[Dict[str, torch.Tensor]] = None) -> Path:
        """Write a checkpoint named after ``loop``'s optimiser steps; returns its folder."""
        acc = self.accelerator
        step = loop.result.optimizer_steps
        name = f"{STEP_PREFIX}{step:09d}"
        final = self.root / name
        tmp = self.root / f"{TMP_PREFIX}{name}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a kill during an earlier write
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if best_weights is not None:
                save_file({k: v.contiguous() for k, v in best_weights.items()}, str(tmp / BEST_WEIGHTS))
            write_json(tmp / LOOP_STATE, loop.to_dict())
            write_json(tmp / SCHEDULER_STATE, scheduler)
            # COMPLETE last: a folder without it was cut short and is never trusted.
            (tmp / COMPLETE).write_text(f"{step}\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            self._prune(final)
        acc.wait_for_everyone()
        return final

    def _prune(self, newest: Path) -> None:
        complete = self.complete()
        for old in complete[: max(0, len(complete) - self.keep)]:
            if old != newest:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ read
    def complete(self) -> List[Path]:
        """Complete step checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir()
                 if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / COMPLETE).is_file()]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Optional[Path]:
        """The newest complete checkpoint; partial temp folders are removed (main process)."""
        if self.root.is_dir() and self.accelerator.is_main_process:
            for p in self.root.iterdir():
                if p.name.startswith(TMP_PREFIX) or (p.name.startswith(STEP_PREFIX) and not (p / COMPLETE).exists()):
                    shutil.rmtree(p, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        complete = self.complete()
        return complete[-1] if complete else None

    def load(self, directory: Path) -> Checkpoint:
        """Restore model, optimiser and RNG states (``load_state``); return the rest."""
        directory = Path(directory)
        self.accelerator.load_state(str(directory))
        best = directory / BEST_WEIGHTS
        return Checkpoint(loop=LoopState.from_dict(json.loads((directory / LOOP_STATE).read_text())),
                          scheduler=json.loads((directory / SCHEDULER_STATE).read_text()),
                          best_weights=load_file(str(best)) if best.is_file() else None)

    def clear(self) -> None:
        """Remove step checkpoints (after the stage has finished and recorded itself)."""
        if self.accelerator.is_main_process and self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith((STEP_PREFIX, TMP_PREFIX)):
                    shutil.rmtree(p, ignore_errors=True)
        self.accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------- stages

CHECKPOINTS_FOLDER = "checkpoints"  # in a run's output folder; removed when the run finishes (remove_checkpoints)
RUN_CONFIG = "config.yaml"
RUN_RESULTS = "results.json"  # written last by a run: its presence means the run finished
STAGE_MODEL = "model"
# options that may differ between a run and its resumption
_RESUME_FREE = ("output_dir", "overwrite_output_dir", "resume")


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def prepare_checkpoint_root(out: Path, cfg, accelerator) -> Path:
    """``out/checkpoints``, checked and made ready for this run.

    A fresh run (``cfg.resume`` false) removes checkpoints an earlier run left there (it was
    allowed to overwrite), so nothing stale is ever resumed. A resumed run requires the
    folder to be a textransfer run and the config to match the one the run started with:
    resuming under another config would splice two different runs together. A run that
    finished and removed its checkpoints (no ``keep_checkpoints``) has nothing left to resume.
    """
    out = Path(out)
    root = out / CHECKPOINTS_FOLDER
    saved = root / RUN_CONFIG
    if cfg.resume:  # every process checks (reads only), so all raise together
        check_resumable(out, saved, cfg)
    if accelerator.is_main_process:
        if not cfg.resume and root.exists():
            shutil.rmtree(root)
        if not saved.is_file():
            atomic_write_text(saved, cfg.to_yaml())
    accelerator.wait_for_everyone()
    return root


def check_resumable(out: Path, saved: Path, cfg) -> None:
    """Raise unless ``out`` holds a run that ``cfg`` can resume (see `prepare_checkpoint_root`)."""
    # a finished run without checkpoints still has its resolved config beside its results
    finished = (out / RUN_RESULTS).is_file() and (out / RUN_CONFIG).is_file()
    started = saved if saved.is_file() else (out / RUN_CONFIG if finished else None)
    if out.is_dir() and any(out.iterdir()) and started is None:
        raise OutputDirError(
            f"--resume: '{out}' holds no textransfer checkpoints ({saved} is missing), so there is nothing "
            f"to resume. Run without --resume into a new directory."
        )
    if started is not None:
        before = _flat(yaml.safe_load(started.read_text()))
        now = _flat(cfg.to_dict())
        changed = sorted(k for k in set(before) | set(now)
                         if k.split(".")[0] not in _RESUME_FREE and before.get(k) != now.get(k))
        if changed:
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
            raise ConfigError(
                f"--resume: the config differs from the one the run in '{out}' started with ({shown}). "
                f"Resume with the same recipe and overrides, or start a new run in another directory."
            )
    if started is not None and not saved.is_file():
        raise OutputDirError(
            f"--resume: the run in '{out}' has finished ({RUN_RESULTS} is written) and its checkpoints were removed "
            f"(`keep_checkpoints: false`), so there is nothing to resume: its outputs are complete. To train it "
            f"again, run without --resume with --overwrite, or into a new directory."
        )


def keeps_checkpoints(cfg) -> bool:
    """Whether a finished run keeps ``checkpoints/``: asked for with ``keep_checkpoints``, or by
    either stage's ``save_checkpoints`` (whose epoch checkpoints are of no use once removed)."""
    return bool(cfg.keep_checkpoints or cfg.source_training.save_checkpoints or cfg.target_training.save_checkpoints)


def remove_checkpoints(out: Path) -> None:
    """Remove a finished run's ``checkpoints/`` (stage records, their models, step checkpoints).

    Call it on the main process, once every output is written: a run killed before that
    still has them, and ``--resume`` finishes it.
    """
    shutil.rmtree(Path(out) / CHECKPOINTS_FOLDER, ignore_errors=True)


def stage_done(root: Path, stage: str) -> Optional[Dict[str, Any]]:
    """The record of a finished stage, or None (also when the model it recorded is gone: a run
    killed while it moved that model into its outputs trains the stage again on resume)."""
    path = Path(root) / stage / STAGE_DONE
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    if done.get("model") and stage_model_dir(root, stage) is None:
        return None
    return done


def record_stage(root: Path, stage: str, record: Dict[str, Any], model=None, tokenizer=None, accelerator=None) -> None:
    """Mark ``stage`` finished: its model first (temp folder + rename), then ``done.json``.

    ``done.json`` is written last and atomically, so a stage counts as done only once
    everything it needs on resume is on disk.
    """
    if accelerator is not None and not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    folder = Path(root) / stage
    folder.mkdir(parents=True, exist_ok=True)
    if model is not None:
        save_model_atomically(model, tokenizer, folder / STAGE_MODEL)
        record = {**record, "model": STAGE_MODEL}
    write_json(folder / STAGE_DONE, record)
    if accelerator is not None:
        accelerator.wait_for_everyone()


def stage_model_dir(root: Path, stage: str) -> Optional[Path]:
    """The folder of the model a finished stage saved, or None when there is none."""
    folder = Path(root) / stage / STAGE_MODEL
    return folder if (folder / "config.json").is_file() else None


def load_stage_model(root: Path, stage: str):
    """The model a finished stage saved (``record_stage(..., model=...)``)."""
    return AutoModelForSequenceClassification.from_pretrained(Path(root) / stage / STAGE_MODEL)


# ---------------------------------------------------------------------------- Ctrl-C
class StopOnInterrupt:
    """Turn the first Ctrl-C (SIGINT) during training into a request to stop at the next step.

    Why not let ``KeyboardInterrupt`` fly: it can land inside ``optimizer.step()`` and leave
    half-updated weights, and under several processes each would stop at a different step.
    Here the handler only sets a flag; the loop checks it after each optimiser step, all
    processes agree on it (a max-reduce when there are several), a checkpoint is written at
    that position, and then ``KeyboardInterrupt`` is raised. A second Ctrl-C interrupts at once.
    """

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self._flag = False
        self._previous = None

    def _handler(self, signum, frame):
        if self._flag:  # second Ctrl-C: the user does not want to wait
            raise KeyboardInterrupt
        self._flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def requested(self) -> bool:
        if self.accelerator.num_processes == 1:
            return self._flag
        flag = torch.tensor([1.0 if self._flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
