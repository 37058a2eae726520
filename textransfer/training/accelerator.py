"""The run's ``Accelerator``, and what Accelerate needs to be told on machines without GPUs.

The same recipe runs on one CPU, under ``accelerate launch`` on GPUs or machines, and under
``torchrun``. Accelerate picks the distributed backend from the environment, but on a machine
without an accelerator it starts the gloo (CPU) process group only when asked for the CPU
(``Accelerator(cpu=True)`` or ``ACCELERATE_USE_CPU=1``); otherwise every process of
``torchrun --nproc_per_node 2`` silently trains alone, as a world of one, on all the data.
:func:`cpu_world` detects that case so that :func:`make_accelerator` asks for the CPU backend.

Data sharding, gradient averaging and gathering evaluation predictions are Accelerate's;
``LengthGroupedBatchSampler(num_replicas=...)`` makes N processes of batch B train on the same
global batches as one process of batch N*B (see ``data/batching.py``).

It also checks, before anything trains, that the device can run the ``mixed_precision`` asked
for (:func:`check_precision`), and sets up the experiment trackers ``report_to`` names
(:func:`tracker_names`, :func:`start_tracking`, :func:`end_tracking`): Accelerate's own
(``log_with``, ``init_trackers``), which log on the main process only.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import weakref
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, is_initialized
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
from accelerate.utils import LoggerType

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# the variables launchers set for the number of processes (torchrun, accelerate, MPI)
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """Processes the launcher started (1 when run directly)."""
    for name in WORLD_SIZE_VARS:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def has_accelerator_device() -> bool:
    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def cpu_world() -> bool:
    """True when several processes were launched on a machine with no GPU: use gloo on CPU."""
    return launched_world_size() > 1 and not has_accelerator_device()


def make_accelerator(mixed_precision: str = "no", cpu: bool = False, report_to: Sequence[str] = (),
                     output_dir: Optional[Path] = None) -> Accelerator:
    """An Accelerator with ``mixed_precision``, logging to the trackers ``report_to`` names
    (their files under ``output_dir/logs``; nothing starts before :func:`start_tracking`).

    In a single process the precision may change from one call to the next (a notebook or a
    test suite running several configurations). Under a distributed launcher the precision is the
    launch's: asking for another one raises Accelerate's own error, as it should (every process
    must agree). A precision this device cannot run raises a :class:`ConfigError` first.
    """
    # several processes on a machine without GPUs: Accelerate needs cpu=True to start gloo
    cpu = cpu or cpu_world()
    check_precision(mixed_precision, PartialState(cpu=cpu).device)
    logging_dir = Path(output_dir) / LOGS_DIR if output_dir is not None else None
    log_with = tracker_names(report_to, logging_dir)
    current = current_precision()
    if current is not None and current != mixed_precision and AcceleratorState().num_processes == 1:
        _forget_process_precision()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu, log_with=log_with or None,
                       project_dir=str(logging_dir) if logging_dir is not None else None)


def check_precision(mixed_precision: str, device: torch.device) -> None:
    """Refuse, before training, a ``mixed_precision`` that ``device`` cannot run.

    An error rather than a warning and a fallback: Accelerate, asked for fp16 on a CPU, trains in
    fp32 without a word, so ``config.yaml`` would claim fp16 for an fp32 run, and its memory,
    speed and numbers would not be what the recipe asked for. Failing at once, with the override
    that works, is what ``transformers.TrainingArguments(fp16=True)`` does on a CPU too, and keeps
    every recorded precision the one that ran. bf16 autocast does run on any CPU: fast where the
    CPU has bf16 instructions (AVX512_BF16 or AMX: 1.6-2.1x fp32 in ``benchmarks/throughput.py``),
    slower than fp32 where it has not, which is said in a warning (:func:`cpu_bf16_is_fast`).
    """
    if mixed_precision == "fp16" and device.type == "cpu":
        bf16_speed = ("faster than fp32 on this CPU" if cpu_bf16_is_fast()
                      else "slower than fp32 on this CPU, which has no bf16 instructions")
        raise ConfigError(
            "`mixed_precision: fp16` needs a GPU, and this process runs on the CPU: "
            "Accelerate would train in fp32 without saying so. Set mixed_precision=no (fp32) or "
            f"mixed_precision=bf16 (CPU autocast, {bf16_speed}); or run on a GPU.", option="mixed_precision")
    if mixed_precision == "bf16" and device.type == "cpu" and not cpu_bf16_is_fast():
        logger.warning("mixed_precision: bf16 on a CPU without bf16 instructions (AVX512_BF16, AMX): autocast "
                       "emulates them and trains slower than fp32; mixed_precision: no is faster here.")
    if mixed_precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"`mixed_precision: bf16` needs a GPU with bfloat16 support (compute capability 8.0+, e.g. A100, H100); "
            f"{torch.cuda.get_device_name(device)} has none. Set mixed_precision=fp16 or mixed_precision=no.",
            option="mixed_precision")


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (oneDNN's AVX512_BF16 or AMX kernels)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# ------------------------------------------------------------------ experiment tracking
# under the output folder: the run's TensorBoard (or aim) files, beside its results
LOGS_DIR = "logs"
# the project every run logs to (wandb's project, TensorBoard's folder under logs/); the run is
# told apart by its name, the output folder's
PROJECT_NAME = "textransfer"
# where each tracker takes a run name (Accelerate passes the project name alone)
RUN_NAME_ARGUMENT = {"wandb": "name", "trackio": "name", "mlflow": "run_name"}
# `pip install` names that differ from the tracker's
TRACKER_PACKAGES = {"comet_ml": "comet-ml"}
# what `report_to` takes besides tracker names, as transformers' Trainer does
ALL_TRACKERS, NO_TRACKER = "all", "none"

# the run-wide step each Accelerator's trackers are at: stages log one after another on one step
# axis, as wandb (and others) drop a point whose step goes back
_logged_steps: "weakref.WeakKeyDictionary[Accelerator, int]" = weakref.WeakKeyDictionary()


def tracker_names(report_to: Sequence[str], logging_dir: Optional[Path] = None) -> List[str]:
    """The trackers ``report_to`` names, checked: ``all`` is every installed one, ``none`` none.

    Accelerate itself skips a tracker that is not installed without a word (a debug log), and
    takes any spelling of an unknown one as an error without a hint; both are errors here.
    """
    names = [str(name).strip().lower() for name in ([report_to] if isinstance(report_to, str) else report_to)]
    installed = [t.value for t in get_available_trackers()]
    if ALL_TRACKERS in names:
        if not installed:
            logger.warning("report_to: all, but no experiment tracker is installed (e.g. pip install tensorboard); "
                           "nothing is logged.")
        names = installed
    names = list(dict.fromkeys(n for n in names if n != NO_TRACKER))
    known = [t for t in LoggerType.list() if t != ALL_TRACKERS]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known + [ALL_TRACKERS, NO_TRACKER], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"`report_to`: unknown tracker '{name}'.{hint} Accelerate supports "
                              f"{', '.join(known)}, or all (every installed one).", option="report_to")
        if name not in installed:
            raise ConfigError(f"`report_to`: {name} is not installed; `pip install {TRACKER_PACKAGES.get(name, name)}`, "
                              f"or drop it from report_to.", option="report_to")
        if LOGGER_TYPE_TO_CLASS[name].requires_logging_directory and logging_dir is None:
            raise ConfigError(f"`report_to`: {name} writes its logs under the output directory, and this run has "
                              "none; give one (--output-dir, or `output_dir` in the config).", option="report_to")
    return names


def start_tracking(accelerator: Accelerator, config: Mapping[str, Any], run_name: str, fresh: bool = True) -> None:
    """Start the trackers ``make_accelerator(report_to=...)`` named, with ``config`` as the run's
    hyperparameters; a no-op without trackers. Call it once every input is checked: the trackers
    write their files (and open their web runs) here.

    ``fresh`` (not resuming): the logs of an earlier run in the same (overwritten) folder are
    removed first, or TensorBoard would draw both runs as one.
    """
    if not is_tracking(accelerator):
        return
    logging_dir = accelerator.logging_dir
    if fresh and logging_dir is not None and accelerator.is_main_process:
        shutil.rmtree(logging_dir, ignore_errors=True)
    kwargs = {name: {RUN_NAME_ARGUMENT[name]: run_name} for name in map(str, accelerator.log_with)
              if name in RUN_NAME_ARGUMENT}
    accelerator.init_trackers(PROJECT_NAME, config=flat_config(config), init_kwargs=kwargs)
    _logged_steps[accelerator] = 0


def is_tracking(accelerator: Accelerator) -> bool:
    """Whether the run logs to trackers: the same answer on every process (``accelerator.trackers``
    holds the started trackers on the main process only), so a collective call may depend on it."""
    return bool(accelerator.log_with)


def log_metrics(accelerator: Accelerator, values: Mapping[str, float], stage_step: int, stage_start: int) -> None:
    """Log ``values`` to the trackers at the run-wide step of ``stage_step`` (a stage's own
    optimiser steps; the stage started at run-wide step ``stage_start``)."""
    step = stage_start + stage_step
    accelerator.log(dict(values), step=step)
    _logged_steps[accelerator] = max(_logged_steps.get(accelerator, 0), step)


def tracking_step(accelerator: Accelerator) -> int:
    """The run-wide step the trackers are at (where the next stage starts)."""
    return _logged_steps.get(accelerator, 0)


def advance_tracking(accelerator: Accelerator, step: int) -> None:
    """Move the run-wide step to ``step`` (a stage's end, even past its last logged point)."""
    if is_tracking(accelerator):
        _logged_steps[accelerator] = max(_logged_steps.get(accelerator, 0), step)


def end_tracking(accelerator: Accelerator) -> None:
    """Finish the trackers (flush files, close web runs).

    Not ``accelerator.end_training()``: it also destroys the process group, which a process that
    goes on (``compare``'s next strategy, a notebook) still needs.
    """
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
    _logged_steps.pop(accelerator, None)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"target_training.learning_rate": 2e-05, ...}``: TensorBoard's hyperparameters take only
    numbers, strings and booleans, so sections become dotted keys and lists or nulls JSON text."""
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, prefix=f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def current_precision() -> Optional[str]:
    """The mixed precision this process's Accelerate state holds, or None before any Accelerator."""
    # AcceleratorState() only reads the state once it is initialised (before, it would create it)
    return AcceleratorState().mixed_precision if is_initialized() else None


def _forget_process_precision() -> None:
    """Drop Accelerate's process-wide state (not the process group) so the next ``Accelerator``
    may take another mixed precision.

    The one private call of the package, kept here alone: Accelerate stores the precision in a
    process-wide singleton and raises ("cannot be changed, restart your runtime") when a second
    ``Accelerator`` asks for another one. Accelerate 1.15 has no public way to reset it; its own
    test harness (``accelerate.test_utils.AccelerateTestCase.tearDown``) calls this same
    ``AcceleratorState._reset_state``. ``reset_partial_state=False`` keeps the device and process
    group (``PartialState``), which do not depend on the precision.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
