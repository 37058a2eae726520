"""``instance_weighting``: instance-based transfer by importance weighting (Jiang & Zhai, ACL 2007;
covariate-shift correction, Shimodaira 2000).

Source examples that look like the target count more in the source stage, those unlike it less.

1. **Domain classifier.** The pretrained encoder (frozen, eval mode) embeds every source
   training text and every unlabelled target text (the target's train split with labels
   ignored, or ``unlabelled_files``) as the mean of its last hidden states. A logistic regression
   tells them apart (source = 0, target = 1): standardised features, mean binary cross-entropy
   plus ``domain_l2 / 2 * ||w||^2`` (the bias is not penalised), fitted full-batch with L-BFGS,
   a convex problem. In torch rather than scikit-learn because scikit-learn is not a dependency
   of the package; on cached features the fit takes well under a second. Its accuracy on the
   examples it was fitted on is recorded (near 0.5: the domains look alike and the weights stay
   near 1; near 1.0: they are far apart and the weights spread to their clips).
2. **Weights.** Each source example gets ``p(target|x) / p(source|x) * n_source / n_target``: the
   classifier's odds are the density ratio ``p_target(x) / p_source(x)`` times the domains'
   share in its training data, which the prior factor removes. The ratio is clipped to
   ``[min_weight, max_weight]`` (a few near-target examples must not dominate the loss, nor any
   example be dropped outright by a classifier fitted on few texts), then divided by its mean
   so that the weights average 1: the weighted loss then has the scale of the unweighted one,
   so the stage's learning rate, clipping and schedule mean what they mean without weights.
   After that division a weight may exceed ``max_weight`` by the same factor as every other.
3. **Weighted source stage.** The weights are a ``weights`` column of the source training set;
   the collator hands them to the batch (``data/batching.py``) and :class:`WeightedLossTrainer`
   minimises ``mean_i(w_i * CE_i)`` over the batch. The mean (not ``sum w_i CE_i / sum w_i``):
   it estimates the importance-weighted risk without bias, equals the plain cross-entropy when
   every weight is 1, and, like every other loss here, is a per-example mean, so 2 processes of
   batch B train as 1 process of batch 2B under DDP.

Then, as for the adaptation strategies (``adaptation.py``), ``target_labels: true`` gives the
weighted source model a target head and runs the usual target stage (baseline: the target-only
model); ``target_labels: false`` tests the weighted source model on the target (baseline:
``source_only``, the same source stage without weights). ``results.json`` holds
``instance_weights``: the weights' min, mean, max, the share clipped, the effective sample size,
and the domain classifier's accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from accelerate.utils import broadcast

from ..config.strategies import InstanceWeightingConfig
from ..data.batching import EXAMPLE_WEIGHTS_COLUMN, eval_dataloader
from ..data.streaming import is_stream
from ..errors import ConfigError, DataError
from ..modeling.loading import swap_head
from ..training.results import StageSummary
from ..training.trainer import StageTrainer
from .adaptation import AdaptationStrategy, unlabelled_dataset
from .base import RunContext, TransferOutcome, make_factory, masked_mean, model_inputs
from .registry import register_strategy

# L-BFGS evaluations of the domain classifier's loss: a convex fit on cached features, converged
# far sooner on the sizes we see (thousands of texts, hundreds of features)
DOMAIN_LBFGS_MAX_ITER = 500
# stopping rules of that fit, tighter than torch's defaults (1e-7, 1e-9): in float64 they cost a few
# more iterations, and a strong `domain_l2` makes the loss flat enough to stop early under the defaults
LBFGS_TOLERANCE_GRAD = 1e-10
LBFGS_TOLERANCE_CHANGE = 1e-14
# a feature with (almost) no spread is not divided by (almost) zero when standardised
MIN_FEATURE_SCALE = 1e-6


@dataclass
class DomainClassifier:
    """A logistic regression on standardised features: ``sigmoid(((x - mean) / scale) @ weight + bias)``
    is the probability that ``x`` comes from the target domain."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.double() - self.mean) / self.scale
        return z @ self.weight + self.bias

    def probability(self, features: torch.Tensor) -> torch.Tensor:
        """p(target | x) of each row of ``features``."""
        return torch.sigmoid(self.logits(features))


