"""``self_training``: the source model labels unlabelled target text; the confident labels train it.

The source stage runs as in ``finetune``. Then, for ``rounds`` rounds, the latest model labels
the unlabelled target text (the target's train split with its labels dropped, or
``unlabelled_files``); the examples it labels with probability >= ``threshold`` are kept,
class-balanced (:func:`select_pseudo_labels`), and a student trains on them, plus the labelled
source train split (``with_source``), plus the target's own labelled train split
(``target_labels: true``). Each round is a stage (``self_training_<r>``: progress, checkpoints,
``--resume``, its record), under ``target_training``'s settings. Every student starts from the
source-stage model rather than from the previous student: the teacher improves from round to
round, but a wrong pseudo-label of one round is not baked into the weights the next one starts
from. ``adaptive_pretraining.before: [target]`` adapts the encoder the students start from to
the target's text (TAPT), once, after the source model chose round 1's pseudo-labels (its head
was fitted to the encoder as the source stage left it).

When both tasks have the same ``label_names``, the source model's classes are the first
pseudo-labels. When they differ (news topics -> sentiment), ``target_labels: true`` is needed:
the source-tuned encoder gets a target head and trains on the target labels first (a ``target``
stage, as ``finetune``), and that model is the first teacher and every student's start; the
rounds then cannot use the source data (``with_source`` has no effect: its labels are not the
target's).

``target_labels: false`` (unsupervised): no target label influences training. The unlabelled
pool has no ``labels`` column; the rounds pick their best epoch and stop early on the *source*
validation split (the stage trains under the source task's splits); the target's labels are
read only after a round's examples are chosen, to report how accurate the pseudo-labels were
(``results.json``'s ``self_training``), never into a dataset. The model is then tested on the
target, against the ``source_only`` baseline.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import datasets
import torch

from ..config import RunConfig
from ..config.strategies import SelfTrainingConfig
from ..data.streaming import is_stream
from ..data.transforms import ROW
from ..data.unlabelled import concatenate_on_shared_columns
from ..errors import ConfigError
from ..modeling.loading import swap_head
from ..training.results import StageSummary
from ..training.stage import StageOutcome
from ..training.trainer import StageTrainer
from .adaptation import unlabelled_dataset
from .base import RunContext, Strategy, TransferOutcome
from .registry import register_strategy

logger = logging.getLogger(__name__)

@dataclass
class PseudoLabels:
    """The examples a round keeps (indices into the unlabelled pool) and their labels.

    Args:
        indices (`list[int]`): kept examples, class by class, most confident first.
        labels (`list[int]`): their pseudo-labels (the model's argmax).
        confident (`list[int]`): per class, the examples predicted as it with probability >= the threshold.
        kept (`list[int]`): per class, the examples kept.
        cap (`int`): the per-class cap applied.
        below_threshold (`list[int]`): classes with no confident example, kept from their most
            confident predictions below the threshold (see :func:`select_pseudo_labels`).
    """

    indices: List[int]
    labels: List[int]
    confident: List[int]
    kept: List[int]
    cap: int
    below_threshold: List[int] = field(default_factory=list)


def select_pseudo_labels(probs: torch.Tensor, threshold: float, max_per_class: Optional[int] = None) -> PseudoLabels:
    """Confident, class-balanced pseudo-labels from class probabilities ``probs`` (examples x classes).

    An example is confident when its largest probability is >= ``threshold``; it is labelled
    with that class. Each class keeps at most ``cap`` of its confident examples, the most
    confident first; ``cap`` is ``max_per_class``, or by default the smallest confident count
    among the classes that have any (balanced).

    A class with no confident example would, balanced, empty every class (or, left out, tip
    training toward the others until the model stops predicting it). It keeps instead its
    ``cap`` most confident predictions below the threshold (``below_threshold``); a class the
    model predicts for no example keeps none. With no confident example at all, nothing is kept.
    """
    confidence, predicted = probs.max(dim=-1)
    order = torch.argsort(-confidence, stable=True)  # most confident first; ties in pool order
    num_classes = probs.shape[-1]
    by_class = [order[predicted[order] == c] for c in range(num_classes)]
    confident = [int((confidence[members] >= threshold).sum()) for members in by_class]
    if not any(confident):
        return PseudoLabels([], [], confident, [0] * num_classes, 0)
    cap = max_per_class if max_per_class is not None else min(n for n in confident if n > 0)
    # a confident class keeps only confident examples; a class without any keeps its best below the threshold
    take = [min(cap, confident[c]) if confident[c] else min(cap, len(by_class[c])) for c in range(num_classes)]
    below = [c for c in range(num_classes) if confident[c] == 0 and take[c] > 0]
    indices = [int(i) for c in range(num_classes) for i in by_class[c][:take[c]]]
    labels = [c for c in range(num_classes) for _ in range(take[c])]
    return PseudoLabels(indices, labels, confident, take, cap, below)


def predict_probabilities(run: RunContext, model, pool: datasets.Dataset) -> torch.Tensor:
    """Class probabilities of ``model`` for every example of ``pool``, in the pool's order (gathered
    from every process, so each one chooses the same examples)."""
    ds = pool.remove_columns([c for c in (ROW, "labels") if c in pool.column_names])
    # `evaluate` needs a labels column (a placeholder here: its metrics are not looked at) and
    # returns the scores in length order with each one's `row`: the position in the pool
    ds = ds.add_column(ROW, list(range(len(ds)))).add_column("labels", [0] * len(ds))
    trainer = StageTrainer(model, run.tokenizer, run.cfg.target_training, run.accelerator, run.cfg.metrics,
                           seed=run.cfg.seed)
    out = trainer.evaluate(ds)
    probs = torch.empty(len(ds), len(out["scores"][0]) if out["scores"] else 0)
    probs[torch.tensor(out["rows"], dtype=torch.long)] = torch.tensor(out["scores"])
    return probs


def with_labels(ds: datasets.Dataset, labels: List[int], feature) -> datasets.Dataset:
    """``ds`` with a ``labels`` column of ``labels`` (typed as the target's labels)."""
    return ds.add_column("labels", labels, feature=feature)


def concatenate(parts: List[datasets.Dataset]) -> datasets.Dataset:
    """One training set of ``parts`` (see `concatenate_on_shared_columns`).

    A part without the bookkeeping ``row`` ids (text from ``unlabelled_files``) gets negative
    ones, which name no row of a task's file."""
    if any(ROW in p.column_names for p in parts):
        parts = [p if ROW in p.column_names else p.add_column(ROW, list(range(-len(p), 0))) for p in parts]
    return concatenate_on_shared_columns(parts)


def hidden_label_accuracy(run: RunContext, pool: datasets.Dataset, indices: List[int],
                          labels: List[int]) -> Optional[float]:
    """Share of ``labels`` equal to the true target labels of pool examples ``indices``; None when
    the pool is not the target's train split (its ``row`` ids name that split's rows).

    For the record only: called after the round's examples are chosen, never feeding a dataset.
    """
    train = run.tokenized["target"]["train"]
    if not indices or ROW not in pool.column_names or is_stream(train):
        return None
    truth = dict(zip(train[ROW], train["labels"]))
    rows = pool.select(indices)[ROW]
    if any(r not in truth for r in rows):
        return None
    return sum(truth[r] == y for r, y in zip(rows, labels)) / len(labels)


@register_strategy("self_training", SelfTrainingConfig)
class SelfTraining(Strategy):
    """Source stage, then ``rounds`` of pseudo-labelling and training (the module's docstring)."""

    @property
    def baseline_kind(self) -> str:
        return "target" if self.config.target_labels else "source_only"

    def pretraining_stages(self, cfg: RunConfig) -> Tuple[str, ...]:
        """The source stage, and ``target``: before the rounds (:meth:`student_start`)."""
        return ("source", "target") if cfg.source is not None else ()

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        run.require_source(self.name)
        if not self.config.target_labels:
            run.require_shared_labels(self.name)  # the source model's classes are the target's pseudo-labels
        if is_stream(run.tokenized["source"]["train"]) or is_stream(run.tokenized["target"]["train"]):
            raise ConfigError("`strategy.name: self_training` joins pseudo-labelled rows with labelled splits, "
                              "which needs map-style data; turn streaming off for this run.")
        source = run.train_from_pretrained("source", "source", run.cfg.source_training)
        first = source if self.shared_labels(run) else self.target_stage(run, source)
        pool = unlabelled_dataset(run, self.config)
        teacher, stage, records = first.model, None, []
        start = None if first is source else first.model  # a target stage already had its pretraining
        for r in range(1, self.config.rounds + 1):
            chosen = select_pseudo_labels(predict_probabilities(run, teacher, pool), self.config.threshold,
                                          self.config.max_per_class)
            records.append(self.round_record(run, r, pool, chosen))
            train_ds = self.round_train_set(run, pool, chosen)
            if train_ds is None:
                logger.warning("self_training round %d: no example to train on (no pseudo-label reached "
                               "`strategy.threshold: %s`); the rounds stop here.", r, self.config.threshold)
                break
            if start is None:
                start = self.student_start(run, source.model)
            student = copy.deepcopy(start)
            stage = run.train_stage(f"self_training_{r}", student, self.task_key, run.cfg.target_training,
                                    train_ds=train_ds)
            teacher = stage.model
        extra = {"self_training": {"unlabelled_target_examples": len(pool), "threshold": self.config.threshold,
                                   "with_source": self.config.with_source and first is source, "rounds": records}}
        return self.outcome(run, source, stage if stage is not None or first is source else first, extra)

    @staticmethod
    def shared_labels(run: RunContext) -> bool:
        return run.tasks["source"].label_names == run.tasks["target"].label_names

    @staticmethod
    def target_stage(run: RunContext, source: StageOutcome) -> StageOutcome:
        """Other labels than the source's: the source-tuned encoder with a target head, trained on
        the target labels (as ``finetune``), is the first teacher."""
        model = swap_head(source.model, run.tasks["target"].label_names, seed=run.cfg.seed)
        return run.train_stage("target", model, "target", run.cfg.target_training)

    @staticmethod
    def student_start(run: RunContext, source_model) -> torch.nn.Module:
        """The model every round's student copies: the source model, or, when
        ``adaptive_pretraining.before`` lists ``target``, a copy of it whose encoder is first
        adaptively pretrained (the source model itself stays as the source stage left it)."""
        config = run.cfg.adaptive_pretraining
        if config is None or "target" not in config.before:
            return source_model
        start = copy.deepcopy(source_model)
        run.pretrain_before("target", start)
        return start

    @property
    def task_key(self) -> str:
        """The splits a round trains under: with ``target_labels: false`` the source's, so its
        validation (best epoch, early stopping) sees no target label."""
        return "target" if self.config.target_labels else "source"

    def round_train_set(self, run: RunContext, pool: datasets.Dataset,
                        chosen: PseudoLabels) -> Optional[datasets.Dataset]:
        """The pseudo-labelled examples, plus the source train split (``with_source``) and the
        target train split (``target_labels``); None when there is nothing to train on."""
        feature = run.tokenized["target"]["train"].features["labels"]
        # in pool order, not confidence order: near-equal confidences (which differ in the last
        # bits between one process and several) must not reorder the training set
        kept = sorted(zip(chosen.indices, chosen.labels))
        parts = [with_labels(pool.select([i for i, _ in kept]), [y for _, y in kept], feature)] if kept else []
        if self.config.with_source and self.shared_labels(run):
            parts.append(run.tokenized["source"]["train"])
        if self.config.target_labels:
            parts.append(run.tokenized["target"]["train"])
        return concatenate(parts) if parts else None

    def round_record(self, run: RunContext, r: int, pool, chosen: PseudoLabels) -> Dict[str, Any]:
        """What ``results.json`` says of round ``r``'s pseudo-labels."""
        names = run.tasks["target"].label_names
        record = {"round": r, "kept": len(chosen.indices), "kept_per_class": dict(zip(names, chosen.kept)),
                  "confident_per_class": dict(zip(names, chosen.confident)), "cap_per_class": chosen.cap}
        if chosen.below_threshold:
            record["below_threshold_classes"] = [names[c] for c in chosen.below_threshold]
        accuracy = hidden_label_accuracy(run, pool, chosen.indices, chosen.labels)
        if accuracy is not None:
            record["pseudo_label_accuracy"] = round(accuracy, 4)  # against the hidden labels; never trained on
        return record

    def outcome(self, run: RunContext, source: StageOutcome, stage: Optional[StageOutcome],
                extra: Dict[str, Any]) -> TransferOutcome:
        """The last round's model as the transfer arm (tested on the target); the source model
        when no round trained."""
        if stage is not None and self.config.target_labels:
            return TransferOutcome(stage.model, stage.summary, stage.test, source=source.summary, extra=extra)
        model = stage.model if stage is not None else source.model
        test = run.evaluate(model, "target", "test")
        note = "self-training without target labels: rounds validated on the source; tested on the target"
        if stage is None:
            summary = StageSummary(task=run.tasks["target"].name, metrics=test.metrics, history=[],
                                   parameters=source.summary.parameters, trained=False,
                                   note="no pseudo-label was kept: the source model tested on the target")
        else:
            summary = replace(stage.summary, task=run.tasks["target"].name, source_metrics=stage.summary.metrics,
                              metrics=test.metrics, note=note)
        return TransferOutcome(model, summary, test, source=source.summary, extra=extra)
