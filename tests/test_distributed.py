"""Two processes over gloo on CPU (``torchrun --nproc_per_node 2``), checked against one process.

Both processes train (world size 2), each on its own shard of every epoch; evaluation counts
every example once; frozen layers do not hang DDP; only the main process writes; and the
saved model equals one process with the same global batch after the same optimiser steps.

Cases are config overrides, so a strategy (``strategy.name=joint``, ...) is one more entry.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

CONFIG = str(REPO / "recipes" / "news_to_sentiment.yaml")
BATCH = 8  # per process; the one-process reference uses 2 * BATCH

CASES = {
    "plain": [],
    "frozen": ["source_training.freeze_embeddings=true", "target_training.freeze_layers=1",
               "target_training.train_word_embeddings=false"],
}


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory, _tiny_bert_dir):
    """The tiny BERT without dropout: with dropout, two processes of batch B draw other masks
    than one process of batch 2B, and no weights could be compared."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(_tiny_bert_dir)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    path = tmp_path_factory.mktemp("bert-no-dropout")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(_tiny_bert_dir).save_pretrained(path)
    return str(path)


def _overrides(model_dir, batch, extra):
    # a case's "{batch}" is the per-process batch size (a stage whose batch size is its own)
    extra = [item.replace("{batch}", str(batch)) for item in extra]
    return [f"model.name_or_path={model_dir}", "model.max_length=32", "noise_resamples=50",
            # 100 target / 96 source training rows: the last global batch is short (100 = 6 * 16 + 4)
            "source.max_train_samples=96", "target.max_train_samples=100",
            "source_training.num_epochs=1", "target_training.num_epochs=2",
            f"source_training.batch_size={batch}", f"target_training.batch_size={batch}",
            # 120 test rows, 42 validation rows: neither a multiple of 2 processes x 16
            "source_training.eval_batch_size=16", "target_training.eval_batch_size=16",
            "target_training.early_stopping_patience=null", "target_training.learning_rate=1e-3",
            "target_training.load_best_model_at_end=false", *extra]


def _launch(out, record, overrides, nproc):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO / "tests" / "ddp_worker.py"), str(record), "--",
           "run", CONFIG, "--output-dir", str(out), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads(Path(f"{record}.rank{r}.json").read_text()) for r in range(nproc)]
    return json.loads((out / "results.json").read_text()), ranks


def _saved_weights_difference(tmp_path):
    """The 2-process run's saved weights, and their largest difference from the 1-process run's."""
    wa = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return wa, max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_match_one(case, no_dropout_bert, tmp_path):
    extra = CASES[case]
    ddp, ranks = _launch(tmp_path / "ddp", tmp_path / "ddp-record", _overrides(no_dropout_bert, BATCH, extra), 2)
    one, (single,) = _launch(tmp_path / "one", tmp_path / "one-record",
                             _overrides(no_dropout_bert, 2 * BATCH, extra), 1)

    # both processes trained, in a world of 2
    assert ddp["world_size"] == 2 and [r["world_size"] for r in ranks] == [2, 2]
    assert [r["rank"] for r in ranks] == [0, 1]

    # every stage and epoch: disjoint shards whose union is the epoch, and at each step the
    # two per-process batches together are the one-process run's batch
    assert len(single["stages"]) == len(ranks[0]["stages"]) == len(ranks[1]["stages"]) == 3
    for s, stage in enumerate(single["stages"]):
        assert stage["epochs"].keys() == ranks[0]["stages"][s]["epochs"].keys()
        for epoch, batches in stage["epochs"].items():
            b0, b1 = (r["stages"][s]["epochs"][epoch] for r in ranks)
            rows0 = [row for b in b0 for row in b]
            rows1 = [row for b in b1 for row in b]
            assert rows0 and rows1 and not set(rows0) & set(rows1)
            assert sorted(rows0 + rows1) == sorted(row for b in batches for row in b)
            assert [sorted(x + y) for x, y in zip(b0, b1)] == [sorted(b) for b in batches]

    # evaluation: all 120 test rows counted once, the same metrics as one process
    assert ddp["target"]["test_rows"] == one["target"]["test_rows"] == 120
    for stage in ("transfer", "baseline"):
        a, b = ddp["target"][stage], one["target"][stage]
        assert a["optimizer_steps"] == b["optimizer_steps"]
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["eval_accuracy"] == pytest.approx(hb["eval_accuracy"], abs=1e-6)

    # only the main process wrote into the output folder
    assert ranks[0]["writes"] and not ranks[1]["writes"]

    # the saved model equals the one-process model after the same optimiser steps
    wa, worst = _saved_weights_difference(tmp_path)
    assert worst < 1e-5, f"largest weight difference {worst}"
    # ... and training moved the weights (the comparison is not between two untouched models)
    pretrained = load_file(str(Path(no_dropout_bert) / "model.safetensors"))
    moved = [k for k in wa if k.startswith("bert.") and k[5:] in pretrained
             and not torch.equal(wa[k], pretrained[k[5:]])]
    assert moved


