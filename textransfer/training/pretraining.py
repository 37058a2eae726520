"""The adaptive-pretraining stage: masked-LM training of a classifier's encoder on unlabelled
domain text (``adaptive_pretraining:``; Gururangan et al., 2020, "Don't Stop Pretraining").

The stage trains ``masked_lm_on(classifier)`` (``modeling/masked_lm.py``), a masked-LM model
whose base model *is* the classifier's: the classifier's encoder is trained in place, its head
is left as it was. It is a stage like the others: :class:`MaskedLMTrainer` is a `StageTrainer`
(progress bar, checkpoints and ``--resume``, Accelerate/DDP, trackers under
``pretraining-<stage>/``), and a finished stage is recorded under the checkpoint root, so a
resumed run skips it.

Masking and the loss are ``training/masking.py``'s (shared with ``udalm``): BERT's masking, per
text with a generator seeded by the run's seed, the optimiser step and the text's own tokens, so
a text is masked the same way however the batch is cut (one process or several, after a
resume); the loss is the cross-entropy over the masked tokens of the whole global batch divided
by their number, the logits computed at the masked positions only, so N processes of batch B
compute the gradient of one process of batch N*B.

The held-out texts (``heldout_fraction``) are never trained on; their masked-token perplexity
(exp of the mean loss over masked tokens) is measured before and after the training with the
same positions masked both times.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..config.pretraining import AdaptivePretrainingConfig
from ..data.batching import eval_dataloader, sort_by_length
from ..data.streaming import is_stream
from ..data.tokenization import tokenize_dataset
from ..data.unlabelled import cap_examples, concatenate_on_shared_columns, read_text_files
from ..errors import ConfigError
from ..modeling.masked_lm import masked_lm_on
from .checkpointing import StageCheckpoints, load_stage_model, record_stage, stage_done
from .loop_state import LossWindow
from .masking import TokenMasking, masked_lm_losses, masked_token_loss, require_mask_token, tokens_per_process
from .results import PretrainingSummary
from .stage import StageEnvironment
from .trainer import StageTrainer

# The held-out texts are masked as if at this optimiser step, before and after training alike,
# so both perplexities are over the same masked positions (training steps count from 0).
HELDOUT_STEP = -1
PROBE_TEXTS = 2  # texts of the one forward pass that finds parameters the loss never reaches
# which tasks' train splits each `text:` choice reads
TEXT_TASKS = {"target": ("target",), "source": ("source",), "both": ("source", "target")}


def stage_name(before: str) -> str:
    """The stage's name (its checkpoint folder, progress bar and tracker prefix)."""
    return f"pretraining-{before}"


class LossCurve:
    """The mean masked-LM loss every ``every`` optimiser steps (the record's ``loss_curve``): a
    `LossWindow` taken at every ``every``-th step. Not checkpointed: a resumed stage's curve
    starts at the resume."""

    def __init__(self, every: int):
        self.every, self.points = max(every, 1), []
        self.window, self.last_step = LossWindow(), 0

    def add(self, loss: float) -> None:
        self.window.add(loss)

    def at_step(self, step: int) -> None:
        """Called with the optimiser steps done; closes a window at every ``every``-th step."""
        if step != self.last_step and step % self.every == 0:
            self.flush(step)
        self.last_step = step

    def flush(self, step: int) -> None:
        if self.window.batches:
            self.points.append({"step": step, "loss": self.window.take()})


