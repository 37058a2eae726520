"""The ONNX Runtime backend of predict and evaluate: the same labels and scores as PyTorch, the
export stored in the model folder and reused, evaluate's metrics, push, int8, the missing extra.

Every model here is a tiny one (a 2-3 layer encoder of hidden 32); the trained run is the shared
one of ``published_run.py``, copied per test so that its ``onnx/`` folder stays this test's own.
"""

import inspect
import json
import os
import shutil
import sys
import threading
import time

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import textransfer.inference.backends as backends
from conftest import ARCHITECTURES, REPO
from published_run import trained_run
from test_hub import cli, hub, hub_env  # noqa: F401 (hub: the loopback Hub fixture)
from textransfer.cli import main
from textransfer.errors import ConfigError
from textransfer.inference.evaluation import evaluate_model
from textransfer.inference.predict import Predictor

REVIEWS = REPO / "textransfer" / "sample_data" / "reviews.csv"
RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"
SCORE_TOLERANCE = 1e-4  # the bound on |score_onnx - score_torch|
# bert reads token_type_ids, distilbert does not: both graph signatures are exercised
ONNX_ARCHITECTURES = ["bert", "distilbert"]


@pytest.fixture
def run_copy(tmp_path_factory, tiny_bert_dir, tmp_path):
    """The shared trained run, copied (mtimes kept) so its onnx/ is this test's alone."""
    return shutil.copytree(trained_run(tmp_path_factory, tiny_bert_dir), tmp_path / "run")


@pytest.fixture
def texts():
    return pd.read_csv(REVIEWS)["text"].tolist()


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports (the real exporter still runs)."""
    calls = []
    real = backends.export_onnx

    def counted(model, tokenizer, path):
        calls.append(path)
        real(model, tokenizer, path)

    monkeypatch.setattr(backends, "export_onnx", counted)
    return calls


def tiny_folder(model_type, minilm_path, path):
    """A random 3-label ``model_type`` classifier of the test set, with MiniLM's tokenizer, saved."""
    # as distilbert's own tokenizer: no token_type_ids
    names = {"model_input_names": ["input_ids", "attention_mask"]} if model_type == "distilbert" else {}
    tok = AutoTokenizer.from_pretrained(minilm_path, **names)
    cfg = AutoConfig.for_model(model_type, **dict(ARCHITECTURES[model_type], vocab_size=tok.vocab_size))
    cfg.num_labels = 3
    cfg.id2label = {0: "a", 1: "b", 2: "c"}
    cfg.label2id = {"a": 0, "b": 1, "c": 2}
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def assert_same_predictions(torch_predictor, onnx_predictor, texts):
    labels_t, probs_t = torch_predictor.predict(texts)
    labels_o, probs_o = onnx_predictor.predict(texts)
    assert labels_o == labels_t  # every row
    assert np.abs(probs_o - probs_t).max() < SCORE_TOLERANCE
    return labels_t


@pytest.mark.parametrize("model_type", ONNX_ARCHITECTURES)
def test_onnx_matches_torch_and_the_export_is_reused(model_type, minilm_path, tmp_path, texts, exports):
    folder = tiny_folder(model_type, minilm_path, tmp_path / model_type)
    torch_p = Predictor.from_pretrained(str(folder), max_length=48, batch_size=16)
    onnx_p = Predictor.from_pretrained(str(folder), max_length=48, batch_size=16, backend="onnxruntime")
    assert isinstance(onnx_p.backend, backends.OnnxBackend) and torch_p.backend.name == "torch"
    assert_same_predictions(torch_p, onnx_p, texts)

    exported = folder / "onnx" / "model.onnx"
    assert exports == [exported] and onnx_p.backend.path == exported
    graph = onnx.load(str(exported)).graph
    inputs = [i.name for i in graph.input]
    # the tokenizer's outputs, in the order of forward's parameters (as optimum names them)
    order = list(inspect.signature(torch_p.model.forward).parameters)
    assert inputs == sorted(torch_p.tokenize(["x"]).keys(), key=order.index)
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:  # optimum's axis names, both dynamic
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch_size", "sequence_length"]

    made = exported.stat().st_mtime_ns
    again = Predictor.from_pretrained(str(folder), backend="onnxruntime", max_length=48)
    assert len(exports) == 1 and exported.stat().st_mtime_ns == made  # reused, not exported again
    assert again.predict(texts[:8])[0] == torch_p.predict(texts[:8])[0]

    # new file times on the same bytes (a copied or downloaded folder): still the same export
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(made + 10**9, made + 10**9))
    Predictor.from_pretrained(str(folder), backend="onnxruntime", max_length=48)
    assert len(exports) == 1 and exported.stat().st_mtime_ns == made


