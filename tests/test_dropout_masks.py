"""`numpy_dropout_masks`: nn.Dropout's masks drawn with NumPy in the training step, on a CPU.

The same dropout: the keep rate is the rounded 1 - p, kept values are scaled by its inverse (the
mean is kept), the gradient passes through the same mask. Masks follow torch's seed (and so a
resumed run: its checkpoint restores torch's RNG state). Only plain nn.Dropout modules, only in
the block, only in training mode; the training step really draws them, evaluation does not."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from conftest import token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling import dropout_masks
from textransfer.modeling.dropout_masks import draw_mask, keep_threshold, numpy_dropout_masks
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.trainer import StageTrainer


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_keep_rate_and_the_scale_give_the_inputs_mean(p):
    torch.manual_seed(0)
    mask = draw_mask(torch.Size([1000, 1000]), p)
    keep = keep_threshold(p) / 65536
    assert keep == pytest.approx(1 - p, abs=1 / 65536)
    kept = mask != 0
    # within 5 standard deviations of the binomial count
    assert abs(kept.float().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / mask.numel())
    assert torch.equal(mask[kept].unique(), torch.tensor([1 / keep], dtype=torch.float32))
    assert mask.double().mean().item() == pytest.approx(1.0, abs=5 * math.sqrt((1 - keep) / keep / mask.numel()))


def test_masks_follow_torchs_seed_and_draw_from_its_generator():
    torch.manual_seed(7)
    first = draw_mask(torch.Size([64, 48]), 0.1)
    after_first = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(draw_mask(torch.Size([64, 48]), 0.1), first)
    torch.manual_seed(8)
    assert not torch.equal(draw_mask(torch.Size([64, 48]), 0.1), first)
    torch.manual_seed(7)
    assert not torch.equal(torch.rand(1), after_first)  # the draw advanced torch's generator


def test_the_forward_and_the_gradient_use_one_mask_and_the_module_comes_back():
    dropout = torch.nn.Dropout(0.1).train()
    inputs = torch.randn(16, 9, 32, requires_grad=True)
    torch.manual_seed(3)
    with numpy_dropout_masks(dropout) as patched:
        output = dropout(inputs)
    assert patched == 1 and "forward" not in vars(dropout)
    torch.manual_seed(3)
    expected_mask = draw_mask(inputs.shape, 0.1)
    torch.testing.assert_close(output, inputs * expected_mask, atol=0, rtol=0)
    output.sum().backward()  # after the block: the backward needs no patch
    torch.testing.assert_close(inputs.grad, expected_mask, atol=0, rtol=0)
    # outside the block it is torch's dropout again: another mask from the same seed
    torch.manual_seed(3)
    assert not torch.equal(dropout(inputs) == 0, expected_mask == 0)


def test_only_plain_dropout_in_training_mode_and_nested_blocks_leave_it_to_the_outer():
    model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Dropout1d(0.2), torch.nn.AlphaDropout(0.2),
                                torch.nn.Dropout(0.0))
    with numpy_dropout_masks(model) as patched:
        assert patched == 2  # the two nn.Dropout; Dropout1d and AlphaDropout drop in other ways
        with numpy_dropout_masks(model) as inner:
            assert inner == 0
        assert "forward" in vars(model[0])  # the inner block did not take the outer's patch away
        inputs = torch.randn(4, 8)
        assert torch.equal(model[3](inputs), inputs)  # p = 0
        model.eval()
        assert torch.equal(model[0](inputs), inputs)  # evaluation: no dropout
    assert not any("forward" in vars(module) for module in model)
    with numpy_dropout_masks(model, enabled=False) as patched:
        assert patched == 0


def test_a_p_that_rounds_to_all_or_nothing_is_torchs(monkeypatch):
    drawn = []
    monkeypatch.setattr(dropout_masks, "draw_mask", lambda *a, **k: drawn.append(a) or draw_mask(*a, **k))
    everything = torch.nn.Dropout(1.0).train()
    with numpy_dropout_masks(everything):
        assert torch.equal(everything(torch.ones(3, 3)), torch.zeros(3, 3))
    assert drawn == []


def _bert(dropout=0.1):
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg)


def _train(tokenizer, **options):
    model = _bert()
    args = TrainingConfig(num_epochs=1, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0, **options)
    trainer = StageTrainer(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=3,
                           head_parameters=head_parameter_names(model))
    trainer.train(token_dataset(32, max_len=16))
    return trainer


def test_the_training_step_draws_them_and_repeats_under_its_seed(pad_tokenizer, monkeypatch):
    shapes = []
    original = dropout_masks.draw_mask
    monkeypatch.setattr(dropout_masks, "draw_mask", lambda shape, p: shapes.append(tuple(shape)) or original(shape, p))
    first = _train(pad_tokenizer)
    # 4 steps x (embeddings + 2 per layer x 2 layers + the classifier's + the last layer's attention
    # weights, which its first-token forward drops through the module, see first_token.py) = 28 masks
    assert len(shapes) == 4 * 7
    shapes.clear()
    first.evaluate(token_dataset(16, seed=1, max_len=16))
    assert shapes == []  # evaluation drops nothing
    again = _train(pad_tokenizer)
    torch_masks = _train(pad_tokenizer, numpy_dropout_masks=False)
    assert len(shapes) == 4 * 7  # the second run drew again; the third did not
    state, again_state, torch_state = (t.model.state_dict() for t in (first, again, torch_masks))
    assert all(torch.equal(value, again_state[name]) for name, value in state.items())
    assert not all(torch.equal(value, torch_state[name]) for name, value in state.items())


def test_a_model_that_checkpoints_activations_keeps_torchs_masks():
    """Checkpointing runs the forward again in the backward pass, outside the block: the masks
    must come from the generator state it restores, torch's."""
    model = _bert()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    with numpy_dropout_masks(model) as patched:
        assert patched == 0


def test_a_bf16_input_is_scaled_in_fp32_and_keeps_its_dtype():
    dropout = torch.nn.Dropout(0.1).train()
    inputs = torch.randn(64, 64).to(torch.bfloat16).requires_grad_(True)
    torch.manual_seed(4)
    with numpy_dropout_masks(dropout):
        output = dropout(inputs)
    torch.manual_seed(4)
    mask = draw_mask(inputs.shape, 0.1)
    assert output.dtype == torch.bfloat16
    assert torch.equal(output, (inputs.float() * mask).to(torch.bfloat16))
    # not the product with the mask rounded to bf16 first (1.1111 -> 1.1094 on every kept element)
    assert not torch.equal(output, inputs * mask.to(torch.bfloat16))
    output.float().sum().backward()
    assert inputs.grad.dtype == torch.bfloat16
