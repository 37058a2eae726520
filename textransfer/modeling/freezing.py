"""Layer-wise freezing: embeddings, the bottom ``k`` encoder layers, or parameters by name.

Freezing sets ``requires_grad = False``; the trainer builds its optimiser from trainable
parameters only, so frozen weights get neither gradients nor optimiser updates (and no
weight decay), and stay bit-identical through training.

Works for every encoder whose base model keeps its blocks in one ``ModuleList``
(``encoder.layer`` in BERT, RoBERTa, XLM-R, ELECTRA, MPNet and DeBERTa-v2;
``transformer.layer`` in DistilBERT).

Example:

```python
from textransfer import freeze
report = freeze(model, embeddings=True, layers=2, patterns=[r"LayerNorm"])
print(report.trainable, "/", report.total)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from transformers import PreTrainedModel

from ..errors import ConfigError


@dataclass
class FreezeReport:
    """What :func:`freeze` froze, and the parameter counts after it."""

    frozen: List[str] = field(default_factory=list)
    trainable: int = 0
    total: int = 0

    def as_dict(self):
        return {
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "trainable_fraction": round(self.trainable / self.total, 6) if self.total else 0.0,
            "frozen_tensors": len(self.frozen),
        }


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The list of transformer blocks of ``model``'s encoder, bottom first."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise ConfigError(f"cannot find the encoder layers of a {model.config.model_type} model; use `freeze_patterns`.")


def embeddings_module(model: PreTrainedModel) -> torch.nn.Module:
    base = model.base_model
    module = getattr(base, "embeddings", None)
    if module is None:
        raise ConfigError(f"cannot find the embeddings of a {model.config.model_type} model; use `freeze_patterns`.")
    return module


def _param_names(model: torch.nn.Module, module: torch.nn.Module) -> List[str]:
    ids = {id(p) for p in module.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def freeze(
    model: PreTrainedModel,
    embeddings: bool = False,
    layers: int = 0,
    patterns: Optional[Sequence[str]] = None,
    word_embeddings: bool = False,
) -> FreezeReport:
    """Freeze parts of ``model`` in place.

    Args:
        model (`PreTrainedModel`): the model.
        embeddings (`bool`): freeze the whole embedding layer.
        layers (`int`): freeze the bottom ``layers`` encoder blocks.
        patterns (`list[str]`, *optional*): freeze parameters whose name matches any regex
            (``re.search``).
        word_embeddings (`bool`): freeze only the word-embedding matrix.

    Returns:
        `FreezeReport` with the frozen names and trainable / total counts.
    """
    names: List[str] = []
    if embeddings:
        names += _param_names(model, embeddings_module(model))
    if word_embeddings:
        names += _param_names(model, model.get_input_embeddings())
    if layers:
        blocks = encoder_layers(model)
        if layers > len(blocks):
            raise ConfigError(
                f"`freeze_layers: {layers}` but the {model.config.model_type} encoder has {len(blocks)} layers; "
                f"use at most {len(blocks)}."
            )
        for block in blocks[:layers]:
            names += _param_names(model, block)
    for pattern in patterns or []:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"`freeze_patterns`: '{pattern}' is not a valid regex: {err}") from None
        matched = [n for n, _ in model.named_parameters() if regex.search(n)]
        if not matched:
            raise ConfigError(f"`freeze_patterns`: '{pattern}' matches no parameter name (e.g. {next(iter(dict(model.named_parameters())))}).")
        names += matched
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    return parameter_report(model, frozen=sorted(set(names)))


def unfreeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def parameter_report(model: torch.nn.Module, frozen: Optional[List[str]] = None) -> FreezeReport:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if frozen is None:
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    return FreezeReport(frozen=frozen, trainable=trainable, total=total)
