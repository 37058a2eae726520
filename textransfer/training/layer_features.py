"""One eval-mode pass of a classifier over a split, keeping what one of its layers sees: the
``features`` strategy trains its head on them, and the linear probe (``linear_probe.py``) fits the
final layer on them. Both need the vector the shipped model computes itself, so it is taken by a
forward hook on the model's own layer rather than recomputed beside it."""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from ..data.batching import EXAMPLE_WEIGHTS_COLUMN, eval_dataloader, sort_by_length


@torch.no_grad()
def encode(model, ds, tokenizer, batch_size: int, device, source: torch.nn.Module,
           which: str) -> Dict[str, Any]:
    """Features, the model's logits, the labels, the example weights (ones where the split has
    none) and the row ids of ``ds`` (length-sorted order): one forward pass of ``model`` per batch,
    in eval mode (left so), the features taken by a hook on ``source``: its input
    (``which="input"``) or its output's first token (``"first_token"``)."""
    model.eval()
    ordered = sort_by_length(ds)
    caught: List[torch.Tensor] = []

    def hook(_module, inputs, output):
        caught.append(inputs[0] if which == "input" else output[0][:, 0])

    handle = source.register_forward_hook(hook)
    logits, labels, weights = [], [], []
    try:
        for batch in eval_dataloader(ordered, tokenizer, batch_size):
            labels.append(batch.pop("labels"))
            weights.append(batch.pop(EXAMPLE_WEIGHTS_COLUMN, torch.ones(len(labels[-1]))))
            logits.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    finally:
        handle.remove()
    return {"features": torch.cat([f.float().cpu() for f in caught]), "logits": torch.cat(logits),
            "labels": torch.cat(labels), "weights": torch.cat(weights).float(),
            "rows": list(ordered["row"]) if "row" in ordered.column_names else None}
