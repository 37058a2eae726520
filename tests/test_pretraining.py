"""The adaptive-pretraining stage (``adaptive_pretraining:``): BERT-style masking that depends on
the text, not on the batch; a loss over masked tokens only; held-out perplexity that falls; the
encoder trained in place on every architecture; the wiring into runs (transfer arm only, before
the stages listed, resumable, recorded); and ``finetune`` with ``target_labels: false`` (DAPT)."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import REPO, random_batch, tiny_model, token_dataset
from textransfer import ConfigError, RunConfig, TrainingConfig, run_transfer
from textransfer.config.pretraining import AdaptivePretrainingConfig
from textransfer.modeling.masked_lm import masked_lm_on
from textransfer.strategies import base as strategies_base
from textransfer.training.masking import IGNORE_INDEX, TokenMasking, masked_lm_losses
from textransfer.training.pretraining import (MaskedLMTrainer, hold_out, parameters_without_gradient,
                                              pretraining_texts, train_adaptive_pretraining)
from textransfer.training.results import PretrainingSummary
from textransfer.training.stage import StageEnvironment
from textransfer.training.trainer import StageTrainer, make_accelerator

SPECIAL_IDS = (0, 100, 101, 102, 103)  # MiniLM's [PAD] [UNK] [CLS] [SEP] [MASK]
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a bird sang in the tree",
             "the cat and the dog sat on the mat", "a bird sat on the log in the tree"]


def _padded(tokenizer, texts):
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def _texts(tokenizer, texts, max_length=32):
    from textransfer.data.tokenization import tokenize_dataset

    return tokenize_dataset(datasets.Dataset.from_dict({"text": texts}), tokenizer, max_length)


# ---------------------------------------------------------------------------- masking
def test_masking_is_bert_style_and_counts_masked_positions_only(pad_tokenizer):
    texts = [f"{s} number {i}" for i in range(40) for s in SENTENCES[:1]]
    batch = _padded(pad_tokenizer, texts)
    out = TokenMasking(pad_tokenizer, 0.3, seed=0)(batch, step=0)
    ids, masked, labels = batch["input_ids"], out["input_ids"], out["labels"]
    chosen = labels != IGNORE_INDEX
    # a label is the original token where chosen, ignored everywhere else (padding and specials included)
    assert torch.equal(labels[chosen], ids[chosen])
    assert not chosen[batch["attention_mask"] == 0].any()
    assert not chosen[torch.isin(ids, torch.tensor(SPECIAL_IDS))].any()
    assert torch.equal(masked[~chosen], ids[~chosen])  # unchosen tokens are left as they were
    eligible = (batch["attention_mask"] == 1) & ~torch.isin(ids, torch.tensor(SPECIAL_IDS))
    assert 0.2 < chosen.sum() / eligible.sum() < 0.4
    # of the chosen, most become [MASK], a few a random token, a few stay
    became_mask = (masked[chosen] == pad_tokenizer.mask_token_id).float().mean()
    assert 0.65 < became_mask < 0.95
    assert "labels" not in batch  # the caller's batch is not changed


def test_masking_depends_on_seed_step_and_text_not_on_the_batch(pad_tokenizer):
    texts = [f"{s} and {i} more words here" for i, s in enumerate(SENTENCES * 3)]
    masking = TokenMasking(pad_tokenizer, 0.3, seed=7)
    whole = masking(_padded(pad_tokenizer, texts), step=3)
    assert torch.equal(whole["labels"], masking(_padded(pad_tokenizer, texts), step=3)["labels"])
    assert not torch.equal(whole["labels"], masking(_padded(pad_tokenizer, texts), step=4)["labels"])
    assert not torch.equal(whole["labels"], TokenMasking(pad_tokenizer, 0.3, seed=8)(_padded(pad_tokenizer, texts),
                                                                                      step=3)["labels"])
    # the same texts cut into two batches (as two processes see them), padded to other lengths
    for part in (texts[:7], texts[7:]):
        alone = masking(_padded(pad_tokenizer, part), step=3)
        for i, text in enumerate(part):
            row, real = texts.index(text), len(pad_tokenizer(text)["input_ids"])
            assert torch.equal(alone["input_ids"][i, :real], whole["input_ids"][row, :real])
            assert torch.equal(alone["labels"][i, :real], whole["labels"][row, :real])


def test_loss_counts_masked_positions_only(pad_tokenizer):
    model = tiny_model("bert")
    mlm = masked_lm_on(model, None, seed=0).eval()
    batch = random_batch(batch=6, length=16, seed=3)
    batch.pop("labels")
    masked = TokenMasking(pad_tokenizer, 0.3, seed=0, vocab_size=1000)(batch, step=0)
    labels = masked.pop("labels")
    chosen = labels != IGNORE_INDEX
    assert 0 < chosen.sum() < chosen.numel()
    with torch.no_grad():
        sums, counts = masked_lm_losses(mlm, mlm.base_model, masked, labels)
    assert torch.equal(counts, chosen.sum(dim=1))
    # the cross-entropy of the full logits at the masked positions, and nothing else
    with torch.no_grad():
        full = mlm(**masked).logits
    expected = F.cross_entropy(full[chosen], labels[chosen], reduction="none")
    per_text = torch.zeros(6).index_add(0, chosen.nonzero()[:, 0], expected)
    assert torch.allclose(sums, per_text, atol=1e-4)
    # transformers' own masked-LM loss (mean over labels != -100) agrees
    with torch.no_grad():
        assert (sums.sum() / counts.sum()).item() == pytest.approx(mlm(**masked, labels=labels).loss.item(), abs=1e-4)
    # the target an unmasked position would have makes no difference: it is not counted
    relabelled = labels.clone()
    relabelled[~chosen] = 5
    assert F.cross_entropy(full[chosen], relabelled[chosen], reduction="sum").item() == pytest.approx(
        sums.sum().item(), abs=1e-3)
    assert F.cross_entropy(full.flatten(0, 1), relabelled.flatten(), reduction="sum").item() > sums.sum().item() + 1


# ---------------------------------------------------------------------------- every architecture
def test_one_masked_lm_step_on_every_architecture(model_type, pad_tokenizer):
    """The masked-LM loss reaches the shared encoder and moves it; the classifier's head stays."""
    model = tiny_model(model_type)
    mlm = masked_lm_on(model, None, seed=0)
    ds = token_dataset(n=16, vocab=1000).remove_columns(["labels"])
    frozen = parameters_without_gradient(mlm, ds, pad_tokenizer, "cpu")
    assert all("pooler" in name for name in frozen)  # BERT's pooler only; no other parameter is unreached
    for name, p in mlm.named_parameters():
        p.requires_grad_(name not in frozen)
    encoder_before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(model.base_model_prefix)}
    args = TrainingConfig(max_steps=2, batch_size=8, learning_rate=1e-3, eval_every_epoch=False,
                          load_best_model_at_end=False, warmup_ratio=0.0)
    masking = TokenMasking(pad_tokenizer, 0.3, seed=0, vocab_size=1000)
    trainer = MaskedLMTrainer(mlm, pad_tokenizer, args, make_accelerator(cpu=True), [], masking=masking, logging_steps=1)
    result = trainer.train(ds)
    assert result.optimizer_steps == 2 and torch.isfinite(torch.tensor(result.history[-1]["train_loss"]))
    assert [p["step"] for p in trainer.curve.points] == [1, 2]
    moved = [k for k, v in model.base_model.state_dict().items() if not torch.equal(v, encoder_before[k])]
    assert any("embeddings" in k for k in moved) and any("layer" in k for k in moved)
    assert all(torch.equal(v, head_before[k]) for k, v in model.state_dict().items() if k in head_before)


