"""Length-grouped batch sampling and dynamic padding."""

import random

import torch

from textransfer.data.batching import Collator, LengthGroupedBatchSampler, sort_by_length


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def test_every_index_exactly_once_per_epoch():
    lengths = _lengths(1003)
    s = LengthGroupedBatchSampler(lengths, batch_size=32, seed=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1003))
        assert len(batches) == len(s) == 32
        assert sorted(len(b) for b in batches) == [1003 % 32] + [32] * 31


def test_seeded_and_changes_with_epoch():
    lengths = _lengths()
    a = LengthGroupedBatchSampler(lengths, 16, seed=5)
    b = LengthGroupedBatchSampler(lengths, 16, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    c = LengthGroupedBatchSampler(lengths, 16, seed=6)
    assert list(a) != list(c)


def test_grouping_cuts_padding():
    lengths = _lengths(4000)

    def padded_tokens(sampler):
        return sum(max(lengths[i] for i in b) * len(b) for b in sampler)

    grouped = padded_tokens(LengthGroupedBatchSampler(lengths, 32, seed=0))
    random_batches = padded_tokens(LengthGroupedBatchSampler(lengths, 32, seed=0, group_by_length=False))
    real = sum(lengths)
    # random batches of 32 pad nearly everything to ~the max length; grouped ones barely pad
    assert random_batches > 1.6 * real
    assert grouped < 1.1 * real


def test_batch_order_is_shuffled_not_a_curriculum():
    lengths = _lengths(3200)
    batches = list(LengthGroupedBatchSampler(lengths, 32, seed=0))
    maxima = [max(lengths[i] for i in b) for b in batches]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)


def test_drop_last():
    s = LengthGroupedBatchSampler(_lengths(100), 32, seed=0, drop_last=True)
    batches = list(s)
    assert len(batches) == len(s) == 3 and all(len(b) == 32 for b in batches)


def test_collator_pads_to_longest_in_batch_and_drops_bookkeeping(pad_tokenizer):
    feats = [
        {"input_ids": [101, 7, 8, 102], "attention_mask": [1] * 4, "labels": 1, "length": 4, "row": 3},
        {"input_ids": [101, 9, 102], "attention_mask": [1] * 3, "labels": 0, "length": 3, "row": 9},
    ]
    batch = Collator(pad_tokenizer)(feats)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (2, 4)
    assert batch["input_ids"][1].tolist() == [101, 9, 102, pad_tokenizer.pad_token_id]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0]
    assert batch["labels"].tolist() == [1, 0]


def test_sort_by_length_is_stable_longest_first():
    from datasets import Dataset

    ds = Dataset.from_dict({"length": [3, 9, 3, 5], "x": ["a", "b", "c", "d"]})
    out = sort_by_length(ds)
    assert out["x"] == ["b", "d", "a", "c"]
    assert torch.equal(torch.tensor(out["length"]), torch.tensor([9, 5, 3, 3]))
