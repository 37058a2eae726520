"""`first_token_last_layer`: the last encoder layer computed for the first token only where only
the logits are read. Same logits and gradients as the full layer on padded batches; models it
cannot serve run in full; strategies that read hidden states see every position."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import ARCHITECTURES, random_batch, tiny_config, tiny_model, token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling.first_token import SUPPORTED_MODEL_TYPES, first_token_last_layer
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.trainer import StageTrainer

SUPPORTED = [t for t in ARCHITECTURES if t in SUPPORTED_MODEL_TYPES]
UNSUPPORTED = [t for t in ARCHITECTURES if t not in SUPPORTED_MODEL_TYPES]


def _padded_batch(num_labels=2):
    batch = random_batch(batch=4, length=14, num_labels=num_labels)
    batch["attention_mask"][1, 9:] = 0
    batch["attention_mask"][2, 3:] = 0
    return batch


def _model(model_type, attention="sdpa", dropout=None, seed=0, num_labels=2):
    cfg = tiny_config(model_type, num_labels)
    if dropout is not None:
        cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = dropout
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation=attention)


def _loss_and_grads(model, batch, first_token: bool):
    model.zero_grad(set_to_none=True)
    with first_token_last_layer(model, enabled=first_token) as on:
        out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return on, out.logits.detach(), grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", SUPPORTED)
def test_logits_and_every_gradient_match_the_full_layer_on_padded_batches(model_type, attention):
    """Training mode without dropout (dropout is the one difference: fewer masks drawn), three
    classes, rows padded at different lengths."""
    model = _model(model_type, attention, dropout=0.0, num_labels=3).train()
    batch = _padded_batch(num_labels=3)
    full_on, full_logits, full_grads = _loss_and_grads(model, batch, first_token=False)
    on, logits, grads = _loss_and_grads(model, batch, first_token=True)
    assert on and not full_on
    torch.testing.assert_close(logits, full_logits, atol=1e-6, rtol=1e-5)
    assert grads.keys() == full_grads.keys()
    # every parameter of the last layer still gets a gradient, the same one
    last = f"{model.base_model_prefix}.encoder.layer.{model.config.num_hidden_layers - 1}."
    assert sum(name.startswith(last) for name in grads) == sum(name.startswith(last) for name, _ in
                                                               model.named_parameters())
    for name in full_grads:
        torch.testing.assert_close(grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


class _FixedMask(torch.nn.Module):
    """Dropout with a mask fixed in advance, so the regrouped attention and the textbook one can be
    held against each other under dropout."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, weights):
        return weights * self.mask


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_first_querys_attention_is_the_textbook_one_under_dropout_and_padding(attention):
    """Keys and values projected for every token, scores scaled and masked, softmax, dropout,
    weighted values: what `_first_query_context` computes without the key and value projections,
    with the mask either kernel passes (boolean for sdpa, additive for eager) and with dropout
    (the weights then no longer sum to 1, which the value bias must follow)."""
    from textransfer.modeling.first_token import _first_query_context

    model = _model("bert", attention).train()
    layer, seen = model.base_model.encoder.layer[-1], {}
    layer.register_forward_pre_hook(lambda module, args, kwargs: seen.update(mask=args[1] if len(args) > 1 else
                                                                            kwargs["attention_mask"]), with_kwargs=True)
    batch = _padded_batch()
    with torch.no_grad():
        model(**batch)
    attn = layer.attention.self
    with torch.no_grad():  # biases start at zero: give them values the regrouping must carry
        for linear in (attn.query, attn.key, attn.value):
            linear.bias.normal_()
    hidden = torch.randn(4, 14, model.config.hidden_size)
    heads, size = attn.num_attention_heads, attn.attention_head_size
    mask = seen["mask"][:, :, :1]
    torch.manual_seed(1)
    attn.dropout = _FixedMask((torch.rand(4, heads, 14) > 0.3).float() / 0.7)
    with torch.no_grad():
        context = _first_query_context(attn, hidden[:, :1], hidden, mask)
        query = attn.query(hidden[:, :1]).view(4, 1, heads, size).transpose(1, 2)
        key = attn.key(hidden).view(4, 14, heads, size).transpose(1, 2)
        value = attn.value(hidden).view(4, 14, heads, size).transpose(1, 2)
        scores = query @ key.transpose(2, 3) * attn.scaling
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1) * attn.dropout.mask.unsqueeze(2)
        expected = (weights @ value).transpose(1, 2).reshape(4, 1, heads * size)
    assert (mask.dtype == torch.bool) == (attention == "sdpa")
    torch.testing.assert_close(context, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(weights.sum(-1), torch.ones(4, heads, 1))  # dropout really applied


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_the_last_layer_really_runs_one_position_and_is_restored(model_type):
    model = _model(model_type).eval()
    layer = model.base_model.encoder.layer[-1]
    shapes = []
    layer.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    keys = list(model.state_dict())
    batch = _padded_batch()
    with torch.no_grad():
        with first_token_last_layer(model):
            with first_token_last_layer(model) as nested:  # a block inside another: one patch, the outer's
                model(**batch)
            model(**batch)
        model(**batch)
    assert nested is True
    assert shapes == [(4, 1, 32), (4, 1, 32), (4, 14, 32)]
    assert "forward" not in vars(layer) and list(model.state_dict()) == keys


@pytest.mark.parametrize("model_type", UNSUPPORTED)
def test_other_architectures_run_in_full(model_type):
    model = tiny_model(model_type).eval()
    batch = _padded_batch()
    with torch.no_grad():
        reference = model(**batch).logits
        with first_token_last_layer(model) as on:
            logits = model(**batch).logits
    assert on is False
    torch.testing.assert_close(logits, reference, atol=0, rtol=0)


def test_gradient_checkpointing_a_decoder_or_a_wrapper_turn_it_off():
    checkpointed = _model("bert")
    (getattr(checkpointed, "activation_checkpointing_enable", None) or checkpointed.gradient_checkpointing_enable)()
    with first_token_last_layer(checkpointed) as on:
        assert on is False
    wrapper = torch.nn.Sequential(_model("bert"))  # not a *ForSequenceClassification: its head is unknown
    wrapper.config = wrapper[0].config
    with first_token_last_layer(wrapper) as on:
        assert on is False
    decoder = _model("bert")
    decoder.config.is_decoder = True
    with first_token_last_layer(decoder) as on:
        assert on is False
    with first_token_last_layer(_model("bert"), enabled=False) as on:
        assert on is False


def _trainer(model, tokenizer, trainer_class=StageTrainer, head_parameters=None, **kw):
    args = TrainingConfig(**{**dict(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0), **kw})
    heads = head_parameter_names(model) if head_parameters is None else head_parameters
    return trainer_class(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=3, head_parameters=heads)


def _last_layer_lengths(model):
    lengths = []
    model.base_model.encoder.layer[-1].register_forward_hook(
        lambda module, args, output: lengths.append(output.shape[1]))
    return lengths


def test_training_with_it_does_the_full_layers_arithmetic(pad_tokenizer):
    """Without dropout, a stage trained with the default (first token) and one with the option off
    end with the same weights and the same validation predictions; the hooks show which ran."""
    train, dev = token_dataset(40, max_len=20), token_dataset(16, seed=1, max_len=20)
    runs = {}
    for first_token in (True, False):
        model = _model("bert", dropout=0.0)
        lengths = _last_layer_lengths(model)
        trainer = _trainer(model, pad_tokenizer, first_token_last_layer=first_token)
        result = trainer.train(train, dev)
        runs[first_token] = (trainer, result, trainer.evaluate(dev), lengths)
    (fast, fast_result, fast_eval, fast_lengths), (full, full_result, full_eval, full_lengths) = runs[True], runs[False]
    assert set(fast_lengths) == {1} and min(full_lengths) > 1
    assert fast_result.history[-1]["train_loss"] == pytest.approx(full_result.history[-1]["train_loss"], abs=1e-5)
    full_state = full.model.state_dict()
    for name, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, full_state[name], atol=1e-5, rtol=1e-4, msg=name)
    assert fast_eval["predictions"] == full_eval["predictions"]
    torch.testing.assert_close(torch.tensor(fast_eval["scores"]), torch.tensor(full_eval["scores"]), atol=1e-5, rtol=0)


