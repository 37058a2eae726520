"""``--dry-run``: every check a run makes, the resolved config and a data summary; nothing trained or written."""

import csv
from collections import Counter

import pytest
import yaml

from conftest import REPO
from textransfer.cli import main

RECIPE = str(REPO / "recipes" / "news_to_sentiment.yaml")
SAMPLE_DATA = REPO / "textransfer" / "sample_data"


def cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def label_counts(csv_name):
    with open(SAMPLE_DATA / csv_name, newline="") as f:
        return Counter(row["label"] for row in csv.DictReader(f))


def summary_lines(out, role):
    """``{split: (rows, {label: count})}`` of one task in the printed data summary."""
    lines = out.split("# data\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{role}:"))
    splits = {}
    for line in lines[start + 1:]:
        if not line.startswith("  ") or line.strip().startswith("("):
            break
        split, rows, _, classes = line.split(None, 3)
        splits[split] = (int(rows), {k: int(v) for k, v in (c.rsplit(" ", 1) for c in classes.split(", "))})
    return splits


def test_dry_run_prints_config_and_real_counts_and_writes_nothing(capsys, tmp_path, tiny_bert_dir):
    out_dir = tmp_path / "run"
    code, out, err = cli(capsys, "run", RECIPE, "--output-dir", str(out_dir), "--dry-run",
                         f"model.name_or_path={tiny_bert_dir}", "target.k_per_class=16")
    assert code == 0, err
    assert not out_dir.exists()
    resolved = yaml.safe_load(out.split("# data\n")[0])
    assert resolved["output_dir"] == str(out_dir) and resolved["target"]["k_per_class"] == 16
    assert "source: news (4 labels)" in out and "target: reviews (2 labels)" in out
    source = summary_lines(out, "source")
    assert set(source) == {"train", "validation", "test"}
    # every row of the news file is in exactly one split, with its label
    totals = Counter()
    for rows, classes in source.values():
        assert rows == sum(classes.values())
        totals.update(classes)
    assert totals == label_counts("news.csv")
    assert summary_lines(out, "target")["train"] == (32, {"negative": 16, "positive": 16})  # k_per_class=16


def test_dry_run_fails_on_a_bad_data_file_as_the_run_does(capsys, tmp_path, tiny_bert_dir):
    args = ["run", RECIPE, "--output-dir", str(tmp_path / "run"), f"model.name_or_path={tiny_bert_dir}",
            f"target.data_files={tmp_path / 'missing.csv'}"]
    code, _, dry_err = cli(capsys, *args, "--dry-run")
    assert code == 2 and "missing.csv" in dry_err
    code, _, run_err = cli(capsys, *args)
    assert code == 2 and run_err == dry_err
    assert not (tmp_path / "run").exists()


def test_dry_run_checks_columns_and_precision(capsys, tmp_path, tiny_bert_dir):
    base = ["run", RECIPE, "--output-dir", str(tmp_path / "run"), "--dry-run", f"model.name_or_path={tiny_bert_dir}"]
    code, _, err = cli(capsys, *base, "target.label_column=stars")
    assert code == 2 and "stars" in err
    code, _, err = cli(capsys, *base, "report_to=[tensorbord]")
    assert code == 2 and "Did you mean 'tensorboard'" in err
    assert not (tmp_path / "run").exists()


def test_dry_run_refuses_a_non_empty_output_dir_as_the_run_does(capsys, tmp_path, tiny_bert_dir):
    (tmp_path / "results.json").write_text("{}")
    code, _, err = cli(capsys, "run", RECIPE, "--output-dir", str(tmp_path), "--dry-run",
                       f"model.name_or_path={tiny_bert_dir}")
    assert code == 2 and "not empty" in err


def test_compare_dry_run_checks_every_strategy(capsys, tmp_path, tiny_bert_dir):
    base = ["compare", RECIPE, "--output-dir", str(tmp_path / "cmp"), "--dry-run", f"model.name_or_path={tiny_bert_dir}"]
    code, out, err = cli(capsys, *base, "--strategies", "finetune,l2sp")
    assert code == 0, err
    assert "target: reviews (2 labels)" in out
    code, _, err = cli(capsys, *base, "--strategies", "finetune,l2pp")
    assert code == 2 and "l2sp" in err
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("command", ["run", "compare"])
def test_dry_run_flag_is_in_the_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--dry-run" in capsys.readouterr().out
