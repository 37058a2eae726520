"""The contrastive phase of a stage (``*_training.contrastive``, SetFit's idea): balanced pairs
labelled as the classes say, losses that pull same-class embeddings together on tiny models of every
architecture, runs from YAML and the command line (source stage, target stage and the baseline, which
gets the target recipe too), shipped models that ``pipeline`` reloads with the recorded answers,
``--resume``, two processes, and the config's errors."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import ARCHITECTURES, REPO, tiny_model, token_dataset
from test_shipped_models import arm_folders, assert_standard_model, recorded
from textransfer import ConfigError, RunConfig, run_transfer
from textransfer.cli import main
from textransfer.config.contrastive import ContrastiveConfig
from textransfer.data.pairs import by_class, contrastive_pairs, example_batches
from textransfer.modeling.heads import final_linear
from textransfer.training.accelerator import make_accelerator
from textransfer.training.contrastive import (ContrastivePhase, class_cosine_means, contrastive_phase,
                                              cosine_similarity_loss, supervised_contrastive_loss)
from textransfer.training.trainer import StageTrainer

RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"
# a few-shot target (16 reviews a class) and a small source: seconds per stage on the tiny models
RUN_OVERRIDES = ["model.max_length=32", "target.k_per_class=16", "source.max_train_samples=64",
                 "source_training.num_epochs=1", "target_training.num_epochs=2", "source_training.batch_size=16",
                 "target_training.batch_size=16", "target_training.learning_rate=3e-3",
                 "target_training.early_stopping_patience=null", "noise_resamples=50"]


# ---------------------------------------------------------------------------- pairs
def test_pairs_are_balanced_and_labelled_as_the_classes_say():
    labels = [0] * 5 + [1] * 3 + [2] * 4
    pairs = contrastive_pairs(labels, iterations=3, seed=0)
    assert len(pairs) == 2 * 3 * len(labels)
    assert Counter(p.label for p in pairs) == {1.0: 3 * len(labels), 0.0: 3 * len(labels)}
    for a, b, y in pairs:
        assert y == float(labels[a] == labels[b])
        if y == 1.0:
            assert a != b  # every class has two examples or more: a positive is another example
    # every example anchors one positive and one negative pair per iteration
    assert Counter((p.first, p.label) for p in pairs) == {(i, y): 3 for i in range(len(labels)) for y in (0.0, 1.0)}
    # negatives reach every other class
    assert {(labels[p.first], labels[p.second]) for p in pairs if p.label == 0.0} == \
        {(a, b) for a in range(3) for b in range(3) if a != b}
    assert pairs == contrastive_pairs(labels, 3, seed=0) and pairs != contrastive_pairs(labels, 3, seed=1)


def test_a_single_example_class_pairs_with_itself_and_one_class_is_refused():
    pairs = contrastive_pairs([0, 1, 1], iterations=2, seed=0)
    assert all(p.second == 0 for p in pairs if p.first == 0 and p.label == 1.0)
    with pytest.raises(ConfigError, match="at least two classes"):
        by_class([1, 1, 1])


def test_supervised_batches_cover_every_example_each_pass():
    labels = [0, 1] * 17  # 34 examples: batches of 16, 16, 2
    batches = example_batches(labels, batch_size=16, passes=2, seed=0)
    assert sorted(i for b in batches for i in b) == sorted(list(range(34)) * 2)
    assert min(len(b) for b in batches) >= 2
    assert len(example_batches([0, 1] * 8 + [0], 16, 1, 0)[-1]) == 17  # a lone last example joins the batch before


# ---------------------------------------------------------------------------- losses
def test_cosine_similarity_loss_is_setfits():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert cosine_similarity_loss(u, v, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0)
    assert cosine_similarity_loss(u, v, torch.tensor([0.0, 1.0])).item() == pytest.approx(1.0)


def test_supervised_contrastive_loss_prefers_classes_that_cluster():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = clustered[[0, 2, 1, 3]]
    assert supervised_contrastive_loss(clustered, labels, 0.1) < supervised_contrastive_loss(mixed, labels, 0.1)
    z = mixed.clone().requires_grad_()
    supervised_contrastive_loss(z, torch.tensor([0, 1, 2, 3]), 0.1).backward()  # no positives: zero, no error
    assert z.grad is not None and z.grad.abs().sum() == 0


# ---------------------------------------------------------------------------- the mechanism, tiny models
def _phase(model, tokenizer, ds=None, **options):
    config = ContrastiveConfig(**{"pair_iterations": 3, "learning_rate": 1e-3, "warmup_ratio": 0.0, **options})
    return ContrastivePhase(model, ds if ds is not None else token_dataset(32), config, tokenizer,
                            make_accelerator(), seed=0, desc="test")


def test_the_loss_pulls_same_class_embeddings_together_on_every_architecture(model_type, pad_tokenizer):
    model = tiny_model(model_type)
    head = {k: v.clone() for k, v in final_linear(model).state_dict().items()}
    encoder = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    summary = _phase(model, pad_tokenizer).train()
    gap = {when: summary.same_class_cosine[when] - summary.other_class_cosine[when] for when in ("before", "after")}
    assert gap["after"] > gap["before"] + 0.005, (model_type, summary)
    assert summary.optimizer_steps == 2 * 3 * 32 // 16 and summary.pairs == 2 * 3 * 32
    # the encoder moved; the final layer, outside the pooled embedding, did not
    moved = [k for k, v in model.base_model.state_dict().items() if v.is_floating_point() and not torch.equal(v, encoder[k])]
    assert moved
    assert all(torch.equal(v, head[k]) for k, v in final_linear(model).state_dict().items())


@pytest.mark.parametrize("loss,pooling", [("supervised_contrastive", "mean"), ("cosine_similarity", "head"),
                                          ("supervised_contrastive", "cls")])
def test_each_loss_and_pooling_trains_what_the_embedding_depends_on(loss, pooling, pad_tokenizer):
    model = tiny_model("bert")
    pooler = model.bert.pooler.dense.weight.clone()
    summary = _phase(model, pad_tokenizer, loss=loss, pooling=pooling).train()
    assert summary.loss == loss and summary.pooling == pooling and summary.optimizer_steps > 0
    # BERT's pooler is the head's input: trained with `pooling: head`, unused (unchanged) otherwise
    assert torch.equal(model.bert.pooler.dense.weight, pooler) == (pooling != "head")
    if loss == "supervised_contrastive" and pooling == "mean":
        gap = [summary.same_class_cosine[w] - summary.other_class_cosine[w] for w in ("before", "after")]
        assert gap[1] > gap[0]


def test_frozen_parameters_stay_frozen_and_all_frozen_is_refused(pad_tokenizer):
    model = tiny_model("bert")
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    embeddings = model.bert.embeddings.word_embeddings.weight.clone()
    _phase(model, pad_tokenizer, pair_iterations=1).train()
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, embeddings)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to train"):
        _phase(model, pad_tokenizer).train()


def test_disabled_or_absent_block_runs_nothing_and_a_stream_is_refused(pad_tokenizer):
    from textransfer.config import TrainingConfig

    model = tiny_model("bert")
    for args in (TrainingConfig(), TrainingConfig(contrastive=ContrastiveConfig(enabled=False))):
        assert contrastive_phase("target", model, token_dataset(8), args, pad_tokenizer, make_accelerator(), 0) is None
    stream = token_dataset(8).to_iterable_dataset()
    with pytest.raises(ConfigError, match="streamed split"):
        _phase(model, pad_tokenizer, ds=stream)


def test_class_cosine_means():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert class_cosine_means(z, torch.tensor([0, 0, 1])) == (1.0, 0.0)


# ---------------------------------------------------------------------------- runs: YAML, CLI, shipped model
def _yaml_recipe(tmp_path, model_dir, contrastive: dict, source_contrastive=None) -> Path:
    data = yaml.safe_load(RECIPE.read_text())
    data["model"]["name_or_path"] = model_dir
    data["target_training"].update(contrastive=contrastive, head_warmup_epochs=1, head_learning_rate=3e-3)
    if source_contrastive is not None:
        data["source_training"]["contrastive"] = source_contrastive
    path = tmp_path / "contrastive.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _assert_answers_as_recorded(run: Path, standard: bool = True):
    """Every arm's folder is a plain classifier on which ``pipeline`` gives the recorded labels and scores."""
    lines, shipped = recorded(run)
    texts = [line["text"] for line in lines]
    label_names = json.loads((run / "results.json").read_text())["target"]["label_names"]
    for arm, folder in arm_folders(run, lines, shipped).items():
        if standard:
            assert_standard_model(folder, label_names)
        _, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        got = pipeline("text-classification", model=str(folder), device=-1)(texts, truncation=True)
        assert [r["label"] for r in got] == [line[arm]["label"] for line in lines], arm
        want = [line[arm]["scores"][line[arm]["label"]] for line in lines]
        assert max(abs(r["score"] - w) for r, w in zip(got, want)) < 1e-5, arm


