"""``relational_distillation``: relation-based transfer by relational knowledge distillation
(RKD; Park et al., CVPR 2019).

The source stage fine-tunes the encoder on the source task (as ``finetune``). A frozen copy of
that source-tuned encoder is the **teacher**; the **student** is the source-tuned encoder with a
fresh target head, trained on the target labels with

``CE + distance_weight * RKD-D + angle_weight * RKD-A``

on the mean-pooled last hidden states of each target batch (teacher features under
``no_grad``, teacher in eval mode: no dropout). What carries over is the *structure* of the
source-tuned representation on target text, not the weights as such: the student may move
its features anywhere as long as the examples keep their relative distances and angles.

* **RKD-D** (distance-wise): the pairwise Euclidean distances of the batch's features, each set
  divided by its mean over the pairs, compared by smooth L1 (Huber, beta 1) over the pairs.
  The division makes the loss blind to the features' overall scale.
* **RKD-A** (angle-wise): for every triplet ``(i, j, k)`` the cosine of the angle at ``j``
  between ``e_i - e_j`` and ``e_k - e_j``, compared by smooth L1. Scale-free by construction.

The defaults (1 and 2) are Park et al.'s metric-learning weights. Both losses are exactly 0
while the student's features equal the teacher's (at the target stage's first step, without
dropout), so the distillation term only ever pulls back what the target loss moves.

The teacher sits inside the wrapper module (:class:`RelationalModel`) with ``requires_grad``
off: it goes through ``accelerator.prepare`` with the student, DDP neither registers nor
all-reduces it, and it stays in eval mode whatever mode the wrapper is put in. Under DDP the
relations are those of the global batch (:func:`across_processes`): 2 processes of batch B
train as 1 process of batch 2B. It costs one
extra forward pass (no backward) per step and a second copy of the encoder in memory. Only the
student (a plain classifier) is shipped. The baseline is the usual target-only model.
"""

from __future__ import annotations

import copy
from typing import Tuple

import torch
import torch.distributed as dist
from transformers.modeling_outputs import SequenceClassifierOutput

from ..config.strategies import RelationalDistillationConfig
from ..modeling.loading import swap_head
from ..training.trainer import StageTrainer
from .base import RunContext, Strategy, TransferOutcome, classify_with_features, masked_mean, model_inputs, \
    wrapping_trainer
from .registry import register_strategy

# distances below this (squared) are clamped before the square root: its gradient is infinite at 0
MIN_SQUARED_DISTANCE = 1e-12


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """The Euclidean distance of every pair of rows of ``features`` (n x n, 0 on the diagonal).

    From the differences themselves, not from dot products (``|a|^2 + |b|^2 - 2 a.b``): that form
    cancels catastrophically for close rows, and a repeated text, at distance 0, would get a
    distance of rounding noise whose square root has a huge gradient. Not ``torch.cdist``: its
    backward is NaN at distance 0. The clamp gives an exact 0 a zero gradient.
    """
    d2 = (features.unsqueeze(0) - features.unsqueeze(1)).pow(2).sum(dim=2).clamp(min=MIN_SQUARED_DISTANCE)
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)
    return d2.sqrt() * off_diagonal


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-D: smooth L1 between the two sets' mean-normalised pairwise distances, over the pairs."""
    pairs = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    s, t = pairwise_distances(student)[pairs], pairwise_distances(teacher)[pairs]
    return torch.nn.functional.smooth_l1_loss(s / s.mean(), t / t.mean())