class MaskedLMTrainer(StageTrainer):
    """A `StageTrainer` of a masked-LM model: each batch is masked (:class:`TokenMasking`) at the
    step it is trained at, and the loss is the mean over the global batch's masked tokens.

    Args:
        masking (`TokenMasking`): masks each batch.
        (the others are `StageTrainer`'s)
    """

    def __init__(self, *args, masking: TokenMasking, **kwargs):
        super().__init__(*args, **kwargs)
        self.masking, self.step = masking, 0
        self.encoder = self.model.base_model  # shared with the classifier (and inside DDP's wrapper)
        self.curve = LossCurve(self.logging_steps)

    def on_step(self, step: int, total_steps: int) -> None:
        self.step = step
        self.curve.at_step(step)

    def train(self, train_ds, eval_ds=None, aux_ds=None):
        result = super().train(train_ds, eval_ds, aux_ds)
        self.curve.flush(result.optimizer_steps)  # the steps since the last full window
        return result

    def compute_loss(self, model, batch, aux_batch=None) -> torch.Tensor:
        masked = self.masking(batch, self.step)
        labels = masked.pop("labels")
        loss = masked_token_loss(model, self.encoder, masked, labels, tokens_per_process(labels, self.accelerator))
        mean = loss.detach()
        if self.accelerator.num_processes > 1:  # the processes' losses average to the global batch's mean
            mean = self.accelerator.reduce(mean, reduction="mean")
        self.curve.add(mean.item())
        return loss


# ---------------------------------------------------------------------------- texts
class PretrainingTexts(NamedTuple):
    """The tokenized texts of the stage (no labels): trained on, and held out."""

    train: datasets.Dataset
    heldout: Optional[datasets.Dataset]


def pretraining_texts(config: AdaptivePretrainingConfig, tokenized: Mapping[str, Mapping[str, Any]], tokenizer,
                      max_length: int, seed: int, cache_dir: Optional[str] = None) -> PretrainingTexts:
    """The texts ``config.text`` names, capped at ``max_examples`` (a seeded sample), with a seeded
    ``heldout_fraction`` held out.

    Args:
        tokenized: task key (``source``/``target``) -> its tokenized splits.
        tokenizer / max_length: tokenize ``files``.
    """
    if config.text == "files":
        ds = read_text_files(config.files, config.text_column, cache_dir, option="adaptive_pretraining.files",
                             column_option="adaptive_pretraining.text_column")
        ds = tokenize_dataset(cap_examples(ds, config.max_examples, seed), tokenizer, max_length,
                              desc="Tokenizing pretraining text")
    else:
        parts = [unlabelled(tokenized[key]["train"], config.max_examples) for key in TEXT_TASKS[config.text]]
        ds = parts[0] if len(parts) == 1 else concatenate_on_shared_columns(parts)
        ds = cap_examples(ds, config.max_examples, seed)
    return hold_out(ds, config.heldout_fraction, seed)


def unlabelled(ds, cap: Optional[int]) -> datasets.Dataset:
    """A train split without its labels; a streamed one as its first ``cap`` rows."""
    if is_stream(ds):
        if not cap:
            raise ConfigError("adaptive pretraining on a streamed split needs `adaptive_pretraining.max_examples` "
                              "(how many of its texts to read).", option="adaptive_pretraining.max_examples")
        ds = datasets.Dataset.from_list(list(ds.take(cap)))
    return ds.remove_columns([c for c in ("labels",) if c in ds.column_names])


def hold_out(ds: datasets.Dataset, fraction: float, seed: int) -> PretrainingTexts:
    """A seeded ``fraction`` of ``ds`` held out (at least one text when the fraction is > 0)."""
    count = min(max(round(fraction * len(ds)), 1), len(ds) - 1) if fraction > 0 else 0
    if count <= 0:
        if len(ds) == 0:
            raise ConfigError("adaptive pretraining has no text to train on; check `adaptive_pretraining.text`.",
                              option="adaptive_pretraining.text")
        return PretrainingTexts(ds, None)
    split = ds.train_test_split(test_size=count, seed=seed)
    return PretrainingTexts(split["train"], split["test"])


# ---------------------------------------------------------------------------- measuring
@torch.no_grad()
def heldout_perplexity(mlm: PreTrainedModel, texts: Optional[datasets.Dataset], masking: TokenMasking, tokenizer,
                       accelerator, batch_size: int) -> Tuple[Optional[float], int]:
    """The masked-token perplexity of ``texts`` and the masked tokens it is over (None, 0 without texts).

    The texts are shared over the processes and each one counted once (``gather_for_metrics``)."""
    if texts is None or len(texts) == 0:
        return None, 0
    loader = accelerator.prepare(eval_dataloader(sort_by_length(texts), tokenizer, batch_size))
    training = mlm.training
    mlm.eval()
    sums = []
    for batch in loader:
        masked = masking(batch, HELDOUT_STEP)
        labels = masked.pop("labels")
        with accelerator.autocast():
            losses, counts = masked_lm_losses(mlm, mlm.base_model, masked, labels)
        sums.append(accelerator.gather_for_metrics(torch.stack([losses.double(), counts.double()], dim=1)).cpu())
    mlm.train(training)
    loss, count = torch.cat(sums).sum(dim=0).tolist()
    return (math.exp(loss / count) if count else None), int(count)