def test_run_from_yaml_gives_the_baseline_the_same_recipe_and_ships_a_standard_model(tmp_path, tiny_bert_dir):
    recipe = _yaml_recipe(tmp_path, tiny_bert_dir, {"pair_iterations": 2, "learning_rate": 1e-3, "pooling": "head"})
    cfg = RunConfig.from_yaml(recipe, overrides=RUN_OVERRIDES)
    assert cfg.target_training.contrastive == ContrastiveConfig(pair_iterations=2, learning_rate=1e-3, pooling="head")
    results = run_transfer(cfg, output_dir=tmp_path / "run")
    transfer, baseline = results["target"]["transfer"], results["target"]["baseline"]
    # the no-transfer baseline trains `target_training`, contrastive phase included: the gain is honest
    assert transfer["contrastive"]["optimizer_steps"] == baseline["contrastive"]["optimizer_steps"] == 2 * 2 * 32 // 16
    assert transfer["contrastive"]["pooling"] == baseline["contrastive"]["pooling"] == "head"
    assert "contrastive" not in results["source"]
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["target_training"]["contrastive"]["pair_iterations"] == 2
    _assert_answers_as_recorded(tmp_path / "run")


@pytest.fixture(params=sorted(ARCHITECTURES))
def encoder_dir(request, tmp_path_factory, minilm_path):
    """A tiny random encoder of each architecture, saved bare (no head) with MiniLM's tokenizer."""
    model_type = request.param
    names = {"model_input_names": ["input_ids", "attention_mask"]} if model_type == "distilbert" else {}
    tok = AutoTokenizer.from_pretrained(minilm_path, **names)
    cfg = AutoConfig.for_model(model_type, **dict(ARCHITECTURES[model_type], vocab_size=tok.vocab_size))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(f"encoder-{model_type}")
    AutoModel.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return model_type, str(path)


