"""How one stage is trained (``source_training:`` and ``target_training:`` sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple

from ..errors import ConfigError
from .contrastive import ContrastiveConfig
from .schema import option


@dataclass
class TrainingConfig:
    """How one stage (source or target) is trained.

    Args:
        num_epochs (`int`): passes over the training split.
        max_steps (`int`, *optional*): optimiser-step budget; overrides ``num_epochs`` when set.
        batch_size (`int`): examples per device per forward pass.
        eval_batch_size (`int`): examples per device when evaluating.
        gradient_accumulation_steps (`int`): forward passes per optimiser step.
        learning_rate / weight_decay / warmup_ratio / lr_scheduler / max_grad_norm: optimiser.
        group_by_length (`bool`): batch examples of similar length together (less padding).
        pad_to_multiple_of (`int`, *optional*): pad each training batch's length up to a multiple
            of this (length buckets), so batches come in at most ``ceil(max_length / N)`` lengths:
            what bounds ``torch_compile``'s recompiles. The examples are the same; the extra
            padding is masked, so it changes no loss, only adds work (``data/batching.py``). Pick a
            divisor of ``model.max_length`` (32 for 128), or the longest batches outgrow it.
        torch_compile (`bool`): run the training step's forward and backward through
            ``torch.compile`` (inductor). Evaluation, checkpoints and the saved model use the
            plain module. Without ``pad_to_multiple_of`` the shapes are left dynamic (one
            recompile, at the second shape); with it, one static graph per batch shape
            (``training/compilation.py``). Each compile takes tens of seconds on a CPU.
        first_token_last_layer (`bool`): where only the logits are read (the plain classification
            loss, evaluation), compute the last encoder layer for the first token only, its
            attention over every token without projecting their keys and values: the classifier
            reads nothing else, so the logits and gradients are the same, for about 15% less
            matrix work a step on MiniLM-L6 (``modeling/first_token.py``). Applies to BERT, RoBERTa,
            XLM-R, CamemBERT and ELECTRA classifiers with sdpa or eager attention, without
            ``torch_compile`` or gradient checkpointing; other models run in full.
        sparse_embedding_gradient (`bool`): on a CPU, one process: the word embedding's backward
            adds only the batch's rows into one gradient buffer kept for the whole stage, instead
            of a fresh dense gradient each step (``training/embedding_gradient.py``); the same
            gradient, without allocating and zero-filling the whole matrix every step.
        sparse_embedding_update (`bool`): with ``sparse_embedding_gradient``: gradient clipping,
            the fused AdamW step and the zeroing of that buffer read and write only the rows the
            stage's batches have reached; every other row gets what AdamW gives a row with no
            gradient yet, its weight decay alone (``training/embedding_gradient.py``). The same
            update, bitwise on the rows; the clipping norm sums its terms in another order. It pays
            where the vocabulary is most of the model (XLM-R base: 1.19x the training loop's
            samples/s); on MiniLM it changes nothing measurable (``benchmarks/embedding_update.py``).
        numpy_dropout_masks (`bool`): in the training step, on a CPU: the model's ``nn.Dropout``
            modules draw their masks with NumPy's PCG64 generator, seeded from torch's generator
            (``modeling/dropout_masks.py``), instead of torch's ``bernoulli_``, which is several
            times slower on a CPU. The same dropout: kept elements scaled by the inverse of the
            keep probability, ``p`` rounded to a multiple of 1/65536; other masks than torch's,
            still repeated by ``seed`` and by a resumed run. The attention probabilities' dropout
            (inside torch's attention kernel) and other devices keep torch's masks.
        onednn_linear (`bool`): in the training step, on a CPU, in fp32: the model's ``nn.Linear``
            forward products and input gradients run on oneDNN, the kernel library torch ships
            beside MKL, faster on an encoder's shapes (``modeling/onednn_linear.py``). The
            same fp32 arithmetic, summed in another order: results agree to float rounding, not
            bitwise. bf16 autocast, other dtypes and other devices keep torch's own products.
        eval_every_epoch (`bool`): evaluate on validation after each epoch.
        metric_for_best_model (`str`): validation metric used for early stopping and best weights.
        early_stopping_patience (`int`, *optional*): stop after this many evaluations without
            improvement.
        load_best_model_at_end (`bool`): restore the best validation weights after training.
        freeze_embeddings (`bool`): freeze the embedding layer.
        freeze_layers (`int`): freeze the bottom k encoder layers.
        freeze_patterns (`list[str]`): freeze parameters whose name matches any regex.
        train_word_embeddings (`bool`): when False, the word-embedding matrix stays fixed
            (position/type embeddings and LayerNorm still train). Saves the optimiser about
            half its work on MiniLM and keeps unseen words' vectors aligned with seen ones.
        save_checkpoints (`bool`): write an Accelerate checkpoint after each epoch.
        gradual_unfreezing (`bool`): train the head first and unfreeze one more depth (encoder
            block, then the embeddings) each epoch or every ``unfreeze_every_steps`` steps.
        unfreeze_every_steps (`int`, *optional*): unfreezing phase length in optimiser steps.
        layerwise_lr_decay (`float`, *optional*): LLRD: depth ``d`` from the top trains at
            ``learning_rate * layerwise_lr_decay ** d`` (see ``layerwise.py``).
        save_steps (`int`, *optional*): also write one every this many optimiser steps, so
            ``--resume`` loses at most that many steps after a kill (``checkpointing.py``).
        head_warmup_epochs (`int`): LP-FT (Kumar et al., 2022): the first this many epochs train
            only the head on the frozen encoder, then everything trains; part of the stage's
            budget.
        head_warmup_steps (`int`, *optional*): the same in optimiser steps (overrides
            ``head_warmup_epochs``).
        contrastive (`ContrastiveConfig`, *optional*): a contrastive phase at the start of the
            stage, on its own labelled examples (SetFit; ``config/contrastive.py``).
        linear_probe (`bool`): LP-FT's probe fitted to convergence: before the classification
            training (after the contrastive phase), the classifier's final linear layer alone is
            fitted by L-BFGS logistic regression on the frozen model's features of the training
            examples (``training/linear_probe.py``); ``head_warmup_*`` may still follow.
        linear_probe_c (`float`): the probe's inverse L2 strength, as sklearn's
            ``LogisticRegression(C=...)`` (SetFit's head uses its default, 1.0).
    """

    # transformers.TrainingArguments names people carry over from Trainer scripts -> ours
    ALIASES: ClassVar[Dict[str, Tuple[str, str]]] = {
        name: (ours, "a transformers TrainingArguments name") for name, ours in {
            "num_train_epochs": "num_epochs", "per_device_train_batch_size": "batch_size",
            "per_device_eval_batch_size": "eval_batch_size", "lr_scheduler_type": "lr_scheduler",
            "warmup_steps": "warmup_ratio", "evaluation_strategy": "eval_every_epoch",
            "eval_strategy": "eval_every_epoch", "save_strategy": "save_checkpoints",
            "fp16": "`mixed_precision: fp16` (a top-level option)",
            "bf16": "`mixed_precision: bf16` (a top-level option)",
            "seed": "`seed` (a top-level option)", "output_dir": "`output_dir` (a top-level option) or --output-dir",
        }.items()}

    num_epochs: int = option(3, help="Passes over the training split.")
    max_steps: Optional[int] = option(None, help="Optimiser-step budget (overrides num_epochs).")
    batch_size: int = option(32, help="Examples per device per forward pass.")
    eval_batch_size: int = option(128, help="Examples per device when evaluating.")
    gradient_accumulation_steps: int = option(1, help="Forward passes per optimiser step.")
    learning_rate: float = option(5e-5, help="Peak learning rate.")
    head_learning_rate: Optional[float] = option(None, help="Learning rate of the new head (defaults to learning_rate).")
    weight_decay: float = option(0.01, help="AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = option(0.1, help="Share of steps spent warming up.")
    lr_scheduler: str = option("linear", help="transformers scheduler name (linear, cosine, constant_with_warmup, ...).")
    max_grad_norm: Optional[float] = option(1.0, help="Gradient clipping norm (null: off).")
    group_by_length: bool = option(True, help="Batch examples of similar length together.")
    pad_to_multiple_of: Optional[int] = option(
        None, help="Pad training batches to a multiple of N tokens (length buckets; bounds torch_compile's shapes).")
    torch_compile: bool = option(False, help="torch.compile (inductor) the training step's forward and backward.")
    first_token_last_layer: bool = option(
        True, help="Compute the last encoder layer for the first token only where only the logits are read "
                   "(same logits, less work; BERT-style classifiers).")
    sparse_embedding_gradient: bool = option(
        True, help="On a CPU, one process: the word-embedding gradient filled with the batch's rows only, in a "
                   "buffer kept for the stage (the same gradient, no 47 MB allocation a step on MiniLM).")
    sparse_embedding_update: bool = option(
        True, help="With sparse_embedding_gradient: clipping, the AdamW step and the zeroing run on the word-embedding "
                   "rows the stage's batches reached (the other rows get AdamW's weight decay alone: the same update).")
    numpy_dropout_masks: bool = option(
        True, help="On a CPU: dropout masks drawn with NumPy (seeded from torch's generator), several times cheaper "
                   "than torch's; the same dropout, p rounded to a multiple of 1/65536.")
    onednn_linear: bool = option(
        True, help="On a CPU, fp32: linear layers' forward and input-gradient products on oneDNN, faster than "
                   "torch's MKL path on an encoder's shapes (the same arithmetic in another summation order).")
    eval_every_epoch: bool = option(True, help="Evaluate on validation after each epoch.")
    metric_for_best_model: str = option("accuracy", help="Validation metric for early stopping and best weights.")
    early_stopping_patience: Optional[int] = option(None, help="Evaluations without improvement before stopping.")
    load_best_model_at_end: bool = option(True, help="Restore the best validation weights after training.")
    freeze_embeddings: bool = option(False, help="Freeze the embedding layer.")
    freeze_layers: int = option(0, help="Freeze the bottom k encoder layers.")
    freeze_patterns: List[str] = option(default_factory=list, help="Freeze parameters whose name matches a regex.")
    train_word_embeddings: bool = option(True, help="Train the word-embedding matrix.")
    save_checkpoints: bool = option(False, help="Write an Accelerate checkpoint after each epoch.")
    gradual_unfreezing: bool = option(False, help="Head first, then one more layer each epoch (or unfreeze_every_steps).")
    unfreeze_every_steps: Optional[int] = option(None, help="Unfreeze one more layer every N optimiser steps.")
    layerwise_lr_decay: Optional[float] = option(None, help="LLRD: lr * decay**depth from the top (head at full lr).")
    save_steps: Optional[int] = option(None, help="Also checkpoint every N optimiser steps (for --resume).")
    head_warmup_epochs: int = option(0, help="LP-FT: only the head trains for the first N epochs (frozen encoder).")
    head_warmup_steps: Optional[int] = option(None, help="LP-FT: only the head trains for the first N optimiser steps.")
    contrastive: Optional[ContrastiveConfig] = option(
        None, help="SetFit-style contrastive training of the encoder on the stage's labelled pairs before its "
                   "classification training (e.g. {pair_iterations: 20, loss: cosine_similarity}).")
    linear_probe: bool = option(False, help="LP-FT's probe to convergence: fit the final linear layer alone by "
                                            "logistic regression on the frozen model's features first.")
    linear_probe_c: float = option(1.0, help="The probe's inverse L2 strength (sklearn's C).")

    def __post_init__(self):
        positive = ("num_epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"`pad_to_multiple_of` must be >= 1 (or null: no buckets), got {self.pad_to_multiple_of}.")
        if self.save_steps is not None and self.save_steps < 1:
            raise ConfigError(f"`save_steps` must be >= 1 (or null: off), got {self.save_steps}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"`max_steps` must be >= 1, got {self.max_steps}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        if self.freeze_layers < 0:
            raise ConfigError(f"`freeze_layers` must be >= 0, got {self.freeze_layers}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"`early_stopping_patience` must be >= 1, got {self.early_stopping_patience}.")
        if self.unfreeze_every_steps is not None and self.unfreeze_every_steps < 1:
            raise ConfigError(f"`unfreeze_every_steps` must be >= 1, got {self.unfreeze_every_steps}.")
        if self.head_warmup_epochs < 0 or (self.head_warmup_steps is not None and self.head_warmup_steps < 1):
            raise ConfigError(f"`head_warmup_epochs` must be >= 0 and `head_warmup_steps` >= 1 (or null); got "
                              f"{self.head_warmup_epochs} and {self.head_warmup_steps}.")
        if self.linear_probe_c <= 0:
            raise ConfigError(f"`linear_probe_c` must be > 0, got {self.linear_probe_c}.")
        if self.layerwise_lr_decay is not None and not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ConfigError(f"`layerwise_lr_decay` must be in (0, 1], got {self.layerwise_lr_decay}.")


