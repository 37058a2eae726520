"""A masked-language-model head on a classifier's encoder, sharing its parameters.

Adaptive pretraining and ``udalm`` train the encoder of a sequence-classification model with
the masked-LM objective. Rather than moving weights between two models, the masked-LM model
built here holds the classifier's own base model (``model.base_model``): every step on it
updates the classifier's encoder in place, and the classifier needs no reload afterwards.

The head comes from the checkpoint when it has one (``bert-base-uncased``'s ``cls.predictions``),
else it is a fresh head of the architecture's own class (``AutoModelForMaskedLM``) whose output
embeddings are tied to the encoder's word embeddings, as in pretraining. Sentence-transformers
models such as all-MiniLM-L6-v2 ship without masked-LM weights and take this path.
"""

from __future__ import annotations

import copy
import logging
from typing import Optional

import torch
from transformers import AutoModelForMaskedLM, PreTrainedModel

from .loading import quiet_transformers, resolve_model_path

logger = logging.getLogger(__name__)


def masked_lm_on(classifier: PreTrainedModel, name_or_path: Optional[str] = None,
                 seed: Optional[int] = None) -> PreTrainedModel:
    """An ``AutoModelForMaskedLM`` whose base model *is* ``classifier.base_model``; its
    ``fresh_head`` attribute says whether the head is new (random) rather than the checkpoint's.

    Args:
        classifier: the sequence-classification model whose encoder is to be trained.
        name_or_path: the pretrained checkpoint; its masked-LM head weights are used when it has
            them. None, or a checkpoint without them: a fresh head, seeded by ``seed``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = copy.deepcopy(classifier.config)
    mlm = pretrained_head_model(name_or_path, config) if name_or_path else None
    fresh = mlm is None
    if fresh:
        with quiet_transformers():
            mlm = AutoModelForMaskedLM.from_config(config)
    setattr(mlm, mlm.base_model_prefix, classifier.base_model)
    # read by the stages that train it: a random head's first steps would push noise into the
    # encoder, so they train the head alone first (`fresh_head_warmup`)
    mlm.fresh_head = fresh
    tie_output_embeddings(mlm)
    return mlm


def pretrained_head_model(name_or_path: str, config) -> Optional[PreTrainedModel]:
    """The checkpoint as a masked-LM model when its masked-LM head was in it; else None."""
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(resolve_model_path(name_or_path), config=config,
                                                               output_loading_info=True)
    except (OSError, ValueError) as err:  # no weights for this class, or not reachable
        logger.info("no masked-LM head loaded from %s (%s); a fresh one is used", name_or_path, err)
        return None
    prefix = model.base_model_prefix
    missing_head = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    # a head whose decoder is tied needs no weights of its own; any other missing key means a
    # random head (the checkpoint was saved without one)
    missing_head = [k for k in missing_head if not k.endswith("decoder.weight") and "lm_head.decoder" not in k]
    return None if missing_head else model


def tie_output_embeddings(mlm: PreTrainedModel) -> None:
    """Point the output embeddings at the (shared) encoder's word embeddings, when the
    architecture ties them (all the supported encoders do by default)."""
    output, inputs = mlm.get_output_embeddings(), mlm.get_input_embeddings()
    if output is None or not getattr(mlm.config, "tie_word_embeddings", True):
        return
    if output.weight.shape == inputs.weight.shape:
        output.weight = inputs.weight
