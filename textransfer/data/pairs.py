"""Training pairs and batches for the contrastive phase of a stage (``training/contrastive.py``),
made from the stage's labelled examples by their labels alone (indices into the split).

SetFit's pair generation (Tunstall et al., 2022; its ``num_iterations``): each iteration gives
every example one **positive** pair (another example of its class) and one **negative** pair (an
example of another class), so the pairs are exactly balanced: half labelled 1.0 (same class),
half 0.0. With k examples per class and C classes, ``2 * iterations * k * C`` pairs.

```python
pairs = contrastive_pairs([0, 0, 1, 1], iterations=2, seed=0)   # 16 pairs, 8 positive
```
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, NamedTuple, Sequence

from ..errors import ConfigError


class Pair(NamedTuple):
    """Two examples of the split, by index, and whether they share a class (1.0) or not (0.0)."""

    first: int
    second: int
    label: float


def by_class(labels: Sequence[int]) -> Dict[int, List[int]]:
    """``{class id: indices of its examples}``; at least two classes, or there is nothing to contrast."""
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        groups[int(y)].append(i)
    if len(groups) < 2:
        raise ConfigError(f"`contrastive`: the stage's training examples hold {len(groups)} class(es); contrastive "
                          "pairs need examples of at least two classes. Remove the `contrastive:` block.",
                          option="contrastive")
    return dict(groups)


def contrastive_pairs(labels: Sequence[int], iterations: int, seed: int) -> List[Pair]:
    """``2 * iterations * len(labels)`` pairs, one positive and one negative per example and
    iteration, in a seeded random order.

    The positive partner is another example of the same class (the example itself only when its
    class has one example); the negative partner is drawn uniformly from the other classes'
    examples.
    """
    groups = by_class(labels)
    rng = random.Random(seed)
    pairs: List[Pair] = []
    for _ in range(iterations):
        for i, y in enumerate(labels):
            same = groups[int(y)]
            others = [j for j in same if j != i] or [i]
            pairs.append(Pair(i, rng.choice(others), 1.0))
            different = rng.choice([c for c in groups if c != int(y)])
            pairs.append(Pair(i, rng.choice(groups[different]), 0.0))
    rng.shuffle(pairs)
    return pairs


def example_batches(labels: Sequence[int], batch_size: int, passes: int, seed: int) -> List[List[int]]:
    """Batches of example indices for a supervised contrastive loss: ``passes`` seeded shuffles of
    the split, each cut into batches of ``batch_size`` (a last batch of one example, which has
    nothing to contrast with, joins the batch before it)."""
    by_class(labels)  # at least two classes
    rng = random.Random(seed)
    batches: List[List[int]] = []
    for _ in range(passes):
        order = list(range(len(labels)))
        rng.shuffle(order)
        chunk = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if len(chunk) > 1 and len(chunk[-1]) == 1:
            chunk[-2].extend(chunk.pop())
        batches.extend(chunk)
    return batches


def pair_batches(pairs: Sequence[Pair], batch_size: int) -> List[List[Pair]]:
    """``pairs`` cut, in order, into batches of ``batch_size``."""
    return [list(pairs[i:i + batch_size]) for i in range(0, len(pairs), batch_size)]
