"""``model.keep_head``: a checkpoint that is already a classifier for the task's labels starts the
stage with its own trained head (sequential transfer between tasks that share labels)."""

import json
from pathlib import Path

import pandas
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import textransfer
from conftest import random_batch, tiny_config, tiny_model
from textransfer import ConfigError, ModelConfig, RunConfig, load_for_classification, run_transfer
from textransfer.modeling.loading import head_parameter_names

LABELS = ["negative", "positive"]
SAMPLE_REVIEWS = Path(textransfer.__file__).parent / "sample_data" / "reviews.csv"


def _logits(model, tokenizer, texts):
    return model(**tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits


def _classifier(model_type, tmp_path, labels=LABELS, seed=5):
    """A saved classifier whose head is not what a fresh initialisation would give."""
    model = tiny_model(model_type, num_labels=len(labels), seed=seed)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {n: i for i, n in enumerate(labels)}
    with torch.no_grad():
        for name in head_parameter_names(model):
            model.get_parameter(name).normal_(0, 1.0)
    model.save_pretrained(tmp_path / "classifier")
    return model, ModelConfig(name_or_path=str(tmp_path / "classifier"), max_length=32)


def test_keep_head_loads_the_checkpoint_head_and_a_fresh_head_otherwise(model_type, tmp_path):
    saved, cfg = _classifier(model_type, tmp_path)
    kept = load_for_classification(ModelConfig(**{**vars(cfg), "keep_head": True}), LABELS)
    fresh = load_for_classification(cfg, LABELS)
    saved_params, kept_params, fresh_params = (dict(m.named_parameters()) for m in (saved, kept, fresh))
    assert kept_params.keys() == saved_params.keys()
    for name in saved_params:  # every weight, head included
        assert torch.equal(saved_params[name], kept_params[name]), name
    head = [n for n in head_parameter_names(saved) if saved_params[n].dim() > 1]
    assert head and all(not torch.equal(saved_params[n], fresh_params[n]) for n in head)
    batch = random_batch()
    batch.pop("labels")
    saved.eval(), kept.eval()
    assert torch.allclose(saved(**batch).logits, kept(**batch).logits)


def test_keep_head_refuses_other_labels_naming_both(tmp_path):
    _, cfg = _classifier("bert", tmp_path, labels=["neg", "pos"])
    with pytest.raises(ConfigError) as err:
        load_for_classification(ModelConfig(**{**vars(cfg), "keep_head": True}), LABELS)
    message = str(err.value)
    assert "['neg', 'pos']" in message and "['negative', 'positive']" in message and "keep_head: false" in message


def test_keep_head_refuses_a_checkpoint_without_a_head(tmp_path):
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config("bert")).save_pretrained(tmp_path / "encoder")
    cfg = ModelConfig(name_or_path=str(tmp_path / "encoder"), max_length=32, keep_head=True)
    with pytest.raises(ConfigError, match="not a sequence classifier"):
        load_for_classification(cfg, LABELS)


def test_a_run_with_keep_head_starts_from_the_checkpoint_predictions(tiny_bert_dir, tmp_path):
    """A target run with a vanishing learning rate predicts what the checkpoint predicts: the stage
    started from the checkpoint's head, not from a new one."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    model.config.id2label, model.config.label2id = dict(enumerate(LABELS)), {n: i for i, n in enumerate(LABELS)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = pandas.read_csv(SAMPLE_REVIEWS)["text"].tolist()
    model.eval()
    with torch.no_grad():  # a head that splits the reviews in two: the median text on the boundary
        model.classifier.weight.normal_(0, 5.0)
        margin = _logits(model, tokenizer, texts).diff(dim=-1).squeeze(-1)
        model.classifier.bias.copy_(torch.tensor([0.0, -margin.median().item()]))
    model.save_pretrained(tmp_path / "classifier")
    tokenizer.save_pretrained(tmp_path / "classifier")
    cfg = RunConfig.from_dict({
        "model": {"name_or_path": str(tmp_path / "classifier"), "max_length": 32, "keep_head": True},
        "target": {"name": "reviews", "data_files": "textransfer:sample_data/reviews.csv", "label_names": LABELS,
                   "validation_fraction": 0.15, "test_fraction": 0.3},
        "target_training": {"max_steps": 1, "learning_rate": 1e-12, "eval_every_epoch": False,
                            "load_best_model_at_end": False},
        "noise_resamples": 50, "stage_cache": False})
    run_transfer(cfg, output_dir=str(tmp_path / "run"), overwrite=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "test_predictions.jsonl").read_text().splitlines()]
    with torch.no_grad():
        expected = [LABELS[i] for i in _logits(model, tokenizer, [r["text"] for r in rows]).argmax(-1).tolist()]
    assert len(set(expected)) == 2, "a checkpoint that predicts one class would not tell the heads apart"
    for arm in ("transfer", "baseline"):  # the baseline starts from the checkpoint too
        assert [r[arm]["label"] for r in rows] == expected, arm


def test_keep_head_from_yaml_and_the_command_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {name_or_path: some/classifier, keep_head: true}\n"
                      "target: {name: t, data_files: t.csv, label_names: [negative, positive]}\n")
    assert RunConfig.from_yaml(recipe).model.keep_head is True
    assert RunConfig.from_yaml(recipe, overrides=["model.keep_head=false"]).model.keep_head is False
