"""LP-FT (``head_warmup_steps`` / ``head_warmup_epochs``): the encoder is bit-identical through the
warm-up, weight decay included, the head trains during it, everything trains after it; with a
strategy's wrapper module; and a run stopped mid-warm-up resumes to the uninterrupted weights."""

import os
import signal

import pytest
import torch

from conftest import tiny_model, token_dataset
from textransfer import ConfigError, TrainingConfig
from textransfer.modeling.layerwise import HeadWarmup
from textransfer.modeling.loading import head_parameter_names
from textransfer.strategies.base import wrapping_trainer
from textransfer.strategies.joint import JointModel, JointTrainer
from textransfer.training.trainer import StageTrainer, make_accelerator

# 64 examples in batches of 8: 8 optimiser steps an epoch
EXAMPLES, BATCH = 64, 8
STEPS_PER_EPOCH = EXAMPLES // BATCH


class SnapshotTrainer(StageTrainer):
    """Keeps a copy of every parameter before each optimiser step (``on_step``), by step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.snapshots = {}

    def on_step(self, step, total_steps):
        self.snapshots[step] = {n: p.detach().clone() for n, p in self.model.named_parameters()}


def _args(**kw):
    # weight decay well above 0: a decayed encoder would move even without a gradient
    defaults = dict(num_epochs=2, batch_size=BATCH, learning_rate=5e-3, warmup_ratio=0.0, weight_decay=0.1,
                    eval_every_epoch=False)
    defaults.update(kw)
    return TrainingConfig(**defaults)


def _encoder_and_head(names, heads):
    encoder = [n for n in names if n not in heads]
    assert encoder and len(encoder) < len(names)
    return encoder, [n for n in names if n in heads]


def _check_phases(snapshots, final, heads, warmup_steps):
    """Encoder bit-identical from step 0 to the warm-up's end; the head moved in it; the encoder moved after."""
    start, end = snapshots[0], snapshots[warmup_steps]
    encoder, head = _encoder_and_head(list(start), heads)
    changed = [n for n in encoder if not torch.equal(start[n], end[n])]
    assert not changed, f"encoder parameters moved during the warm-up: {changed[:5]}"
    assert any(not torch.equal(start[n], end[n]) for n in head), "the head did not train during the warm-up"
    # one step later the encoder trains
    after = snapshots[warmup_steps + 1]
    assert any(not torch.equal(end[n], after[n]) for n in encoder)
    assert sum(not torch.equal(end[n], final[n]) for n in encoder) > len(encoder) // 2


@pytest.mark.parametrize("fused", [True, False])
def test_encoder_bit_identical_through_step_warmup_then_moves(pad_tokenizer, monkeypatch, fused):
    model = tiny_model("bert")
    heads = head_parameter_names(model)
    trainer = SnapshotTrainer(model, pad_tokenizer, _args(head_warmup_steps=5), make_accelerator(), ["accuracy"],
                              head_parameters=heads)
    created = []

    def optimizer():  # torch's AdamW, fused or not: both must skip a parameter without a gradient
        opt = torch.optim.AdamW(trainer.parameter_groups(), lr=trainer.args.learning_rate, fused=fused)
        created.append(opt)
        return opt

    monkeypatch.setattr(trainer, "create_optimizer", optimizer)
    result = trainer.train(token_dataset(EXAMPLES))
    assert created and created[0].defaults["fused"] is fused
    final = {n: p.detach() for n, p in trainer.model.named_parameters()}
    _check_phases(trainer.snapshots, final, set(heads), 5)
    # BERT's pretrained pooler is not the head: it stays frozen with the encoder
    assert "bert.pooler.dense.weight" not in heads
    assert [h["head_warmup_steps"] for h in result.history] == [5, 5]


def test_encoder_bit_identical_through_epoch_warmup(pad_tokenizer):
    model = tiny_model("distilbert")
    heads = head_parameter_names(model)
    trainer = SnapshotTrainer(model, pad_tokenizer, _args(num_epochs=3, head_warmup_epochs=1), make_accelerator(),
                              ["accuracy"], head_parameters=heads)
    result = trainer.train(token_dataset(EXAMPLES))
    final = {n: p.detach() for n, p in trainer.model.named_parameters()}
    _check_phases(trainer.snapshots, final, set(heads), STEPS_PER_EPOCH)
    assert [h["head_warmup_steps"] for h in result.history] == [STEPS_PER_EPOCH] * 3