def test_compiled_training_keeps_the_full_layer(pad_tokenizer):
    trainer = _trainer(_model("bert"), pad_tokenizer, torch_compile=True)
    with trainer.logits_only(trainer.model) as on:
        assert on is False
    with _trainer(_model("bert"), pad_tokenizer).logits_only(_model("bert")) as on:
        assert on is True


def test_strategies_that_read_hidden_states_see_every_position(pad_tokenizer):
    """DANN's trainer reads the encoder's hidden states in its loss: the last layer runs in full
    there."""
    from textransfer.config.strategies import DANNConfig
    from textransfer.strategies.adaptation import AdaptationTrainer
    from textransfer.strategies.dann import DANNModel

    model = _model("bert")
    lengths = _last_layer_lengths(model)
    wrapped = DANNModel(model, DANNConfig())
    trainer = _trainer(wrapped, pad_tokenizer, trainer_class=AdaptationTrainer, head_parameters=[], num_epochs=1)
    train = token_dataset(16, max_len=20)
    trainer.train(train, aux_ds=token_dataset(16, seed=2, max_len=20).remove_columns("labels"))
    assert lengths and min(lengths) > 1


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_predict_and_the_onnx_export_give_the_full_models_logits(model_type, minilm_path, tmp_path, monkeypatch):
    """The torch backend runs the last layer for one position, the ONNX export is traced that way
    (not remade by the dynamo fallback), and both give the full model's logits on padded rows."""
    import numpy as np
    from test_onnx import tiny_folder
    from textransfer.inference import backends

    folder = tiny_folder(model_type, minilm_path, tmp_path / model_type)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["a sentence much longer than the other two, so they are padded", "short", "a bit longer"],
                      padding=True, return_tensors="np")
    with torch.no_grad():
        full = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    lengths = _last_layer_lengths(model)
    torch_logits = backends.TorchBackend(model).logits(dict(batch))
    assert lengths == [1]
    np.testing.assert_allclose(torch_logits, full, atol=1e-5, rtol=0)
    path = tmp_path / "model.onnx"
    monkeypatch.setattr(backends, "dynamo_export", lambda *a, **k: pytest.fail("the traced export was off"))
    backends.export_onnx(model, tokenizer, path)
    session = backends.OnnxBackend(backends.make_session(backends.import_onnxruntime(), path, threads=1), path)
    np.testing.assert_allclose(session.logits({k: batch[k].astype(np.int64) for k in session.inputs}), full,
                               atol=1e-5, rtol=0)