def test_every_architecture_runs_from_the_command_line_and_ships_as_recorded(encoder_dir, tmp_path):
    model_type, path = encoder_dir
    out = tmp_path / "run"
    argv = ["run", str(RECIPE), "--output-dir", str(out), f"model.name_or_path={path}", *RUN_OVERRIDES,
            "target_training.contrastive.pair_iterations=2", "--target_training.contrastive.learning_rate", "1e-3",
            "source_training.contrastive.loss=supervised_contrastive", "source_training.contrastive.pair_iterations=1",
            "target_training.head_warmup_epochs=1"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["source"]["contrastive"]["loss"] == "supervised_contrastive"  # on the source's labels
    for arm in ("transfer", "baseline"):
        record = results["target"][arm]["contrastive"]
        assert record["loss"] == "cosine_similarity" and record["optimizer_steps"] == 8, (model_type, arm)
    _assert_answers_as_recorded(out, standard=False)


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, tiny_bert_dir, monkeypatch):
    """Killed (Ctrl-C) after the target stage's first epoch, resumed: the same weights and metrics."""
    overrides = [f"model.name_or_path={tiny_bert_dir}", *RUN_OVERRIDES, "baseline=false",
                 "target_training.save_checkpoints=true", "target_training.contrastive.pair_iterations=1",
                 "target_training.contrastive.learning_rate=1e-3"]
    reference = run_transfer(RunConfig.from_yaml(RECIPE, overrides=overrides), output_dir=tmp_path / "one")
    real_end = StageTrainer._end_epoch

    def stop_after_first_target_epoch(self, run, state):
        finished = real_end(self, run, state)
        if self.desc == "target" and state.epoch == 1:
            raise KeyboardInterrupt("stopped for the test")
        return finished

    monkeypatch.setattr(StageTrainer, "_end_epoch", stop_after_first_target_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(RunConfig.from_yaml(RECIPE, overrides=overrides), output_dir=tmp_path / "two")
    monkeypatch.setattr(StageTrainer, "_end_epoch", real_end)
    resumed = run_transfer(RunConfig.from_yaml(RECIPE, overrides=overrides + ["resume=true"]),
                           output_dir=tmp_path / "two")
    for key in ("metrics", "history", "contrastive"):
        got, want = resumed["target"]["transfer"][key], reference["target"]["transfer"][key]
        if key == "contrastive":  # the phase ran again; its time differs
            got, want = ({k: v for k, v in d.items() if k != "train_time_s"} for d in (got, want))
        assert got == want, key
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("one", "two"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("override,message", [
    ("target_training.contrastive.loss=triplet", r"`contrastive.loss` must be one of cosine_similarity"),
    ("target_training.contrastive.pooling=max", r"`contrastive.pooling` must be one of mean, cls, head"),
    ("target_training.contrastive.pair_iterations=0", r"`contrastive.pair_iterations` must be >= 1"),
    ("target_training.contrastive.temperature=0", r"`contrastive.temperature` must be > 0"),
    ("target_training.contrastive.learning_rate=-1", r"`contrastive.learning_rate` must be > 0"),
])
def test_bad_options_name_the_override(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        RunConfig.from_yaml(RECIPE, overrides=[override])
    assert f"command-line override `{override}`" in str(err.value)
    assert err.value.option == override.split("=")[0]


def test_unknown_contrastive_option_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"Did you mean `source_training.contrastive.pair_iterations`"):
        RunConfig.from_yaml(RECIPE, overrides=["source_training.contrastive.pair_iteration=3"])
    with pytest.raises(ConfigError, match="must be >= 2 with `loss: supervised_contrastive`"):
        ContrastiveConfig(loss="supervised_contrastive", batch_size=1)


def test_the_option_reference_lists_the_block():
    readme = (REPO / "README.md").read_text()
    for name in ("enabled", "pair_iterations", "loss", "pooling", "temperature"):
        assert f"`*_training.contrastive.{name}`" in readme


# ---------------------------------------------------------------------------- two processes
def test_two_processes_match_one(tmp_path, _tiny_bert_dir):
    """Every process trains the same pairs; the stage's DDP wrap starts from identical replicas."""
    from test_distributed import BATCH, _launch, _overrides, _saved_weights_difference

    model_dir = tmp_path / "bert-no-dropout"
    model = AutoModel.from_pretrained(_tiny_bert_dir)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(_tiny_bert_dir).save_pretrained(model_dir)
    extra = ["baseline=false", "target_training.contrastive.pair_iterations=1",
             "target_training.contrastive.learning_rate=1e-3"]
    ddp, ranks = _launch(tmp_path / "ddp", tmp_path / "ddp-record", _overrides(model_dir, BATCH, extra), 2)
    one, _ = _launch(tmp_path / "one", tmp_path / "one-record", _overrides(model_dir, 2 * BATCH, extra), 1)
    assert ddp["world_size"] == 2
    assert ddp["target"]["transfer"]["contrastive"]["optimizer_steps"] == \
        one["target"]["transfer"]["contrastive"]["optimizer_steps"] > 0
    assert ddp["target"]["transfer"]["metrics"] == pytest.approx(one["target"]["transfer"]["metrics"], abs=1e-6)
    _, worst = _saved_weights_difference(tmp_path)
    assert worst < 1e-5, f"largest weight difference {worst}"