@torch.no_grad()
def parameters_without_gradient(mlm: PreTrainedModel, texts: datasets.Dataset, tokenizer, device) -> List[str]:
    """Names of the trainable parameters the masked-LM output does not depend on (BERT's pooler).

    Found with one backward pass rather than by name, so any architecture is covered. They must
    be frozen during the stage: DDP fails on a parameter that gets no gradient."""
    batch = next(iter(eval_dataloader(texts.select(range(min(PROBE_TEXTS, len(texts)))), tokenizer, PROBE_TEXTS)))
    training = mlm.training
    mlm.eval()  # no dropout: the probe draws nothing from the random stream
    mlm.zero_grad(set_to_none=True)
    with torch.enable_grad():
        mlm(**{k: v.to(device) for k, v in batch.items()}).logits.float().mean().backward()
    names = [n for n, p in mlm.named_parameters() if p.requires_grad and p.grad is None]
    mlm.zero_grad(set_to_none=True)
    mlm.train(training)
    return names


# ---------------------------------------------------------------------------- the stage
def train_adaptive_pretraining(before: str, classifier: PreTrainedModel, texts: PretrainingTexts,
                               config: AdaptivePretrainingConfig, env: StageEnvironment,
                               load_weights: bool = True) -> PretrainingSummary:
    """Masked-LM training of ``classifier``'s encoder (in place) on ``texts``; its record.

    Args:
        before (`str`): the stage it precedes (``source`` or ``target``).
        classifier: the sequence-classification model; its head is not touched.
        texts (`PretrainingTexts`): from :func:`pretraining_texts`.
        config (`AdaptivePretrainingConfig`): the stage's options.
        env (`StageEnvironment`): the run's.
        load_weights (`bool`): when a killed run finished this stage (``--resume``), load its
            encoder into ``classifier``; False when the stage it precedes finished too (its
            model is loaded instead) and only the record is needed.
    """
    done = finished_pretraining(before, classifier, env, load_weights)
    if done is not None:
        return done
    mlm = masked_lm_on(classifier, env.cfg.model.name_or_path, seed=env.cfg.seed)
    trainable = {p: p.requires_grad for p in mlm.parameters()}
    try:
        return pretrain(before, mlm, classifier, texts, config, env)
    finally:  # the classifier's stages freeze as they are configured to, not as this stage left it
        for parameter, flag in trainable.items():
            parameter.requires_grad_(flag)


