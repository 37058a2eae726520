"""Layer-wise freezing: frozen parameters stay bit-identical through real training."""

import pytest
import torch

from conftest import token_dataset, tiny_model
from textransfer import ConfigError, TrainingConfig, freeze, make_accelerator
from textransfer.modeling.freezing import encoder_layers, parameter_report
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.trainer import StageTrainer


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train(model, tokenizer, steps_epochs=2):
    args = TrainingConfig(num_epochs=steps_epochs, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0,
                          eval_every_epoch=False)
    trainer = StageTrainer(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=0,
                           head_parameters=head_parameter_names(model))
    trainer.train(token_dataset(32))
    return trainer.model


def test_frozen_parameters_unchanged_and_trainable_ones_moved(model_type, pad_tokenizer):
    model = tiny_model(model_type, num_labels=2)
    report = freeze(model, embeddings=True, layers=2)
    before = _snapshot(model)
    frozen = set(report.frozen)
    # the embeddings and the bottom two blocks, nothing else
    layers = encoder_layers(model)
    expected = {n for n, p in model.named_parameters()
                if any(p is q for q in list(model.base_model.embeddings.parameters())
                       + list(layers[0].parameters()) + list(layers[1].parameters()))}
    assert frozen == expected
    assert not any(n.startswith(tuple(head_parameter_names(model))) for n in frozen)

    trained = _train(model, pad_tokenizer)
    after = dict(trained.named_parameters())
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
        assert after[name].grad is None
    moved = [n for n in before if n not in frozen and not torch.equal(before[n], after[n])]
    trainable = [n for n in before if n not in frozen]
    # every trainable tensor that took part in the forward pass moved
    unmoved = sorted(set(trainable) - set(moved))
    assert not unmoved, f"trainable but unchanged: {unmoved}"


def test_freeze_by_pattern_and_counts(model_type):
    model = tiny_model(model_type)
    total = sum(p.numel() for p in model.parameters())
    report = freeze(model, patterns=[r"LayerNorm|layer_norm|layernorm"])
    assert report.frozen and all(("norm" in n.lower()) for n in report.frozen)
    frozen_count = sum(p.numel() for n, p in model.named_parameters() if n in set(report.frozen))
    assert report.total == total
    assert report.trainable == total - frozen_count
    assert parameter_report(model).trainable == report.trainable
    d = report.as_dict()
    assert d["trainable_parameters"] + frozen_count == d["total_parameters"]


def test_freeze_word_embeddings_only(model_type):
    model = tiny_model(model_type)
    report = freeze(model, word_embeddings=True)
    assert report.frozen == [n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight]


def test_freeze_errors_name_the_option():
    model = tiny_model("bert")
    with pytest.raises(ConfigError, match="freeze_layers: 9.*at most 3"):
        freeze(model, layers=9)
    with pytest.raises(ConfigError, match="freeze_patterns.*matches no parameter"):
        freeze(model, patterns=["no_such_param"])
    with pytest.raises(ConfigError, match="not a valid regex"):
        freeze(model, patterns=["("])


def test_everything_frozen_is_refused(pad_tokenizer):
    model = tiny_model("bert")
    freeze(model, patterns=[".*"])
    with pytest.raises(ValueError, match="every parameter is frozen"):
        _train(model, pad_tokenizer)
