"""``udalm`` (source classification + target masked-LM on one encoder) and ``self_training``
(confident, class-balanced pseudo-labels of target text): their mechanisms, on every
architecture, end to end with and without target labels, and from YAML and the command line."""

import pytest
import torch

from conftest import REPO, random_batch, tiny_model, token_dataset
from textransfer import ConfigError, RunConfig, TrainingConfig, run_transfer
from textransfer.modeling.masked_lm import masked_lm_on
from textransfer.run import transfer as transfer_module
from textransfer.strategies import base
from textransfer.strategies.base import model_inputs
from textransfer.strategies.self_training import select_pseudo_labels
from textransfer.strategies.udalm import UDALMModel, UDALMTrainer, paper_cls_weight
from textransfer.training.masking import IGNORE_INDEX, TokenMasking
from textransfer.training.trainer import make_accelerator

def _masked(pad_tokenizer, batch, probability=0.3, step=0, seed=0):
    return TokenMasking(pad_tokenizer, probability, seed=seed, vocab_size=1000)(model_inputs(batch), step=step)


# ---------------------------------------------------------------------------- UDALM: the loss
def test_udalm_loss_is_the_weighted_sum_of_its_parts(pad_tokenizer):
    model = tiny_model("bert").eval()  # no dropout: the parts computed apart see the same network
    mlm = masked_lm_on(model, seed=0)
    wrapper = UDALMModel(model, mlm, cls_weight=0.3)
    source, target = random_batch(seed=1), random_batch(seed=2, length=20)
    target_masked = _masked(pad_tokenizer, target)
    out = wrapper(**source, mlm_batch=target_masked)
    cls = model(**source).loss
    # Hugging Face's own masked-LM loss on the same masked batch (its mean over masked positions)
    mlm_alone = mlm(**model_inputs(target_masked), labels=target_masked["labels"]).loss
    assert out.loss.item() == pytest.approx(0.3 * cls.item() + 0.7 * mlm_alone.item(), rel=1e-5)
    assert out.cls_loss.item() == pytest.approx(cls.item(), rel=1e-6)
    assert out.mlm_loss.item() == pytest.approx(mlm_alone.item(), rel=1e-5)
    # without a target batch the wrapper is the plain classifier
    assert torch.equal(wrapper(**source).logits, model(**source).logits)


def test_udalm_mlm_gradient_reaches_the_encoder(pad_tokenizer):
    model = tiny_model("bert")
    wrapper = UDALMModel(model, masked_lm_on(model, seed=0), cls_weight=0.0)  # the masked-LM part alone
    wrapper(**random_batch(seed=1), mlm_batch=_masked(pad_tokenizer, random_batch(seed=2))).loss.backward()
    for layer in model.bert.encoder.layer:
        assert layer.attention.self.query.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() == 0  # the classification loss had weight 0
    assert wrapper.masked_lm.bert is model.bert  # one shared encoder, not a copy


def test_only_masked_positions_count(pad_tokenizer):
    batch = random_batch(batch=6, length=30, seed=3)
    batch["attention_mask"][:, 25:] = 0  # padding
    batch["input_ids"][:, 25:] = 0
    batch["input_ids"][:, 0], batch["input_ids"][:, 24] = 101, 102  # [CLS] ... [SEP]
    masked = _masked(pad_tokenizer, batch, probability=0.5)
    labels, selected = masked["labels"], masked["labels"] != IGNORE_INDEX
    assert 0.3 < selected[:, 1:24].float().mean() < 0.7  # about mlm_probability of the real tokens
    assert not selected[:, 24:].any() and not selected[:, 0].any()  # never padding or special tokens
    assert torch.equal(labels[selected], batch["input_ids"][selected])  # the label is the original token
    assert torch.equal(masked["input_ids"][~selected], batch["input_ids"][~selected])  # the rest is untouched
    assert (masked["input_ids"][selected] == 103).float().mean() > 0.6  # mostly [MASK] (80%)
    # the loss: cross-entropy over the selected positions only (the masked-LM part alone: cls_weight 0)
    model = tiny_model("bert").eval()
    mlm = masked_lm_on(model, seed=0)
    wrapper = UDALMModel(model, mlm, cls_weight=0.0)
    source = random_batch(batch=6, seed=1)
    logits = mlm(**model_inputs(masked)).logits
    by_hand = torch.nn.functional.cross_entropy(logits[selected], labels[selected])
    assert wrapper(**source, mlm_batch=masked).mlm_loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    every_real = torch.nn.functional.cross_entropy(logits[:, :25].flatten(0, 1), batch["input_ids"][:, :25].flatten())
    assert abs(every_real.item() - by_hand.item()) > 1e-3  # (a loss over every position would differ)
    # nothing masked: zero, not nan, and the loss still back-propagates
    out = wrapper(**source, mlm_batch=dict(masked, labels=torch.full_like(labels, IGNORE_INDEX)))
    assert out.mlm_loss.item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()


