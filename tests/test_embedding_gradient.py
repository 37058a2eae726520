"""`sparse_embedding_gradient`: the word embedding's gradient in one stage-long buffer, filled with
the batch's rows. The same training as the dense gradient (weights compared after whole stages,
with gradient accumulation and with gradients dropped by gradual unfreezing), one buffer reused at
every step, the model handed back as it came; not applied where it would change anything."""

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig

from conftest import token_dataset
from textransfer import TrainingConfig, make_accelerator
from textransfer.modeling.loading import head_parameter_names
from textransfer.training.embedding_gradient import EmbeddingGradient
from textransfer.training.trainer import StageTrainer


def _bert(seed=0):
    cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg)


def _train(sparse: bool, tokenizer, **kw):
    model = _bert()
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
    assert on.sparse_embedding_gradient is True
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
