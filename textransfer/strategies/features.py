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
from typing import Any, Dict, Optional

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data.batching import eval_dataloader, sort_by_length

from ..errors import ConfigError
from ..modeling.freezing import parameter_report
from ..metrics.scores import compute_metrics
from ..config.strategies import FeaturesConfig, FEATURE_HEADS
from .base import RunContext, Strategy, TransferOutcome, masked_mean, unwrap
from .registry import register_strategy

HEADS = FEATURE_HEADS


def make_head(kind: str, dim: int, num_labels: int, hidden: int = 256) -> torch.nn.Module:
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
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


def _better(value, best, metric):
    return best is None or (value < best if "loss" in metric else value > best)


def train_head(head, train, validation, cfg: FeaturesConfig, args, metrics, seed: int, desc: str = "features"):
    """Fit ``head`` on cached features for ``args.num_epochs`` epochs; keep the best on validation."""
    set_seed(seed)
    history, best, best_state, best_epoch, train_time = [], None, None, None, 0.0
    x, y = train["features"], train["labels"]
    ce = torch.nn.CrossEntropyLoss()
    if cfg.head == "logistic":
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=20, line_search_fn="strong_wolfe")
    else:
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.head_learning_rate, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(seed)
    steps = 0
    for epoch in tqdm(range(args.num_epochs), desc=desc, leave=False):
        head.train()
        t0 = time.perf_counter()
        if cfg.head == "logistic":
            def closure():
                optimizer.zero_grad()
                loss = ce(head(x), y) + 0.5 * cfg.l2 * head.weight.pow(2).sum()
                loss.backward()
                return loss

            loss = optimizer.step(closure).item()
            steps += 1
        else:
            order = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x), args.batch_size):
                idx = order[i:i + args.batch_size]
                loss = ce(head(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.detach().item() * len(idx)
                steps += 1
            loss = total / len(x)
        train_time += time.perf_counter() - t0
        head.eval()
        with torch.no_grad():
            preds = head(validation["features"]).argmax(-1).tolist()
        scores = compute_metrics(preds, validation["labels"].tolist(), metrics)
        history.append({"epoch": epoch + 1, "step": steps, "train_loss": loss, **{f"eval_{k}": v for k, v in scores.items()}})
        value = scores[args.metric_for_best_model]
        if _better(value, best, args.metric_for_best_model):
            best, best_epoch = value, epoch + 1
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None and args.load_best_model_at_end:
        head.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch, "optimizer_steps": steps, "train_time_s": train_time,
            "samples": len(x) * args.num_epochs}


@register_strategy("features", FeaturesConfig)
class Features(Strategy):
    needs_source = False  # `encoder: pretrained` works without one

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        cfg, args = self.config, run.cfg.target_training
        source_summary: Optional[Dict[str, Any]] = None
        if cfg.encoder == "source":
            run.require_source("features (encoder: source)")
            source_model, source_summary, _ = run.train_stage("source", run.pretrained("source"), "source",
                                                              run.cfg.source_training)
            encoder = unwrap(source_model).base_model
        else:
            encoder = run.pretrained("target").base_model
        encoder.requires_grad_(False)
        device = run.accelerator.device
        encoder.to(device)
        target = run.tasks["target"]
        t0 = time.perf_counter()
        cached = {split: encode(encoder, run.tokenized["target"][split], run.tokenizer, args.eval_batch_size, device)
                  for split in ("train", "validation", "test")}
        feature_time = time.perf_counter() - t0
        dim = cached["train"]["features"].shape[1]
        set_seed(run.cfg.seed)
        head = make_head(cfg.head, dim, target.num_labels, cfg.mlp_hidden)
        fit = train_head(head, cached["train"], cached["validation"], cfg, args, run.cfg.metrics, run.cfg.seed)
        head.eval()
        with torch.no_grad():
            preds = head(cached["test"]["features"]).argmax(-1).tolist()
        refs = cached["test"]["labels"].tolist()
        test = {"metrics": compute_metrics(preds, refs, run.cfg.metrics), "predictions": preds, "references": refs}
        model = FeatureClassifier(encoder.cpu(), head, cfg.head, target.label_names, cfg.mlp_hidden)
        report = parameter_report(model)
        summary = {
            "task": target.name, "metrics": test["metrics"], "history": fit["history"], "best_epoch": fit["best_epoch"],
            "stopped_early": False, "optimizer_steps": fit["optimizer_steps"],
            "train_time_s": round(fit["train_time_s"], 4),
            "train_time_per_epoch_s": round(fit["train_time_s"] / max(args.num_epochs, 1), 6),
            "train_samples_per_s": round(fit["samples"] / fit["train_time_s"], 2) if fit["train_time_s"] > 0 else 0.0,
            "feature_extraction_s": round(feature_time, 3),
            "parameters": report.as_dict(), "head": cfg.head, "encoder": cfg.encoder,
        }
        return TransferOutcome(model=model, transfer=summary, test=test, source=source_summary)