def _onnx_and_torch_scores(folder, texts):
    predictor = Predictor.from_pretrained(str(folder), backend="onnxruntime", max_length=48)
    return predictor.predict(texts)[1], Predictor.from_pretrained(str(folder), max_length=48).predict(texts)[1]


def test_the_export_follows_the_weights_content_not_their_times(minilm_path, tmp_path, texts, exports):
    folder = tiny_folder("bert", minilm_path, tmp_path / "bert")
    texts = texts[:16]
    first, _ = _onnx_and_torch_scores(folder, texts)
    weights = folder / "model.safetensors"
    original = shutil.copy2(weights, tmp_path / "original.safetensors")
    # other weights, saved over the model: exported again, and the export gives their scores
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias += torch.tensor([2.0, -2.0, 0.0])
    model.save_pretrained(folder)
    onnx_scores, torch_scores = _onnx_and_torch_scores(folder, texts)
    assert len(exports) == 2 and np.abs(onnx_scores - torch_scores).max() < SCORE_TOLERANCE
    assert np.abs(onnx_scores - first).max() > 0.1
    # the first weights copied back with their older file time (which a newer-than rule misses)
    shutil.copy2(original, weights)
    onnx_scores, _ = _onnx_and_torch_scores(folder, texts)
    assert len(exports) == 3 and np.abs(onnx_scores - first).max() < SCORE_TOLERANCE
    # an export without its record (an earlier textransfer's, or a write killed before it) is made again
    record = backends.sources_record_path(folder / "onnx" / "model.onnx")
    record.unlink()
    _onnx_and_torch_scores(folder, texts)
    assert len(exports) == 4
    # a record that is not one textransfer wrote: made again, not trusted and not a crash
    for written in ('{"sources": {"config.json": 1, "model.safetensors": 2}}', '{"sources": ["config.json"]}', "{"):
        record.write_text(written)
        _onnx_and_torch_scores(folder, texts)
    assert len(exports) == 7


def test_threads_follow_torch_or_the_option(run_copy):
    # the cores become workers, each running whole batches on a session of one intra-op thread
    p = Predictor.from_pretrained(str(run_copy), backend="onnxruntime")
    assert p.backend.workers == torch.get_num_threads()
    one = Predictor.from_pretrained(str(run_copy), backend="onnxruntime", threads=1)
    three = Predictor.from_pretrained(str(run_copy), backend="onnxruntime", threads=3)
    assert one.backend.workers == 1 and three.backend.workers == 3
    for predictor in (p, one, three):
        options = predictor.backend.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.graph_optimization_level == backends.import_onnxruntime().GraphOptimizationLevel.ORT_ENABLE_ALL


class BarrierSession:
    """A session whose runs each wait until ``parties`` runs are inside at once: run one after
    another, the first one times out (BrokenBarrierError)."""

    def __init__(self, session, parties):
        self.session, self.barrier, self.batches = session, threading.Barrier(parties, timeout=20), []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feed):
        self.batches.append(feed["input_ids"].shape)
        self.barrier.wait()
        return self.session.run(names, feed)


