"""``features``: a frozen encoder as a feature extractor, a small head trained on its features.

The encoder (the source-tuned one by default, or the pretrained one) runs **once** over each
target split; its features are kept as tensors and the head trains on those for
``target_training.num_epochs`` epochs, so an epoch costs a pass of a tiny head over cached
vectors instead of a pass of the whole encoder (see README for the measured ratio).

**What is shipped is a plain ``AutoModelForSequenceClassification``** with the target's labels:
``pipeline("text-classification", model=RUN/"model")`` and ``textransfer predict`` load it like
any other strategy's model. So the features are the ones that standard model computes itself,
and the trained head *is* part of it; nothing is added at load time:

* ``linear`` and ``logistic``: the features are the input of the architecture's **final linear
  layer** (BERT: the pooler's output; RoBERTa, XLM-R, ELECTRA, MPNet: the classification head's
  dense layer and activation on the first token; DeBERTa: its ContextPooler's output;
  DistilBERT: ``pre_classifier`` and ReLU on the first token), captured by a forward hook on that
  layer while the model runs in eval mode (dropout off, as in ``pipeline``). The head trained on
  them is that final layer itself (a linear layer trained with AdamW on mini-batches; or
  multinomial logistic regression with an L2 penalty fitted full-batch with L-BFGS, a convex
  problem, one L-BFGS step per epoch), so the shipped model computes exactly ``head(features)``.
  The layers below it (a pooler, a dense layer) stay frozen with the encoder, as loaded: for
  RoBERTa-style heads that dense layer is freshly initialised, a fixed random projection.
* ``mlp``: the features are the first token's last hidden state (what every supported head
  reads), and the head is the architecture's **own classification head** (BERT: pooler and
  classifier; RoBERTa/XLM-R/ELECTRA/MPNet: the classification head; DeBERTa: ContextPooler and
  classifier; DistilBERT: ``pre_classifier`` and classifier), trained on the cached states with
  its own dropout. ``strategy.mlp_hidden`` therefore has no effect: the hidden layer is the
  architecture's (its hidden size). An architecture without a known head layout is refused.

Either way, before the head trains, its output on the cached features is checked against the
logits the whole model gave in the same pass; a mismatch (an architecture whose head does
something we do not reproduce) stops the run with an error instead of shipping a model that
would answer differently from the one trained.

Why not mean pooling (the representation this strategy used before): no standard
sequence-classification head mean-pools, so a head trained on mean-pooled features could only
ship as a custom model that ``pipeline`` silently loads without it.

The features are computed in every process on the whole split (the head is tiny; no sharding
is needed and every process fits the same head).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config import RunConfig
from ..config.strategies import FeaturesConfig
from ..errors import ConfigError
from ..metrics.scores import compute_metrics
from ..modeling.freezing import parameter_report
from ..modeling.heads import FINAL_LAYER_NAMES, final_linear  # noqa: F401 (features.final_linear)
from ..modeling.loading import swap_head
from ..training.layer_features import encode
from ..training.results import StageSummary, TestPredictions
from ..training.selection import is_better
from .base import RunContext, Strategy, TransferOutcome
from .registry import register_strategy

logger = logging.getLogger(__name__)

# L-BFGS evaluations per optimiser step (PyTorch's default); one step is one epoch of the
# logistic head, so an epoch refines the convex fit by up to this many line searches
LBFGS_MAX_ITER = 20
SPLITS = ("train", "validation", "test")
# How close the head's logits on the cached features must be to the whole model's: float32
# rounding of the same operations on differently shaped batches stays orders of magnitude below
CHECK_TOLERANCE = 1e-4
# rows of the train split on which that check runs (the head is tiny; this costs nothing)
CHECK_ROWS = 256


# ---------------------------------------------------------------------------- head layouts
def _pooled_head(parts, states):  # BERT, DeBERTa: pooler on the first token, dropout, classifier
    return parts["classifier"](parts["dropout"](parts["pooler"](states.unsqueeze(1))))


def _sequence_head(parts, states):  # RoBERTa-style heads take the sequence and read its first token
    return parts["classifier"](states.unsqueeze(1))


def _distilbert_head(parts, states):
    return parts["classifier"](parts["dropout"](torch.relu(parts["pre_classifier"](states))))


@dataclass(frozen=True)
class HeadLayout:
    """Where an architecture's classification head sits and how it maps the first token's last
    hidden state to logits, as its ``ForSequenceClassification.forward`` does.

    ``parts``: name -> submodule path (``{base}`` is the model's ``base_model_prefix``).
    """

    parts: Dict[str, str]
    logits: Callable[[torch.nn.ModuleDict, torch.Tensor], torch.Tensor]


_POOLED = {"pooler": "{base}.pooler", "dropout": "dropout", "classifier": "classifier"}
HEAD_LAYOUTS: Dict[str, HeadLayout] = {
    "bert": HeadLayout(_POOLED, _pooled_head),
    "deberta": HeadLayout(dict(_POOLED, pooler="pooler"), _pooled_head),
    "deberta-v2": HeadLayout(dict(_POOLED, pooler="pooler"), _pooled_head),
    "distilbert": HeadLayout({"pre_classifier": "pre_classifier", "dropout": "dropout", "classifier": "classifier"},
                             _distilbert_head),
    **{t: HeadLayout({"classifier": "classifier"}, _sequence_head)
       for t in ("roberta", "xlm-roberta", "camembert", "electra", "mpnet")},
}


class FirstTokenHead(torch.nn.Module):
    """A model's own classification head as a module of its own: first-token states -> logits.

    Its parts *are* the model's modules (shared, not copied), so training it trains the model.
    """

    def __init__(self, model, layout: HeadLayout):
        super().__init__()
        base = model.base_model_prefix
        self.parts = torch.nn.ModuleDict({name: model.get_submodule(path.format(base=base))
                                          for name, path in layout.parts.items()})
        self.layout = layout

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.layout.logits(self.parts, states)


def model_head(model, kind: str) -> Tuple[torch.nn.Module, torch.nn.Module, str]:
    """``(head to train, module whose output or input holds the features, which)`` for ``kind``.

    ``which`` is ``"input"`` (the features are that module's input: the final linear layer) or
    ``"first_token"`` (its output's first token: the encoder's last hidden state).
    """
    if kind != "mlp":
        layer = final_linear(model)
        return layer, layer, "input"
    layout = HEAD_LAYOUTS.get(model.config.model_type)
    if layout is None:
        raise ConfigError(f"`strategy.head: mlp` trains the architecture's own classification head, whose layout "
                          f"is known for {', '.join(sorted(HEAD_LAYOUTS))}, not {model.config.model_type}; use "
                          f"`strategy.head=linear` or `strategy.head=logistic`.")
    return FirstTokenHead(model, layout), model.base_model, "first_token"


# ---------------------------------------------------------------------------- features
def check_head_reproduces(head: torch.nn.Module, cached: Dict[str, torch.Tensor], model_type: str, kind: str) -> None:
    """Stop if ``head`` on the cached features does not give the logits the whole model gave."""
    head.eval()
    with torch.no_grad():
        got = head(cached["features"][:CHECK_ROWS])
    want = cached["logits"][:CHECK_ROWS]
    if not torch.allclose(got, want, atol=CHECK_TOLERANCE, rtol=CHECK_TOLERANCE):
        gap = (got - want).abs().max().item()
        raise ConfigError(f"`strategy.head: {kind}` on {model_type}: the head on the cached features does not "
                          f"reproduce the model's own output (max gap {gap:.2e}), so the shipped model would not "
                          f"answer as trained; use another `strategy.head` or another strategy for this model.")


# ---------------------------------------------------------------------------- fitting a head
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
    return probabilities(head, features).argmax(-1).tolist()


def probabilities(head, features: torch.Tensor) -> torch.Tensor:
    """The class probabilities ``head`` gives ``features`` (eval mode), as the shipped model's softmax."""
    head.eval()
    with torch.no_grad():
        return torch.softmax(head(features).float(), dim=-1)


def train_head(head, train, validation, cfg: FeaturesConfig, args, metrics, seed: int,
               desc: str = "features") -> HeadFit:
    """Fit ``head`` on cached features for ``args.num_epochs`` epochs; keep the best on validation."""
    set_seed(seed)
    fit, best, best_state = HeadFit(samples=len(train["features"]) * args.num_epochs), None, None
    x, y = train["features"], train["labels"]
    params = [p for p in head.parameters() if p.requires_grad]
    if cfg.head == "logistic":
        optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_MAX_ITER, line_search_fn="strong_wolfe")
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.head_learning_rate, weight_decay=args.weight_decay)
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


