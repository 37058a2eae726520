"""`sparse_embedding_gradient`: the word embedding's gradient in one stage-long buffer, filled with
the batch's rows. The same training as the dense gradient (weights compared after whole stages,
with gradient accumulation and with gradients dropped by gradual unfreezing), one buffer reused at
every step, the model handed back as it came; not applied where it would change anything.

`sparse_embedding_update`: clipping, AdamW and the zeroing on the rows the stage reached. The row
step is the fused AdamW's update bitwise (weights and moments, with and without weight decay);
whole stages match the whole-matrix update, with the rows no batch reached bitwise equal; a dense
gradient (a loss term on the weights) or more than half the rows reached puts the stage back on the
whole matrix. A stage stopped and resumed with it on ends as the uninterrupted one, bitwise (the reached rows are
found again in the restored optimiser state)."""

import os
import signal

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig

from conftest import token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.embedding_gradient import EmbeddingGradient, ReachedRows, RowStep
from textransfer.training.trainer import StageTrainer


def _bert(seed=0, vocab_size=1000):
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg)


def _train(sparse: bool, tokenizer, vocab_size=1000, **kw):
    model = _bert(vocab_size=vocab_size)
    args = TrainingConfig(**{**dict(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0,
                                    sparse_embedding_gradient=sparse), **kw})
    trainer = StageTrainer(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=3,
                           head_parameters=head_parameter_names(model))
    storages = []
    original = trainer._training_step

    def step(run, state, batch):
        stepped = original(run, state, batch)
        grad = model.get_input_embeddings().weight.grad
        storages.append(None if grad is None else (grad.data_ptr(), grad.is_sparse, bool(grad.abs().sum() == 0)))
        return stepped

    trainer._training_step = step
    result = trainer.train(token_dataset(48, max_len=20), token_dataset(16, seed=1, max_len=20))
    return trainer, result, storages


@pytest.mark.parametrize("options", [{}, {"gradient_accumulation_steps": 2},
                                     {"gradual_unfreezing": True, "unfreeze_every_steps": 3}],
                         ids=["plain", "accumulation", "unfreezing"])
def test_the_same_training_as_the_dense_gradient(pad_tokenizer, options):
    sparse, sparse_result, storages = _train(True, pad_tokenizer, **options)
    dense, dense_result, dense_storages = _train(False, pad_tokenizer, **options)
    assert sparse_result.optimizer_steps == dense_result.optimizer_steps > 4
    dense_state = dense.model.state_dict()
    for name, value in sparse.model.state_dict().items():
        torch.testing.assert_close(value, dense_state[name], atol=1e-5, rtol=1e-4, msg=name)
    # one dense buffer for the whole stage, zeroed after each optimiser step (not while accumulating)
    assert len({ptr for ptr, _, _ in storages}) == 1 and not any(is_sparse for _, is_sparse, _ in storages)
    every = options.get("gradient_accumulation_steps", 1)  # 6 batches an epoch: steps end on even batches
    assert all(zeroed for _, _, zeroed in storages[every - 1::every])
    if every > 1:
        assert not any(zeroed for _, _, zeroed in storages[0::every])
    # the dense path as before: zero_grad(set_to_none=True) after each optimiser step
    assert dense_storages and all(s is None for s in dense_storages[every - 1::every])
    # handed back as it came: no gradient kept, the embedding dense again
    embedding = sparse.model.get_input_embeddings()
    assert embedding.weight.grad is None and embedding.sparse is False


def test_the_backward_is_sparse_inside_the_step(pad_tokenizer):
    model = _bert()
    args = TrainingConfig(sparse_embedding_gradient=True)
    gradient = EmbeddingGradient.for_stage(model, args, make_accelerator())
    assert gradient is not None and model.get_input_embeddings().weight.grad is gradient.buffer
    seen = []
    model.get_input_embeddings().weight.register_hook(lambda grad: seen.append(grad.is_sparse))
    batch = {"input_ids": torch.randint(5, 1000, (3, 7)), "labels": torch.tensor([0, 1, 0])}
    with gradient.sparse_backward():
        loss = model(**batch).loss
    loss.backward()
    assert seen == [True]
    touched = gradient.buffer.abs().sum(dim=1) != 0
    assert set(touched.nonzero().flatten().tolist()) <= set(batch["input_ids"].flatten().tolist())
    gradient.reset()
    assert gradient.buffer.abs().sum() == 0 and model.get_input_embeddings().weight.grad is gradient.buffer