def fit_domain_classifier(source: torch.Tensor, target: torch.Tensor, l2: float) -> Tuple[DomainClassifier, float]:
    """Fit the logistic domain classifier (source rows = 0, target rows = 1) with L-BFGS, in float64
    on the CPU; returns it and its accuracy on those rows."""
    if len(source) == 0 or len(target) == 0:
        raise DataError(f"instance_weighting: the domain classifier needs source and target texts; got {len(source)} "
                        f"source and {len(target)} unlabelled target texts (see `strategy.unlabelled_files`).")
    x = torch.cat([source, target]).detach().to("cpu", torch.float64)
    y = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).double()
    mean, scale = x.mean(dim=0), x.std(dim=0).clamp(min=MIN_FEATURE_SCALE)
    z = (x - mean) / scale
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    # the optimum when the features say nothing: the log odds of the domains' sizes
    bias = torch.tensor(math.log(len(target) / len(source)), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=DOMAIN_LBFGS_MAX_ITER, line_search_fn="strong_wolfe",
                                  tolerance_grad=LBFGS_TOLERANCE_GRAD, tolerance_change=LBFGS_TOLERANCE_CHANGE)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y) + l2 / 2 * weight.dot(weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    classifier = DomainClassifier(mean, scale, weight.detach(), bias.detach())
    accuracy = ((classifier.logits(x) > 0).double() == y).double().mean().item()
    return classifier, accuracy


def importance_weights(classifier: DomainClassifier, source: torch.Tensor, n_target: int,
                       config: InstanceWeightingConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Each source row's weight ``p(t|x) / p(s|x) * n_source / n_target``, clipped to
    ``[min_weight, max_weight]``, divided by its mean; and a summary of them."""
    prior = len(source) / n_target
    # the odds p / (1 - p) as exp(logit): exact where p rounds to 1
    ratio = torch.exp(classifier.logits(source)) * prior
    low, high = ratio < config.min_weight, ratio > config.max_weight
    clipped = ratio.clamp(config.min_weight, config.max_weight)
    weights = clipped / clipped.mean()
    summary = {"min": weights.min().item(), "mean": weights.mean().item(), "max": weights.max().item(),
               "share_clipped": (low | high).double().mean().item(), "share_clipped_low": low.double().mean().item(),
               "share_clipped_high": high.double().mean().item(),
               # Kish's effective sample size as a share of the source set: 1 with equal weights
               "effective_sample_share": (weights.sum() ** 2 / (weights ** 2).sum() / len(weights)).item()}
    return weights.float(), summary


@torch.no_grad()
def pooled_features(model, ds, tokenizer, batch_size: int, device) -> torch.Tensor:
    """The mean of the last hidden states of every example of ``ds``, in ``ds``'s order (on the CPU)."""
    encoder = model.base_model.to(device).eval()
    out = []
    for batch in eval_dataloader(ds, tokenizer, batch_size):
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        hidden = encoder(**inputs).last_hidden_state
        out.append(masked_mean(hidden.float(), inputs.get("attention_mask")).cpu())
    return torch.cat(out)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_i(w_i * CE_i)``: the plain mean cross-entropy when every weight is 1."""
    losses = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return (losses * weights.to(losses)).mean()


class WeightedLossTrainer(StageTrainer):
    """Minimises :func:`weighted_cross_entropy` with the batch's ``weights`` (plain loss without them)."""

    def compute_loss(self, model, batch, aux_batch=None) -> torch.Tensor:
        if EXAMPLE_WEIGHTS_COLUMN not in batch:
            return super().compute_loss(model, batch, aux_batch)
        inputs = {k: v for k, v in batch.items() if k not in (EXAMPLE_WEIGHTS_COLUMN, "labels")}
        with self.logits_only(model):
            logits = model(**inputs).logits
        return weighted_cross_entropy(logits, batch["labels"], batch[EXAMPLE_WEIGHTS_COLUMN])


@register_strategy("instance_weighting", InstanceWeightingConfig)
class InstanceWeighting(AdaptationStrategy):
    """The source stage trains on domain-classifier importance weights; then as ``adaptation.py``."""

    def source_weights(self, run: RunContext, model, source_train, unlabelled) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """The source training set's weights under ``model``'s (pretrained) encoder, the same on every
        process, and their record."""
        acc = run.accelerator
        batch = run.cfg.source_training.eval_batch_size
        source = pooled_features(model, source_train, run.tokenizer, batch, acc.device)
        target = pooled_features(model, unlabelled, run.tokenizer, batch, acc.device)
        classifier, accuracy = fit_domain_classifier(source, target, self.config.domain_l2)
        weights, summary = importance_weights(classifier, source, len(target), self.config)
        if acc.num_processes > 1:  # every process fitted the same; the main process's copy is the one used
            weights = broadcast(weights.to(acc.device), from_process=0).cpu()
        record = {**summary, "domain_classifier_accuracy": accuracy, "source_examples": len(source),
                  "target_examples": len(target)}
        return weights, record

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        run.require_source(self.name)
        if not self.config.target_labels:
            run.require_shared_labels(self.name)
        source_train = run.tokenized["source"]["train"]
        if is_stream(source_train):
            raise ConfigError("strategy `instance_weighting` weighs every source training example, so it needs the "
                              "source's train split in memory; set `source.streaming: false`.")
        unlabelled = unlabelled_dataset(run, self.config)
        model = run.pretrained("source")  # embeds the texts for the domain classifier, then trains
        weights, record = self.source_weights(run, model, source_train, unlabelled)
        if EXAMPLE_WEIGHTS_COLUMN in source_train.column_names:
            source_train = source_train.remove_columns([EXAMPLE_WEIGHTS_COLUMN])
        weighted = source_train.add_column(EXAMPLE_WEIGHTS_COLUMN, weights.tolist())
        source = run.train_stage("source", model, "source", run.cfg.source_training,
                                 trainer_factory=make_factory(WeightedLossTrainer), train_ds=weighted)
        source.summary.unlabelled_target_examples = len(unlabelled)
        extra = {"instance_weights": record}
        if self.config.target_labels:
            target_model = swap_head(source.model, run.tasks["target"].label_names, seed=run.cfg.seed)
            target = run.train_stage("target", target_model, "target", run.cfg.target_training)
            return TransferOutcome(model=target.model, transfer=target.summary, test=target.test,
                                   source=source.summary, extra=extra)
        test = run.evaluate(source.model, "target", "test")
        summary = StageSummary(
            task=run.tasks["target"].name, metrics=test.metrics, history=[], parameters=source.summary.parameters,
            trained=False, note="unsupervised adaptation: the importance-weighted source model tested on the target; "
                                "no target label used")
        return TransferOutcome(model=source.model, transfer=summary, test=test, source=source.summary, extra=extra)
