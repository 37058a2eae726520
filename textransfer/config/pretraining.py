"""The adaptive-pretraining stage (``adaptive_pretraining:`` section): masked-LM training of the
encoder on unlabelled domain text before a stage (Gururangan et al., 2020, "Don't Stop
Pretraining": DAPT on domain text, TAPT on the task's own text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ..errors import ConfigError
from .schema import option
from .training import TrainingConfig

PRETRAINING_STAGES = ("source", "target")
PRETRAINING_TEXT = ("target", "source", "both", "files")


@dataclass
class AdaptivePretrainingConfig:
    """Masked-LM training of the encoder on unlabelled text, before the source stage, the target
    stage, or both; with any strategy. The no-transfer baseline never gets it.

    Args:
        before (`list[str]`): the stages it precedes: ``source`` (the encoder learns the target's
            text before learning the source task: DAPT for domain adaptation), ``target`` (after
            the source stage, before the target stage: TAPT), or both.
        text (`str`): the unlabelled text: ``target`` (the target's train split, labels ignored),
            ``source``, ``both``, or ``files``.
        files (`list[str]`): text files (csv/tsv/json/jsonl/parquet/txt) when ``text: files``.
        text_column (`str`): their text column (txt files: one text a line).
        max_examples (`int`, *optional*): cap on the texts (a seeded sample).
        heldout_fraction (`float`): share of the texts held out to measure the masked-token
            perplexity before and after (never trained on).
        mlm_probability (`float`): share of tokens masked (BERT: 0.15; of those 80% [MASK], 10%
            random, 10% unchanged: ``DataCollatorForLanguageModeling``).
        num_epochs / max_steps / batch_size / learning_rate / warmup_ratio / weight_decay: its
            budget and optimiser (``max_steps`` overrides ``num_epochs``).
        fresh_head_warmup (`float`): when the checkpoint has no masked-LM head (a fresh, random
            one is made), the share of the steps that train that head alone on the frozen encoder
            (LP-FT for the masked-LM head): a random head's gradients would otherwise push noise
            into the encoder. 0 turns it off; no effect when the checkpoint's head is loaded.
        head_learning_rate (`float`): learning rate of the masked-LM head (a fresh head has
            everything to learn; the encoder only a little).
        save_steps (`int`, *optional*): checkpoint every N optimiser steps, for ``--resume``
            (Ctrl-C checkpoints too).
    """

    before: List[str] = option(default_factory=lambda: ["source"],
                               help="Stages it precedes: source, target, or both ([source, target]).")
    text: str = option("target", help="Unlabelled text: target (train split, labels ignored), source, both or files.")
    files: List[str] = option(default_factory=list, help="Text files when text: files (csv/tsv/json/jsonl/parquet/txt).")
    text_column: str = option("text", help="Text column of files.")
    max_examples: Optional[int] = option(None, help="Cap on the texts (seeded sample).")
    heldout_fraction: float = option(0.1, help="Share of texts held out for the perplexity before/after.")
    mlm_probability: float = option(0.15, help="Share of tokens masked.")
    num_epochs: int = option(1, help="Passes over the texts.")
    max_steps: Optional[int] = option(None, help="Optimiser-step budget (overrides num_epochs).")
    batch_size: int = option(32, help="Texts per device per step.")
    learning_rate: float = option(5e-5, help="Peak learning rate of the masked-LM training.")
    warmup_ratio: float = option(0.06, help="Share of steps spent warming up.")
    weight_decay: float = option(0.01, help="AdamW weight decay.")
    fresh_head_warmup: float = option(0.25, help="Share of steps training a fresh (random) masked-LM head alone first.")
    head_learning_rate: float = option(1e-3, help="Learning rate of the masked-LM head.")
    save_steps: Optional[int] = option(None, help="Also checkpoint every N optimiser steps (for --resume).")

    def __post_init__(self):
        self.before = [self.before] if isinstance(self.before, str) else list(self.before)
        bad = [s for s in self.before if s not in PRETRAINING_STAGES]
        if bad or not self.before:
            raise ConfigError(f"`adaptive_pretraining.before` must list stages among {', '.join(PRETRAINING_STAGES)}; "
                              f"got {self.before}.", option="adaptive_pretraining.before")
        if self.text not in PRETRAINING_TEXT:
            raise ConfigError(f"`adaptive_pretraining.text` must be one of {', '.join(PRETRAINING_TEXT)}, "
                              f"got '{self.text}'.", option="adaptive_pretraining.text")
        if (self.text == "files") != bool(self.files):
            raise ConfigError("`adaptive_pretraining.files` is needed with `text: files` and only then; set both "
                              "(e.g. text: files, files: [domain.txt]) or neither.", option="adaptive_pretraining.files")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"`adaptive_pretraining.mlm_probability` must be in (0, 1), got {self.mlm_probability}.",
                              option="adaptive_pretraining.mlm_probability")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"`adaptive_pretraining.heldout_fraction` must be in [0, 1), got {self.heldout_fraction}.",
                              option="adaptive_pretraining.heldout_fraction")
        if not 0.0 <= self.fresh_head_warmup < 1.0:
            raise ConfigError(f"`adaptive_pretraining.fresh_head_warmup` must be in [0, 1), got {self.fresh_head_warmup}.",
                              option="adaptive_pretraining.fresh_head_warmup")
        if self.max_examples is not None and self.max_examples < 2:
            raise ConfigError(f"`adaptive_pretraining.max_examples` must be >= 2, got {self.max_examples}.",
                              option="adaptive_pretraining.max_examples")
        self.training()  # the budget's own checks (epochs, steps, batch size, learning rate)

    def training(self) -> TrainingConfig:
        """The stage's loop settings: no per-epoch evaluation or best-weights selection (the
        perplexity is measured before and after, on the held-out texts)."""
        return TrainingConfig(num_epochs=self.num_epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, head_learning_rate=self.head_learning_rate,
                              warmup_ratio=self.warmup_ratio,
                              weight_decay=self.weight_decay, save_steps=self.save_steps, eval_every_epoch=False,
                              load_best_model_at_end=False)
