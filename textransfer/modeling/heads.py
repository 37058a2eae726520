"""Where a sequence classifier keeps its final linear layer (the one that maps to the labels):
the layer whose *input* is the representation the head classifies, whatever the architecture
pools there (BERT's pooler, RoBERTa's dense + tanh on the first token, DistilBERT's
pre-classifier). The ``features`` strategy trains that layer on cached inputs; the contrastive
phase (``pooling: head``) trains the encoder on them."""

from __future__ import annotations

import torch

from ..errors import ConfigError

# where the supported architectures keep their final linear layer (RoBERTa-style heads: out_proj),
# looked up by name first: a dense layer of the head maps to as many units when there are as many
# labels as hidden units
FINAL_LAYER_NAMES = ("classifier.out_proj", "classifier")


def final_linear(model) -> torch.nn.Linear:
    """The architecture's final linear layer: where the supported ones keep it, else the one layer
    outside the encoder that maps to the labels."""
    for name in FINAL_LAYER_NAMES:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(layer, torch.nn.Linear):
            return layer
    prefix = model.base_model_prefix + "."
    found = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith(prefix)
             and m.out_features == model.config.num_labels]
    if len(found) != 1:
        raise ConfigError(f"cannot tell the final linear layer of a {model.config.model_type} classifier "
                          f"({len(found)} candidates); for this model use another strategy than `features`, "
                          f"or `contrastive.pooling: mean`.")
    return found[0]
