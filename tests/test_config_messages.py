"""Config errors that can be followed: overrides are blamed on the command line, and
transformers' TrainingArguments names point to ours."""

import pytest

from conftest import REPO
from textransfer import ConfigError, RunConfig
from textransfer.cli import main

RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"


@pytest.mark.parametrize("override, ours", [
    ("target_training.num_train_epochs=2", "`target_training.num_epochs`"),
    ("source_training.per_device_train_batch_size=8", "`source_training.batch_size`"),
    ("target_training.per_device_eval_batch_size=8", "`target_training.eval_batch_size`"),
    ("target_training.lr_scheduler_type=cosine", "`target_training.lr_scheduler`"),
    ("target_training.warmup_steps=10", "`target_training.warmup_ratio`"),
    ("target_training.fp16=true", "`mixed_precision: fp16`"),
    ("num_train_epochs=2", "`target_training.num_epochs` (or `source_training.num_epochs`)"),
    ("learning_rate=1e-4", "`target_training.learning_rate`"),
])
def test_training_arguments_names_point_to_ours(override, ours):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(RECIPE, overrides=[override])
    assert f"here it is {ours}" in str(err.value)
    assert "TrainingArguments" in str(err.value) or "each training section" in str(err.value)


def test_the_hinted_option_works_when_followed():
    cfg = RunConfig.from_yaml(RECIPE, overrides=["target_training.num_epochs=2", "target_training.lr_scheduler=cosine"])
    assert cfg.target_training.num_epochs == 2 and cfg.target_training.lr_scheduler == "cosine"


@pytest.mark.parametrize("override", ["target_training.num_epoch=2", "target_training.num_epochs=0",
                                      "seed=abc", "target.empty_text=skip"])
def test_an_override_error_names_the_command_line_not_the_file(override):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(RECIPE, overrides=[override])
    message = str(err.value)
    assert message.startswith(f"command-line override `{override}`:"), message
    assert str(RECIPE) not in message


def test_a_file_error_still_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(RECIPE.read_text().replace("num_epochs:", "num_epoch:", 1))
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(bad, overrides=["seed=3"])
    assert str(err.value).startswith(f"{bad}:")


def test_cli_prints_the_override_blame(tmp_path, capsys):
    rc = main(["run", str(RECIPE), "--output-dir", str(tmp_path / "o"), "--target_training.num_train_epochs", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "command-line override `target_training.num_train_epochs=2`" in err
    assert "`target_training.num_epochs`" in err
    assert not (tmp_path / "o").exists()
