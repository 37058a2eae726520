"""Frozen features of texts: a model's mean-pooled last hidden states (and, when it has a
classification head, that head's probabilities), computed once and cached on disk.

Why mean pooling: it is defined alike for every architecture (the heads pool differently:
BERT's pooler, RoBERTa's first token), it is what sentence encoders such as all-MiniLM-L6-v2
were trained to produce, and it is the feature LogME was validated with on text (Bassignana et
al., 2022). The pooling is the package's own (``strategies.base.masked_mean``).

The cache key is a hash of the model's identity (a Hub id and revision, or a local folder's path
with the size and modification time of its weights, so a retrained folder is not mistaken for the
old one), the texts themselves, and ``max_length``: a second ``rank`` over the same candidates and
data reads ``<cache>/<key>.npz`` instead of running the model.

```python
from textransfer.inference.embeddings import FeatureCache, embed, resolve_encoder
model = resolve_encoder("sentence-transformers/all-MiniLM-L6-v2", max_length=64)
out = embed(model, ["A wonderful little gadget.", "Broke after a day."], cache=FeatureCache("runs/rank/features"))
print(out.features.shape, out.cached)
```
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..data.tokenization import model_max_length
from ..errors import ConfigError
from ..files import resolve_model
from ..modeling.loading import quiet_transformers, resolve_model_path
from ..strategies.base import masked_mean

__all__ = ["EncodedTexts", "FeatureCache", "FeatureModel", "embed", "compute_features", "resolve_encoder"]

# bump when the features change meaning (pooling, dtype): old cache files are then never read
FEATURES_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


@dataclass
class FeatureModel:
    """A model to take features from, resolved and checked.

    Args:
        name (`str`): as the user gave it (a Hub id, a model folder or a run directory).
        path (`str`): what ``from_pretrained`` loads (a run directory's ``model/``, the packaged
            copy of a Hub id).
        identity (`str`): what the feature cache keys on.
        has_head (`bool`): its config names a sequence-classification architecture.
        head_labels (`list[str]`, *optional*): that head's labels, in id order.
        max_length (`int`): tokens kept per text.
        revision (`str`, *optional*): Hub revision.
    """

    name: str
    path: str
    identity: str
    has_head: bool
    head_labels: Optional[List[str]]
    max_length: int
    revision: Optional[str] = None


@dataclass
class EncodedTexts:
    """Features of texts, in the texts' order.

    Args:
        features (`np.ndarray` of shape `(N, H)`): mean-pooled last hidden states (float32).
        probs (`np.ndarray` of shape `(N, C)`, *optional*): the classification head's softmax.
        cached (`bool`): read from the cache rather than computed.
    """

    features: np.ndarray
    probs: Optional[np.ndarray]
    cached: bool = False


def local_identity(folder: str) -> str:
    """A local model's path plus each weight and config file's size and modification time."""
    root = Path(folder).resolve()
    stamps = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir()
                    if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return json.dumps([str(root), stamps])


def resolve_encoder(model: str, max_length: int, revision: Optional[str] = None,
                    option: str = "--candidates") -> FeatureModel:
    """Check that ``model`` (a run directory, a model folder or a Hub id) loads, and say whether it
    has a classification head; nothing but its config is read. ``max_length`` is capped at what
    the model accepts."""
    from transformers import AutoConfig, AutoTokenizer

    where = resolve_model(model)
    path = resolve_model_path(where.path)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(path, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, use_fast=True)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{option} '{model}': cannot load it as a model ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Pass a run directory, a saved model folder, a Hub id "
            f"that is in the local cache (or reachable), or a task YAML file (.yaml) holding one source task."
        ) from None
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    labels = [str(config.id2label[i]) for i in range(config.num_labels)] if has_head else None
    identity = local_identity(path) if Path(path).is_dir() else json.dumps([path, revision])
    length = min(int(max_length), model_max_length(tokenizer, config))
    return FeatureModel(name=model, path=path, identity=identity, has_head=has_head, head_labels=labels,
                        max_length=length, revision=revision)


class FeatureCache:
    """``.npz`` files of features under ``root``, one per (model, texts, ``max_length``)."""

    def __init__(self, root):
        self.root = Path(root)

    @staticmethod
    def key(model: FeatureModel, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> str:
        digest = hashlib.sha256()
        for part in (json.dumps([FEATURES_VERSION, model.identity, model.max_length, pairs is not None]),
                     *texts, *(pairs or ())):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")  # a separator, so ["ab", "c"] and ["a", "bc"] differ
        return digest.hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> Optional[EncodedTexts]:
        path = self.path(key)
        if not path.is_file():
            return None
        with np.load(path) as saved:
            probs = saved["probs"] if "probs" in saved.files else None
            return EncodedTexts(saved["features"], probs, cached=True)

    def save(self, key: str, encoded: EncodedTexts) -> None:
        """Through a temp file and rename: a killed run leaves no half file that would be trusted."""
        self.root.mkdir(parents=True, exist_ok=True)
        arrays = {"features": encoded.features}
        if encoded.probs is not None:
            arrays["probs"] = encoded.probs
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_features(model: FeatureModel, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
                     batch_size: int = 64) -> EncodedTexts:
    """Run the frozen model over ``texts`` (longest first, so batches pad little), in eval mode."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision, use_fast=True)
        cls = AutoModelForSequenceClassification if model.has_head else AutoModel
        network = cls.from_pretrained(model.path, revision=model.revision).to(_device()).eval()
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                        max_length=model.max_length)
    order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
    features = np.empty((len(texts), network.config.hidden_size), dtype=np.float32)
    probs = np.empty((len(texts), network.config.num_labels), dtype=np.float32) if model.has_head else None
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in encoded.items()}, return_tensors="pt")
            batch = {k: v.to(network.device) for k, v in batch.items()}
            out = network(**batch, output_hidden_states=True)
            features[rows] = masked_mean(out.hidden_states[-1], batch["attention_mask"]).float().cpu().numpy()
            if probs is not None:
                probs[rows] = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
    return EncodedTexts(features, probs)


def embed(model: FeatureModel, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
          cache: Optional[FeatureCache] = None, batch_size: int = 64) -> EncodedTexts:
    """Features of ``texts`` (and ``pairs``, the second text of a pair task) from ``model``, read
    from ``cache`` when these texts were encoded by this model at this length before.

    Args:
        model (`FeatureModel`): from :func:`resolve_encoder`.
        texts (`list[str]`): the texts (none empty).
        pairs (`list[str]`, *optional*): second texts of a sentence-pair task.
        cache (`FeatureCache`, *optional*): where features are kept between calls.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass.

    Returns:
        `EncodedTexts`.
    """
    key = FeatureCache.key(model, texts, pairs) if cache is not None else None
    if cache is not None and (hit := cache.load(key)) is not None:
        return hit
    encoded = compute_features(model, texts, pairs, batch_size)
    if cache is not None:
        cache.save(key, encoded)
    return encoded