def test_workers_run_batches_at_once_with_the_same_predictions(run_copy, texts):
    one = Predictor.from_pretrained(str(run_copy), backend="onnxruntime", threads=1, batch_size=4)
    two = Predictor.from_pretrained(str(run_copy), backend="onnxruntime", threads=2, batch_size=4)
    session = BarrierSession(two.backend.session, parties=2)
    two.backend.session = session
    texts = texts[:40]  # 10 batches: every run meets another one inside the session
    labels_1, probs_1 = one.predict(texts)
    labels_2, probs_2 = two.predict(texts)
    assert len(session.batches) == 10 and session.barrier.n_waiting == 0
    assert labels_2 == labels_1 and np.abs(probs_2 - probs_1).max() < 1e-6  # rows in order, as one worker gives them
    # a call with fewer rows than a batch holds is still cut so that both workers have one
    session.batches.clear()
    assert two.predict(texts[:3])[0] == labels_1[:3]
    assert sorted(rows for rows, _ in session.batches) == [1, 2]


def test_ordered_concurrent_map_keeps_order_bounds_work_and_cancels():
    started = []

    def items():
        for i in range(50):
            started.append(i)
            yield i

    def slow_square(i):
        time.sleep(0.001 * (i % 5))  # later items often finish first
        return i * i

    results = backends.ordered_concurrent_map(slow_square, items(), workers=3)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(started) <= 5 + 2 * 3  # at most 2 x workers in flight beyond what was read
    results.close()  # the reader stops: nothing more is taken, the pool is shut down
    assert len(started) <= 5 + 2 * 3
    assert list(backends.ordered_concurrent_map(slow_square, range(20), workers=2)) == [i * i for i in range(20)]


def test_predict_command_same_output_both_backends(run_copy, tmp_path):
    frame = pd.read_csv(REVIEWS)
    frame.loc[4, "text"] = ""  # an empty row stays an empty row
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    out = {}
    for backend in ("torch", "onnxruntime"):
        out[backend] = tmp_path / f"{backend}.csv"
        # chunks of 37 rows: the 400-row file streams through 11 chunks on either backend
        assert main(["predict", str(run_copy), "--input", str(src), "--output", str(out[backend]), "--all-scores",
                     "--chunk-size", "37", "--batch-size", "8", "--backend", backend]) == 0
    t, o = (pd.read_csv(out[b], keep_default_na=False, na_values=[""]) for b in ("torch", "onnxruntime"))
    assert (run_copy / "model" / "onnx" / "model.onnx").is_file()
    assert o["row"].tolist() == t["row"].tolist() == list(range(1, 401))
    assert o["label"].fillna("").tolist() == t["label"].fillna("").tolist()
    assert o["error"].fillna("").tolist() == t["error"].fillna("").tolist() and t["error"].notna().sum() == 1
    assert len(set(t["label"].dropna())) == 2  # the trained model tells the reviews apart
    for column in ("score", "score_negative", "score_positive"):
        assert np.nanmax(np.abs(o[column] - t[column])) < SCORE_TOLERANCE


def test_the_other_arm_folder_works(run_copy, texts):
    arm = run_copy / "models" / "baseline"
    assert (arm / "config.json").is_file()
    torch_p = Predictor.from_pretrained(str(arm), max_length=32)
    onnx_p = Predictor.from_pretrained(str(arm), max_length=32, backend="onnxruntime")
    assert_same_predictions(torch_p, onnx_p, texts)
    assert (arm / "onnx" / "model.onnx").is_file() and not (run_copy / "model" / "onnx").exists()


def test_evaluate_gives_the_torch_metrics(run_copy, tmp_path, capsys):
    ref = evaluate_model(str(run_copy), str(RECIPE), output_dir=str(tmp_path / "torch"))
    assert main(["evaluate", str(run_copy), "--data", str(RECIPE), "--output-dir", str(tmp_path / "onnx"),
                 "--backend", "onnxruntime"]) == 0
    got = json.loads((tmp_path / "onnx" / "evaluation.json").read_text())
    assert got["backend"] == "onnxruntime" and ref["backend"] == "torch"
    assert got["metrics"] == ref["metrics"] and got["confusion_matrix"] == ref["confusion_matrix"]
    assert got["per_class"] == ref["per_class"] and got["rows"] == ref["rows"] > 0


