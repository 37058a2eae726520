"""Speed options of the training step: length buckets (`pad_to_multiple_of`), `torch_compile` and
`model.attn_implementation`. Behaviour only (never wall-clock time): same examples, same losses,
plain saved models, checkpoints that resume."""

import re
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from conftest import random_batch, token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.config import ModelConfig
from textransfer.data.batching import Collator, batch_shapes, train_dataloader
from textransfer.data.tokenization import check_max_length
from textransfer.errors import ConfigError
from textransfer.modeling.loading import head_parameter_names, load_for_classification, save_model, swap_head
from textransfer.training.trainer import StageTrainer


def _bert(seed=0, attn_implementation=None, dropout=0.1):
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation=attn_implementation)


def _trainer(model, tok, checkpoint_dir=None, resume=False, **kw):
    args = TrainingConfig(**{**dict(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0), **kw})
    return StageTrainer(model, tok, args, make_accelerator(), ["accuracy"], seed=3,
                        head_parameters=head_parameter_names(model), checkpoint_dir=checkpoint_dir, resume=resume)


@pytest.mark.parametrize("bad, name", [(dict(pad_to_multiple_of=0), "`pad_to_multiple_of`"),
                                       (dict(pad_to_multiple_of=-8), "`pad_to_multiple_of`")])
def test_training_config_errors_name_the_option(bad, name):
    with pytest.raises(ConfigError, match=name):
        TrainingConfig(**bad)


def test_bucket_past_the_models_positions_is_refused_with_a_multiple_that_fits():
    """max_length 100 with buckets of 32 pads the longest batches to 128 > the model's 112
    positions: refused before training, naming the option; the suggested multiple passes."""
    tokenizer, config = SimpleNamespace(model_max_length=10**30), BertConfig(max_position_embeddings=112)
    with pytest.raises(ConfigError, match=r"`target_training.pad_to_multiple_of: 32` pads .* to 128") as err:
        check_max_length(100, tokenizer, config, {"target_training": 32})
    assert err.value.option == "target_training.pad_to_multiple_of"
    fix = int(re.search(r"target_training.pad_to_multiple_of=(\d+)", str(err.value)).group(1))
    check_max_length(100, tokenizer, config, {"target_training": fix})
    check_max_length(100, tokenizer, config, {"target_training": None, "source_training": 4})


def test_model_config_rejects_unknown_attention():
    with pytest.raises(ConfigError, match="`model.attn_implementation`"):
        ModelConfig(attn_implementation="flash")


def test_defaults_keep_todays_behaviour():
    args, model = TrainingConfig(), ModelConfig()
    assert args.torch_compile is False and args.pad_to_multiple_of is None and model.attn_implementation is None


def test_buckets_bound_the_shapes_and_keep_the_examples(pad_tokenizer):
    ds = token_dataset(53, min_len=4, max_len=40)  # 6 full batches of 8 and one of 5
    plain = train_dataloader(ds, pad_tokenizer, batch_size=8, seed=0)
    bucketed = train_dataloader(ds, pad_tokenizer, batch_size=8, seed=0, pad_to_multiple_of=16)
    allowed = batch_shapes(ds["length"], 8, 16)
    assert {t for _, t in allowed} <= {16, 32, 48} and {b for b, _ in allowed} == {8, 5}
    seen = set()
    for epoch in range(3):
        plain.batch_sampler.set_epoch(epoch)
        bucketed.batch_sampler.set_epoch(epoch)
        for a, b in zip(plain, bucketed, strict=True):
            seen.add(tuple(b["input_ids"].shape))
            n = a["input_ids"].shape[1]
            # the same examples in the same batch, then only padding (masked)
            assert torch.equal(a["input_ids"], b["input_ids"][:, :n]) and torch.equal(a["labels"], b["labels"])
            assert not b["attention_mask"][:, n:].any()
            assert (b["input_ids"][:, n:] == pad_tokenizer.pad_token_id).all()
    assert seen <= allowed and all(t % 16 == 0 for _, t in seen)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_bucket_padding_changes_no_loss(pad_tokenizer, attention):
    model = _bert(attn_implementation=attention).eval()
    batch = random_batch(batch=4, length=12)
    batch["attention_mask"][1, 7:] = 0  # one example shorter than the batch
    features = [{"input_ids": ids[m.bool()].tolist(), "attention_mask": m[m.bool()].tolist(), "labels": int(y)}
                for ids, m, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]
    with torch.no_grad():
        tight = model(**Collator(pad_tokenizer)(features))
        padded_batch = Collator(pad_tokenizer, pad_to_multiple_of=32)(features)
        padded = model(**padded_batch)
    assert padded_batch["input_ids"].shape == (4, 32)
    torch.testing.assert_close(padded.logits, tight.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.loss, tight.loss, atol=1e-6, rtol=1e-6)


