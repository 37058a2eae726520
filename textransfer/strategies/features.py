"""``features``: a frozen encoder as a feature extractor, a small head trained on its features.

The encoder (the source-tuned one by default, or the pretrained one) runs **once** over each
target split; its mean-pooled features are kept as tensors and the head trains on those for
``target_training.num_epochs`` epochs, so an epoch costs a pass of a tiny head over cached
vectors instead of a pass of the whole encoder (see README for the measured ratio).

Heads: ``linear`` (a linear layer trained with AdamW on mini-batches), ``logistic``
(multinomial logistic regression with an L2 penalty, fitted full-batch with L-BFGS: a
convex problem, one L-BFGS step per epoch) and ``mlp`` (one hidden layer with dropout).

The features are computed in every process on the whole split (the head is tiny; no sharding
is needed and every process fits the same head).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config.strategies import FeaturesConfig
from ..data.batching import eval_dataloader, sort_by_length
from ..metrics.scores import compute_metrics
from ..modeling.freezing import parameter_report
from ..training.results import StageSummary, TestPredictions
from ..training.selection import is_better
from .base import RunContext, Strategy, TransferOutcome, masked_mean
from .registry import register_strategy

# dropout between the mlp head's two layers: the usual classifier-head value (BERT's
# hidden_dropout_prob), a light regulariser for a head that sees the same fixed vectors every epoch
MLP_DROPOUT = 0.1
# L-BFGS evaluations per optimiser step (PyTorch's default); one step is one epoch of the
# logistic head, so an epoch refines the convex fit by up to this many line searches
LBFGS_MAX_ITER = 20
SPLITS = ("train", "validation", "test")


def make_head(kind: str, dim: int, num_labels: int, hidden: int = 256) -> torch.nn.Module:
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT),
                                   torch.nn.Linear(hidden, num_labels))
    return torch.nn.Linear(dim, num_labels)


class FeatureClassifier(torch.nn.Module):
    """A frozen encoder, mean pooling, and the trained head.

    ``save_pretrained(directory)`` writes the encoder as a Hugging Face model folder plus
    ``feature_head.pt`` and ``feature_head.json`` (the head's kind, sizes and labels).
    """

    def __init__(self, encoder, head: torch.nn.Module, kind: str, label_names, hidden: int):
        super().__init__()
        self.encoder, self.head, self.kind = encoder, head, kind
        self.label_names, self.hidden = list(label_names), hidden

    def forward(self, input_ids=None, attention_mask=None, **kw):
        kw.pop("labels", None)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        return self.head(masked_mean(hidden, attention_mask))

    def save_pretrained(self, directory) -> None:
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        torch.save(self.head.state_dict(), directory / "feature_head.pt")
        (directory / "feature_head.json").write_text(json.dumps(
            {"head": self.kind, "pooling": "mean", "label_names": self.label_names, "mlp_hidden": self.hidden}, indent=2))


@torch.no_grad()
def encode(encoder, ds, tokenizer, batch_size: int, device) -> Dict[str, torch.Tensor]:
    """Mean-pooled features and labels of ``ds`` (in length-sorted order), one encoder pass."""
    encoder.eval()
    feats, labels = [], []
    for batch in eval_dataloader(sort_by_length(ds), tokenizer, batch_size):
        labels.append(batch.pop("labels"))
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = encoder(**batch).last_hidden_state
        feats.append(masked_mean(hidden, batch.get("attention_mask")).float().cpu())
    return {"features": torch.cat(feats), "labels": torch.cat(labels)}


@dataclass
class HeadFit:
    """What fitting a head on cached features produced."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    optimizer_steps: int = 0
    train_time_s: float = 0.0
    samples: int = 0  # examples seen, over all epochs


def logistic_epoch(head, optimizer, x, y, l2: float) -> float:
    """One full-batch L-BFGS step on cross-entropy plus the L2 penalty; the loss."""
    ce = torch.nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad()
        loss = ce(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    return optimizer.step(closure).item()


def minibatch_epoch(head, optimizer, x, y, batch_size: int, generator) -> Tuple[float, int]:
    """One shuffled pass of mini-batch steps -> ``(mean loss, steps)``."""
    ce = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=generator)
    total, steps = 0.0, 0
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        loss = ce(head(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.detach().item() * len(idx)
        steps += 1
    return total / len(x), steps


def predict(head, features: torch.Tensor) -> List[int]:
    head.eval()
    with torch.no_grad():
        return head(features).argmax(-1).tolist()


def train_head(head, train, validation, cfg: FeaturesConfig, args, metrics, seed: int,
               desc: str = "features") -> HeadFit:
    """Fit ``head`` on cached features for ``args.num_epochs`` epochs; keep the best on validation."""
    set_seed(seed)
    fit, best, best_state = HeadFit(samples=len(train["features"]) * args.num_epochs), None, None
    x, y = train["features"], train["labels"]
    if cfg.head == "logistic":
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=LBFGS_MAX_ITER, line_search_fn="strong_wolfe")
    else:
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.head_learning_rate, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for epoch in tqdm(range(args.num_epochs), desc=desc, leave=False):
        head.train()
        t0 = time.perf_counter()
        if cfg.head == "logistic":
            loss, steps = logistic_epoch(head, optimizer, x, y, cfg.l2), 1
        else:
            loss, steps = minibatch_epoch(head, optimizer, x, y, args.batch_size, generator)
        fit.optimizer_steps += steps
        fit.train_time_s += time.perf_counter() - t0
        scores = compute_metrics(predict(head, validation["features"]), validation["labels"].tolist(), metrics)
        fit.history.append({"epoch": epoch + 1, "step": fit.optimizer_steps, "train_loss": loss,
                            **{f"eval_{k}": v for k, v in scores.items()}})
        value = scores[args.metric_for_best_model]
        if is_better(value, best, args.metric_for_best_model):
            best, fit.best_epoch = value, epoch + 1
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None and args.load_best_model_at_end:
        head.load_state_dict(best_state)
    return fit


@register_strategy("features", FeaturesConfig)
class Features(Strategy):
    needs_source = False  # `encoder: pretrained` works without one

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        cfg, args = self.config, run.cfg.target_training
        source: Optional[StageSummary] = None
        if cfg.encoder == "source":
            run.require_source("features (encoder: source)")
            stage = run.train_stage("source", run.pretrained("source"), "source", run.cfg.source_training)
            encoder, source = stage.model.base_model, stage.summary
        else:
            encoder = run.pretrained("target").base_model
        encoder.requires_grad_(False)
        device = run.accelerator.device
        encoder.to(device)
        t0 = time.perf_counter()
        cached = {split: encode(encoder, run.tokenized["target"][split], run.tokenizer, args.eval_batch_size, device)
                  for split in SPLITS}
        feature_time = time.perf_counter() - t0
        target = run.tasks["target"]
        set_seed(run.cfg.seed)
        head = make_head(cfg.head, cached["train"]["features"].shape[1], target.num_labels, cfg.mlp_hidden)
        fit = train_head(head, cached["train"], cached["validation"], cfg, args, run.cfg.metrics, run.cfg.seed)
        refs = cached["test"]["labels"].tolist()
        preds = predict(head, cached["test"]["features"])
        test = TestPredictions(compute_metrics(preds, refs, run.cfg.metrics), preds, refs)
        model = FeatureClassifier(encoder.cpu(), head, cfg.head, target.label_names, cfg.mlp_hidden)
        summary = head_summary(target.name, test, fit, args.num_epochs, feature_time, cfg,
                               parameters=parameter_report(model).as_dict())
        return TransferOutcome(model=model, transfer=summary, test=test, source=source)


def head_summary(task: str, test: TestPredictions, fit: HeadFit, epochs: int, feature_time: float,
                 cfg: FeaturesConfig, parameters: Dict[str, Any]) -> StageSummary:
    """The target stage's record: the head's training on cached features, and their one-off cost."""
    return StageSummary(
        task=task, metrics=test.metrics, history=fit.history, parameters=parameters, best_epoch=fit.best_epoch,
        stopped_early=False, optimizer_steps=fit.optimizer_steps, train_time_s=round(fit.train_time_s, 4),
        train_time_per_epoch_s=round(fit.train_time_s / max(epochs, 1), 6),
        train_samples_per_s=round(fit.samples / fit.train_time_s, 2) if fit.train_time_s > 0 else 0.0,
        feature_extraction_s=round(feature_time, 3), head=cfg.head, encoder=cfg.encoder)
