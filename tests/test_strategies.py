"""Each strategy's mechanism, on every architecture; gradual unfreezing and LLRD schedules."""

import math

import pytest
import torch

from conftest import random_batch, tiny_model, token_dataset
from textransfer import ConfigError, RunConfig, TrainingConfig, available_strategies, get_strategy
from textransfer.modeling.layerwise import num_depths, parameter_depths
from textransfer.modeling.loading import head_parameter_names
from textransfer.strategies.base import classify_with_features, masked_mean
from textransfer.strategies.coral import CORALConfig, CORALModel, coral_loss
from textransfer.strategies.dann import DANNConfig, DANNModel, ganin_lambda, reverse_gradient
from textransfer.strategies.joint import JointModel
from textransfer.strategies.l2sp import L2SPTrainer, SquaredDistance
from textransfer.strategies.mmd import MMDConfig, MMDModel, mmd2
from textransfer.training.trainer import StageTrainer, make_accelerator

ALL = ["coral", "dann", "features", "finetune", "instance_weighting", "joint", "l2sp", "mmd", "relational_distillation",
       "scratch", "self_training", "udalm"]


def test_registry_lists_every_strategy_and_rejects_unknown_names():
    assert available_strategies() == ALL
    with pytest.raises(ConfigError, match=r"unknown strategy `dan`\. Did you mean `dann`\?.*coral, dann"):
        get_strategy("dan")
    with pytest.raises(ConfigError, match=r"strategy\.lambda_max"):
        get_strategy({"name": "dann", "lambda_max": "big"})
    with pytest.raises(ConfigError, match=r"unknown option `strategy\.alpah`.*strategy\.alpha"):
        get_strategy({"name": "l2sp", "alpah": 0.1})


def test_strategy_section_in_yaml_and_overrides(tmp_path):
    from conftest import REPO

    cfg = RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml",
                              overrides=["strategy.name=dann", "strategy.lambda_max=0.5", "strategy.gamma=5"])
    assert cfg.strategy.name == "dann" and cfg.strategy.lambda_max == 0.5 and cfg.strategy.gamma == 5.0
    assert RunConfig.from_dict(cfg.to_dict()).strategy == cfg.strategy  # round trip through results' config.yaml
    assert RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml").strategy.name == "finetune"


# ---------------------------------------------------------------------------- DANN
def test_gradient_reversal_negates_and_scales_the_gradient():
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(7)
    (x * w).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    (reverse_gradient(x, 0.3) * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * plain)
    assert torch.equal(reverse_gradient(x, 0.3), x)  # identity forward


def test_ganin_schedule():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(1.0, lambda_max=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0


def test_dann_encoder_gets_reversed_domain_gradient():
    """The domain loss's gradient on the encoder is -lambda times its gradient without reversal."""
    model = tiny_model("bert")
    dann = DANNModel(model, DANNConfig(name="dann"))
    dann.eval()  # no dropout: both passes see the same function
    s, t = random_batch(seed=1), random_batch(seed=2)
    layer = model.bert.encoder.layer[0].attention.self.query.weight

    def grads(weight):
        dann.zero_grad()
        _, fs = classify_with_features(model, s)
        ft = masked_mean(model.bert(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state,
                         t["attention_mask"])
        dann.domain_loss(fs, ft, weight=weight).backward()
        return layer.grad.clone(), dann.domain_classifier[0].weight.grad.clone()

    plain_enc, plain_dom = grads(-1.0)  # weight -1 = no reversal
    rev_enc, rev_dom = grads(0.7)
    assert plain_enc.abs().sum() > 0
    assert torch.allclose(rev_enc, -0.7 * plain_enc, atol=1e-6, rtol=1e-4)
    assert torch.allclose(rev_dom, plain_dom)  # the domain classifier itself is trained normally


# ---------------------------------------------------------------------------- MMD / CORAL
def test_mmd_and_coral_zero_for_identical_positive_for_shifted():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    assert mmd2(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert coral_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-9)
    assert mmd2(x, x + 2.0).item() > 0.1
    scaled = x * torch.linspace(0.2, 3.0, 8)
    assert coral_loss(x, scaled).item() > 1e-3
    d = 8
    cs, ct = torch.cov(x.t()), torch.cov(scaled.t())
    assert coral_loss(x, scaled).item() == pytest.approx(((cs - ct) ** 2).sum().item() / (4 * d * d), rel=1e-5)


def test_mmd_gives_no_reward_for_shrinking_the_features():
    # With a detached bandwidth, scaling every feature toward 0 drove MMD to 0 and the encoder
    # took that path on real data (the classifier stayed at chance). The bandwidth follows the
    # features, so MMD is scale-invariant: the same value at any common scale, and its gradient
    # has no component along the features themselves (Euler: <z, dMMD/dz> = 0 at degree 0).
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g) + 0.5
    base = mmd2(x, y).item()
    assert base > 0.05
    for c in (0.01, 0.3, 7.0):
        assert mmd2(c * x, c * y).item() == pytest.approx(base, rel=1e-4)
    x.requires_grad_(True)
    y.requires_grad_(True)
    mmd2(x, y).backward()
    radial = (x * x.grad).sum() + (y * y.grad).sum()
    assert x.grad.abs().sum() > 1e-3  # it still pulls the two batches together
    assert radial.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["mmd", "coral"])
