"""Head swap and model loading, for every supported architecture (tiny random configs)."""

import logging

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from conftest import random_batch, tiny_config, tiny_model
from textransfer import ConfigError, ModelConfig, load_for_classification, swap_head
from textransfer.modeling.loading import head_parameter_names, resolve_model_path


def _encoder_state(model):
    return {k: v.clone() for k, v in model.base_model.state_dict().items()}


def test_swap_head_keeps_encoder_and_sets_target_labels(model_type, tmp_path, capfd, caplog):
    source = tiny_model(model_type, num_labels=4)
    before = _encoder_state(source)
    old_head = {n: p.detach().clone() for n, p in source.named_parameters() if n in head_parameter_names(source)}

    caplog.set_level(logging.WARNING)
    target = swap_head(source, ["negative", "positive"], seed=1)

    # the encoder is carried over exactly
    after = target.base_model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # the head is new, sized for the target labels
    assert target.config.num_labels == 2
    assert target.config.id2label == {0: "negative", 1: "positive"}
    assert target.config.label2id == {"negative": 0, "positive": 1}
    logits = target(**random_batch()).logits
    assert logits.shape == (4, 2)
    new_head = dict(target.named_parameters())
    assert set(old_head) == set(head_parameter_names(target))
    assert any(old_head[n].shape != new_head[n].shape for n in old_head)

    # saved and reloaded with plain transformers: same labels, same outputs, no warnings
    target.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    target.eval(), reloaded.eval()
    batch = random_batch()
    batch.pop("labels")
    assert torch.allclose(target(**batch).logits, reloaded(**batch).logits)
    out = capfd.readouterr()
    for text in (out.out + out.err, caplog.text):
        assert "size mismatch" not in text and "were not initialized" not in text


def test_swap_head_with_same_label_count_gives_a_fresh_head(model_type):
    source = tiny_model(model_type, num_labels=2)
    target = swap_head(source, ["a", "b"], seed=123)
    names = head_parameter_names(source)
    src, tgt = dict(source.named_parameters()), dict(target.named_parameters())
    assert any(not torch.equal(src[n], tgt[n]) for n in names if src[n].dim() > 1)


def test_load_for_classification_from_checkpoint_with_other_head(model_type, tmp_path, capfd):
    """A checkpoint fine-tuned on 4 labels loads for 2 labels without size-mismatch noise."""
    four = tiny_model(model_type, num_labels=4, seed=3)
    four.save_pretrained(tmp_path / "four")
    model = load_for_classification(ModelConfig(name_or_path=str(tmp_path / "four"), max_length=32), ["x", "y"])
    assert model.config.id2label == {0: "x", 1: "y"}
    for k, v in four.base_model.state_dict().items():
        if k.startswith("pooler."):
            continue
        assert torch.equal(v, model.base_model.state_dict()[k]), k
    out = capfd.readouterr()
    assert "mismatch" not in (out.out + out.err).lower()


def test_load_for_classification_from_bare_encoder(model_type, tmp_path):
    torch.manual_seed(0)
    base = AutoModel.from_config(tiny_config(model_type))
    base.save_pretrained(tmp_path)
    model = load_for_classification(ModelConfig(name_or_path=str(tmp_path), max_length=32), ["a", "b", "c"])
    assert model.num_labels == 3
    sd = model.base_model.state_dict()
    for k, v in base.state_dict().items():
        if k in sd:
            assert torch.equal(v, sd[k]), k


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    AutoModel.from_config(tiny_config("bert")).save_pretrained(tmp_path)
    cfg_file = tmp_path / "config.json"
    # claim it is a DistilBERT: the weights' names do not fit and the error says so
    import json

    data = json.loads(cfg_file.read_text())
    data.update(model_type="distilbert", architectures=["DistilBertModel"], dim=32, n_layers=3, n_heads=2,
                hidden_dim=64)
    cfg_file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="lacks encoder weights"):
        load_for_classification(ModelConfig(name_or_path=str(tmp_path), max_length=32), ["a", "b"])


def test_packaged_minilm_id_resolves_to_the_package(minilm_path):
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("someone/else") == "someone/else"


def test_minilm_loads_with_new_head_and_no_warnings(minilm_path, capfd):
    model = load_for_classification(ModelConfig(), ["world", "sports", "business", "tech"])
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    assert model.config.id2label[3] == "tech"
    total = sum(p.numel() for p in model.base_model.parameters())
    assert 22_000_000 < total < 23_000_000
    out = capfd.readouterr()
    assert "were not initialized" not in out.out + out.err