def test_not_applied_where_it_would_change_anything():
    acc, on = make_accelerator(), TrainingConfig()
    assert on.sparse_embedding_gradient is True and on.sparse_embedding_update is True
    assert EmbeddingGradient.for_stage(_bert(), TrainingConfig(sparse_embedding_gradient=False), acc) is None
    assert EmbeddingGradient.for_stage(_bert(), TrainingConfig(torch_compile=True), acc) is None
    frozen = _bert()
    frozen.get_input_embeddings().weight.requires_grad_(False)
    assert EmbeddingGradient.for_stage(frozen, on, acc) is None
    # a masked-LM head shares the matrix: its gradient is dense anyway
    tied = AutoModelForMaskedLM.from_config(_bert().config)
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    assert EmbeddingGradient.for_stage(tied, on, acc) is None
    assert EmbeddingGradient.for_stage(torch.nn.Linear(2, 2), on, acc) is None  # no word embedding


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_row_step_is_the_fused_adamw_update_bitwise(weight_decay):
    torch.manual_seed(0)
    start = torch.randn(500, 16)
    whole, rows_only = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    adamw = torch.optim.AdamW([whole], lr=1e-2, weight_decay=weight_decay, fused=True)
    row_adamw = torch.optim.AdamW([rows_only], lr=1e-2, weight_decay=weight_decay, fused=True)
    reached = ReachedRows(rows_only)
    for step in range(5):  # each step reaches some new rows and some seen before
        ids = torch.randint(0, 60, (20,)) + 10 * step
        grad = torch.sparse_coo_tensor(ids[None], torch.randn(20, 16), (500, 16), check_invariants=True)
        whole.grad, rows_only.grad = grad.to_dense(), torch.zeros(500, 16) + grad
        reached._seen(grad)
        adamw.step()
        rows = reached.reached(row_adamw.state.get(rows_only))
        assert rows is not None and rows.numel() < 500
        row_step = RowStep(rows_only, rows, rows_only.grad.index_select(0, rows), row_adamw, row_adamw.param_groups[0])
        rows_only.grad = None
        row_adamw.step()  # skips the weight, as the optimiser's own step does in training
        row_step.apply()
        assert torch.equal(reached.written(), ids)
    assert torch.equal(whole, rows_only)
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(adamw.state[whole][key], row_adamw.state[rows_only][key]), key
        assert adamw.state[whole][key].dtype == row_adamw.state[rows_only][key].dtype
    reached.release()


def _count_row_steps(monkeypatch):
    calls = []
    original = RowStep.apply
    monkeypatch.setattr(RowStep, "apply", lambda self: (calls.append(self.rows.numel()), original(self))[1])
    return calls


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.05], ids=["clip-default", "clip-active"])
def test_a_stage_with_the_row_update_matches_the_whole_matrix_update(pad_tokenizer, monkeypatch, max_grad_norm):
    options = dict(vocab_size=5000, weight_decay=0.01, max_grad_norm=max_grad_norm)  # the data's ids are < 1000
    calls = _count_row_steps(monkeypatch)
    rows, rows_result, _ = _train(True, pad_tokenizer, sparse_embedding_update=True, **options)
    assert len(calls) == rows_result.optimizer_steps > 4 and 0 < max(calls) < 1000  # every step, on the rows
    whole, whole_result, _ = _train(True, pad_tokenizer, sparse_embedding_update=False, **options)
    assert len(calls) == rows_result.optimizer_steps  # the whole-matrix run took no row step
    whole_state = whole.model.state_dict()
    for name, value in rows.model.state_dict().items():
        torch.testing.assert_close(value, whole_state[name], atol=1e-6, rtol=1e-5, msg=name)
    # the rows no batch reached: the weight decay alone, as AdamW gives them, bitwise
    weights = rows.model.get_input_embeddings().weight
    assert torch.equal(weights[1000:], whole.model.get_input_embeddings().weight[1000:])
    assert not torch.equal(weights[1000:], _bert(vocab_size=5000).get_input_embeddings().weight[1000:])
    assert weights.grad is None and not weights._backward_hooks  # the hook is gone with the stage