# Strategies with extra heads (joint: a second head; dann: a domain classifier behind gradient
# reversal, fed by a second, unlabelled stream) and DDP-safe gradual unfreezing. Their losses
# are means over the batch, so 2 processes of batch B must again equal 1 process of batch 2B.
STRATEGY_CASES = {
    "joint": ["strategy.name=joint"],
    "dann": ["strategy.name=dann", "strategy.domain_dropout=0.0"],
    # masks drawn per example (not per batch) and the masked-LM loss normalised by the global masked-token count
    "udalm": ["strategy.name=udalm"],
    # pseudo-labels need the source's labels: the review task as source too (another split)
    "self_training": ["strategy.name=self_training", "strategy.threshold=0.5", "source.name=reviews_a",
                      "source.data_files=textransfer:sample_data/reviews.csv", "source.label_names=[negative,positive]",
                      "source.split_seed=1"],
    "gradual_unfreezing": ["target_training.gradual_unfreezing=true", "target_training.unfreeze_every_steps=3"],
    "head_warmup": ["target_training.head_warmup_steps=2"],
    # word embeddings frozen: with them training, rows of rare tokens (gradients near Adam's eps)
    # ended 3e-5 apart after 3 steps (every other weight within 3e-7): float noise of the
    # batch shapes that RKD's gradient carries, amplified by Adam's g / (sqrt(v) + eps)
    "relational_distillation": ["strategy.name=relational_distillation", "target_training.train_word_embeddings=false"],
    "instance_weighting": ["strategy.name=instance_weighting"],
    # masked-LM training before the source stage: each text is masked by its own tokens and the
    # step (not by its place in a batch), and the loss is over the global batch's masked tokens,
    # so the two processes' masks and gradient are the one process's; BERT's pooler, which the
    # masked-LM loss never reaches, must not hang DDP. "{batch}": the stage's own batch size
    "adaptive_pretraining": ["adaptive_pretraining.before=[source]", "adaptive_pretraining.batch_size={batch}",
                             "adaptive_pretraining.learning_rate=1e-3", "adaptive_pretraining.num_epochs=2"],
}


@pytest.mark.parametrize("case", sorted(STRATEGY_CASES))
def test_strategies_two_processes_match_one(case, no_dropout_bert, tmp_path):
    extra = STRATEGY_CASES[case] + ["baseline=false"]
    ddp, ranks = _launch(tmp_path / "ddp", tmp_path / "ddp-record", _overrides(no_dropout_bert, BATCH, extra), 2)
    one, _ = _launch(tmp_path / "one", tmp_path / "one-record", _overrides(no_dropout_bert, 2 * BATCH, extra), 1)
    assert ddp["world_size"] == 2 and [r["world_size"] for r in ranks] == [2, 2]
    assert ddp["strategy"]["name"] == one["strategy"]["name"]
    assert ddp["target"]["transfer"]["optimizer_steps"] == one["target"]["transfer"]["optimizer_steps"] > 0
    assert ddp["target"]["transfer"]["metrics"] == pytest.approx(one["target"]["transfer"]["metrics"], abs=1e-6)
    assert ranks[0]["writes"] and not ranks[1]["writes"]
    _, worst = _saved_weights_difference(tmp_path)
    assert worst < 1e-5, f"{case}: largest weight difference {worst}"
