"""A source task streamed with ``datasets`` (``source.streaming: true``) and trained by steps."""

import csv
import json

import pytest
from datasets import Dataset, IterableDataset

from conftest import REPO
from textransfer import ConfigError, DataError, RunConfig, TaskConfig, load_task
from textransfer.data.streaming import LengthGroupedStream

CONFIG = REPO / "recipes" / "news_to_sentiment.yaml"


def _csv(path, n, bad_row=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            words = " ".join(["good" if i % 2 else "bad"] * (1 + i % 7))
            w.writerow([f"row{i} {words}", "oops" if i + 1 == bad_row else ("pos" if i % 2 else "neg")])
    return str(path)


def _rows(ds):
    return [ex["row"] for ex in ds]


def test_train_split_is_a_stream_and_heldout_rows_never_overlap(tmp_path):
    path = _csv(tmp_path / "big.csv", 300)
    cache = tmp_path / "cache"
    data = load_task(TaskConfig(name="big", data_files=path, label_names=["neg", "pos"], streaming=True,
                                max_eval_samples=25), cache_dir=str(cache))
    train, val, test = data.splits["train"], data.splits["validation"], data.splits["test"]
    assert isinstance(train, IterableDataset)  # read lazily, never a table
    assert isinstance(val, Dataset) and isinstance(test, Dataset)
    assert _rows(test) == list(range(1, 26)) and _rows(val) == list(range(26, 51))  # the stream's head
    train_rows = _rows(train)
    assert train_rows == list(range(51, 301))  # the rest, each once
    assert val.features["labels"].names == ["neg", "pos"]
    # the train split was not written to the Arrow cache: only the 25-row held-out tables were
    files = set(cache.rglob("*.arrow"))
    assert files and all(len(Dataset.from_file(str(p))) == 25 for p in files)
    # a second run reuses the held-out tables (and so their tokenization cache): nothing new is written
    again = load_task(TaskConfig(name="big", data_files=path, label_names=["neg", "pos"], streaming=True,
                                 max_eval_samples=25), cache_dir=str(cache))
    assert set(cache.rglob("*.arrow")) == files
    assert again.splits["validation"]._fingerprint == val._fingerprint


def test_stream_checks_labels_lazily_naming_the_row(tmp_path):
    path = _csv(tmp_path / "bad.csv", 2500, bad_row=2457)
    data = load_task(TaskConfig(name="big", data_files=path, label_names=["neg", "pos"], streaming=True,
                                max_eval_samples=5), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"label 'oops' in row 2457"):
        list(data.splits["train"])
    # a bad row in the held-out head stops the loading of the held-out splits
    path = _csv(tmp_path / "bad2.csv", 60, bad_row=7)
    with pytest.raises(DataError, match=r"label 'oops' in row 7"):
        load_task(TaskConfig(name="big", data_files=path, label_names=["neg", "pos"], streaming=True,
                             max_eval_samples=5), cache_dir=str(tmp_path / "c"))


def test_streaming_rejects_whole_table_options(tmp_path):
    path = _csv(tmp_path / "a.csv", 20)
    with pytest.raises(ConfigError, match="k_per_class"):
        load_task(TaskConfig(name="a", data_files=path, label_names=["neg", "pos"], streaming=True, k_per_class=2))
    with pytest.raises(ConfigError, match="label_names"):
        load_task(TaskConfig(name="a", data_files=path, streaming=True))


def test_streaming_needs_max_steps():
    with pytest.raises(ConfigError, match=r"source_training\.max_steps"):
        RunConfig.from_yaml(CONFIG, overrides=["source.streaming=true"])
    with pytest.raises(ConfigError, match="target.streaming"):
        RunConfig.from_yaml(CONFIG, overrides=["target.streaming=true"])


def _token_stream(n):
    lengths = [3 + (i * 7) % 20 for i in range(n)]
    ds = Dataset.from_dict({"row": list(range(n)), "length": lengths,
                            "input_ids": [[1] * k for k in lengths], "labels": [0] * n})
    return ds.to_iterable_dataset(num_shards=1)


def _take(stream, k):
    it = iter(stream)
    return [[ex["row"] for ex in next(it)] for _ in range(k)]


def test_stream_batches_group_by_length_cycle_and_resume_exactly():
    ds = _token_stream(100)
    batches = _take(LengthGroupedStream(ds, batch_size=4, seed=3, window_batches=5), 60)  # 2.4 passes of 25
    first_pass = sorted(r for b in batches[:25] for r in b)
    assert first_pass == list(range(100))  # every row once per pass
    assert batches[25:50] != batches[:25]  # the next pass is reshuffled
    # within a window of 20 examples, batches hold neighbours in length: less padding than random
    lengths = [3 + (r * 7) % 20 for r in range(100)]
    spread = sum(max(lengths[r] for r in b) - min(lengths[r] for r in b) for b in batches[:25])
    assert spread < 25 * 8
    # a resumed loader that skips k batches continues with exactly the batches that follow
    resumed = _take(LengthGroupedStream(ds, batch_size=4, seed=3, window_batches=5, skip_batches=37), 23)
    assert resumed == batches[37:60]


def test_stream_shards_are_disjoint_per_process():
    ds = _token_stream(96)
    parts = [sorted(r for b in _take(LengthGroupedStream(ds, batch_size=4, seed=1, rank=rank, world_size=2,
                                                         window_batches=3), 12) for r in b)
             for rank in (0, 1)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(96))


def test_streaming_run_end_to_end(tmp_path, tiny_bert_dir):
    from textransfer.cli import main

    out = tmp_path / "run"
    code = main(["run", str(CONFIG), "--output-dir", str(out), f"model.name_or_path={tiny_bert_dir}",
                 "model.max_length=32", "source.streaming=true", "source_training.max_steps=7",
                 "source_training.batch_size=8", "source.max_eval_samples=30", "target_training.num_epochs=1",
                 "target_training.batch_size=32", "baseline=false", "noise_resamples=50"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    source = results["source"]
    assert source["optimizer_steps"] == 7  # exactly the budget
    assert source["data"]["rows"] == {"validation": 30, "test": 30, "train": None}
    assert source["history"][-1]["step"] == 7 and "eval_accuracy" in source["history"][-1]
