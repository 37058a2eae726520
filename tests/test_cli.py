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