class _WeightPenalty(StageTrainer):
    """A loss term on the embedding's weights (as L2SP adds): its gradient reaches every row."""

    def compute_loss(self, model, batch, aux_batch=None):
        return super().compute_loss(model, batch) + 1e-3 * model.get_input_embeddings().weight.square().sum()


def test_a_dense_gradient_puts_the_stage_on_the_whole_matrix(pad_tokenizer, monkeypatch):
    calls = _count_row_steps(monkeypatch)
    results = []
    for update in (True, False):
        model = _bert(vocab_size=5000)
        args = TrainingConfig(num_epochs=1, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0,
                              sparse_embedding_update=update)
        trainer = _WeightPenalty(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], seed=3,
                                 head_parameters=head_parameter_names(model))
        trainer.train(token_dataset(48, max_len=20))
        results.append(trainer.model.state_dict())
    assert calls == []  # no row step: the penalty's gradient is dense from the first backward
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


def test_the_whole_matrix_past_half_the_rows():
    weight = torch.nn.Parameter(torch.zeros(10, 4))
    reached = ReachedRows(weight)
    reached._seen(torch.sparse_coo_tensor(torch.tensor([[1, 2, 3, 4, 4]]), torch.ones(5, 4), (10, 4), check_invariants=True))
    assert reached.reached(None).tolist() == [1, 2, 3, 4]
    reached._seen(torch.sparse_coo_tensor(torch.tensor([[5, 6]]), torch.ones(2, 4), (10, 4), check_invariants=True))
    assert reached.reached(None) is None  # 6 of 10 rows
    assert sorted(reached.written().tolist()) == [1, 2, 3, 4, 4, 5, 6] and reached.written().numel() == 0
    reached._seen(torch.ones(10, 4))  # a dense gradient: any row may hold one
    assert reached.reached(None) is None and reached.written() is None
    reached.release()


def test_a_resumed_stage_finds_its_rows_in_the_optimiser_state():
    weight = torch.nn.Parameter(torch.zeros(10, 4))
    state = {"exp_avg": torch.zeros(10, 4), "exp_avg_sq": torch.zeros(10, 4)}
    state["exp_avg"][2, 1], state["exp_avg_sq"][7, 0] = 0.5, 1e-9
    reached = ReachedRows(weight)
    reached._seen(torch.sparse_coo_tensor(torch.tensor([[4]]), torch.ones(1, 4), (10, 4), check_invariants=True))
    assert reached.reached(state).tolist() == [2, 4, 7]
    reached.release()


class _StoppedAt(StageTrainer):
    stop_after = None

    def on_step(self, step, total_steps):
        if step == self.stop_after:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: checkpointed at the end of this step


def test_a_stage_stopped_and_resumed_with_the_row_update_ends_as_the_uninterrupted_one(pad_tokenizer, monkeypatch,
                                                                                      tmp_path):
    calls = _count_row_steps(monkeypatch)
    args = TrainingConfig(num_epochs=2, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0, save_steps=100,
                          sparse_embedding_update=True)

    def trainer(cls, folder, resume=False):
        model = _bert(vocab_size=5000)
        return cls(model, pad_tokenizer, args, make_accelerator(), ["accuracy"], seed=5,
                   head_parameters=head_parameter_names(model), checkpoint_dir=tmp_path / folder, resume=resume)

    reference = trainer(StageTrainer, "reference")
    reference_result = reference.train(token_dataset(48, max_len=20))
    stopped = trainer(_StoppedAt, "stopped")
    stopped.stop_after = 4
    with pytest.raises(KeyboardInterrupt, match="step 5"):
        stopped.train(token_dataset(48, max_len=20))
    # a stopped stage hands the model back without its buffer and hook (a notebook trains it again)
    weight = stopped.model.get_input_embeddings().weight
    assert weight.grad is None and not weight._backward_hooks and not stopped.model.get_input_embeddings().sparse
    resumed = trainer(StageTrainer, "stopped", resume=True)
    result = resumed.train(token_dataset(48, max_len=20))
    assert result.optimizer_steps == reference_result.optimizer_steps == 12
    assert len(calls) == 12 + 5 + 7  # every step of the three stages took the row step
    want = reference.model.state_dict()
    assert all(torch.equal(value, want[name]) for name, value in resumed.model.state_dict().items())
