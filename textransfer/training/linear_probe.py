"""The linear probe of LP-FT fitted to convergence (``*_training.linear_probe: true``).

Kumar et al. (2022) fit the probe with a logistic regression before fine-tuning; SetFit fits its
head the same way on the contrastively tuned encoder. ``head_warmup_*`` trains the head with the
stage's optimiser for a few steps, which on a handful of examples leaves it far from the
optimum. Here, before the stage's classification training (and after its contrastive phase),
the classifier's **final linear layer** is fitted alone, full batch, by L-BFGS on multinomial
logistic regression with sklearn's objective (``LogisticRegression(C=linear_probe_c)``: cross
entropy averaged over the examples plus ``||W||^2 / (2 n C)``, the bias unpenalised), on the
frozen model's own inputs to that layer (``modeling/heads.py``: BERT's pooler output, RoBERTa's
dense + tanh on <s>, DistilBERT's pre-classifier), computed in eval mode as ``pipeline`` does.
So the probe is the shipped head itself: nothing is added to the model.

Why L-BFGS by hand rather than sklearn: the fitted weights go straight into the model's layer on
its device, and sklearn is not a dependency. The problem is convex, so the fit does not depend on
the seed. Under several processes every process computes the same features of the whole split
and fits the same probe (a few-shot set is small).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import datasets
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..config import TrainingConfig
from ..errors import ConfigError
from ..modeling.heads import final_linear
from .layer_features import encode

# one L-BFGS call runs up to this many iterations; calls repeat until the loss stops moving
LBFGS_ITERATIONS = 100
MAX_CALLS = 10
LOSS_TOLERANCE = 1e-7


@dataclass
class LinearProbeSummary:
    """The probe's record (``results.json``: the stage's ``linear_probe`` entry)."""

    examples: int
    c: float
    iterations: int  # L-BFGS iterations run
    loss_before: float  # the regularised objective with the head as it came
    loss_after: float
    train_accuracy: float  # of the fitted head on the training examples
    fit_time_s: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def final_layer_inputs(model, ds, tokenizer, batch_size: int, device) -> Dict[str, torch.Tensor]:
    """``features`` (the input of the model's final linear layer, in eval mode), ``labels`` and
    ``weights`` (the examples' weights where the split has them, else ones) of ``ds``, on ``device``."""
    was_training = model.training
    try:
        cached = encode(model, ds, tokenizer, batch_size, device, final_linear(model), "input")
    finally:
        model.train(was_training)
    return {name: cached[name].to(device) for name in ("features", "labels", "weights")}


def probe_objective(layer: torch.nn.Linear, data: Dict[str, torch.Tensor], c: float) -> torch.Tensor:
    """sklearn's ``LogisticRegression(C=c)`` objective (``sample_weight`` = the weights) divided by
    the examples' total weight."""
    weight = layer.weight.float()
    logits = torch.nn.functional.linear(data["features"], weight, None if layer.bias is None else layer.bias.float())
    losses = torch.nn.functional.cross_entropy(logits, data["labels"], reduction="none")
    total = data["weights"].sum()
    return (losses * data["weights"]).sum() / total + weight.pow(2).sum() / (2 * total * c)


def fit_probe(layer: torch.nn.Linear, data: Dict[str, torch.Tensor], c: float) -> Tuple[int, float, float]:
    """Fit ``layer`` in place -> ``(iterations, objective before, objective after)``."""
    params = list(layer.parameters())
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_ITERATIONS, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        loss = probe_objective(layer, data, c)
        loss.backward()
        return loss

    def objective() -> float:
        with torch.no_grad():
            return float(probe_objective(layer, data, c))

    before = previous = objective()
    with torch.enable_grad():
        for _ in range(MAX_CALLS):
            optimizer.step(closure)
            loss = objective()
            if previous - loss < LOSS_TOLERANCE:
                break
            previous = loss
    for p in params:
        p.grad = None
    return optimizer.state[params[0]].get("n_iter", 0), before, loss


def linear_probe(name: str, model, train_ds, args: TrainingConfig, tokenizer,
                 accelerator: Accelerator) -> Optional[LinearProbeSummary]:
    """Stage ``name``'s probe when ``args.linear_probe`` asks for one (else None): the final linear
    layer of ``model`` fitted on ``train_ds``, in place."""
    if not args.linear_probe:
        return None
    if isinstance(train_ds, datasets.IterableDataset):
        raise ConfigError(f"`{name}` stage: `linear_probe` fits the head on the stage's training examples, which a "
                          "streamed split does not hold; set `linear_probe: false` or stream less.",
                          option="linear_probe")
    layer = final_linear(model)
    if not all(p.requires_grad for p in layer.parameters()):
        raise ConfigError(f"`{name}` stage: `linear_probe` fits the classifier's final layer, which freeze_patterns "
                          "freezes here; unfreeze it or set `linear_probe: false`.", option="linear_probe")
    if accelerator.is_local_main_process:
        tqdm.write(f"[{name}] linear probe: logistic regression (C={args.linear_probe_c}) of the final layer on "
                   f"{len(train_ds):,} examples' features")
    model.to(accelerator.device)
    t0 = time.perf_counter()
    data = final_layer_inputs(model, train_ds, tokenizer, args.eval_batch_size, accelerator.device)
    iterations, before, after = fit_probe(layer, data, args.linear_probe_c)
    with torch.no_grad():
        predicted = layer(data["features"].to(layer.weight.dtype)).argmax(-1)
        accuracy = float((predicted == data["labels"]).float().mean())
    return LinearProbeSummary(examples=len(data["labels"]), c=args.linear_probe_c, iterations=int(iterations),
                              loss_before=round(before, 6), loss_after=round(after, 6),
                              train_accuracy=round(accuracy, 6), fit_time_s=round(time.perf_counter() - t0, 3))