def test_masks_are_per_example_and_per_step(pad_tokenizer):
    """An example's mask depends on the seed, the step and its own tokens, not on its batch:
    two processes of batch B mask as one process of batch 2B; a later step re-masks."""
    batch = model_inputs(random_batch(batch=4, length=40, seed=4))
    whole = _masked(pad_tokenizer, batch, step=7)
    halves = [_masked(pad_tokenizer, {k: v[i:i + 2] for k, v in batch.items()}, step=7) for i in (0, 2)]
    assert torch.equal(torch.cat([h["labels"] for h in halves]), whole["labels"])
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :5])], dim=1) for k, v in batch.items()}  # longer padding
    assert torch.equal(_masked(pad_tokenizer, padded, step=7)["labels"][:, :40], whole["labels"])
    assert not torch.equal(_masked(pad_tokenizer, batch, step=8)["labels"], whole["labels"])
    assert not torch.equal(_masked(pad_tokenizer, batch, step=7, seed=1)["labels"], whole["labels"])


def test_paper_weighting():
    assert paper_cls_weight(1600, 4800) == pytest.approx(0.25)
    assert paper_cls_weight(100, 100) == 0.5


# ---------------------------------------------------------------------------- UDALM: every architecture
def test_udalm_step_on_every_architecture(model_type, pad_tokenizer):
    """Every trainable parameter gets a gradient from the mixed loss (DDP needs no unused
    parameters), and the trainer takes UDALM steps that move the encoder."""
    model = tiny_model(model_type)
    wrapper = UDALMModel(model, masked_lm_on(model, seed=0), cls_weight=0.5)
    target = random_batch(seed=2, length=16)
    wrapper(**random_batch(seed=1), mlm_batch=_masked(pad_tokenizer, target, probability=0.5)).loss.backward()
    missing = [n for n, p in wrapper.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing

    model = tiny_model(model_type, seed=1)
    before = {n: p.detach().clone() for n, p in model.base_model.named_parameters()}
    args = TrainingConfig(max_steps=2, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, eval_every_epoch=False)
    trainer = UDALMTrainer(UDALMModel(model, masked_lm_on(model, seed=0), 0.5), pad_tokenizer, args,
                           make_accelerator(), ["accuracy"], seed=0, mlm_probability=0.3)
    result = trainer.train(token_dataset(32), aux_ds=token_dataset(32, seed=1).remove_columns(["labels"]))
    assert result.optimizer_steps == 2
    assert result.history[-1]["mlm_loss"] > 0 and result.history[-1]["cls_loss"] > 0
    moved = [n for n, p in model.base_model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved


class StopAfter(UDALMTrainer):
    """Dies (as a killed run would) before the forward pass of optimiser step ``stop_at``."""

    stop_at = None

    def on_step(self, step, total_steps):
        if step == self.stop_at:
            raise RuntimeError("killed")
        super().on_step(step, total_steps)


def test_udalm_resumes_exactly(pad_tokenizer, tmp_path):
    """Checkpoints hold the masked-LM head beside the shared encoder, and a resumed stage masks
    as the uninterrupted one did (masks are seeded by the optimiser step): identical weights."""
    args = TrainingConfig(max_steps=4, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, eval_every_epoch=False,
                          save_steps=1)
    source, aux = token_dataset(32), token_dataset(48, seed=1).remove_columns(["labels"])

    def train(cls, folder, resume=False, stop_at=None):
        model = tiny_model("bert", seed=1)
        trainer = cls(UDALMModel(model, masked_lm_on(model, seed=0), 0.5), pad_tokenizer, args, make_accelerator(),
                      ["accuracy"], seed=0, mlm_probability=0.3, checkpoint_dir=folder, resume=resume)
        trainer.stop_at = stop_at
        trainer.train(source, aux_ds=aux)
        return trainer

    straight = train(UDALMTrainer, tmp_path / "a").model.state_dict()
    with pytest.raises(RuntimeError, match="killed"):
        train(StopAfter, tmp_path / "b", stop_at=2)
    resumed = train(UDALMTrainer, tmp_path / "b", resume=True)
    assert [int(row[0]) for row in resumed.losses] == [3, 4]  # it went on from step 2, not from the start
    weights = resumed.model.state_dict()
    assert all(torch.equal(straight[k], weights[k]) for k in straight)


# ---------------------------------------------------------------------------- end to end
def _uda_config(sample_run_config, strategy, **extra):
    """The review task as both source and target (other split seeds): shared label names."""
    data = sample_run_config.to_dict()
    data["source"] = dict(data["target"], name="reviews_a", split_seed=1, max_train_samples=96)
    data["target"]["max_train_samples"] = 96
    data["strategy"] = {"name": strategy, **extra}
    data["source_training"]["num_epochs"] = 1
    data["target_training"]["num_epochs"] = 1
    return data


def test_udalm_unsupervised_end_to_end(sample_run_config, tmp_path):
    cfg = RunConfig.from_dict(_uda_config(sample_run_config, "udalm", target_labels=False))
    results = run_transfer(cfg, output_dir=tmp_path / "u")
    assert results["target"]["baseline"]["kind"] == "source_only"
    assert results["target"]["transfer"]["optimizer_steps"] == 0  # no target stage
    source = results["source"]
    n, m = results["source"]["data"]["rows"]["train"], source["unlabelled_target_examples"]
    assert source["source_loss_weight"] == pytest.approx(n / (n + m))  # the paper's default
    assert source["optimizer_steps"] > 0
    assert all(e["mlm_loss"] > 0 and e["cls_loss"] > 0 for e in source["history"])
    assert (tmp_path / "u" / "model" / "config.json").is_file()  # a plain classifier ships
    assert not list((tmp_path / "u" / "model").glob("*masked*"))


def test_udalm_with_target_labels(sample_run_config):
    data = sample_run_config.to_dict()
    data.update(baseline=False, strategy={"name": "udalm", "cls_weight": 0.7})
    data["source_training"]["num_epochs"] = data["target_training"]["num_epochs"] = 1
    data["source"]["max_train_samples"] = data["target"]["max_train_samples"] = 64
    results = run_transfer(RunConfig.from_dict(data))
    assert results["source"]["source_loss_weight"] == 0.7
    assert results["source"]["unlabelled_target_examples"] == results["target"]["data"]["rows"]["train"]
    assert results["target"]["transfer"]["optimizer_steps"] > 0  # then the target stage


def test_udalm_config_from_yaml_and_cli(tmp_path):
    recipe = REPO / "recipes" / "news_to_sentiment.yaml"
    cfg = RunConfig.from_yaml(recipe, overrides=["strategy.name=udalm", "strategy.cls_weight=0.7"])
    assert cfg.strategy.cls_weight == 0.7 and cfg.strategy.mlm_probability == 0.15
    assert RunConfig.from_dict(cfg.to_dict()).strategy == cfg.strategy
    assert RunConfig.from_yaml(recipe, overrides=["strategy.name=udalm"]).strategy.cls_weight is None
    path = tmp_path / "udalm.yaml"
    path.write_text(recipe.read_text() + "\nstrategy: {name: udalm, mlm_probability: 0.2, target_labels: false}\n")
    cfg = RunConfig.from_yaml(path)
    assert cfg.strategy.mlm_probability == 0.2 and cfg.strategy.target_labels is False
    with pytest.raises(ConfigError, match=r"strategy\.cls_weight"):
        RunConfig.from_yaml(recipe, overrides=["strategy.name=udalm", "strategy.cls_weight=1.5"])
    with pytest.raises(ConfigError, match=r"strategy\.mlm_probabilty.*mlm_probability"):
        RunConfig.from_yaml(recipe, overrides=["strategy.name=udalm", "strategy.mlm_probabilty=0.2"])
    cfg = RunConfig.from_yaml(recipe, overrides=["strategy.name=self_training", "strategy.rounds=2",
                                                 "strategy.threshold=0.8", "strategy.max_per_class=5"])
    assert (cfg.strategy.rounds, cfg.strategy.threshold, cfg.strategy.max_per_class) == (2, 0.8, 5)
    with pytest.raises(ConfigError, match=r"strategy\.threshold"):
        RunConfig.from_yaml(recipe, overrides=["strategy.name=self_training", "strategy.threshold=1.0"])


# ---------------------------------------------------------------------------- self-training: selection
def test_pseudo_labels_above_the_threshold_balanced_per_class():
    probs = torch.tensor([[0.95, 0.05], [0.99, 0.01], [0.6, 0.4], [0.1, 0.9], [0.91, 0.09], [0.2, 0.8],
                          [0.02, 0.98]])
    chosen = select_pseudo_labels(probs, threshold=0.9)
    # class 0: rows 1, 0, 4 are confident (0.99, 0.95, 0.91); row 2 (0.6) is not
    # class 1: rows 6, 3 are confident (0.98, 0.9); row 5 (0.8) is not; balanced: 2 per class
    assert chosen.confident == [3, 2] and chosen.cap == 2 and chosen.kept == [2, 2]
    assert chosen.indices == [1, 0, 6, 3] and chosen.labels == [0, 0, 1, 1]  # most confident first
    assert all(probs[i].max() >= 0.9 for i in chosen.indices) and not chosen.below_threshold
    # an explicit cap
    capped = select_pseudo_labels(probs, threshold=0.9, max_per_class=1)
    assert capped.indices == [1, 6] and capped.kept == [1, 1]
    larger = select_pseudo_labels(probs, threshold=0.9, max_per_class=10)
    assert larger.indices == [1, 0, 4, 6, 3] and larger.kept == [3, 2]  # the cap never lets in a doubtful one
    # a lower threshold lets the doubtful ones in
    assert select_pseudo_labels(probs, threshold=0.5, max_per_class=10).kept == [4, 3]


def test_pseudo_labels_class_without_confident_examples():
    # class 1 is predicted (rows 2, 3) but never with >= 0.9: balanced, every class would keep 0;
    # instead it keeps its most confident predictions below the threshold, as many as the cap
    probs = torch.tensor([[0.97, 0.03], [0.95, 0.05], [0.3, 0.7], [0.4, 0.6], [0.93, 0.07]])
    chosen = select_pseudo_labels(probs, threshold=0.9)
    assert chosen.confident == [3, 0] and chosen.cap == 3 and chosen.below_threshold == [1]
    assert chosen.indices == [0, 1, 4, 2, 3] and chosen.labels == [0, 0, 0, 1, 1]
    # a class the model never predicts keeps none
    three = torch.tensor([[0.95, 0.03, 0.02], [0.1, 0.85, 0.05], [0.92, 0.04, 0.04]])
    chosen = select_pseudo_labels(three, threshold=0.9)
    assert chosen.kept == [2, 1, 0] and chosen.below_threshold == [1]
    # nothing confident at all: nothing kept
    nothing = select_pseudo_labels(torch.tensor([[0.6, 0.4], [0.3, 0.7]]), threshold=0.9)
    assert nothing.indices == [] and nothing.kept == [0, 0]


# ---------------------------------------------------------------------------- self-training: end to end
def test_self_training_unsupervised_end_to_end(sample_run_config):
    cfg = RunConfig.from_dict(_uda_config(sample_run_config, "self_training", target_labels=False, rounds=2,
                                          threshold=0.5))
    results = run_transfer(cfg)
    assert results["target"]["baseline"]["kind"] == "source_only"
    record = results["self_training"]
    assert [r["round"] for r in record["rounds"]] == [1, 2] and record["threshold"] == 0.5
    pool = record["unlabelled_target_examples"]
    assert pool == results["target"]["data"]["rows"]["train"]
    for r in record["rounds"]:
        kept = list(r["kept_per_class"].values())
        assert sum(kept) == r["kept"] <= pool and set(r["kept_per_class"]) == {"negative", "positive"}
        assert 0.0 <= r["pseudo_label_accuracy"] <= 1.0
    transfer = results["target"]["transfer"]
    assert transfer["optimizer_steps"] > 0 and "source_metrics" in transfer  # validated on the source


def test_self_training_with_target_labels(sample_run_config, monkeypatch):
    seen = []
    real = base.train_stage

    def spy(name, model, spec, env):
        seen.append((name, spec.task_name, None if spec.train_ds is None else len(spec.train_ds)))
        return real(name, model, spec, env)

    monkeypatch.setattr(base, "train_stage", spy)
    data = _uda_config(sample_run_config, "self_training", target_labels=True, threshold=0.0, with_source=False)
    data["baseline"] = False
    results = run_transfer(RunConfig.from_dict(data))
    kept = results["self_training"]["rounds"][0]["kept"]
    target_rows = results["target"]["data"]["rows"]["train"]
    assert seen[0][:2] == ("source", "reviews_a")
    assert seen[1] == ("self_training_1", "reviews", kept + target_rows)  # pseudo-labelled + labelled target
    assert results["target"]["transfer"]["optimizer_steps"] > 0


@pytest.mark.parametrize("strategy", ["self_training", "udalm"])
def test_no_target_label_reaches_training(strategy, sample_run_config, monkeypatch):
    """With target_labels: false, the target's train and validation labels can be anything:
    the trained model is bit-identical, and no stage validates on the target's split."""
    real_prepare, real_arm, real_stage = transfer_module.prepare_run, transfer_module.train_transfer_arm, base.train_stage
    corrupt, models, stages = {"on": False}, [], []

    def prepare(*args, **kwargs):
        run = real_prepare(*args, **kwargs)
        if corrupt["on"]:
            for split in ("train", "validation"):
                ds = run.tokenized["target"][split]
                run.tokenized["target"][split] = ds.map(lambda b: {"labels": [1 - y for y in b["labels"]]},
                                                        batched=True, features=ds.features)
        return run

    def arm(*args, **kwargs):
        outcome = real_arm(*args, **kwargs)
        models.append({k: v.detach().clone() for k, v in outcome.model.state_dict().items()})
        return outcome

    def stage(name, model, spec, env):
        stages.append((name, spec.task_name))
        return real_stage(name, model, spec, env)

    monkeypatch.setattr(transfer_module, "prepare_run", prepare)
    monkeypatch.setattr(transfer_module, "train_transfer_arm", arm)
    monkeypatch.setattr(base, "train_stage", stage)
    data = _uda_config(sample_run_config, strategy, target_labels=False,
                       **({"threshold": 0.5} if strategy == "self_training" else {}))
    data["baseline"] = False
    if strategy == "udalm":  # its steps compute masked-LM logits over a 30k vocabulary: fewer of them
        data["source"]["max_train_samples"] = data["target"]["max_train_samples"] = 48
    clean = run_transfer(RunConfig.from_dict(data))
    corrupt["on"] = True
    flipped = run_transfer(RunConfig.from_dict(data))
    a, b = models
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # every stage trained (and chose its best epoch) under the source task's splits
    assert stages and {task for _, task in stages} == {"reviews_a"}
    if strategy == "self_training":  # the labels were flipped: the (reported) pseudo-label accuracy says so
        acc = [r["self_training"]["rounds"][0]["pseudo_label_accuracy"] for r in (clean, flipped)]
        assert acc[0] == pytest.approx(1.0 - acc[1])


def test_self_training_adaptive_pretraining_before_the_rounds(sample_run_config, monkeypatch):
    """``adaptive_pretraining.before: [target]`` (TAPT) adapts the encoder every round's student
    starts from, once; the source model (round 1's teacher, the source record) is not touched."""
    starts, outcomes = {}, {}
    real = base.train_stage

    def spy(name, model, spec, env):
        starts[name] = model.get_input_embeddings().weight.detach().clone()
        outcomes[name] = real(name, model, spec, env)
        return outcomes[name]

    monkeypatch.setattr(base, "train_stage", spy)
    data = _uda_config(sample_run_config, "self_training", target_labels=False, rounds=2, threshold=0.0)
    data.update(baseline=False, adaptive_pretraining={"before": ["target"], "max_steps": 2, "batch_size": 16,
                                                      "learning_rate": 1e-3})
    source_after = {}
    real_pretrain = base.RunContext.pretrain_before

    def pretrain(run, name, model):  # the source stage's model, as it was when the rounds began
        if name == "target":
            source_after["weights"] = outcomes["source"].model.get_input_embeddings().weight.detach().clone()
        return real_pretrain(run, name, model)

    monkeypatch.setattr(base.RunContext, "pretrain_before", pretrain)
    results = run_transfer(RunConfig.from_dict(data))
    assert list(starts) == ["source", "self_training_1", "self_training_2"]
    assert results["adaptive_pretraining"]["target"]["optimizer_steps"] == 2
    source_model = outcomes["source"].model.get_input_embeddings().weight
    assert torch.equal(source_model, source_after["weights"])  # pretraining worked on a copy
    assert not torch.equal(starts["self_training_1"], source_model)  # the students start adapted ...
    assert torch.equal(starts["self_training_1"], starts["self_training_2"])  # ... from the same encoder


@pytest.mark.parametrize("strategy, before, allowed", [
    ("self_training", ["source", "target"], True),
    ("self_training", ["target"], True),
    ("joint", ["target"], True),
    ("scratch", ["source"], False),
    ("features", ["source"], True),
    ("features", ["target"], False),
])
def test_pretraining_stages_of_strategies(sample_run_config, strategy, before, allowed):
    """What ``adaptive_pretraining.before`` may list is checked against the strategy's stages before any training."""
    from textransfer.strategies import get_strategy
    from textransfer.strategies.base import check_adaptive_pretraining

    data = _uda_config(sample_run_config, strategy)
    data["adaptive_pretraining"] = {"before": before}
    cfg = RunConfig.from_dict(data)
    if allowed:
        check_adaptive_pretraining(cfg, get_strategy(cfg.strategy))
    else:
        with pytest.raises(ConfigError, match=r"adaptive_pretraining\.before"):
            check_adaptive_pretraining(cfg, get_strategy(cfg.strategy))
    pretrained = RunConfig.from_dict(dict(data, strategy={"name": "features", "encoder": "pretrained"}))
    assert get_strategy(pretrained.strategy).pretraining_stages(pretrained) == ()


def test_fresh_head_warmup_keeps_the_masked_lm_loss_off_the_encoder(pad_tokenizer):
    """During a fresh head's warm-up (``mlm_head_only``) the masked-LM loss trains the head alone;
    the same loss without it reaches the encoder. The value of the loss is the same either way."""
    model = tiny_model("bert").eval()
    mlm = masked_lm_on(model, seed=0)
    assert mlm.fresh_head  # no checkpoint: a random head
    wrapper = UDALMModel(model, mlm, cls_weight=0.0)  # the loss is the masked-LM part alone
    batch = random_batch(seed=3)
    target = _masked(pad_tokenizer, random_batch(seed=4), probability=0.5)
    values, grads = [], []
    for head_only in (True, False):
        wrapper.zero_grad(set_to_none=True)
        out = wrapper(**batch, mlm_batch=target, mlm_head_only=head_only)
        out.loss.backward()
        values.append(out.mlm_loss)
        query = model.bert.encoder.layer[0].attention.self.query.weight.grad
        grads.append((query, mlm.cls.predictions.transform.dense.weight.grad))
    assert torch.equal(values[0], values[1])
    (enc_warm, head_warm), (enc_full, head_full) = grads
    assert enc_warm is None or not enc_warm.any()  # the encoder gets nothing from it during the warm-up
    assert head_warm.abs().sum() > 0 and enc_full.abs().sum() > 0 and head_full.abs().sum() > 0


def test_self_training_across_label_sets_starts_from_a_target_model(sample_run_config, monkeypatch):
    """News topics -> sentiment: the source's classes are not the target's, so the source-tuned
    encoder first trains on the target labels (a `target` stage) and that model pseudo-labels; the
    rounds train on pseudo-labelled + labelled target rows, never on the source's."""
    seen = []
    real = base.train_stage

    def spy(name, model, spec, env):
        seen.append((name, spec.task_name, None if spec.train_ds is None else len(spec.train_ds),
                     model.config.num_labels))
        return real(name, model, spec, env)

    monkeypatch.setattr(base, "train_stage", spy)
    data = sample_run_config.to_dict()
    assert data["source"]["label_names"] != data["target"]["label_names"]
    data.update(strategy={"name": "self_training", "threshold": 0.0}, baseline=False)
    results = run_transfer(RunConfig.from_dict(data))
    record = results["self_training"]
    kept, target_rows = record["rounds"][0]["kept"], results["target"]["data"]["rows"]["train"]
    assert [s[0] for s in seen] == ["source", "target", "self_training_1"]
    assert seen[1][3] == seen[2][3] == 2  # the target's two labels from the target stage on
    assert seen[2][2] == kept + target_rows and record["with_source"] is False  # no source row in the round
    assert results["target"]["transfer"]["optimizer_steps"] > 0
    with pytest.raises(ConfigError, match="same `label_names`"):
        data["strategy"]["target_labels"] = False
        run_transfer(RunConfig.from_dict(data))