# ---------------------------------------------------------------------------- the strategy
def warn_unused_options(cfg: FeaturesConfig) -> None:
    default = {f.name: f.default for f in fields(FeaturesConfig)}["mlp_hidden"]
    if cfg.mlp_hidden != default:
        logger.warning("`strategy.mlp_hidden: %s` has no effect: the mlp head is the architecture's own "
                       "classification head, whose hidden layer has the model's hidden size.", cfg.mlp_hidden)


@register_strategy("features", FeaturesConfig)
class Features(Strategy):
    needs_source = False  # `encoder: pretrained` works without one

    def pretraining_stages(self, cfg: RunConfig) -> Tuple[str, ...]:
        """Only the source stage (``encoder: source``) trains the encoder; the head never does."""
        return ("source",) if self.config.encoder == "source" and cfg.source else ()

    def target_model(self, run: RunContext) -> Tuple[torch.nn.Module, Optional[StageSummary]]:
        """The classifier whose encoder makes the features, with a head for the target labels."""
        if self.config.encoder != "source":
            return run.pretrained("target"), None
        run.require_source("features (encoder: source)")
        stage = run.train_from_pretrained("source", "source", run.cfg.source_training)
        return swap_head(stage.model, run.tasks["target"].label_names, seed=run.cfg.seed), stage.summary

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        cfg, args = self.config, run.cfg.target_training
        warn_unused_options(cfg)
        if args.contrastive is not None and args.contrastive.enabled:  # the encoder is frozen here
            logger.warning("`target_training.contrastive` does not apply to strategy `features` (its encoder is "
                           "frozen); the no-transfer baseline still gets it.")
        if args.linear_probe:  # this strategy's head fit is its own (strategy.head)
            logger.warning("`target_training.linear_probe` does not apply to strategy `features`, which fits its "
                           "head itself (`strategy.head: logistic` is the same fit); the baseline still gets it.")
        model, source = self.target_model(run)
        head, feature_source, which = model_head(model, cfg.head)
        model.requires_grad_(False)
        head.requires_grad_(True)
        device = run.accelerator.device
        model.to(device)
        t0 = time.perf_counter()
        cached = {split: encode(model, run.tokenized["target"][split], run.tokenizer, args.eval_batch_size, device,
                                feature_source, which)
                  for split in SPLITS}
        feature_time = time.perf_counter() - t0
        model.cpu()  # the head trains on the CPU, where the cached features are
        check_head_reproduces(head, cached["train"], model.config.model_type, cfg.head)
        fit = train_head(head, cached["train"], cached["validation"], cfg, args, run.cfg.metrics, run.cfg.seed)
        model.eval()
        test = test_predictions(head, cached["test"], run.cfg.metrics)
        summary = head_summary(run.tasks["target"].name, test, fit, args.num_epochs, feature_time, cfg,
                               parameters=parameter_report(model).as_dict())
        return TransferOutcome(model=model, transfer=summary, test=test, source=source)