# ---------------------------------------------------------------------------- the stage
def _environment(cfg, **changes):
    for key, value in changes.items():
        setattr(cfg, key, value)
    return StageEnvironment(cfg, make_accelerator(cpu=True), _tokenizer(cfg), None)


def _tokenizer(cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model.name_or_path)


def test_training_lowers_heldout_perplexity_and_trains_the_encoder_in_place(sample_run_config):
    from textransfer.modeling.loading import load_for_classification

    env = _environment(sample_run_config)
    texts = hold_out(_texts(env.tokenizer, [f"{s}, {s}" for s in SENTENCES * 12]), 0.2, seed=0)
    assert len(texts.heldout) == 12 and len(texts.train) == 48
    config = AdaptivePretrainingConfig(max_steps=30, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0)
    classifier = load_for_classification(sample_run_config.model, ["a", "b"])
    encoder_before = {k: v.clone() for k, v in classifier.base_model.state_dict().items()}
    head_before = classifier.classifier.weight.clone()
    record = train_adaptive_pretraining("source", classifier, texts, config, env)
    assert record.heldout_perplexity_after < 0.5 * record.heldout_perplexity_before
    assert record.optimizer_steps == 30 and record.texts == 48 and record.heldout_texts == 12
    assert record.heldout_masked_tokens > 0 and record.history and record.history[-1]["step"] == 30
    assert record.frozen_without_gradient == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    # the classifier's own encoder was trained; its head and the pooler were not
    moved = [k for k, v in classifier.base_model.state_dict().items() if not torch.equal(v, encoder_before[k])]
    assert "embeddings.word_embeddings.weight" in moved and "encoder.layer.1.output.dense.weight" in moved
    assert not any(k.startswith("pooler") for k in moved)
    assert torch.equal(classifier.classifier.weight, head_before)
    assert all(p.requires_grad for p in classifier.parameters())  # requires_grad restored after the stage


