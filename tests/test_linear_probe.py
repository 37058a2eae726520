"""LP-FT's linear probe fitted to convergence (``*_training.linear_probe``): only the final layer
moves, the fit is the optimum of sklearn's logistic-regression objective (zero gradient, weights
acting as repeated examples), the shipped model answers as the probe was fitted, and runs from
YAML and the command line give it to the transfer arm and the baseline alike."""

import json

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from conftest import ARCHITECTURES, REPO, tiny_model, token_dataset
from test_contrastive import RUN_OVERRIDES, _assert_answers_as_recorded
from textransfer import ConfigError, RunConfig, TrainingConfig, run_transfer
from textransfer.cli import main
from textransfer.data.batching import EXAMPLE_WEIGHTS_COLUMN
from textransfer.modeling.heads import final_linear
from textransfer.modeling.loading import save_model
from textransfer.training.accelerator import make_accelerator
from textransfer.training.linear_probe import final_layer_inputs, linear_probe, probe_objective

RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"


def _probe(model, ds, tokenizer, **options):
    args = TrainingConfig(linear_probe=True, eval_batch_size=16, **options)
    return linear_probe("target", model, ds, args, tokenizer, make_accelerator())


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_only_the_final_layer_moves_to_the_objectives_optimum(model_type, pad_tokenizer):
    model, ds = tiny_model(model_type), token_dataset(48)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layer = final_linear(model)
    layer_names = {n for n, p in model.named_parameters() if any(p is q for q in layer.parameters())}
    summary = _probe(model, ds, pad_tokenizer)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != (name in layer_names), name  # the layer moved, nothing else
    assert summary.loss_after < summary.loss_before and summary.examples == 48 and summary.iterations > 0
    # convex objective at its minimum: the gradient vanishes
    data = final_layer_inputs(model, ds, pad_tokenizer, 16, torch.device("cpu"))
    loss = probe_objective(layer, data, 1.0)
    grads = torch.autograd.grad(loss, list(layer.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-4
    assert abs(float(loss.detach()) - summary.loss_after) < 1e-5


def test_a_weight_of_two_is_the_example_twice(pad_tokenizer):
    """sklearn's sample_weight semantics: weighting an example 2 fits as if it were there twice."""
    ds = token_dataset(24, seed=3)
    weighted = ds.add_column(EXAMPLE_WEIGHTS_COLUMN, [2.0] + [1.0] * (len(ds) - 1))
    repeated = Dataset.from_dict({k: [ds[0][k]] + list(ds[k]) for k in ds.column_names}, features=ds.features)
    fits = []
    for data in (weighted, repeated):
        model = tiny_model("bert", seed=1)
        _probe(model, data, pad_tokenizer)
        fits.append(final_linear(model).weight.detach())
    torch.testing.assert_close(fits[0], fits[1], atol=1e-4, rtol=1e-4)


def test_a_smaller_c_shrinks_the_weights_and_the_shipped_model_answers_as_fitted(pad_tokenizer, tmp_path):
    ds = token_dataset(32, seed=5)
    norms = {}
    for c in (0.01, 100.0):
        model = tiny_model("bert", seed=2)
        summary = _probe(model, ds, pad_tokenizer, linear_probe_c=c)
        norms[c] = float(final_linear(model).weight.detach().norm())
    assert norms[0.01] < norms[100.0]
    save_model(model, pad_tokenizer, tmp_path / "model")
    shipped = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    data = final_layer_inputs(shipped, ds, pad_tokenizer, 16, torch.device("cpu"))
    with torch.no_grad():
        accuracy = float((final_linear(shipped)(data["features"]).argmax(-1) == data["labels"]).float().mean())
    assert abs(accuracy - summary.train_accuracy) < 1e-9


def test_off_by_default_and_refused_where_it_cannot_fit(pad_tokenizer):
    model, ds = tiny_model("bert"), token_dataset(16)
    assert linear_probe("target", model, ds, TrainingConfig(), pad_tokenizer, make_accelerator()) is None
    with pytest.raises(ConfigError, match="`linear_probe` .* streamed") as err:
        _probe(model, ds.to_iterable_dataset(), pad_tokenizer)
    assert err.value.option == "linear_probe"
    final_linear(model).requires_grad_(False)
    with pytest.raises(ConfigError, match="freeze_patterns freezes"):
        _probe(model, ds, pad_tokenizer)
    with pytest.raises(ConfigError, match="`linear_probe_c` must be > 0"):
        TrainingConfig(linear_probe_c=0)


def test_run_from_the_command_line_probes_both_arms_and_ships_as_recorded(tmp_path, tiny_bert_dir):
    out = tmp_path / "run"
    argv = ["run", str(RECIPE), "--output-dir", str(out), f"model.name_or_path={tiny_bert_dir}", *RUN_OVERRIDES,
            "target_training.linear_probe=true", "target_training.linear_probe_c=0.5",
            "target_training.head_warmup_epochs=1"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    for arm in ("transfer", "baseline"):  # the baseline trains target_training too: the gain stays honest
        record = results["target"][arm]["linear_probe"]
        assert record["c"] == 0.5 and record["examples"] == 32 and record["loss_after"] < record["loss_before"]
    assert "linear_probe" not in results["source"]
    _assert_answers_as_recorded(out)


def test_yaml_block_sets_it(tmp_path, tiny_bert_dir):
    assert RunConfig.from_yaml(RECIPE).target_training.linear_probe is False
    data = yaml.safe_load(RECIPE.read_text())
    data["model"]["name_or_path"] = tiny_bert_dir
    data["target_training"].update(linear_probe=True, linear_probe_c=2.0)
    recipe = tmp_path / "probe.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = RunConfig.from_yaml(recipe, overrides=RUN_OVERRIDES)
    assert cfg.target_training.linear_probe is True and cfg.target_training.linear_probe_c == 2.0
    results = run_transfer(cfg, output_dir=tmp_path / "run")
    assert results["target"]["transfer"]["linear_probe"]["c"] == 2.0
