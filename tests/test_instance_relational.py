"""``instance_weighting`` (domain-classifier importance weights on the source stage) and
``relational_distillation`` (RKD against the frozen source-tuned encoder): their mechanisms, one
step on every architecture, and end-to-end runs on tiny data."""

import json

import pytest
import torch

from conftest import random_batch, tiny_model, token_dataset
from textransfer import RunConfig, TrainingConfig, run_transfer
from textransfer.config.strategies import InstanceWeightingConfig, RelationalDistillationConfig
from textransfer.data.batching import EXAMPLE_WEIGHTS_COLUMN, train_dataloader
from textransfer.modeling.loading import head_parameter_names
from textransfer.strategies.base import classify_with_features, masked_mean, model_inputs, wrapping_trainer
from textransfer.strategies.instance_weighting import (WeightedLossTrainer, fit_domain_classifier, importance_weights,
                                                       weighted_cross_entropy)
from textransfer.strategies.relational_distillation import (RelationalModel, RelationalTrainer, frozen_copy,
                                                            relational_loss, rkd_angle, rkd_distance)
from textransfer.training.trainer import make_accelerator


# ---------------------------------------------------------------------------- instance weighting
def _domains(n_source=60, n_target=30, dim=8, shift=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(n_source, dim, generator=g)
    target = torch.randn(n_target, dim, generator=g) + shift
    return source, target


def test_weights_are_the_domain_classifiers_clipped_prior_corrected_ratio():
    source, target = _domains()
    config = InstanceWeightingConfig(name="instance_weighting", min_weight=0.2, max_weight=3.0, domain_l2=0.01)
    classifier, accuracy = fit_domain_classifier(source, target, config.domain_l2)
    weights, summary = importance_weights(classifier, source, len(target), config)
    # computed here from the classifier's probabilities alone
    p = classifier.probability(source)
    ratio = p / (1 - p) * (len(source) / len(target))
    clipped = ratio.clamp(0.2, 3.0)
    expected = clipped / clipped.mean()
    assert torch.allclose(weights.double(), expected, rtol=1e-6)
    assert summary["share_clipped"] == pytest.approx(((ratio < 0.2) | (ratio > 3.0)).double().mean().item())
    assert 0 < summary["share_clipped"] < 1  # the clips are exercised
    assert summary["mean"] == pytest.approx(1.0)
    assert summary["min"] == pytest.approx(expected.min().item()) and summary["max"] == pytest.approx(expected.max().item())
    assert 0 < summary["effective_sample_share"] < 1
    assert accuracy > 0.7  # shifted domains are told apart
    # source rows toward the target's mean get the larger weights
    toward_target = source.sum(dim=1)
    assert torch.corrcoef(torch.stack([toward_target, weights]))[0, 1] > 0.5


def test_prior_correction_gives_unit_weights_when_the_classifier_knows_nothing():
    """A classifier held at w = 0 predicts the share of target rows, p = n_t / (n_s + n_t): its odds
    are n_t / n_s, and the prior factor n_s / n_t turns them into weight 1 for every example."""
    source, target = _domains(n_source=90, n_target=30)
    config = InstanceWeightingConfig(name="instance_weighting", domain_l2=1e9)
    classifier, _ = fit_domain_classifier(source, target, config.domain_l2)
    assert torch.allclose(classifier.probability(source), torch.full((90,), 0.25, dtype=torch.float64), atol=1e-5)
    weights, _ = importance_weights(classifier, source, len(target), config)
    assert torch.allclose(weights, torch.ones(90), atol=1e-4)
    # a stronger penalty gives flatter weights
    loose, _ = importance_weights(fit_domain_classifier(source, target, 1e-3)[0], source, 30, config)
    firm, _ = importance_weights(fit_domain_classifier(source, target, 10.0)[0], source, 30, config)
    assert loose.std() > firm.std() > 0


def test_weighted_loss_equals_plain_cross_entropy_with_unit_weights_only():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(weighted_cross_entropy(logits, labels, torch.ones(6)), plain)
    assert not torch.allclose(weighted_cross_entropy(logits, labels, torch.tensor([3.0, 0, 1, 1, 0.5, 0.5])), plain)


def _weighted(ds, weights):
    return ds.add_column(EXAMPLE_WEIGHTS_COLUMN, [float(w) for w in weights])


def test_weights_reach_the_batch_as_floats_and_not_the_model(pad_tokenizer):
    ds = _weighted(token_dataset(12), [0.5 * i for i in range(12)])
    batch = next(iter(train_dataloader(ds, pad_tokenizer, batch_size=4, seed=0)))
    assert batch[EXAMPLE_WEIGHTS_COLUMN].dtype == torch.float32 and batch[EXAMPLE_WEIGHTS_COLUMN].shape == (4,)
    assert set(batch.keys()) == {"input_ids", "attention_mask", "labels", EXAMPLE_WEIGHTS_COLUMN}
    # the trainer's loss with unit weights is the model's own loss (so the weights never reach the model)
    model = tiny_model("bert").eval()
    trainer = WeightedLossTrainer(model, pad_tokenizer, TrainingConfig(), make_accelerator(), ["accuracy"])
    batch[EXAMPLE_WEIGHTS_COLUMN] = torch.ones(4)
    expected = model(**{k: v for k, v in batch.items() if k != EXAMPLE_WEIGHTS_COLUMN}).loss
    assert torch.allclose(trainer.compute_loss(model, batch), expected, atol=1e-6)


def test_zero_weighted_examples_have_no_gradient_influence(pad_tokenizer):
    model = tiny_model("roberta").eval()  # no dropout: both passes compute the same function
    trainer = WeightedLossTrainer(model, pad_tokenizer, TrainingConfig(), make_accelerator(), ["accuracy"])
    batch = random_batch(batch=4, seed=3)
    other = random_batch(batch=4, seed=4)
    weights = torch.tensor([1.5, 0.5, 0.0, 0.0])

    def gradients(b):
        model.zero_grad()
        trainer.compute_loss(model, {**b, EXAMPLE_WEIGHTS_COLUMN: weights}).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    changed = {k: torch.cat([batch[k][:2], other[k][2:]]) for k in batch}  # other text and labels where w = 0
    for a, b in zip(gradients(batch), gradients(changed)):
        assert torch.allclose(a, b, atol=1e-6)
    weights = torch.tensor([1.5, 0.5, 1.0, 0.0])  # ... while a weighted example does count
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(gradients(batch), gradients(changed)))


