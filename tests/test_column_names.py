"""Any column name works: a user's columns may be named like the package's own (``labels``,
``text``, ``row``, ``input_ids``...), as the text column, the label column or an extra column,
in a table, a pair task, a stream and a whole run from the command line."""

import csv
import json

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from conftest import REPO
from textransfer import TaskConfig, load_task
from textransfer.cli import main as cli_main
from textransfer.data.tokenization import tokenize_dataset

# Names the package (or transformers / datasets) uses for columns of its own.
INTERNAL = ["labels", "label", "text", "text_pair", "row", "input_ids", "attention_mask", "token_type_ids",
            "length", "idx", "label_value", "_row"]
SCHEMA = {"row", "text", "labels"}
N = 20


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def table(path, text_col, label_col):
    """A file whose text and label columns have the given names, beside an extra column for
    every other internal name, each holding values that would be wrong if read instead
    (numbers for `row`, `labels`, `input_ids`...; "decoy" for text)."""
    extras = [c for c in INTERNAL if c not in (text_col, label_col)]
    rows = [[f"sentence {i}", ["neg", "pos"][i % 2]] + [str(1000 + i)] * len(extras) for i in range(N)]
    return write_csv(path, [text_col, label_col, *extras], rows)


def check_schema(data):
    for role, ds in data.splits.items():
        assert set(ds.column_names) == SCHEMA, role
        for ex in ds:
            # the row number is the example's place in the file, not a user's `row` column (1000 + i)
            assert ex["text"] == f"sentence {ex['row'] - 1}"
            assert data.label_names[ex["labels"]] == ["neg", "pos"][(ex["row"] - 1) % 2]
    assert data.label_names == ["neg", "pos"]
    assert sum(data.info["rows"].values()) == N


@pytest.mark.parametrize("name", INTERNAL)
def test_internal_name_as_the_text_column(name, tmp_path):
    other = "label" if name != "label" else "sentiment"
    f = table(tmp_path / "t.csv", name, other)
    check_schema(load_task(TaskConfig(name="t", data_files=f, text_columns=[name], label_column=other)))


@pytest.mark.parametrize("name", INTERNAL)
def test_internal_name_as_the_label_column(name, tmp_path):
    other = "text" if name != "text" else "review"
    f = table(tmp_path / "t.csv", other, name)
    check_schema(load_task(TaskConfig(name="t", data_files=f, text_columns=[other], label_column=name)))


def test_pair_task_with_swapped_internal_names(tmp_path):
    # the first text is in a column called `text_pair`, the second in one called `text`
    rows = [[f"premise {i}", f"hypothesis {i}", i % 2, 99] for i in range(N)]
    f = write_csv(tmp_path / "nli.csv", ["text_pair", "text", "labels", "row"], rows)
    data = load_task(TaskConfig(name="nli", data_files=f, text_columns=["text_pair"], text_pair_column="text",
                                label_column="labels"))
    for ds in data.splits.values():
        assert set(ds.column_names) == SCHEMA | {"text_pair"}
        for ex in ds:
            i = ex["row"] - 1
            assert (ex["text"], ex["text_pair"], ex["labels"]) == (f"premise {i}", f"hypothesis {i}", i % 2)


def test_class_label_column_named_labels_keeps_its_names(tmp_path):
    # a parquet file written by datasets keeps its ClassLabel: the names come from it, not from
    # the ids, even though its column is called `labels` like ours
    features = Features({"text": Value("string"), "labels": ClassLabel(names=["bad", "good"]), "row": Value("int64")})
    ds = Dataset.from_dict({"text": [f"s{i}" for i in range(N)], "labels": [i % 2 for i in range(N)],
                            "row": [7] * N}, features=features)
    path = tmp_path / "hub_like.parquet"
    ds.to_parquet(str(path))
    data = load_task(TaskConfig(name="h", data_files=str(path), label_column="labels"))
    assert data.label_names == ["bad", "good"]
    assert sorted(r for split in data.splits.values() for r in split["row"][:]) == list(range(1, N + 1))


def test_tokenized_split_has_only_model_columns(tmp_path, pad_tokenizer):
    f = table(tmp_path / "t.csv", "input_ids", "labels")
    data = load_task(TaskConfig(name="t", data_files=f, text_columns=["input_ids"], label_column="labels"))
    tok = tokenize_dataset(data.splits["train"], pad_tokenizer, max_length=16)
    assert "text" not in tok.column_names and {"input_ids", "labels", "row", "length"} <= set(tok.column_names)
    first = tok[0]
    assert pad_tokenizer.decode(first["input_ids"], skip_special_tokens=True).startswith("sentence")


def test_filter_reads_the_users_row_column_and_else_the_row_numbers(tmp_path):
    rows = [[f"sentence {i}", ["neg", "pos"][i % 2], 1000 + i] for i in range(N)]
    with_row = write_csv(tmp_path / "with_row.csv", ["text", "label", "row"], rows)
    data = load_task(TaskConfig(name="t", data_files=with_row, filters=["row >= 1010"]))
    assert sorted(r for ds in data.splits.values() for r in ds["row"][:]) == list(range(11, N + 1))
    without = write_csv(tmp_path / "without.csv", ["text", "label"], [r[:2] for r in rows])
    data = load_task(TaskConfig(name="t", data_files=without, filters=["row <= 10"]))
    assert sorted(r for ds in data.splits.values() for r in ds["row"][:]) == list(range(1, 11))


def test_stream_with_internal_column_names(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(60):
            f.write(json.dumps({"labels": ["neg", "pos"][i % 2], "text_pair": f"sentence {i}", "row": -1,
                                "input_ids": [1, 2]}) + "\n")
    data = load_task(TaskConfig(name="s", data_files=str(path), streaming=True, text_columns=["text_pair"],
                                label_column="labels", label_names=["neg", "pos"], max_eval_samples=10),
                     cache_dir=str(tmp_path / "cache"))
    train = list(data.splits["train"])
    assert [ex["row"] for ex in train] == list(range(21, 61))
    for ex in train + list(data.splits["validation"]) + list(data.splits["test"]):
        assert set(ex) == SCHEMA
        assert ex["text"] == f"sentence {ex['row'] - 1}" and ex["labels"] == (ex["row"] - 1) % 2


def test_issue_repro_reviews_labels_header_runs_from_the_command_line(tmp_path, tiny_bert_dir, capsys):
    """The issue's repro: the demo's reviews written with the header `reviews,labels`, the source
    with `text_pair,input_ids` as its text and label columns: the run finishes, no traceback."""
    def rewrite(name, header):
        rows = list(csv.reader(open(REPO / "textransfer" / "sample_data" / name)))
        return write_csv(tmp_path / name, header, rows[1:])

    reviews, news = rewrite("reviews.csv", ["reviews", "labels"]), rewrite("news.csv", ["text_pair", "input_ids"])
    out = tmp_path / "run"
    rc = cli_main(["run", str(REPO / "recipes" / "news_to_sentiment.yaml"), "--output-dir", str(out),
                   f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", "source_training.num_epochs=1",
                   "target_training.num_epochs=1", "noise_resamples=50",
                   f"target.data_files={reviews}", "target.text_columns=[reviews]", "target.label_column=labels",
                   f"source.data_files={news}", "source.text_columns=[text_pair]", "source.label_column=input_ids"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["target"]["label_names"] == ["negative", "positive"]
    assert results["target"]["data"]["rows"] == {"train": 238, "validation": 42, "test": 120}