def test_attn_implementation_reaches_the_model_and_survives_a_head_swap(tiny_bert_dir):
    eager = load_for_classification(ModelConfig(name_or_path=tiny_bert_dir, attn_implementation="eager"), ["a", "b"])
    default = load_for_classification(ModelConfig(name_or_path=tiny_bert_dir), ["a", "b"])
    assert eager.config._attn_implementation == "eager" and default.config._attn_implementation == "sdpa"
    assert swap_head(eager, ["x", "y", "z"]).config._attn_implementation == "eager"
    default.load_state_dict(eager.state_dict())
    batch = random_batch(batch=3, length=10)
    batch["attention_mask"][0, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(eager.eval()(**batch).logits, default.eval()(**batch).logits, atol=1e-5, rtol=1e-5)


def test_a_model_trained_with_eager_attention_ships_with_the_default_kernel(tiny_bert_dir, tmp_path):
    """The kernel is a training-time choice (config/model.py): the saved config.json leaves it out,
    so the shipped model loads with transformers' default and answers as trained."""
    eager = load_for_classification(ModelConfig(name_or_path=tiny_bert_dir, attn_implementation="eager"), ["a", "b"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    save_model(eager, tokenizer, tmp_path / "model")
    shipped = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert shipped.config._attn_implementation == "sdpa"
    batch = random_batch(batch=3, length=10)
    batch["attention_mask"][1, 4:] = 0
    with torch.no_grad():
        torch.testing.assert_close(shipped.eval()(**batch).logits, eager.eval()(**batch).logits, atol=1e-5, rtol=1e-5)


def test_compiled_training_matches_eager_saves_plain_and_resumes(pad_tokenizer, tmp_path):
    """One shape (batches of 8 x 16 tokens) so that the run compiles once. Without dropout the
    compiled run does the eager run's arithmetic (up to float rounding)."""
    from torch._dynamo.utils import counters

    train, dev = token_dataset(32, max_len=16), token_dataset(16, seed=1, max_len=16)
    eager = _trainer(_bert(dropout=0.0), pad_tokenizer, pad_to_multiple_of=16)
    eager_result = eager.train(train, dev)
    graphs = counters["stats"]["unique_graphs"]
    compiled = _trainer(_bert(dropout=0.0), pad_tokenizer, tmp_path / "ckpt", pad_to_multiple_of=16,
                        torch_compile=True, save_checkpoints=True)
    result = compiled.train(train, dev)
    assert counters["stats"]["unique_graphs"] > graphs  # it did compile
    assert [h.keys() for h in result.history] == [h.keys() for h in eager_result.history]
    assert result.optimizer_steps == eager_result.optimizer_steps == 8
    assert result.history[-1]["train_loss"] == pytest.approx(eager_result.history[-1]["train_loss"], abs=1e-4)
    # the trainer hands back the plain model, whose weights the compiled step trained
    assert type(compiled.model) is type(eager.model)
    state, eager_state = compiled.model.state_dict(), eager.model.state_dict()
    assert state.keys() == eager_state.keys()
    for k in state:
        torch.testing.assert_close(state[k], eager_state[k], atol=1e-4, rtol=1e-3)
    recorded = compiled.evaluate(dev)
    save_model(compiled.model, pad_tokenizer, tmp_path / "model")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    again = _trainer(reloaded, pad_tokenizer).evaluate(dev)
    assert again["predictions"] == recorded["predictions"]
    torch.testing.assert_close(torch.tensor(again["scores"]), torch.tensor(recorded["scores"]), atol=1e-6, rtol=1e-6)
    # the epoch-2 checkpoint holds plain parameter names: a third epoch resumes from it, compiled
    resumed = _trainer(_bert(seed=9, dropout=0.0), pad_tokenizer, tmp_path / "ckpt", resume=True, num_epochs=3,
                       pad_to_multiple_of=16, torch_compile=True, save_checkpoints=True)
    more = resumed.train(train, dev)
    assert more.history[:2] == result.history and len(more.history) == 3 and more.optimizer_steps == 12
