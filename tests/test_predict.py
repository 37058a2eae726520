"""Predict over files: every format, empty-text rows reported, order kept, same labels as the pipeline, streaming."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from transformers import pipeline

from conftest import REPO
from published_run import trained_run
from textransfer.cli import main
from textransfer.errors import DataError
from textransfer.files import current_umask
from textransfer.inference.backends import TorchBackend
from textransfer.inference.predict import Predictor, predict_file, read_chunks

REVIEWS = REPO / "textransfer" / "sample_data" / "reviews.csv"


@pytest.fixture
def run_dir(tmp_path_factory, tiny_bert_dir):
    return trained_run(tmp_path_factory, tiny_bert_dir)


@pytest.fixture(scope="module")
def frame():
    df = pd.read_csv(REVIEWS).rename(columns={"text": "review"})
    df.loc[4, "review"] = ""  # rows 5 and 9 (1-based) have no text
    df.loc[8, "review"] = None
    return df


def write(df, path):
    fmt = path.suffix
    if fmt == ".csv":
        df.to_csv(path, index=False)
    elif fmt == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    return path


def reference_labels(run_dir, texts):
    clf = pipeline("text-classification", model=str(run_dir / "model"), device=-1)
    return clf(texts, batch_size=8, truncation=True, max_length=32)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_in_order_with_empty_rows_reported(run_dir, frame, tmp_path, ext, capsys):
    src = write(frame, tmp_path / f"in{ext}")
    out = tmp_path / "pred.csv"
    # chunks of 37 rows: the 400-row file streams through 11 chunks
    assert main(["predict", str(run_dir), "--input", str(src), "--text-column", "review", "--output", str(out),
                 "--chunk-size", "37", "--batch-size", "8", "--all-scores"]) == 0
    err = capsys.readouterr().err
    assert "2 of 400 rows have empty text (rows 5, 9)" in err
    got = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert len(got) == len(frame) and got["row"].tolist() == list(range(1, 401))
    empty = got[got["error"] == "empty text"]
    assert empty["row"].tolist() == [5, 9] and empty["label"].isna().all() and empty["score"].isna().all()

    ok = got[got["error"].isna()]
    texts = frame["review"].iloc[ok["row"] - 1].tolist()
    ref = reference_labels(run_dir, texts)
    assert ok["label"].tolist() == [r["label"] for r in ref]  # same labels, row for row
    assert np.allclose(ok["score"], [r["score"] for r in ref], atol=1e-5)
    assert len(set(ok["label"])) == 2  # the model does tell the reviews apart
    assert np.allclose(ok[["score_negative", "score_positive"]].sum(axis=1), 1.0, atol=1e-5)
    assert list(tmp_path.glob(".pred.csv.*")) == []  # no temp file left
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # as a plain open() would make it


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_output_formats(run_dir, frame, tmp_path, ext):
    src = write(frame, tmp_path / "in.parquet")
    out = tmp_path / f"pred{ext}"
    summary = predict_file(Predictor.from_pretrained(str(run_dir)), str(src), "review", output=str(out),
                           progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if ext == ".jsonl" else \
        pq.read_table(out).to_pylist()
    assert summary.rows == 400 and summary.empty_rows == [5, 9] and len(rows) == 400
    assert rows[4]["label"] is None and rows[4]["error"] == "empty text"
    assert rows[0]["label"] in ("negative", "positive") and rows[0]["error"] is None


def test_saved_model_folder_and_plain_pipeline_agree(run_dir):
    texts = pd.read_csv(REVIEWS)["text"].tolist()[:60]
    labels, probs = Predictor.from_pretrained(str(run_dir / "model"), max_length=32, batch_size=7).predict(texts)
    assert labels == [r["label"] for r in reference_labels(run_dir, texts)]
    assert probs.shape == (60, 2)


def test_output_is_not_overwritten_without_asking(run_dir, frame, tmp_path, capsys):
    src = write(frame, tmp_path / "in.csv")
    out = tmp_path / "pred.csv"
    out.write_text("keep me\n")
    assert main(["predict", str(run_dir), "--input", str(src), "--text-column", "review", "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me\n"
    assert main(["predict", str(run_dir), "--input", str(src), "--text-column", "review", "--output", str(out),
                 "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == 400


def test_a_failure_midway_leaves_no_output(run_dir, frame, tmp_path):
    src = write(frame, tmp_path / "in.csv")
    out = tmp_path / "pred.csv"
    predictor = Predictor.from_pretrained(str(run_dir))
    calls = []
    real = predictor.predict_encoded

    def flaky(encoded):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(encoded)

    predictor.predict_encoded = flaky
    with pytest.raises(RuntimeError):
        predict_file(predictor, str(src), "review", output=str(out), chunk_rows=50, progress=False)
    assert not out.exists() and list(tmp_path.glob(".pred.csv.*")) == []


def test_missing_column_is_named(run_dir, frame, tmp_path):
    for ext in (".csv", ".jsonl", ".parquet"):
        src = write(frame, tmp_path / f"in{ext}")
        with pytest.raises(DataError, match=r"no column 'text'.*\['review', 'label'\]"):
            list(read_chunks(str(src), ["text"]))


def test_reading_streams_in_bounded_chunks(tmp_path):
    rows = 30_000
    pd.DataFrame({"text": [f"review number {i} " * 5 for i in range(rows)]}).to_csv(tmp_path / "big.csv", index=False)
    sizes = [t.num_rows for t in read_chunks(str(tmp_path / "big.csv"), ["text"], chunk_rows=1000,
                                             block_bytes=64 * 1024)]
    assert sum(sizes) == rows and max(sizes) == 1000 and len(sizes) == 30


# ---------------------------------------------------------------------------- output columns, truncation, encoding
def test_keep_columns_copies_input_columns(run_dir, frame, tmp_path, capsys):
    src = write(frame.assign(id=[f"r{i:04d}" for i in range(len(frame))]), tmp_path / "in.csv")
    out = tmp_path / "all.csv"
    assert main(["predict", str(run_dir), "--input", str(src), "--text-column", "review", "--output", str(out),
                 "--keep-columns", "all"]) == 0
    assert "input column 'label' is written as 'input_label'" in capsys.readouterr().err
    got = pd.read_csv(out, keep_default_na=False, na_values=[""], dtype={"id": str})
    assert list(got.columns) == ["row", "review", "input_label", "id", "label", "score", "error"]
    assert got["input_label"].tolist() == frame["label"].tolist()  # the input's gold label, beside ours
    assert got["id"].tolist()[:2] == ["r0000", "r0001"]  # copied as written (leading zeros kept)
    assert got["review"].fillna("").tolist() == frame["review"].fillna("").tolist()

    src = write(frame.assign(stars=range(len(frame))), tmp_path / "in.parquet")  # an int column keeps its type
    out = tmp_path / "some.parquet"
    assert main(["predict", str(run_dir), "--input", str(src), "--text-column", "review", "--output", str(out),
                 "--keep-columns", "stars"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["row", "stars", "label", "score", "error"]
    assert table.column("stars").to_pylist() == list(range(len(frame))) and str(table.schema.field("stars").type) == "int64"


def test_truncated_rows_are_counted_on_stderr(run_dir, frame, tmp_path, capsys):
    src = write(frame, tmp_path / "in.jsonl")
    tokenizer = Predictor.from_pretrained(str(run_dir)).tokenizer
    lengths = [len(tokenizer(t)["input_ids"]) for t in frame["review"] if isinstance(t, str) and t.strip()]
    for max_length in (16, 20):
        longer = sum(n > max_length for n in lengths)
        assert 0 < longer < len(lengths)
        summary = predict_file(Predictor.from_pretrained(str(run_dir), max_length=max_length), str(src), "review",
                               output=str(tmp_path / f"p{max_length}.csv"), progress=False)
        assert summary.truncated_rows == longer
        assert f"note: {longer} of 400 rows are longer than {max_length} tokens" in capsys.readouterr().err
    predict_file(Predictor.from_pretrained(str(run_dir), max_length=max(lengths)), str(src), "review",
                 output=str(tmp_path / "none.csv"), progress=False)
    assert "longer than" not in capsys.readouterr().err  # nothing cut, nothing said


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_encoding_option_and_undecodable_file(run_dir, frame, tmp_path, ext, capsys):
    accented = frame.assign(review=frame["review"].str.replace("e", "\u00e9", n=1))
    utf8 = tmp_path / f"utf8{ext}"
    if ext == ".csv":
        accented.to_csv(utf8, index=False)
    else:  # pandas escapes non-ASCII characters in JSON unless told not to
        accented.to_json(utf8, orient="records", lines=True, force_ascii=False)
    cp1252 = tmp_path / f"cp1252{ext}"  # the reviews hold an em dash, which cp1252 has and latin-1 lacks
    cp1252.write_bytes(utf8.read_text(encoding="utf-8").encode("cp1252"))
    assert main(["predict", str(run_dir), "--input", str(cp1252), "--text-column", "review"]) == 2
    captured = capsys.readouterr()
    data = cp1252.read_bytes()
    first_bad = next(i for i, b in enumerate(data) if b >= 0x80)
    line = data[:first_bad].count(b"\n") + 1
    assert captured.out == ""  # nothing written before the input was found unreadable
    assert f"'{cp1252}' is not valid utf-8 (--encoding utf-8)" in captured.err
    assert f"line {line}, byte offset {first_bad}" in captured.err
    assert f"0x{data[first_bad]:02x}" in captured.err and "pass --encoding cp1252" in captured.err
    out = {}
    for path, encoding in ((utf8, "utf-8"), (cp1252, "cp1252")):
        out[encoding] = tmp_path / f"pred-{encoding}.csv"
        assert main(["predict", str(run_dir), "--input", str(path), "--text-column", "review", "--encoding", encoding,
                     "--output", str(out[encoding]), "--keep-columns", "review"]) == 0
    assert out["utf-8"].read_text() == out["cp1252"].read_text()  # same texts, same labels
    assert "\u00e9" in pd.read_csv(out["cp1252"])["review"].dropna().iloc[0]
    assert main(["predict", str(run_dir), "--input", str(utf8), "--text-column", "review", "--encoding", "latin-9x"]) == 2
    assert "--encoding 'latin-9x' is not an encoding" in capsys.readouterr().err


def test_input_is_checked_before_anything_is_written(run_dir, frame, tmp_path, capsys, monkeypatch):
    def no_model(*a, **kw):
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr(Predictor, "from_pretrained", no_model)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("text,label\n")
    (tmp_path / "zero.jsonl").write_bytes(b"")
    (tmp_path / "folder.csv").mkdir()
    cases = {str(tmp_path / "missing.csv"): "input file not found",
             str(tmp_path / "folder.csv"): "is a folder, not a file",
             str(write(frame, tmp_path / "in.csv")): r"has no column 'text'.*Pass --text-column",
             str(header_only): "has no rows",
             str(tmp_path / "zero.jsonl"): r"is empty \(0 bytes\)"}
    for path, message in cases.items():
        assert main(["predict", str(run_dir), "--input", path]) == 2  # to stdout: a header would be printed first
        captured = capsys.readouterr()
        assert captured.out == "" and re.search(message, captured.err), (path, captured.err)
        assert path in captured.err
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "in.csv"), "--text-column", "review",
                 "--keep-columns", "review,stars"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no column 'stars'" in captured.err and "Pass --keep-columns" in captured.err


def test_hints_name_real_flags(run_dir, tmp_path, capsys):
    import textransfer.inference.predict as predict_module
    from textransfer.cli.arguments import make_parser

    parser = make_parser()
    predict_parser = parser._subparsers._group_actions[0].choices["predict"]
    real = {s for action in predict_parser._actions for s in action.option_strings}
    named = set(re.findall(r"(--[a-z][a-z-]+)", Path(predict_module.__file__).read_text()))
    assert named and named <= real, named - real  # every flag the module names exists (no `--format`)
    (tmp_path / "in.txt").write_text("text\nhello\n")
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "in.txt")]) == 2
    assert "pass --input-format" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "in.txt"), "--input-format", "csv"]) == 0
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "in.txt"), "--input-format", "csv",
                 "--output", str(tmp_path / "out.txt")]) == 2
    assert "end its name with one of" in capsys.readouterr().err


class RecordingBackend(TorchBackend):
    """The torch forward pass, recording each batch's shape."""

    def __init__(self, model):
        super().__init__(model)
        self.shapes = []

    def logits(self, batch):
        self.shapes.append(batch["input_ids"].shape)
        return super().logits(batch)