def test_pretraining_texts_choices(sample_run_config, tmp_path):
    tokenizer = _tokenizer(sample_run_config)
    splits = {key: {"train": _texts(tokenizer, [f"{key} text {i}" for i in range(n)]).add_column("labels", [0] * n)}
              for key, n in (("source", 30), ("target", 20))}
    pick = lambda **kw: pretraining_texts(AdaptivePretrainingConfig(**kw), splits, tokenizer, 32, seed=0)  # noqa: E731
    target = pick(text="target", heldout_fraction=0.1)
    assert (len(target.train), len(target.heldout)) == (18, 2) and "labels" not in target.train.column_names
    both = pick(text="both", heldout_fraction=0.0)
    assert len(both.train) == 50 and both.heldout is None
    assert len(pick(text="source", max_examples=10, heldout_fraction=0.2).train) == 8
    (tmp_path / "domain.txt").write_text("\n".join(f"a line of domain text {i}" for i in range(12)) + "\n\n")
    files = pick(text="files", files=[str(tmp_path / "domain.txt")], heldout_fraction=0.25)
    assert (len(files.train), len(files.heldout)) == (9, 3)
    with pytest.raises(ConfigError, match="adaptive_pretraining.files"):
        pick(text="files", files=[str(tmp_path / "missing.txt")])


# ---------------------------------------------------------------------------- configuration
def test_adaptive_pretraining_from_yaml_and_command_line(tmp_path):
    recipe = tmp_path / "dapt.yaml"
    recipe.write_text((REPO / "recipes" / "news_to_sentiment.yaml").read_text()
                      + "adaptive_pretraining:\n  before: [source, target]\n  text: both\n  mlm_probability: 0.2\n")
    cfg = RunConfig.from_yaml(recipe)
    assert cfg.adaptive_pretraining.before == ["source", "target"] and cfg.adaptive_pretraining.text == "both"
    assert cfg.adaptive_pretraining.mlm_probability == 0.2
    cfg = RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml",
                              overrides=["adaptive_pretraining.before=[target]", "adaptive_pretraining.max_steps=5",
                                         "strategy.target_labels=false"])
    assert cfg.adaptive_pretraining.before == ["target"] and cfg.adaptive_pretraining.max_steps == 5
    assert cfg.adaptive_pretraining.training().max_steps == 5 and cfg.strategy.target_labels is False
    assert RunConfig.from_dict(cfg.to_dict()).adaptive_pretraining == cfg.adaptive_pretraining
    with pytest.raises(ConfigError, match="adaptive_pretraining.before"):
        RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml", overrides=["adaptive_pretraining.before=[middle]"])