def test_push_uploads_the_onnx_export(run_copy, hub, tmp_path):  # noqa: F811 (the imported fixture)
    Predictor.from_pretrained(str(run_copy), backend="onnxruntime")  # exports model/onnx/model.onnx
    pushed = cli(hub_env(hub, tmp_path / "hf_home"), "push", str(run_copy), "--repo-id", "me/with-onnx")
    assert pushed.returncode == 0, pushed.stderr
    files = hub.files("me/with-onnx")
    assert files["onnx/model.onnx"] == (run_copy / "model" / "onnx" / "model.onnx").read_bytes()
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)


def test_int8_quantisation_is_stored_beside_and_never_the_default(run_copy, texts):
    torch_p = Predictor.from_pretrained(str(run_copy))
    fp32 = Predictor.from_pretrained(str(run_copy), backend="onnxruntime")
    int8 = Predictor.from_pretrained(str(run_copy), backend="onnxruntime", quantize="int8")
    folder = run_copy / "model" / "onnx"
    assert fp32.backend.path == folder / "model.onnx" and int8.backend.path == folder / "model_quantized.onnx"
    ops = {n.op_type for n in onnx.load(str(int8.backend.path)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    labels_t, probs_t = torch_p.predict(texts)
    labels_q, probs_q = int8.predict(texts)
    diff = np.abs(probs_q - probs_t).max()
    assert 0 < diff < 0.1  # quantised: close to, but not the float model
    assert np.mean(np.array(labels_q) == np.array(labels_t)) >= 0.9


def test_bad_backend_options_and_the_missing_extra(run_copy, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.csv"
    src.write_text("text\nfine\n")
    assert main(["predict", str(run_copy), "--input", str(src), "--quantize", "int8"]) == 2
    assert "--quantize int8 needs --backend onnxruntime" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="choose one of torch, onnxruntime"):
        Predictor.from_pretrained(str(run_copy), backend="tensorrt")

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    for command in (["predict", str(run_copy), "--input", str(src)],
                    ["evaluate", str(run_copy), "--data", str(RECIPE), "--output-dir", str(tmp_path / "e")]):
        assert main([*command, "--backend", "onnxruntime"]) == 2
        err = capsys.readouterr().err
        assert "onnxruntime not installed" in err and 'pip install "textransfer[onnx]"' in err, err
    assert not (run_copy / "model" / "onnx").exists() and not (tmp_path / "e").exists()


def test_a_traced_export_off_from_torch_is_made_again_with_dynamo(minilm_path, tmp_path, texts, monkeypatch):
    """The check that guards the traced export: off by more than the tolerance, the dynamo export
    replaces it (and still matches PyTorch); within it, the traced graph is kept."""
    folder = tiny_folder("bert", minilm_path, tmp_path / "bert")
    made = []
    for name in ("traced_export", "dynamo_export"):
        real = getattr(backends, name)
        monkeypatch.setattr(backends, name, lambda *a, real=real, name=name: (made.append(name), real(*a)))
    Predictor.from_pretrained(str(folder), max_length=48, backend="onnxruntime")
    assert made == ["traced_export"]  # the traced graph passed its check
    error = backends.export_error
    monkeypatch.setattr(backends, "export_error", lambda *a: error(*a) + 1.0)  # as if the tracer had frozen a shape
    (folder / "onnx" / "model.onnx").unlink()
    onnx_p = Predictor.from_pretrained(str(folder), max_length=48, backend="onnxruntime")
    assert made == ["traced_export", "traced_export", "dynamo_export"]
    assert_same_predictions(Predictor.from_pretrained(str(folder), max_length=48), onnx_p, texts)


def test_export_uses_eager_attention_and_restores_the_models(minilm_path, tmp_path):
    folder = tiny_folder("bert", minilm_path, tmp_path / "bert")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config._attn_implementation == "sdpa"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    seen = []
    real = backends.traced_export
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "traced_export",
                   lambda m, *a: (seen.append(m.config._attn_implementation), real(m, *a)))
        backends.export_onnx(model, tokenizer, tmp_path / "out" / "model.onnx")
    assert seen == ["eager"] and model.config._attn_implementation == "sdpa"
    assert backends.export_error(model, tokenizer, str(tmp_path / "out" / "model.onnx")) < 1e-5