# ---------------------------------------------------------------------------- relational distillation
def test_relational_loss_zero_for_identical_sets_positive_otherwise_and_scale_free():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert relational_loss(teacher, teacher.clone(), 1.0, 2.0).item() == 0.0
    assert rkd_distance(student, teacher) > 0 and rkd_angle(student, teacher) > 0
    base = relational_loss(student, teacher, 1.0, 2.0)
    assert torch.allclose(relational_loss(5.0 * student, 5.0 * teacher, 1.0, 2.0), base, rtol=1e-4)
    # distances are normalised by their mean and angles have no scale: a scaled or moved copy is identical
    assert relational_loss(3.0 * teacher + 1.0, teacher, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_loss(student[:1], teacher[:1], 1.0, 2.0).item() == 0.0  # one example: no pair


def _relational(model):
    return RelationalModel(model, frozen_copy(model.base_model),
                           RelationalDistillationConfig(name="relational_distillation"))


def test_student_equal_to_teacher_at_step_zero_then_gradient_reaches_the_encoder():
    model = tiny_model("bert")
    wrapper = _relational(model)
    batch = random_batch(batch=6, seed=2)
    wrapper.eval()
    assert torch.equal(wrapper(**batch, distill=True).loss, model(**batch).loss)  # RKD adds exactly 0 at step 0
    wrapper.train()
    assert not wrapper.teacher.training and model.training  # the teacher never drops out
    with torch.no_grad():  # the student moves away from the teacher (as a training step would)
        model.bert.encoder.layer[1].output.dense.weight.add_(0.5 * torch.randn_like(model.bert.encoder.layer[1]
                                                                                      .output.dense.weight))
    wrapper.eval()
    assert wrapper(**batch, distill=True).loss > model(**batch).loss  # now the RKD term is positive
    _, student = classify_with_features(model, batch)
    with torch.no_grad():
        teacher = masked_mean(wrapper.teacher(**model_inputs(batch)).last_hidden_state, batch["attention_mask"])
    loss = relational_loss(student, teacher, 1.0, 2.0)
    assert loss > 0
    loss.backward()  # the relational term alone
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in wrapper.teacher.parameters())


