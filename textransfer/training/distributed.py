"""Running under several processes: what Accelerate needs to be told on machines without GPUs.

The same recipe runs on one CPU, under ``accelerate launch`` on GPUs or machines, and under
``torchrun``. Accelerate picks the distributed backend from the environment, but on a machine
without an accelerator it starts the gloo (CPU) process group only when asked for the CPU
(``Accelerator(cpu=True)`` or ``ACCELERATE_USE_CPU=1``); otherwise every process of
``torchrun --nproc_per_node 2`` silently trains alone, as a world of one, on all the data.
:func:`cpu_world` detects that case so that ``make_accelerator`` asks for the CPU backend.

Data sharding, gradient averaging and gathering evaluation predictions are Accelerate's;
``LengthGroupedBatchSampler(num_replicas=...)`` makes N processes of batch B train on the same
global batches as one process of batch N*B (see ``batching.py``).
"""

from __future__ import annotations

import os

import torch

# the variables launchers set for the number of processes (torchrun, accelerate, MPI)
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """Processes the launcher started (1 when run directly)."""
    for name in _WORLD_SIZE_VARS:
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
