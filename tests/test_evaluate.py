"""evaluate: metrics equal scikit-learn's on the same predictions; per-class report; confusion matrix PNG."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from conftest import REPO
from published_run import trained_run
from textransfer.cli import main
from textransfer.errors import DataError
from textransfer.inference.evaluation import evaluate_model
from textransfer.inference.predict import Predictor

REVIEWS = REPO / "textransfer" / "sample_data" / "reviews.csv"


@pytest.fixture
def run_dir(tmp_path_factory, tiny_bert_dir):
    return trained_run(tmp_path_factory, tiny_bert_dir)


def test_metrics_match_sklearn_and_png_is_written(run_dir, tmp_path, capsys):
    df = pd.read_csv(REVIEWS)
    data = tmp_path / "labelled.jsonl"
    df.to_json(data, orient="records", lines=True)  # string labels
    out = tmp_path / "eval"
    assert main(["evaluate", str(run_dir), "--data", str(data), "--output-dir", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "negative" in (out / "per_class.txt").read_text()

    predictor = Predictor.from_pretrained(str(run_dir))
    labels, _ = predictor.predict(df["text"].tolist())
    y_true = df["label"].map({"negative": 0, "positive": 1}).tolist()
    y_pred = [predictor.label_names.index(label) for label in labels]
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    m = result["metrics"]
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f))
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for i, name in enumerate(["negative", "positive"]):
        c = result["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx((pc[i], rc[i], fc[i], sc[i]))
    assert result["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert result["rows"] == 400 and 0.5 < m["accuracy"] < 1.0  # learnt something, not everything


def test_evaluate_a_recipe_uses_its_target_test_split(run_dir, tmp_path):
    result = evaluate_model(str(run_dir), str(REPO / "recipes" / "news_to_sentiment.yaml"),
                            output_dir=str(tmp_path / "e"))
    results = json.loads((run_dir / "results.json").read_text())
    assert result["rows"] == results["target"]["test_rows"]
    # the same model on the same split: the run's own test metrics
    for k, v in results["target"]["transfer"]["metrics"].items():
        assert result["metrics"][k] == pytest.approx(v, abs=1e-9)
    assert np.sum(result["confusion_matrix"]) == result["rows"]


def test_bad_labels_and_existing_output_are_refused(run_dir, tmp_path):
    data = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["fine", "awful", "great"], "label": ["positive", "meh", "negative"]}).to_csv(data, index=False)
    with pytest.raises(DataError, match=r"row 2: label 'meh' is not one of the model's labels"):
        evaluate_model(str(run_dir), str(data))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["evaluate", str(run_dir), "--data", str(data), "--output-dir", str(out)]) == 2
