"""The README stays true: its config reference lists every option, its library example runs."""

import dataclasses
import re

import pytest

from conftest import REPO
from textransfer.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("cls,prefix", [(RunConfig, ""), (ModelConfig, "model."), (TaskConfig, "source.`/`target."),
                                        (TrainingConfig, "*_training.")])
def test_config_reference_lists_every_option(cls, prefix):
    for f in dataclasses.fields(cls):
        if f.name in ("model", "source", "target", "source_training", "target_training"):
            continue
        assert f"`{prefix}{f.name}`" in README, f"README's config reference misses {prefix}{f.name}"


def test_config_reference_lists_every_strategy_option():
    from textransfer.strategies.registry import _REGISTRY

    for name, (config_class, _) in _REGISTRY.items():
        for f in dataclasses.fields(config_class):
            assert f"`strategy.{f.name}`" in README, f"README's config reference misses strategy.{f.name} ({name})"


def test_readme_commands_exist():
    assert "./setup.sh" in README and ".venv/bin/python -m pytest" in README
    for recipe in re.findall(r"recipes/[\w]+\.(?:yaml|py)", README):
        assert (REPO / recipe).exists(), recipe


@pytest.mark.slow
def test_library_parts_example_runs(monkeypatch, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    parts = next(b for b in blocks if "StageTrainer(" in b)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(parts, "README.md", "exec"), scope)
    assert scope["target_model"].config.id2label == {0: "negative", 1: "positive"}
    assert scope["report"].trainable < scope["report"].total


def test_config_reference_is_the_generated_one():
    """The README's table is exactly what the dataclasses' help generates (one source of help)."""
    from textransfer.config.reference import README_BEGIN, README_END, options_markdown

    start, end = README.index(README_BEGIN), README.index(README_END) + len(README_END)
    assert README[start:end] == options_markdown(), \
        "README's config reference is stale: paste `python -m textransfer.config.reference` over it"
