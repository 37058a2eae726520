"""CLI habits: --version, --seed, --help."""

import subprocess
import sys

import textransfer
from conftest import REPO
from textransfer.cli import parse
from textransfer.cli.commands import run_config

RECIPE = str(REPO / "recipes" / "news_to_sentiment.yaml")


def test_version():
    out = subprocess.run([sys.executable, "-m", "textransfer.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"textransfer {textransfer.__version__}"


def test_seed_flag_sets_the_seed_and_wins_over_an_override(tmp_path):
    args = parse(["run", RECIPE, "--output-dir", str(tmp_path), "seed=3", "--seed", "11"])
    _, overrides, cfg, _ = run_config(args)
    assert cfg.seed == 11 and overrides[-1] == "seed=11"
    args = parse(["run", RECIPE, "--output-dir", str(tmp_path)])
    assert run_config(args)[2].seed == 42


def test_run_and_compare_train_with_the_imports_frozen_and_give_the_collector_back(monkeypatch, tmp_path):
    """Training commands run with the objects alive after their imports frozen (``gc.freeze``:
    full collections skip them), and unfreeze after, also when the command fails."""
    import gc

    import textransfer.run.compare as compare
    import textransfer.run.transfer as transfer
    from textransfer.cli import main

    seen = {}

    def fake(name, error=None):
        def call(*args, **kwargs):
            seen[name] = gc.get_freeze_count()
            if error:
                raise error
            return {"strategies": {}, "baselines": {}}
        return call

    before = gc.get_freeze_count()
    monkeypatch.setattr(transfer, "run_transfer", fake("run", ValueError("boom")))
    monkeypatch.setattr(compare, "compare_strategies", fake("compare"))
    monkeypatch.setattr(compare, "comparison_markdown", lambda *a, **k: "")
    try:
        main(["run", RECIPE, "--output-dir", str(tmp_path / "run")])
    except ValueError:
        pass
    assert gc.get_freeze_count() == before
    assert main(["compare", RECIPE, "--strategies", "finetune", "--output-dir", str(tmp_path / "cmp")]) == 0
    assert gc.get_freeze_count() == before
    assert seen["run"] > before + 100_000 and seen["compare"] > before + 100_000  # torch's and transformers' objects