# ---------------------------------------------------------------------------- every architecture
def test_one_step_of_each_strategy_on_every_architecture(model_type, pad_tokenizer):
    args = TrainingConfig(max_steps=1, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, eval_every_epoch=False)
    ds = token_dataset(16)
    # instance_weighting's source stage: weighted cross-entropy through the collator
    model = tiny_model(model_type)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = WeightedLossTrainer(model, pad_tokenizer, args, make_accelerator(), ["accuracy"],
                                  head_parameters=head_parameter_names(model))
    result = trainer.train(_weighted(ds, [0.5, 2.0] * 8))
    assert result.optimizer_steps == 1 and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert sum(not torch.equal(p.detach(), start[n]) for n, p in trainer.model.named_parameters()) > len(start) // 2
    # relational_distillation's target stage: student moves, teacher does not
    model = tiny_model(model_type, seed=1)
    factory = wrapping_trainer(_relational, trainer_class=RelationalTrainer)
    trainer = factory(model, pad_tokenizer, args, make_accelerator(), ["accuracy"],
                      head_parameters=head_parameter_names(model))
    teacher = {n: p.detach().clone() for n, p in trainer.model.teacher.named_parameters()}
    student = {n: p.detach().clone() for n, p in model.base_model.named_parameters()}
    result = trainer.train(ds)
    assert result.optimizer_steps == 1 and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert all(torch.equal(p, teacher[n]) for n, p in trainer.model.teacher.named_parameters())
    assert any(not torch.equal(p, student[n]) for n, p in trainer.model.model.base_model.named_parameters())


# ---------------------------------------------------------------------------- end to end
def test_instance_weighting_unsupervised_end_to_end(sample_run_config, tmp_path):
    data = sample_run_config.to_dict()
    data["source"] = dict(data["target"], name="reviews_a", split_seed=1)
    data["strategy"] = {"name": "instance_weighting", "target_labels": False, "max_weight": 5.0}
    results = run_transfer(RunConfig.from_dict(data), output_dir=tmp_path / "iw")
    assert results["target"]["baseline"]["kind"] == "source_only"
    assert results["target"]["transfer"]["optimizer_steps"] == 0  # no target stage: no target label used
    assert results["source"]["optimizer_steps"] > 0 and results["source"]["unlabelled_target_examples"] > 0
    record = results["instance_weights"]
    assert record["mean"] == pytest.approx(1.0) and record["min"] <= 1.0 <= record["max"]
    assert 0.0 <= record["share_clipped"] <= 1.0 and 0.0 <= record["domain_classifier_accuracy"] <= 1.0
    assert record["source_examples"] == results["source"]["data"]["rows"]["train"]
    assert json.loads((tmp_path / "iw" / "results.json").read_text())["instance_weights"] == record


def test_relational_distillation_end_to_end(sample_run_config, tmp_path):
    data = sample_run_config.to_dict()
    data["strategy"] = {"name": "relational_distillation", "angle_weight": 1.0}
    data["baseline"] = False
    results = run_transfer(RunConfig.from_dict(data), output_dir=tmp_path / "rkd")
    assert results["strategy"]["name"] == "relational_distillation"
    assert results["target"]["transfer"]["optimizer_steps"] > 0 and results["source"]["optimizer_steps"] > 0
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "rkd" / "model" / "model.safetensors"))
    assert not any(k.startswith("teacher") for k in saved)  # the shipped model is the student classifier alone


def test_relational_distillation_without_source_keeps_the_loaded_encoder_as_teacher(sample_run_config, tmp_path,
                                                                                       monkeypatch):
    """No source task: the teacher is the encoder as loaded (e.g. a model fine-tuned on a source
    elsewhere), a frozen copy of the student's encoder at the start of the target stage."""
    import textransfer.strategies.relational_distillation as rd

    teachers = []
    real_copy = rd.frozen_copy

    def spy(encoder):
        teachers.append({k: v.clone() for k, v in encoder.state_dict().items()})
        return real_copy(encoder)

    monkeypatch.setattr(rd, "frozen_copy", spy)
    data = sample_run_config.to_dict()
    data.pop("source")
    data.update(strategy={"name": "relational_distillation"}, baseline=False)
    results = run_transfer(RunConfig.from_dict(data), output_dir=tmp_path / "rkd")
    assert "source" not in results and results["target"]["transfer"]["optimizer_steps"] > 0
    from safetensors.torch import load_file

    loaded = load_file(str(tmp_path / "rkd" / "model" / "model.safetensors"))
    pretrained = load_file(str(sample_run_config.model.name_or_path + "/model.safetensors"))
    (teacher,) = teachers
    # the teacher is the pretrained encoder as loaded, and the shipped student moved away from it
    shared = [k for k in teacher if k in pretrained]
    assert len(shared) == len(pretrained) and all(torch.equal(teacher[k], pretrained[k]) for k in shared)
    assert any(not torch.equal(loaded[f"bert.{k}"], pretrained[k]) for k in pretrained if f"bert.{k}" in loaded)