def pretrain(before: str, mlm: PreTrainedModel, classifier: PreTrainedModel, texts: PretrainingTexts,
             config: AdaptivePretrainingConfig, env: StageEnvironment) -> PretrainingSummary:
    """Train ``mlm`` (whose base model is ``classifier``'s), measure, record."""
    acc, name, args = env.accelerator, stage_name(before), config.training()
    for parameter in mlm.parameters():
        parameter.requires_grad_(True)
    mlm.to(acc.device)
    frozen = parameters_without_gradient(mlm, texts.train, env.tokenizer, acc.device)
    for n, p in mlm.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    require_mask_token(env.tokenizer, "`adaptive_pretraining`", "remove `adaptive_pretraining:`")
    masking = TokenMasking(env.tokenizer, config.mlm_probability, env.cfg.seed,
                           vocab_size=classifier.get_input_embeddings().num_embeddings)
    measure = partial(heldout_perplexity, mlm, texts.heldout, masking, env.tokenizer, acc, args.eval_batch_size)
    perplexity_before, tokens = measure()
    args.head_warmup_steps = fresh_head_warmup_steps(mlm, config, args, len(texts.train), acc.num_processes)
    announce(env, name, texts, frozen)
    head = [n for n, _ in mlm.named_parameters() if not n.startswith(mlm.base_model_prefix + ".")]
    trainer = MaskedLMTrainer(mlm, env.tokenizer, args, acc, [], seed=env.cfg.seed, masking=masking, desc=name,
                              head_parameters=head,
                              checkpoint_dir=env.checkpoint_root / name if env.checkpoint_root else None,
                              resume=env.cfg.resume, logging_steps=env.cfg.logging_steps)
    result = trainer.train(texts.train)
    perplexity_after, _ = measure()
    summary = PretrainingSummary(
        before=before, text=config.text, texts=len(texts.train), heldout_texts=len(texts.heldout or []),
        mlm_probability=config.mlm_probability, heldout_perplexity_before=rounded(perplexity_before),
        heldout_perplexity_after=rounded(perplexity_after), heldout_masked_tokens=tokens or None,
        history=result.history, loss_curve=trainer.curve.points, optimizer_steps=result.optimizer_steps,
        train_time_s=round(result.train_time_s, 3), train_samples_per_s=round(result.train_samples_per_s, 2),
        frozen_without_gradient=frozen)
    if acc.is_main_process:
        tqdm.write(f"[{name}] held-out masked-token perplexity {summary.heldout_perplexity_before} -> "
                   f"{summary.heldout_perplexity_after}")
    record_pretraining(name, summary, classifier, env)
    return summary


def fresh_head_warmup_steps(mlm: PreTrainedModel, config: AdaptivePretrainingConfig, args, texts: int,
                            processes: int) -> Optional[int]:
    """The steps that train a fresh masked-LM head alone (None: the checkpoint's head, or off).

    The head is everything outside the base model; the word embeddings, tied to its output
    layer, count as the encoder's and wait too."""
    if not getattr(mlm, "fresh_head", False) or config.fresh_head_warmup <= 0:
        return None
    per_step = args.batch_size * processes * args.gradient_accumulation_steps
    total = args.max_steps or math.ceil(texts / per_step) * args.num_epochs
    return max(1, int(config.fresh_head_warmup * total))


def announce(env: StageEnvironment, name: str, texts: PretrainingTexts, frozen: List[str]) -> None:
    if env.accelerator.is_main_process:
        untrained = f"; {len(frozen)} parameter tensors the loss does not reach stay frozen" if frozen else ""
        tqdm.write(f"[{name}] masked-LM training on {len(texts.train):,} texts "
                   f"({len(texts.heldout or []):,} held out){untrained}")


def rounded(perplexity: Optional[float]) -> Optional[float]:
    return None if perplexity is None else round(perplexity, 4)


def record_pretraining(name: str, summary: PretrainingSummary, classifier: PreTrainedModel,
                       env: StageEnvironment) -> None:
    """Record the finished stage (``--resume`` skips it), with the classifier it trained."""
    if env.checkpoint_root is None:
        return
    record_stage(env.checkpoint_root, name, {"summary": summary.to_dict()}, model=classifier,
                 tokenizer=env.tokenizer, accelerator=env.accelerator)
    StageCheckpoints(env.checkpoint_root / name, env.accelerator).clear()


def finished_pretraining(before: str, classifier: PreTrainedModel, env: StageEnvironment,
                         load_weights: bool) -> Optional[PretrainingSummary]:
    """The stage's record when a killed run finished it (``--resume``), its encoder loaded into
    ``classifier`` when ``load_weights``; else None."""
    if env.checkpoint_root is None or not env.cfg.resume:
        return None
    name = stage_name(before)
    done = stage_done(env.checkpoint_root, name)
    if done is None:
        return None
    if load_weights:
        trained = load_stage_model(env.checkpoint_root, name)
        classifier.base_model.load_state_dict(trained.base_model.state_dict())
    if env.accelerator.is_main_process:
        tqdm.write(f"[{name}] finished in an earlier run; its record and encoder are reused (--resume)")
    return PretrainingSummary.from_dict(done["summary"])


__all__ = ["MaskedLMTrainer", "PretrainingTexts", "pretraining_texts", "train_adaptive_pretraining",
           "heldout_perplexity", "stage_name"]
