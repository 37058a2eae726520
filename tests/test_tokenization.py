"""Tokenization through datasets.map: truncation, lengths, and the on-disk cache."""

import os

import pytest
from datasets import Dataset, load_dataset

from textransfer import ConfigError, ModelConfig
from textransfer.modeling.loading import load_model_config
from textransfer.data.tokenization import check_max_length, model_max_length, tokenize_dataset


@pytest.fixture
def text_split(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["text,labels"] + [f"\"{' '.join(['word'] * (i % 40 + 1))} number {i}\",{i % 2}" for i in range(50)]
    path.write_text("\n".join(rows) + "\n")
    return load_dataset("csv", data_files=str(path), cache_dir=str(tmp_path / "cache"))["train"]


def test_truncation_and_length_column(text_split, pad_tokenizer):
    out = tokenize_dataset(text_split, pad_tokenizer, max_length=16)
    assert "text" not in out.column_names
    assert max(out["length"]) == 16
    assert all(len(ids) == n for ids, n in zip(out["input_ids"], out["length"]))
    assert out["labels"] == text_split["labels"]


def test_second_run_reuses_the_cache(text_split, pad_tokenizer):
    first = tokenize_dataset(text_split, pad_tokenizer, max_length=16)
    files = [f["filename"] for f in first.cache_files]
    assert files and all(os.path.exists(f) for f in files)
    mtimes = [os.path.getmtime(f) for f in files]
    second = tokenize_dataset(text_split, pad_tokenizer, max_length=16)
    assert [f["filename"] for f in second.cache_files] == files
    assert [os.path.getmtime(f) for f in files] == mtimes
    other = tokenize_dataset(text_split, pad_tokenizer, max_length=8)
    assert [f["filename"] for f in other.cache_files] != files


def test_text_pairs_are_encoded_together(pad_tokenizer):
    ds = Dataset.from_dict({"text": ["a cat"], "text_pair": ["a dog"], "labels": [0]})
    out = tokenize_dataset(ds, pad_tokenizer, max_length=32)
    assert pad_tokenizer.decode(out["input_ids"][0]) == "[CLS] a cat [SEP] a dog [SEP]"
    assert out["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1]


def test_max_length_beyond_model_limit(pad_tokenizer, minilm_path):
    cfg = load_model_config(ModelConfig())
    assert model_max_length(pad_tokenizer, cfg) == 512
    check_max_length(512, pad_tokenizer, cfg)
    with pytest.raises(ConfigError, match=r"model.max_length: 513.*at most 512"):
        check_max_length(513, pad_tokenizer, cfg)