# ---------------------------------------------------------------------------- runs
PRETRAIN = ["adaptive_pretraining.max_steps=4", "adaptive_pretraining.batch_size=16",
            "adaptive_pretraining.learning_rate=1e-3", "source.max_train_samples=96", "target.max_train_samples=96"]


def _config(sample_run_config, *overrides, **sections):
    from textransfer.config.schema import apply_overrides

    data = sample_run_config.to_dict()
    data["strategy"] = {}  # the overrides name the strategy and its options
    data = apply_overrides(data, [*PRETRAIN, *overrides])
    data.update(sections)
    return RunConfig.from_dict(data)


def _spy_stages(monkeypatch):
    """Each stage's name and a copy of its model's word embeddings as the stage starts."""
    seen = []
    real = strategies_base.train_stage

    def spy(name, model, spec, env):
        seen.append((name, model.get_input_embeddings().weight.detach().clone()))
        return real(name, model, spec, env)

    monkeypatch.setattr(strategies_base, "train_stage", spy)
    return seen


def test_run_pretrains_the_transfer_arm_and_not_the_baseline(sample_run_config, monkeypatch, tmp_path):
    cfg = _config(sample_run_config, "adaptive_pretraining.before=[source,target]", "source_training.num_epochs=1",
                  "target_training.num_epochs=1")
    seen = _spy_stages(monkeypatch)
    results = run_transfer(cfg, output_dir=tmp_path / "run")
    pretrained = load_file(str(Path(sample_run_config.model.name_or_path) / "model.safetensors"))
    start = {name: weights for name, weights in seen}
    assert list(start) == ["source", "target", "baseline"]
    untouched = pretrained["embeddings.word_embeddings.weight"]
    assert torch.equal(start["baseline"], untouched)  # the baseline is the pretrained encoder
    assert not torch.equal(start["source"], untouched)  # the source stage began from the pretrained-on-text one
    records = results["adaptive_pretraining"]
    assert list(records) == ["source", "target"]
    for record in records.values():
        assert record["optimizer_steps"] == 4 and record["text"] == "target"
        assert record["heldout_perplexity_before"] > 0 and record["heldout_perplexity_after"] > 0
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["adaptive_pretraining"] == records
    assert results["timings"]["adaptive_pretraining_s"] > 0


def test_dapt_for_unsupervised_adaptation(sample_run_config, tmp_path):
    """finetune, target_labels: false, pretraining on the target's text before the source stage:
    tested on the target against the source-only baseline, which was not pretrained."""
    data = sample_run_config.to_dict()
    cfg = _config(sample_run_config, "adaptive_pretraining.before=[source]", "strategy.target_labels=false",
                  "source_training.num_epochs=1", source=dict(data["target"], name="reviews_a", split_seed=1))
    results = run_transfer(cfg)
    assert results["target"]["baseline"]["kind"] == "source_only"
    assert results["target"]["transfer"]["optimizer_steps"] == 0  # no target stage, no target label
    assert results["adaptive_pretraining"]["source"]["optimizer_steps"] == 4
    assert results["source"]["optimizer_steps"] == results["target"]["baseline"]["optimizer_steps"] > 0
    with pytest.raises(ConfigError, match="same `label_names`"):
        run_transfer(_config(sample_run_config, "strategy.target_labels=false"))


@pytest.mark.parametrize("overrides, message", [
    (["strategy.name=scratch", "adaptive_pretraining.before=[source]"], "`scratch` trains target of"),
    (["strategy.target_labels=false", "adaptive_pretraining.before=[target]"], "trains source"),
    (["strategy.name=joint", "adaptive_pretraining.before=[source]"], "`joint` trains target of"),
    (["strategy.name=features", "strategy.encoder=pretrained", "adaptive_pretraining.before=[target]"],
     "`features` trains neither"),
])
def test_before_a_stage_the_strategy_does_not_train_is_an_error(sample_run_config, monkeypatch, overrides, message):
    cfg = _config(sample_run_config, *overrides)
    trained = []
    monkeypatch.setattr(StageTrainer, "train", lambda self, *a, **k: trained.append(self.desc))
    with pytest.raises(ConfigError, match=message):
        run_transfer(cfg)
    assert trained == []  # raised before any training


