"""The Accelerate training loop: seeding, early stopping, best weights, schedules, checkpoints."""

import math

import pytest
import torch
from accelerate import Accelerator

from conftest import token_dataset, tiny_model
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.trainer import StageTrainer


def _trainer(model, tok, seed=0, metrics=("accuracy", "f1"), **kw):
    defaults = dict(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0)
    defaults.update(kw)
    return StageTrainer(model, tok, TrainingConfig(**defaults), make_accelerator(), list(metrics), seed=seed,
                        head_parameters=head_parameter_names(model))


def test_same_seed_same_weights_and_metrics(pad_tokenizer):
    results = []
    for _ in range(2):
        t = _trainer(tiny_model("bert", seed=1), pad_tokenizer, seed=7)
        r = t.train(token_dataset(48), token_dataset(16, seed=1))
        ev = t.evaluate(token_dataset(16, seed=2))
        results.append((r.history, ev["metrics"], {k: v.clone() for k, v in t.model.state_dict().items()}))
    (h1, m1, s1), (h2, m2, s2) = results
    assert h1 == h2 and m1 == m2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # and another seed gives other weights
    t = _trainer(tiny_model("bert", seed=1), pad_tokenizer, seed=8)
    t.train(token_dataset(48))
    assert any(not torch.equal(s1[k], v) for k, v in t.model.state_dict().items())


def test_model_learns_the_task(pad_tokenizer):
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=8, learning_rate=3e-3)
    r = t.train(token_dataset(128), token_dataset(64, seed=5))
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert t.evaluate(token_dataset(64, seed=6))["metrics"]["accuracy"] >= 0.8


def test_early_stopping_restores_best_weights(pad_tokenizer, monkeypatch):
    """Scripted validation scores 0.5, 0.9, 0.6, 0.4 with patience 2: training stops after
    epoch 4, and the model ends with exactly the weights it had when it scored 0.9."""
    scores = iter([0.5, 0.9, 0.6, 0.4, 0.3, 0.2])
    snapshots = []
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=6, early_stopping_patience=2,
                 metric_for_best_model="accuracy")

    def scripted(model, loader):
        snapshots.append({k: v.detach().clone() for k, v in t.accelerator.unwrap_model(model).state_dict().items()})
        s = next(scores)
        return {"accuracy": s, "f1": s}, [], []

    monkeypatch.setattr(t, "_evaluate_loader", scripted)
    r = t.train(token_dataset(32), token_dataset(8, seed=1))
    assert r.stopped_early and len(r.history) == 4
    assert r.best_epoch == 2 and r.best_metric == 0.9
    final = t.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert any(not torch.equal(snapshots[1][k], snapshots[3][k]) for k in final)


def test_keep_last_weights_when_asked(pad_tokenizer, monkeypatch):
    scores = iter([0.9, 0.1])
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=2, load_best_model_at_end=False)
    monkeypatch.setattr(t, "_evaluate_loader", lambda m, l: ({"accuracy": next(scores), "f1": 0.0}, [], []))
    t.train(token_dataset(32), token_dataset(8, seed=1))
    last = {k: v.clone() for k, v in t.model.state_dict().items()}
    t2 = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=2, eval_every_epoch=False)
    t2.train(token_dataset(32))
    assert all(torch.equal(last[k], v) for k, v in t2.model.state_dict().items())


def test_warmup_schedule_and_step_counts(pad_tokenizer):
    lrs = []
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=3, batch_size=4, gradient_accumulation_steps=2,
                 warmup_ratio=0.25, learning_rate=1e-3, eval_every_epoch=False)
    orig = t.create_optimizer

    def recording_optimizer():
        opt = orig()
        # fires on real optimiser steps only (Accelerate skips the step while accumulating)
        opt.register_step_pre_hook(lambda o, args, kwargs: lrs.append(o.param_groups[0]["lr"]))
        return opt

    t.create_optimizer = recording_optimizer
    r = t.train(token_dataset(40))
    steps_per_epoch = math.ceil(40 / 4 / 2)
    assert r.optimizer_steps == 3 * steps_per_epoch == 15
    assert r.train_samples == 3 * 40
    assert len(lrs) == 15  # one real optimiser step per 2 batches
    warmup = int(0.25 * 15)
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-3 / warmup)  # linear warmup from 0
    assert lrs[warmup] == pytest.approx(1e-3)  # peak
    assert lrs[-1] == pytest.approx(1e-3 * 1 / (15 - warmup))  # linear decay to 0


def test_max_steps_budget(pad_tokenizer):
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=1, max_steps=7, batch_size=4, eval_every_epoch=False)
    r = t.train(token_dataset(16))  # 4 steps an epoch: needs 2 epochs
    assert r.optimizer_steps == 7 and len(r.history) == 2


def test_checkpoints_written_and_loadable(pad_tokenizer, tmp_path):
    t = _trainer(tiny_model("bert"), pad_tokenizer, num_epochs=2, save_checkpoints=True, eval_every_epoch=False)
    t.checkpoint_dir = tmp_path / "ckpt"
    t.train(token_dataset(16))
    kept = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert kept == ["step-000000004"]  # 2 epochs of 2 steps; only the newest is kept
    files = {p.name for p in (tmp_path / "ckpt" / "step-000000004").iterdir()}
    assert any(f.startswith("optimizer") for f in files) and any(f.startswith("model") for f in files)
    assert {"COMPLETE", "loop.json"} <= files


def test_bf16_mixed_precision_runs_on_cpu(pad_tokenizer):
    acc = make_accelerator("bf16")
    try:
        assert acc.mixed_precision == "bf16"
        model = tiny_model("bert")
        t = StageTrainer(model, pad_tokenizer, TrainingConfig(num_epochs=1, batch_size=8, eval_every_epoch=False),
                         acc, ["accuracy"], seed=0)
        r = t.train(token_dataset(16))
        assert math.isfinite(r.history[0]["train_loss"])
        assert next(t.model.parameters()).dtype == torch.float32  # master weights stay fp32
    finally:
        make_accelerator("no")
    assert Accelerator().mixed_precision == "no"


def test_evaluation_counts_every_example_once(pad_tokenizer):
    t = _trainer(tiny_model("bert"), pad_tokenizer, eval_batch_size=6)
    ds = token_dataset(17, seed=3)  # not a multiple of the batch size
    out = t.evaluate(ds)
    assert len(out["predictions"]) == len(out["references"]) == 17
    assert sorted(out["references"]) == sorted(ds["labels"])
