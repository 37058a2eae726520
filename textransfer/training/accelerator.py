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
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, is_initialized

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


def make_accelerator(mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """An Accelerator with ``mixed_precision``; in a single process the precision may change
    from one call to the next (a notebook or a test suite running several configurations).

    Under a distributed launcher the precision is the launch's: asking for another one raises
    Accelerate's own error, as it should (every process must agree).
    """
    current = current_precision()
    if current is not None and current != mixed_precision and AcceleratorState().num_processes == 1:
        _forget_process_precision()
    # several processes on a machine without GPUs: Accelerate needs cpu=True to start gloo
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu or cpu_world())


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