def test_head_warmup_mask_phases():
    model = tiny_model("roberta")
    heads = head_parameter_names(model)
    by_steps = HeadWarmup(model, heads, steps=3)
    assert [by_steps.active(s, 0) for s in range(5)] == [True, True, True, False, False]
    by_epochs = HeadWarmup(model, heads, epochs=2)
    assert [by_epochs.active(10, e) for e in range(3)] == [True, True, False]
    assert by_epochs.length(7) == 14 and by_steps.length(7) == 3
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    dropped = by_steps.mask_gradients(model.parameters(), 2, 0)
    kept = {n for n, p in model.named_parameters() if p.grad is not None}
    assert kept == set(heads) and len(dropped) == len(list(model.parameters())) - len(heads)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert by_steps.mask_gradients(model.parameters(), 3, 0) == []  # after the warm-up nothing is dropped


def test_warmup_with_a_wrapper_module_trains_both_heads_only(pad_tokenizer):
    """joint: the wrapper re-roots the target head's names (``model.``) and adds the source head."""
    model = tiny_model("electra")
    factory = wrapping_trainer(lambda m: JointModel(m, ["x", "y", "z"], alpha=0.5, seed=0),
                               trainer_class=type("JointSnapshot", (SnapshotTrainer, JointTrainer), {}))
    trainer = factory(model, pad_tokenizer, _args(head_warmup_steps=4), make_accelerator(), ["accuracy"],
                      head_parameters=head_parameter_names(model))
    heads = trainer.head_parameters
    assert any(n.startswith("source_model.") for n in heads) and any(n.startswith("model.classifier") for n in heads)
    trainer.train(token_dataset(EXAMPLES), aux_ds=token_dataset(EXAMPLES, num_labels=3, seed=4))
    final = {n: p.detach() for n, p in trainer.model.named_parameters()}
    _check_phases(trainer.snapshots, final, set(heads), 4)
    start, end = trainer.snapshots[0], trainer.snapshots[4]
    assert any(not torch.equal(start[n], end[n]) for n in heads if n.startswith("source_model."))


def test_warmup_without_a_trainable_head_is_refused(pad_tokenizer):
    model = tiny_model("bert")
    trainer = StageTrainer(model, pad_tokenizer, _args(head_warmup_steps=2), make_accelerator(), ["accuracy"],
                           head_parameters=[])
    with pytest.raises(ConfigError, match="head_warmup_steps"):
        trainer.train(token_dataset(16))


class InterruptedTrainer(StageTrainer):
    """Sends itself Ctrl-C before step ``stop_after + 1``: the loop saves a checkpoint after that step and stops."""

    stop_after = None

    def on_step(self, step, total_steps):
        if step == self.stop_after:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_mid_warmup_matches_uninterrupted(pad_tokenizer, tmp_path):
    args = _args(head_warmup_steps=6, save_steps=100)  # dropout on: the RNG must be restored too

    def trainer(cls, folder, resume=False):
        model = tiny_model("bert", seed=3)
        return cls(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], seed=5,
                   head_parameters=head_parameter_names(model), checkpoint_dir=tmp_path / folder, resume=resume)

    reference = trainer(StageTrainer, "reference")
    ref_result = reference.train(token_dataset(EXAMPLES))
    stopped = trainer(InterruptedTrainer, "stopped")
    stopped.stop_after = 2
    with pytest.raises(KeyboardInterrupt, match="step 3"):
        stopped.train(token_dataset(EXAMPLES))  # mid-warm-up: 3 of its 6 steps done
    resumed = trainer(StageTrainer, "stopped", resume=True)
    result = resumed.train(token_dataset(EXAMPLES))
    assert result.optimizer_steps == ref_result.optimizer_steps == 2 * STEPS_PER_EPOCH
    assert result.history == ref_result.history
    want = reference.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed.model.state_dict().items())