def test_alignment_gradient_reaches_the_encoder(kind):
    model = tiny_model("bert")
    wrapper = MMDModel(model, MMDConfig(name="mmd")) if kind == "mmd" else CORALModel(model, CORALConfig(name="coral"))
    wrapper.eval()
    s, t = random_batch(batch=8, seed=1), random_batch(batch=8, seed=2)
    _, fs = classify_with_features(model, s)
    ft = masked_mean(model.bert(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state,
                     t["attention_mask"])
    loss = wrapper.alignment(fs, ft)
    assert loss.item() > 0
    loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.bert.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- joint
def test_joint_alpha_one_gives_target_head_no_gradient():
    for alpha, silent, active in ((1.0, "model.classifier", "source_model.classifier"),
                                  (0.0, "source_model.classifier", "model.classifier")):
        joint = JointModel(tiny_model("bert"), ["a", "b", "c"], alpha=alpha)
        batch, aux = random_batch(seed=1), random_batch(seed=2, num_labels=3)
        joint(**batch, aux_batch=aux).loss.backward()
        grads = dict(joint.named_parameters())
        assert grads[f"{silent}.weight"].grad.abs().sum() == 0
        assert grads[f"{active}.weight"].grad.abs().sum() > 0
    assert joint.source_model.bert is joint.model.bert  # one shared encoder


# ---------------------------------------------------------------------------- every architecture
def _wrappers(model):
    return {
        "joint": JointModel(model, ["a", "b", "c"], alpha=0.5),
        "dann": DANNModel(model, DANNConfig(name="dann")),
        "mmd": MMDModel(model, MMDConfig(name="mmd")),
        "coral": CORALModel(model, CORALConfig(name="coral")),
    }


@pytest.mark.parametrize("strategy", ["joint", "dann", "mmd", "coral"])
def test_wrapper_gives_every_parameter_a_gradient(model_type, strategy):
    """One module holds the extra heads, and every trainable parameter gets a gradient each step
    (so DDP needs no find_unused_parameters)."""
    model = tiny_model(model_type)
    wrapper = _wrappers(model)[strategy]
    if strategy == "dann":
        wrapper.set_progress(0.5)
    labels = 3 if strategy == "joint" else 2
    out = wrapper(**random_batch(seed=1), aux_batch=random_batch(seed=2, num_labels=labels))
    out.loss.backward()
    missing = [n for n, p in wrapper.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert wrapper(**random_batch(seed=3)).logits.shape == (4, 2)  # plain classifier without aux


def test_l2sp_penalty_gradient_on_every_architecture(model_type):
    model = tiny_model(model_type)
    acc = make_accelerator()
    trainer = L2SPTrainer(model, None, TrainingConfig(), acc, ["accuracy"], alpha=0.3, beta=0.2,
                          head_parameters=head_parameter_names(model))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    trainer.penalty(model).backward()
    heads = set(head_parameter_names(model))
    for name, p in model.named_parameters():
        if name in trainer.source_weights:
            assert torch.allclose(p.grad, 0.3 * (p.detach() - trainer.source_weights[name]), atol=1e-7), name
        elif name in heads:
            assert torch.allclose(p.grad, 0.2 * p.detach(), atol=1e-7), name
    assert len(trainer.source_weights) + len(heads) == len(list(model.parameters()))


@pytest.mark.parametrize("shapes", [[(3, 5)], [(1000,), (7, 300), (256,), (2, 2, 129)]])
def test_l2sp_squared_distance_is_the_textbook_penalty_to_the_bit(shapes):
    """The foreach penalty's gradient is autograd's of ``sum((p - r) ** 2)``, bit for bit, and its
    value the same sum (sizes below, at and across the dot products' chunk)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, requires_grad=True) for s in shapes]
    refs = [p.detach() + 0.1 * torch.randn(p.shape, generator=g) for p in params]
    textbook = 0.35 * sum((p - r).pow(2).sum() for p, r in zip(params, refs))
    expected = torch.autograd.grad(textbook, params)
    value = 0.35 * SquaredDistance.apply(refs, *params)
    got = torch.autograd.grad(value, params)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert value.item() == pytest.approx(textbook.item(), rel=1e-6)


def test_l2sp_training_ends_closer_to_source_weights(pad_tokenizer):
    ds = token_dataset(64)
    args = TrainingConfig(num_epochs=3, batch_size=8, learning_rate=3e-3, weight_decay=0.0, warmup_ratio=0.0,
                          eval_every_epoch=False)

    def distance(trainer_cls, **kw):
        model = tiny_model("bert", seed=1)
        start = {n: p.detach().clone() for n, p in model.bert.named_parameters()}
        trainer = trainer_cls(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], seed=0, **kw)
        trainer.train(ds)
        return sum((p.detach() - start[n]).pow(2).sum() for n, p in trainer.model.bert.named_parameters()).item()

    plain = distance(StageTrainer)
    pulled = distance(L2SPTrainer, alpha=50.0, beta=0.0)
    assert pulled < 0.5 * plain


# ---------------------------------------------------------------------------- gradual unfreezing / LLRD
class RecordingTrainer(StageTrainer):
    """Records, at each optimiser step, which parameters have a gradient and each group's lr."""

    def create_optimizer(self):
        opt = super().create_optimizer()
        self.steps = []

        def hook(optimizer, *_):
            self.steps.append({"grads": {id(p) for g in optimizer.param_groups for p in g["params"] if p.grad is not None},
                               "lrs": [g["lr"] for g in optimizer.param_groups]})

        opt.register_step_pre_hook(hook)
        self.optimizer = opt
        return opt


def test_gradual_unfreezing_schedule(pad_tokenizer):
    model = tiny_model("bert")  # 3 layers: depths 0 (head) .. 3 (bottom block), 4 (embeddings)
    depths = parameter_depths(model)
    assert num_depths(model) == 5
    assert depths[id(model.classifier.weight)] == 0 and depths[id(model.bert.pooler.dense.weight)] == 0
    assert depths[id(model.bert.encoder.layer[2].output.dense.weight)] == 1
    assert depths[id(model.bert.encoder.layer[0].output.dense.weight)] == 3
    assert depths[id(model.bert.embeddings.word_embeddings.weight)] == 4
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingConfig(num_epochs=1, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, eval_every_epoch=False,
                          gradual_unfreezing=True, unfreeze_every_steps=2)
    trainer = RecordingTrainer(model, pad_tokenizer, args, make_accelerator(), ["accuracy"])
    trainer.train(token_dataset(64))  # 8 steps: phases 0,0,1,1,2,2,3,3
    assert len(trainer.steps) == 8
    for step, rec in enumerate(trainer.steps):
        phase = step // 2
        expected = {pid for pid, d in depths.items() if d <= phase}
        assert rec["grads"] == expected, step
    assert all(p.requires_grad for p in model.parameters())  # DDP sees every parameter from the start
    for name, p in trainer.model.named_parameters():
        moved = not torch.equal(p.detach(), start[name])
        if depths[id(p)] == 4:
            assert not moved, name  # embeddings never reached: neither moved nor decayed
        elif "weight" in name and "LayerNorm" not in name:
            assert moved, name


def test_gradual_unfreezing_per_epoch(pad_tokenizer):
    model = tiny_model("distilbert")
    depths = parameter_depths(model)
    args = TrainingConfig(num_epochs=2, batch_size=16, learning_rate=1e-3, eval_every_epoch=False,
                          gradual_unfreezing=True)
    trainer = RecordingTrainer(model, pad_tokenizer, args, make_accelerator(), ["accuracy"])
    trainer.train(token_dataset(32))  # 2 steps per epoch
    assert [len(r["grads"]) for r in trainer.steps] == [
        sum(1 for d in depths.values() if d <= e) for e in (0, 0, 1, 1)]


def test_layerwise_lr_decay_groups_and_warmup(pad_tokenizer):
    model = tiny_model("bert")
    depths = parameter_depths(model)
    args = TrainingConfig(num_epochs=1, batch_size=8, learning_rate=1e-3, head_learning_rate=5e-3, warmup_ratio=0.5,
                          eval_every_epoch=False, layerwise_lr_decay=0.5)
    heads = head_parameter_names(model)
    trainer = RecordingTrainer(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], head_parameters=heads)
    groups = trainer.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            if names[id(p)] in heads:
                assert g["lr"] == 5e-3
            else:
                assert g["lr"] == pytest.approx(1e-3 * 0.5 ** depths[id(p)])
    assert {round(g["lr"], 12) for g in groups} >= {round(1e-3 * 0.5 ** d, 12) for d in range(1, 5)}
    trainer.train(token_dataset(64))  # 8 steps, 4 of warm-up
    base = [g["lr"] for g in trainer.optimizer.param_groups]
    initial = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    factors = []
    for rec in trainer.steps:
        ratios = {round(lr / lr0, 9) for lr, lr0 in zip(rec["lrs"], initial)}
        assert len(ratios) == 1  # one schedule factor scales every group: the decay ratios hold
        factors.append(ratios.pop())
    assert factors[0] == 0.0 and factors[1] == pytest.approx(0.25) and factors[4] == pytest.approx(1.0)
    assert base  # groups survive training
