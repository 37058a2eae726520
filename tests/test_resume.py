"""Faults: a real run killed with SIGKILL (or stopped with Ctrl-C) and resumed gives the same
metrics and weights as an uninterrupted run; partial checkpoints are never trusted."""

import json
import os
import re
import threading
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

CONFIG = str(REPO / "recipes" / "news_to_sentiment.yaml")


def _overrides(tiny_bert_dir):
    # dropout stays on (the tiny BERT's 0.1): resuming must restore the RNG state too
    return [f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", "noise_resamples=50",
            "source_training.num_epochs=1", "source_training.batch_size=16",
            "target_training.num_epochs=3", "target_training.batch_size=8",
            "target_training.early_stopping_patience=null", "target_training.save_steps=1",
            # the last weights, not the best epoch's: the comparison of weights covers every step
            "target_training.load_best_model_at_end=false", "target_training.learning_rate=1e-3"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cmd(out, overrides, *extra):
    return [sys.executable, "-m", "textransfer.cli", "run", CONFIG, "--output-dir", str(out), *overrides, *extra]


def _run(out, overrides, *extra):
    proc = subprocess.run(_cmd(out, overrides, *extra), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "results.json").read_text())


def _wait_for(predicate, proc, timeout=300):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()[-2000:]
        assert time.time() - t0 < timeout, "timed out waiting for the run to reach the target stage"
        time.sleep(0.02)


def _complete_target_steps(out):
    root = Path(out) / "checkpoints" / "target"
    return [p for p in root.glob("step-*") if (p / "COMPLETE").exists()] if root.is_dir() else []


def _same_outcome(a, b, out_a, out_b):
    for stage in ("transfer", "baseline"):
        assert a["target"][stage]["metrics"] == b["target"][stage]["metrics"], stage
        assert a["target"][stage]["history"] == b["target"][stage]["history"], stage
        assert a["target"][stage]["optimizer_steps"] == b["target"][stage]["optimizer_steps"]
    assert a["source"]["metrics"] == b["source"]["metrics"]
    assert a["gain"] == b["gain"]
    wa = load_file(str(Path(out_a) / "model" / "model.safetensors"))
    wb = load_file(str(Path(out_b) / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, _tiny_bert_dir):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return out, _run(out, _overrides(_tiny_bert_dir))


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(uninterrupted, tiny_bert_dir, tmp_path):
    ref_out, ref = uninterrupted
    steps_per_epoch = ref["target"]["transfer"]["history"][0]["step"]
    out = tmp_path / "killed"
    overrides = _overrides(tiny_bert_dir)
    proc = subprocess.Popen(_cmd(out, overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        # kill in the second epoch of the target stage, at a step that is not an epoch boundary
        _wait_for(lambda: any(int(p.name[5:]) > steps_per_epoch + 1 for p in _complete_target_steps(out)), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    assert (out / "checkpoints" / "source" / "done.json").is_file()  # the source stage had finished
    assert not (out / "checkpoints" / "target" / "done.json").exists()
    killed_at = max(int(p.name[5:]) for p in _complete_target_steps(out))
    total = ref["target"]["transfer"]["optimizer_steps"]
    assert steps_per_epoch < killed_at < total  # mid-stage

    # what a kill during a checkpoint write leaves behind: a temp folder and a folder without
    # COMPLETE, both with a later step number; neither may be trusted
    for partial in (out / "checkpoints" / "target" / ".tmp-step-000099999",
                    out / "checkpoints" / "target" / "step-000099998"):
        partial.mkdir(exist_ok=True)
        (partial / "loop.json").write_text("{\"epoch\": 99")  # half-written

    proc = subprocess.run(_cmd(out, overrides, "--resume"), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "[source] finished in an earlier run" in said  # the source stage was not trained again
    assert f"step {killed_at})" in said  # the target stage resumed from the kill's checkpoint
    resumed = json.loads((out / "results.json").read_text())
    _same_outcome(resumed, ref, out, ref_out)
    assert not (out / "checkpoints" / "target" / ".tmp-step-000099999").exists()


def test_ctrl_c_saves_says_how_to_resume_and_resumes(uninterrupted, tiny_bert_dir, tmp_path):
    ref_out, ref = uninterrupted
    out = tmp_path / "interrupted"
    # no periodic checkpoints: what is saved comes from the Ctrl-C alone
    overrides = [o for o in _overrides(tiny_bert_dir) if "save_steps" not in o]
    proc = subprocess.Popen(_cmd(out, overrides), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    # stderr is read on a thread so the signal goes out once the target stage's training has
    # visibly started (its progress bar has moved), however fast or slow the machine is
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: re.search(r"target:\s+\d+%\|[^|]*\| *[1-9]", "".join(chunks)), proc)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=60)
        stderr = "".join(chunks)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    hint = [line.strip() for line in stderr.splitlines() if line.strip().startswith("textransfer run")]
    assert hint and hint[-1].endswith("--resume") and str(out) in hint[-1]
    assert not (out / "results.json").exists()
    assert _complete_target_steps(out) or (out / "checkpoints" / "target" / "done.json").is_file()

    # the printed command (run as `python -m textransfer.cli`) finishes the run
    import shlex

    argv = shlex.split(hint[-1])[1:]
    done = subprocess.run([sys.executable, "-m", "textransfer.cli", *argv], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_outcome(json.loads((out / "results.json").read_text()), ref, out, ref_out)


def test_resume_refuses_another_config_and_foreign_folders(uninterrupted, tiny_bert_dir, tmp_path):
    ref_out, _ = uninterrupted
    proc = subprocess.run(_cmd(ref_out, _overrides(tiny_bert_dir) + ["seed=7"], "--resume"), capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert proc.returncode == 2 and "seed: 42 -> 7" in proc.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = subprocess.run(_cmd(foreign, _overrides(tiny_bert_dir), "--resume"), capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_sigkill_after_an_epoch_end_checkpoint_resumes_exactly(uninterrupted, tiny_bert_dir, tmp_path):
    """Only epoch-end checkpoints (``save_checkpoints``): the resumed run starts a fresh epoch,
    whose data iterator must draw from the RNG exactly where the uninterrupted run's did."""
    ref_out, ref = uninterrupted
    steps_per_epoch = ref["target"]["transfer"]["history"][0]["step"]
    out = tmp_path / "killed"
    overrides = [o for o in _overrides(tiny_bert_dir) if "save_steps" not in o] + ["target_training.save_checkpoints=true"]
    proc = subprocess.Popen(_cmd(out, overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        _wait_for(lambda: _complete_target_steps(out), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = max(int(p.name[5:]) for p in _complete_target_steps(out))
    assert killed_at % steps_per_epoch == 0 and killed_at < ref["target"]["transfer"]["optimizer_steps"]
    proc = subprocess.run(_cmd(out, overrides, "--resume"), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"batch 0, step {killed_at})" in proc.stdout + proc.stderr
    _same_outcome(json.loads((out / "results.json").read_text()), ref, out, ref_out)
