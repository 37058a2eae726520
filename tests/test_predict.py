"""Predict over files: every format, empty-text rows reported, order kept, same labels as the pipeline, streaming."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from transformers import pipeline

from conftest import REPO
from published_run import trained_run
from textransfer.cli import main
from textransfer.errors import DataError
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