def triplet_cosines(features: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at ``j`` between ``e_i - e_j`` and ``e_k - e_j`` for every ``(j, i, k)``, flattened."""
    differences = torch.nn.functional.normalize(features.unsqueeze(0) - features.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).reshape(-1)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-A: smooth L1 between the two sets' triplet-angle cosines."""
    return torch.nn.functional.smooth_l1_loss(triplet_cosines(student), triplet_cosines(teacher))


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float,
                    angle_weight: float) -> torch.Tensor:
    """``distance_weight * RKD-D + angle_weight * RKD-A`` (in float32); 0 for a batch of one
    example, which has no pair."""
    student, teacher = student.float(), teacher.float()
    if len(student) < 2:
        return student.sum() * 0.0
    loss = student.new_zeros(())
    if distance_weight:
        loss = loss + distance_weight * rkd_distance(student, teacher)
    if angle_weight:
        loss = loss + angle_weight * rkd_angle(student, teacher)
    return loss


def across_processes(local: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """The rows of every process's ``local`` (in rank order), and the number of processes.

    The relations of a batch are among all its examples, so under DDP they are computed on the
    global batch (the processes' batches together), as one process with that batch would: a run
    gives the same model whatever its number of processes. Only this process's rows carry a
    gradient; the others are copies. The batches may differ in size by an example (the short
    last batch of an epoch), so they are padded for the exchange and cut back after it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 1
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([len(local)], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(n) for n in sizes]
    padded = torch.nn.functional.pad(local.detach(), (0, 0, 0, max(counts) - len(local)))
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    rows = [part[:n] for part, n in zip(parts, counts)]
    rows[rank] = local
    return torch.cat(rows), world


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` in eval mode with no parameter requiring a gradient."""
    teacher = copy.deepcopy(module).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class RelationalModel(torch.nn.Module):
    """The student classifier (``.model``) and the frozen teacher encoder (``.teacher``).

    Called plainly it is the student classifier (evaluation, prediction); with ``distill=True``
    it returns the target loss plus the relational loss against the teacher.
    """

    def __init__(self, model, teacher: torch.nn.Module, config: RelationalDistillationConfig):
        super().__init__()
        self.model = model
        self.teacher = teacher
        self.distance_weight, self.angle_weight = config.distance_weight, config.angle_weight

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's features are a fixed target: no dropout
        return self

    def forward(self, distill: bool = False, **batch):
        if not distill:
            return self.model(**batch)
        out, student_features = classify_with_features(self.model, batch)
        inputs = model_inputs(batch)
        with torch.no_grad():
            teacher_features = masked_mean(self.teacher(**inputs).last_hidden_state, inputs.get("attention_mask"))
        student_features, world = across_processes(student_features)
        teacher_features, _ = across_processes(teacher_features)
        relational = relational_loss(student_features, teacher_features, self.distance_weight, self.angle_weight)
        # the value of the global batch's loss, with `world` times its gradient on this process's rows:
        # DDP's mean over the processes then gives exactly the global batch's gradient
        relational = relational + (world - 1) * (relational - relational.detach())
        return SequenceClassifierOutput(loss=out.loss + relational, logits=out.logits)


class RelationalTrainer(StageTrainer):
    """Trains :class:`RelationalModel` on its distillation loss."""

    def compute_loss(self, model, batch, aux_batch=None):
        return model(**batch, distill=True).loss


@register_strategy("relational_distillation", RelationalDistillationConfig)
class RelationalDistillation(Strategy):
    """With a source task, the teacher is the encoder after the source stage. Without one, it is
    the encoder as loaded (``model.name_or_path``): a model already fine-tuned on a source
    elsewhere (trained once, reused for many targets), or the pretrained encoder itself, whose
    feature structure the target training then keeps."""

    needs_source = False

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        source = None
        if "source" in run.tasks:
            source = run.train_from_pretrained("source", "source", run.cfg.source_training)
            student = swap_head(source.model, run.tasks["target"].label_names, seed=run.cfg.seed)
        else:
            student = run.pretrained("target")
        teacher = frozen_copy(student.base_model)
        factory = wrapping_trainer(lambda m: RelationalModel(m, teacher, self.config), trainer_class=RelationalTrainer)
        target = run.train_stage("target", student, "target", run.cfg.target_training, trainer_factory=factory)
        return TransferOutcome(model=target.model, transfer=target.summary, test=target.test,
                               source=source.summary if source is not None else None)