@pytest.mark.parametrize("budget", [1, 100, 256])
def test_token_budget_bounds_every_batch_and_keeps_the_scores(run_dir, budget):
    texts = pd.read_csv(REVIEWS)["text"].tolist()[:60]
    rows_only = Predictor.from_pretrained(str(run_dir / "model"), max_length=32, batch_size=16, max_batch_tokens=None)
    budgeted = Predictor.from_pretrained(str(run_dir / "model"), max_length=32, batch_size=16, max_batch_tokens=budget)
    budgeted.backend = RecordingBackend(budgeted.model)
    labels, probs = rows_only.predict(texts)
    labels_b, probs_b = budgeted.predict(texts)
    shapes = budgeted.backend.shapes
    assert sum(rows for rows, _ in shapes) == len(texts)  # every row once
    # within both bounds, one row always goes even when it alone is over the budget
    assert all(rows <= 16 and (rows * width <= budget or rows == 1) for rows, width in shapes)
    assert len(shapes) > -(-len(texts) // 16)  # the budget did cut batches smaller than --batch-size
    assert labels_b == labels and np.abs(probs_b - probs).max() < 1e-5


def test_token_budget_option_is_checked(run_dir, tmp_path, capsys):
    assert main(["predict", str(run_dir), "--input", str(REVIEWS), "--max-batch-tokens", "0"]) != 0
    assert "--max-batch-tokens must be >= 1 (or `none`" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), "--input", str(REVIEWS), "--output", str(out),
                 "--max-batch-tokens", "none"]) == 0 and out.is_file()
