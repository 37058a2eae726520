"""The contrastive phase of a stage (``*_training.contrastive:``; SetFit, Tunstall et al., 2022):
before the stage's classification training, the encoder is trained on the stage's own labelled
examples so that same-class texts embed close together and other-class texts apart.

Losses (``loss``):

* ``cosine_similarity`` (SetFit's ``CosineSimilarityLoss``): on balanced pairs
  (``data/pairs.py``), ``mean((cos(u, v) - y)^2)`` with y = 1 for a same-class pair, 0 otherwise;
* ``supervised_contrastive`` (Khosla et al., 2020): over a batch of examples, each example's
  same-class batch-mates are its positives, ``-mean log softmax(cos / temperature)`` over them.

What the head sees, in training and in ``pipeline``. The shipped ``model/`` is a plain
``AutoModelForSequenceClassification``, and the classification training that follows this phase
is the stage's ordinary one: every logit it trains on comes from the model's own standard forward
(``model(**batch).logits``), the forward that ``pipeline`` runs. Nothing here adds a module, a
pooling or a head beside the model: this phase only moves the encoder's weights (and, with
``pooling: head``, the head's own pooling layers). So the representation the head is fit on is the
one it reads after saving, by construction, and the run's recorded predictions are ``pipeline``'s
(``tests/test_contrastive.py``). The ``pooling`` option only chooses which vector the contrastive
loss shapes:

* ``mean``: the mean of the last hidden states over real tokens (sentence-transformers' and
  SetFit's pooling, the one all-MiniLM-L6-v2 was trained with). The head then reads its own
  pooling (BERT: the pooler on [CLS]) of an encoder whose every token state moved, and learns
  it in the classification training (LP-FT with ``head_warmup_*`` fits it on the frozen,
  contrastively tuned encoder first);
* ``cls``: the first token's last hidden state;
* ``head``: the input of the classifier's final linear layer (``modeling/heads.py``): BERT's
  pooler output, RoBERTa's dense + tanh of <s>, DistilBERT's pre-classifier: exactly the vector
  the shipped head multiplies, so the contrastive geometry is the head's input itself.

Where SetFit fits a logistic regression on mean-pooled embeddings and ships a two-part model,
here the head is the architecture's own; a mean-pooling head cannot be expressed in a standard
BERT classifier, so it is not offered.

Under several processes (DDP) every process trains the same pairs, in the same order, on its own
copy of the model (the few-shot sets this is for are small); the stage's ``accelerator.prepare``
that follows broadcasts process 0's weights (DDP's start-up sync), so the replicas start the
classification training identical. Under ``--resume`` a stage that had not finished runs this
phase again (seeded: the same weights), and its step checkpoint, when there is one, then
replaces them; a finished stage is reused and does not run it.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..config import TrainingConfig
from ..config.contrastive import ContrastiveConfig
from ..data.batching import NON_MODEL_COLUMNS, EXAMPLE_WEIGHTS_COLUMN, Collator
from ..data.pairs import contrastive_pairs, example_batches, pair_batches
from ..errors import ConfigError
from ..modeling.heads import final_linear
from .optimization import create_adamw, parameter_groups

# train examples on which the same-class / other-class cosines are measured before and after
DIAGNOSTIC_ROWS = 256
# loss-curve points kept in the record: the mean loss of each of this many equal stretches of steps
LOSS_POINTS = 20


@dataclass
class ContrastiveSummary:
    """The contrastive phase's record (``results.json``: the stage's ``contrastive`` entry).

    ``same_class_cosine`` / ``other_class_cosine`` are the mean cosine of the pooled embeddings of
    two different training examples of the same class / of different classes, ``before`` and
    ``after`` the phase (eval mode): the phase worked when their gap grew.
    """

    loss: str
    pooling: str
    pairs: int  # pairs (cosine_similarity) or example slots (supervised_contrastive) trained on
    optimizer_steps: int
    train_time_s: float
    loss_curve: List[float] = field(default_factory=list)
    same_class_cosine: Dict[str, float] = field(default_factory=dict)
    other_class_cosine: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- losses
def cosine_similarity_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SetFit's ``CosineSimilarityLoss``: mean squared error of ``cos(u, v)`` against 1 / 0."""
    return F.mse_loss(F.cosine_similarity(u.float(), v.float(), dim=-1), target.float())


def supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al. (2020)'s SupCon loss ("L_out"): for each anchor with a same-class batch-mate,
    minus the mean log-probability of its positives under a softmax over every other example."""
    z = F.normalize(z.float(), dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not anchors.any():  # no two examples of one class in the batch: nothing pulls (graph kept)
        return logits.masked_fill(self_mask, 0.0).sum() * 0.0
    mean_positive = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[anchors] / counts[anchors]
    return -mean_positive.mean()


# ---------------------------------------------------------------------------- pooling
class Pooler:
    """The embedding the loss shapes, for one model and ``pooling`` (see the module docstring)."""

    def __init__(self, model, pooling: str):
        self.model, self.pooling = model, pooling
        self.layer = final_linear(model) if pooling == "head" else None

    def __call__(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        if self.layer is not None:
            caught: List[torch.Tensor] = []
            handle = self.layer.register_forward_hook(lambda m, inputs, out: caught.append(inputs[0]))
            try:
                self.model(**batch)
            finally:
                handle.remove()
            return caught[0]
        hidden = self.model.base_model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


# ---------------------------------------------------------------------------- the phase
class ContrastivePhase:
    """One stage's contrastive phase: its examples, its batches and its training loop.

    Args:
        model: the stage's sequence-classification model (freezing already applied); trained in place.
        train_ds: the stage's tokenized training examples (with ``labels``).
        config (`ContrastiveConfig`): the phase's options.
        tokenizer: for padding.
        accelerator (`Accelerator`): its device and autocast.
        seed (`int`): the run's seed (``config.seed`` overrides it).
        desc (`str`): the stage's name, for messages and the progress bar.
    """

    def __init__(self, model, train_ds, config: ContrastiveConfig, tokenizer, accelerator: Accelerator,
                 seed: int, desc: str = "contrastive"):
        if isinstance(train_ds, datasets.IterableDataset):
            raise ConfigError(f"`{desc}` stage: `contrastive` builds pairs from the stage's labelled examples, which "
                              "a streamed split does not hold; remove the `contrastive:` block or stream less.",
                              option="contrastive")
        self.model, self.config, self.accelerator, self.desc = model, config, accelerator, desc
        self.seed = config.seed if config.seed is not None else seed
        inputs = [c for c in train_ds.column_names if c not in (*NON_MODEL_COLUMNS, EXAMPLE_WEIGHTS_COLUMN, "labels")]
        self.rows = [dict(zip(inputs, values)) for values in zip(*(train_ds[c] for c in inputs))]
        self.labels = [int(y) for y in train_ds["labels"]]
        self.collate = Collator(tokenizer)
        self.pool = Pooler(model, config.pooling)

    def batch(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        batch = self.collate([self.rows[i] for i in indices])
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def steps(self) -> List[Tuple[List[int], torch.Tensor]]:
        """Each step's example indices and its targets: for pairs, ``[u..., v...]`` and the pair
        labels; for SupCon, the batch and its class ids. Epochs repeat the seeded plan."""
        c = self.config
        plan: List[Tuple[List[int], torch.Tensor]] = []
        pairs = contrastive_pairs(self.labels, c.pair_iterations, self.seed) if c.loss == "cosine_similarity" else []
        for epoch in range(c.epochs):  # the same pairs each epoch (as SetFit), in a new seeded order
            if c.loss == "cosine_similarity":
                order = list(pairs)
                if epoch:
                    random.Random(self.seed + epoch).shuffle(order)
                plan += [([p.first for p in b] + [p.second for p in b], torch.tensor([p.label for p in b]))
                         for b in pair_batches(order, c.batch_size)]
            else:
                batches = example_batches(self.labels, c.batch_size, c.pair_iterations, self.seed + epoch)
                plan += [(b, torch.tensor([self.labels[i] for i in b])) for b in batches]
        return plan[:c.max_steps] if c.max_steps is not None else plan

    def step_loss(self, indices: List[int], targets: torch.Tensor) -> torch.Tensor:
        with self.accelerator.autocast():
            z = self.pool(self.batch(indices))
        targets = targets.to(z.device)
        if self.config.loss == "cosine_similarity":
            half = len(indices) // 2
            return cosine_similarity_loss(z[:half], z[half:], targets)
        return supervised_contrastive_loss(z, targets, self.config.temperature)

    def optimizer(self, total_steps: int):
        """AdamW over the trainable parameters (no decay on biases and LayerNorm), linear decay."""
        args = TrainingConfig(learning_rate=self.config.learning_rate, warmup_ratio=self.config.warmup_ratio)
        optimizer = create_adamw(parameter_groups(self.model, args), args.learning_rate)
        warmup = int(self.config.warmup_ratio * total_steps)
        return optimizer, get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)

    def train(self) -> ContrastiveSummary:
        """Train the encoder in place; the record of what it did."""
        self.check_trainable()
        self.model.to(self.accelerator.device)
        before = self.class_cosines()
        set_seed(self.seed)
        plan = self.steps()
        optimizer, scheduler = self.optimizer(len(plan))
        params = [p for p in self.model.parameters() if p.requires_grad]
        losses: List[float] = []
        t0 = time.perf_counter()
        self.model.train()
        bar = tqdm(plan, desc=f"{self.desc}-contrastive", disable=not self.accelerator.is_local_main_process,
                   dynamic_ncols=True)
        for indices, targets in bar:
            loss = self.step_loss(indices, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - t0
        after = self.class_cosines()
        return ContrastiveSummary(
            loss=self.config.loss, pooling=self.config.pooling, pairs=sum(len(t) for _, t in plan),
            optimizer_steps=len(plan), train_time_s=round(elapsed, 3), loss_curve=loss_curve(losses),
            same_class_cosine={"before": before[0], "after": after[0]},
            other_class_cosine={"before": before[1], "after": after[1]})

    def check_trainable(self) -> None:
        """The pooled embedding must depend on something that trains."""
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError(f"`{self.desc}` stage: `contrastive` has nothing to train: every parameter is frozen "
                              "(freeze_layers, freeze_patterns, freeze_embeddings).", option="contrastive")

    @torch.no_grad()
    def class_cosines(self) -> Tuple[float, float]:
        """Mean cosine of two different training examples' embeddings, same class and other class
        (the first :data:`DIAGNOSTIC_ROWS` examples, eval mode)."""
        was_training = self.model.training
        self.model.eval()
        n = min(len(self.rows), DIAGNOSTIC_ROWS)
        z = torch.cat([self.pool(self.batch(range(i, min(i + 64, n)))).float() for i in range(0, n, 64)])
        self.model.train(was_training)
        return class_cosine_means(z, torch.tensor(self.labels[:n], device=z.device))


def class_cosine_means(z: torch.Tensor, labels: torch.Tensor) -> Tuple[float, float]:
    """``(mean same-class cosine, mean other-class cosine)`` over pairs of different rows of ``z``."""
    z = F.normalize(z, dim=-1)
    cos = z @ z.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    same_pairs, other_pairs = same & off_diagonal, ~same
    mean = lambda m: round(float(cos[m].mean()), 6) if m.any() else float("nan")  # noqa: E731
    return mean(same_pairs), mean(other_pairs)


def loss_curve(losses: Sequence[float], points: int = LOSS_POINTS) -> List[float]:
    """The losses averaged over ``points`` consecutive, equal stretches of steps (all when fewer)."""
    if len(losses) <= points:
        return [round(x, 5) for x in losses]
    size = len(losses) / points
    chunks: Iterator[Sequence[float]] = (losses[int(i * size):int((i + 1) * size)] for i in range(points))
    return [round(sum(c) / len(c), 5) for c in chunks]


def contrastive_phase(name: str, model, train_ds, args: TrainingConfig, tokenizer, accelerator: Accelerator,
                      seed: int) -> Optional[ContrastiveSummary]:
    """Stage ``name``'s contrastive phase when ``args.contrastive`` asks for one (else None)."""
    config = args.contrastive
    if config is None or not config.enabled:
        return None
    if accelerator.is_local_main_process:
        tqdm.write(f"[{name}] contrastive phase: {config.loss} on {config.pooling}-pooled embeddings, "
                   f"{config.pair_iterations} pair iteration(s), {config.epochs} epoch(s)")
    return ContrastivePhase(model, train_ds, config, tokenizer, accelerator, seed, desc=name).train()
