"""`onednn_linear`: nn.Linear's fp32 products on oneDNN in the training step, on a CPU.

The same outputs and gradients as nn.Linear to float rounding (2-D, 3-D and strided inputs, with
and without a bias, frozen weights or inputs); only plain nn.Linear, only in the block, and
autocast or other dtypes keep torch's products. The training step really runs them and trains the
same model as torch's products."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from conftest import token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling import onednn_linear
from textransfer.modeling.loading import head_parameter_names
from textransfer.modeling.onednn_linear import onednn_available, onednn_linear_layers
from textransfer.training.trainer import StageTrainer



def test_this_torch_has_onednn():
    assert onednn_available()  # torch's CPU wheels ship it; without it the option quietly does nothing


def _counted(monkeypatch):
    """The oneDNN products run, as (rows, out features) pairs."""
    calls, original = [], onednn_linear._onednn_product
    monkeypatch.setattr(onednn_linear, "_onednn_product", lambda rows, weight, bias:
                        calls.append((rows.shape[0], weight.shape[0])) or original(rows, weight, bias))
    return calls


def _outputs_and_grads(layer, inputs, patched):
    layer.zero_grad(set_to_none=True)
    inputs = inputs.detach().requires_grad_(inputs.requires_grad)
    with onednn_linear_layers(layer, enabled=patched) as count:
        output = layer(inputs)
    assert count == int(patched)
    output.backward(torch.linspace(-1, 1, output.numel()).view_as(output))  # the backward runs after the block
    return output.detach(), [None if t is None else t.clone() for t in (inputs.grad, layer.weight.grad,
                                                                         getattr(layer.bias, "grad", None))]


@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24), "strided"])
@pytest.mark.parametrize("bias", [True, False])
def test_outputs_and_every_gradient_match_nn_linear(shape, bias, monkeypatch):
    calls = _counted(monkeypatch)
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    inputs = torch.randn(4, 6, 24)[:, :1] if shape == "strided" else torch.randn(*shape)  # [:, :1]: not contiguous
    inputs.requires_grad_(True)
    want, want_grads = _outputs_and_grads(layer, inputs, patched=False)
    assert calls == []
    got, grads = _outputs_and_grads(layer, inputs, patched=True)
    rows = inputs.numel() // 24
    assert calls == [(rows, 40), (rows, 24)]  # the forward product, then the input gradient
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(grads, want_grads):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_frozen_weights_or_inputs_get_no_gradient_and_skip_its_product(monkeypatch):
    calls = _counted(monkeypatch)
    layer = torch.nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    inputs = torch.randn(5, 8, requires_grad=True)
    _, (input_grad, weight_grad, bias_grad) = _outputs_and_grads(layer, inputs, patched=True)
    assert input_grad is not None and weight_grad is None and bias_grad is not None
    layer.weight.requires_grad_(True)
    calls.clear()
    _, (input_grad, weight_grad, _) = _outputs_and_grads(layer, torch.randn(5, 8), patched=True)
    assert input_grad is None and weight_grad is not None
    assert calls == [(5, 4)]  # no input gradient wanted: no product for it


def test_autocast_other_dtypes_and_subclasses_keep_torchs_products(monkeypatch):
    calls = _counted(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.modules.linear.NonDynamicallyQuantizableLinear(8, 8))
    with onednn_linear_layers(model) as patched:
        assert patched == 1  # a subclass may compute something else
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model[0](torch.randn(2, 8)).dtype == torch.bfloat16  # autocast's product, as nn.Linear's
        model.double()
        assert model[0](torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64
        with onednn_linear_layers(model) as inner:
            assert inner == 0  # left to the outer block
        assert "forward" in vars(model[0])
    assert calls == [] and not any("forward" in vars(module) for module in model)
    monkeypatch.setattr(onednn_linear, "onednn_available", lambda: False)
    with onednn_linear_layers(model) as patched:
        assert patched == 0


def _bert():
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg)


def test_the_training_step_runs_them_and_trains_the_same_model(pad_tokenizer, monkeypatch):
    calls = _counted(monkeypatch)
    train, dev = token_dataset(32, max_len=16), token_dataset(16, seed=1, max_len=16)
    runs = {}
    for on in (True, False):
        model = _bert()
        args = TrainingConfig(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0, onednn_linear=on)
        trainer = StageTrainer(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], seed=3,
                               head_parameters=head_parameter_names(model))
        trainer.train(train)
        runs[on] = (trainer, len(calls))
    onednn, onednn_calls = runs[True]
    mkl, after_mkl = runs[False]
    # 8 steps x (2 layers x 6 linears, less the last layer's key and value, whose weights its
    # first-token forward multiplies directly (first_token.py), + pooler + classifier) forward
    # products, and as many input gradients (every linear's input needs one: the word embeddings train)
    assert onednn_calls == 8 * 12 * 2 and after_mkl == onednn_calls
    mkl_state = mkl.model.state_dict()
    for name, value in onednn.model.state_dict().items():
        torch.testing.assert_close(value, mkl_state[name], atol=1e-5, rtol=1e-4, msg=name)
    assert onednn.evaluate(dev)["predictions"] == mkl.evaluate(dev)["predictions"]


def test_a_model_that_checkpoints_activations_keeps_torchs_products():
    model = _bert()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    with onednn_linear_layers(model) as patched:
        assert patched == 0