def test_resume_skips_a_finished_pretraining_stage(sample_run_config, monkeypatch, tmp_path):
    cfg = _config(sample_run_config, "adaptive_pretraining.before=[source]", "source_training.num_epochs=1",
                  "target_training.num_epochs=1", baseline=False, keep_checkpoints=True)
    first = run_transfer(cfg, output_dir=tmp_path / "run")
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "pretraining-source" / "done.json").is_file()
    # as if the run had been killed after the pretraining stage: the later stages are gone
    for stage in ("source", "target"):
        shutil.rmtree(checkpoints / stage)
    calls = []
    real_train = MaskedLMTrainer.train
    monkeypatch.setattr(MaskedLMTrainer, "train", lambda self, *a, **k: calls.append(1) or real_train(self, *a, **k))
    again = run_transfer(cfg, output_dir=tmp_path / "run", resume=True)
    assert calls == []  # not trained again: its record and encoder were reused
    assert again["adaptive_pretraining"] == first["adaptive_pretraining"]
    assert again["target"]["transfer"]["metrics"] == first["target"]["transfer"]["metrics"]
    resumed = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


def test_a_listed_stage_the_strategy_never_reached_is_warned_of(caplog):
    """A strategy whose stages the pre-training check cannot see (``features`` trains its head
    outside ``source``/``target`` stages): the run says that no pretraining ran there."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(adaptive_pretraining=AdaptivePretrainingConfig(before=["source", "target"]),
                          strategy=SimpleNamespace(name="features"))
    record = PretrainingSummary(before="source", text="target", texts=9, heldout_texts=1,
                                            mlm_probability=0.15)
    run = SimpleNamespace(cfg=cfg, pretraining={"source": record}, accelerator=SimpleNamespace(is_main_process=False))
    with caplog.at_level("WARNING"):
        assert strategies_base.pretraining_results(run) == {"source": record.to_dict()}
    assert "lists ['target']" in caplog.text and "features" in caplog.text
    cfg.adaptive_pretraining = None
    assert strategies_base.pretraining_results(run) is None


def test_fresh_head_warms_up_alone_and_a_loaded_head_does_not(tmp_path):
    """A random masked-LM head trains alone for ``fresh_head_warmup`` of the steps; a head the
    checkpoint carries needs no warm-up."""
    from textransfer.training.pretraining import fresh_head_warmup_steps

    config = AdaptivePretrainingConfig(fresh_head_warmup=0.25, batch_size=8)
    args = config.training()
    fresh = masked_lm_on(tiny_model("bert"), seed=0)
    assert fresh.fresh_head and fresh_head_warmup_steps(fresh, config, args, texts=160, processes=1) == 5  # 20 steps
    assert fresh_head_warmup_steps(fresh, config, args, texts=160, processes=2) == 2  # 10 steps of 2 x 8
    off = AdaptivePretrainingConfig(fresh_head_warmup=0.0)
    assert fresh_head_warmup_steps(fresh, off, off.training(), texts=160, processes=1) is None
    # a checkpoint saved with its masked-LM head: loaded, not fresh
    from transformers import AutoModelForMaskedLM

    classifier = tiny_model("bert")
    full = AutoModelForMaskedLM.from_config(classifier.config)
    full.save_pretrained(tmp_path / "with-head")
    loaded = masked_lm_on(classifier, str(tmp_path / "with-head"), seed=0)
    assert not loaded.fresh_head
    assert torch.equal(loaded.cls.predictions.transform.dense.weight, full.cls.predictions.transform.dense.weight)
    assert fresh_head_warmup_steps(loaded, config, args, texts=160, processes=1) is None
