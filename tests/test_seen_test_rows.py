"""Target test rows that the training data already holds are counted, warned about and recorded."""

import json
from pathlib import Path

import datasets
import pandas

import textransfer
from textransfer import run_transfer
from textransfer.data.overlap import normalised, seen_test_rows
from textransfer.data.task import TaskData

SAMPLE = Path(textransfer.__file__).parent / "sample_data"


def _task(name, **splits):
    return TaskData(name=name, splits={k: datasets.Dataset.from_dict({"text": v, "labels": [0] * len(v)})
                                       for k, v in splits.items()}, label_names=["a", "b"])


def test_copies_are_found_through_case_and_tokenisation():
    assert normalised("It 's a charming , affecting journey .") == normalised("it's a charming, affecting journey.")
    assert normalised("a good film") != normalised("a good film too")


def test_counts_test_rows_in_the_target_training_splits_and_in_the_source():
    target = _task("t", train=["It's GREAT.", "dull"], validation=["so-so film"],
                   test=["it 's great .", "So so film", "new text", "dull and long"])
    source = _task("s", train=["new  TEXT", "other"], test=["dull and long"])  # a source test row is not trained on
    seen = seen_test_rows({"target": target, "source": source})
    assert (seen.test_rows, seen.in_target_training, seen.in_source) == (4, 2, 1)
    assert seen.examples == ["it 's great .", "So so film", "new text"]
    warning = seen.warning()
    assert "of the 4 target test rows, 2 in the target's train/validation splits and 1 in the source task" in warning
    assert "Remove those rows from the training data" in warning


def test_no_copy_no_warning_and_no_source_recorded_as_none():
    target = _task("t", train=["alpha", "beta"], test=["gamma", "delta", ""])  # an empty text matches nothing
    target.splits["train"] = datasets.Dataset.from_dict({"text": ["alpha", "", "beta"], "labels": [0, 0, 1]})
    seen = seen_test_rows({"target": target})
    assert (seen.in_target_training, seen.in_source, seen.warning()) == (0, None, None)


def test_a_run_whose_source_holds_the_target_test_rows_says_so(sample_run_config, tmp_path):
    """The source task's training file given every sample review as a news row: every target test
    row is in it (its test split is a file of its own)."""
    reviews = pandas.read_csv(SAMPLE / "reviews.csv")
    news = pandas.read_csv(SAMPLE / "news.csv")
    leaky = pandas.concat([news, pandas.DataFrame({"text": reviews["text"], "label": "world"})])
    leaky.to_csv(tmp_path / "news_and_reviews.csv", index=False)
    cfg = sample_run_config
    cfg.source.data_files = {"train": str(tmp_path / "news_and_reviews.csv"), "test": str(SAMPLE / "news.csv")}
    cfg.source_training.num_epochs, cfg.target_training.num_epochs = 1, 1
    run_transfer(cfg, output_dir=str(tmp_path / "run"), overwrite=True)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    seen = results["seen_test_rows"]
    test_rows = len((tmp_path / "run" / "test_predictions.jsonl").read_text().splitlines())
    assert seen["test_rows"] == test_rows and seen["in_source"] == test_rows
    assert seen["in_target_training"] == 0  # the sample reviews hold no duplicate
    assert f"of the {test_rows} target test rows, {test_rows} in the source task" in results["verdict"]


def test_a_clean_run_records_no_seen_row(sample_run_config, tmp_path):
    cfg = sample_run_config
    cfg.source_training.num_epochs, cfg.target_training.num_epochs = 1, 1
    results = run_transfer(cfg, output_dir=str(tmp_path / "run"), overwrite=True)
    assert results["seen_test_rows"]["in_source"] == 0 and results["seen_test_rows"]["in_target_training"] == 0
    assert "memory, not transfer" not in results["verdict"]