def test_predictions(head, cached: Dict[str, Any], metrics: List[str]) -> TestPredictions:
    """The head's predictions, class probabilities and metrics on the cached test split."""
    scores = probabilities(head, cached["features"])
    preds, refs = scores.argmax(-1).tolist(), cached["labels"].tolist()
    return TestPredictions(compute_metrics(preds, refs, metrics), preds, refs, scores=scores.tolist(),
                           rows=cached["rows"])


def head_summary(task: str, test: TestPredictions, fit: HeadFit, epochs: int, feature_time: float,
                 cfg: FeaturesConfig, parameters: Dict[str, Any]) -> StageSummary:
    """The target stage's record: the head's training on cached features, and their one-off cost."""
    return StageSummary(
        task=task, metrics=test.metrics, history=fit.history, parameters=parameters, best_epoch=fit.best_epoch,
        stopped_early=False, optimizer_steps=fit.optimizer_steps, train_time_s=round(fit.train_time_s, 4),
        train_time_per_epoch_s=round(fit.train_time_s / max(epochs, 1), 6),
        train_samples_per_s=round(fit.samples / fit.train_time_s, 2) if fit.train_time_s > 0 else 0.0,
        feature_extraction_s=round(feature_time, 3), head=cfg.head, encoder=cfg.encoder)
