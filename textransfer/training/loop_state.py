"""Where one stage's training loop is: one dataclass that the loop updates, a checkpoint writes
(``loop.json``) and a resumed run reads back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class StageResult:
    """What one stage's training produced."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_metric: Optional[float] = None
    stopped_early: bool = False
    optimizer_steps: int = 0
    train_samples: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0

    @property
    def train_samples_per_s(self) -> float:
        return self.train_samples / self.train_time_s if self.train_time_s > 0 else 0.0


@dataclass
class LoopState:
    """The position and running totals of the training loop.

    Args:
        epoch (`int`): the epoch being trained, 0-based (``num_epochs`` once training is over).
        batch (`int`): batches of this process consumed in that epoch (a resumed run skips them).
        running_loss (`float`): the sum of the epoch's batch losses so far.
        seen_batches (`int`): the batches in ``running_loss``.
        epoch_samples (`int`): examples this process trained on in the epoch so far.
        epochs_without_improvement (`int`): evaluations since the best one (early stopping).
        result (`StageResult`): what the stage has produced so far (steps, history, times).
    """

    epoch: int = 0
    batch: int = 0
    running_loss: float = 0.0
    seen_batches: int = 0
    epoch_samples: int = 0
    epochs_without_improvement: int = 0
    result: StageResult = field(default_factory=StageResult)

    @property
    def mean_loss(self) -> float:
        return self.running_loss / max(self.seen_batches, 1)

    def add_batch(self, loss: float, examples: int) -> None:
        self.running_loss += loss
        self.seen_batches += 1
        self.epoch_samples += examples
        self.batch += 1

    def start_epoch(self) -> None:
        """Zero the epoch's totals, unless a resumed run is part-way through the epoch."""
        if self.batch == 0:
            self.running_loss, self.seen_batches, self.epoch_samples = 0.0, 0, 0

    def end_epoch(self, next_epoch: int) -> None:
        """Move to the start of ``next_epoch`` (``num_epochs`` when training is over)."""
        self.epoch, self.batch = next_epoch, 0
        self.running_loss, self.seen_batches, self.epoch_samples = 0.0, 0, 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LoopState":
        fields = dict(data)
        result = StageResult(**fields.pop("result"))
        return cls(**fields, result=result)


@dataclass
class LossWindow:
    """The training loss since the trackers last logged it (``logging_steps``): the mean of those
    batches' losses, as transformers' Trainer logs it. Not checkpointed: a resumed run's first
    point averages the batches since the resume."""

    total: float = 0.0
    batches: int = 0

    def add(self, loss: float) -> None:
        self.total += loss
        self.batches += 1

    def take(self) -> float:
        """The window's mean loss; the window starts again empty."""
        mean = self.total / max(self.batches, 1)
        self.total, self.batches = 0.0, 0
        return mean
