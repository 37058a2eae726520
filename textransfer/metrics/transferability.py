"""Transferability scores: will a model's features, or a source task, help a target task?

Cheap estimates computed from features (or a source head's probabilities) of the target's
training text, with no fine-tuning. All are pure numpy (no torch, no model code):

| score | input | higher means | reference |
|---|---|---|---|
| :func:`logme` | features, target labels | features a linear model fits better | You et al., ICML 2021 |
| :func:`h_score` | features, target labels | classes further apart relative to the feature spread | Bao et al., ICIP 2019 |
| :func:`leep` | source-head probabilities, target labels | the source labels predict the target's | Nguyen et al., ICML 2020 |
| :func:`centroid_cosine` | two sets of embeddings | the two texts' mean embeddings point the same way | Vu et al., EMNLP 2020 |
| :func:`proxy_a_distance` | two sets of embeddings | *lower* means domains harder to tell apart (0 to 2) | Ben-David et al., 2007 |

:func:`kendall_tau` compares a score's ranking with measured gains (``benchmarks/transferability.py``).

```python
import numpy as np
from textransfer.metrics.transferability import logme, h_score
f = np.random.default_rng(0).normal(size=(200, 16)); y = (f[:, 0] > 0).astype(int)
print(logme(f, y), h_score(f, y))
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

__all__ = ["SCORES", "LogMEFit", "logme", "logme_fit", "h_score", "leep", "centroid_cosine", "proxy_a_distance",
           "fit_logistic", "kendall_tau"]

# score name -> (short label, higher is better): how reports print and order them
SCORES = {"logme": ("LogME", True), "h_score": ("H-score", True), "leep": ("LEEP", True),
          "centroid_cosine": ("cosine", True), "proxy_a_distance": ("PAD", False)}

# LogME's fixed point (thuml/LogME, LogME.py `_fit_fixed_point`): at most 11 updates ("should
# converge after at most 10 steps, typically two or three"), stopped when alpha/beta moves by
# under 0.1%; the 1e-5 keeps the updates finite when a class is fitted exactly.
LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3
LOGME_EPS = 1e-5
# singular values below this count as zero (the reference's truncated SVD uses the same cut)
RANK_CUT = 1e-10


# ---------------------------------------------------------------------------- LogME
@dataclass
class LogMEFit:
    """What :func:`logme_fit` found, per target class (one-vs-rest regression on the features).

    Args:
        score (`float`): the LogME score, the mean over classes of ``evidence``.
        evidence (`list[float]`): each class's maximised log evidence, divided by ``N``.
        alpha (`list[float]`): each class's prior precision of the weights.
        beta (`list[float]`): each class's noise precision.
        classes (`list[int]`): the label values, in the order of the lists above.
    """

    score: float
    evidence: List[float]
    alpha: List[float]
    beta: List[float]
    classes: List[int]


def _svd(f: np.ndarray):
    """``u, s, vh`` of ``f`` (N x D) cut to its rank. For N > D the SVD of ``f`` itself would be
    N x N work; as the reference does, take the SVD of the D x D Gram matrix and recover ``u``."""
    n, d = f.shape
    if n > d:
        _, s2, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(np.clip(s2, 0.0, None))
        k = int((s > RANK_CUT).sum())
        s, vh = s[:k], vh[:k]
        return (f @ vh.T) / s, s, vh
    u, s, vh = np.linalg.svd(f, full_matrices=False)
    k = int((s > RANK_CUT).sum())
    return u[:, :k], s[:k], vh[:k]


def _class_evidence(x2: np.ndarray, res_x2: float, sigma: np.ndarray, n: int, d: int):
    """The fixed point of one class: ``x2`` are the squared projections of its 0/1 target on
    ``u``, ``res_x2`` the part of ``|y|^2`` outside ``u``'s span, ``sigma`` the squared singular
    values. Returns ``(evidence / N, alpha, beta)``."""
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_ITER):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()  # effective number of well-determined weights
        m2 = (sigma * x2 / (t + sigma) ** 2).sum()  # |m|^2 of the posterior mean
        res2 = (x2 / (1.0 + sigma / t) ** 2).sum() + res_x2  # |y - F m|^2
        alpha = gamma / (m2 + LOGME_EPS)
        beta = (n - gamma) / (res2 + LOGME_EPS)
        if abs(alpha / beta - t) / t <= LOGME_TOL:
            break
    # The evidence at the returned (alpha, beta): the reference evaluates it with m from the
    # previous iterate (a difference within its 0.1% stopping rule); here m is the one of
    # (alpha, beta), so the score is exactly log p(y | F, alpha, beta) / N.
    t = alpha / beta
    m2 = (sigma * x2 / (t + sigma) ** 2).sum()
    res2 = (x2 / (1.0 + sigma / t) ** 2).sum() + res_x2
    # log|A| of A = alpha I + beta F^T F (D x D): its D - k zero directions contribute log(alpha)
    # each. The reference's truncated path leaves them out; its ICML path (a full D x D SVD)
    # keeps them, and so does the exact evidence. They differ only when rank(F) < D.
    logdet = np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha)
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * logdet - beta / 2.0 * res2
                - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
    return float(evidence / n), float(alpha), float(beta)


def logme_fit(features: np.ndarray, labels: np.ndarray) -> LogMEFit:
    """LogME with its per-class details (see :func:`logme`)."""
    f, y = _check_labelled(features, labels)
    n, d = f.shape
    u, s, _ = _svd(f)
    sigma = s ** 2
    fit = LogMEFit(score=0.0, evidence=[], alpha=[], beta=[], classes=[])
    # The classes present; the reference loops over 0..max(y), and a class with no example
    # would add the evidence of an all-zero target (a perfect, meaningless fit).
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        x = u.T @ target
        x2 = x ** 2
        evidence, alpha, beta = _class_evidence(x2, float(target @ target - x2.sum()), sigma, n, d)
        fit.evidence.append(evidence)
        fit.alpha.append(alpha)
        fit.beta.append(beta)
        fit.classes.append(int(c))
    fit.score = float(np.mean(fit.evidence))
    return fit


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021): the maximised log marginal likelihood (evidence), per example, of a
    Bayesian linear regression from the features to each class's 0/1 indicator, averaged over
    classes.

    For one class with targets ``y``, ``p(y | F, alpha, beta) = N(y; 0, I/beta + F F^T/alpha)``
    (weights ``w ~ N(0, I/alpha)``, noise precision ``beta``); ``alpha`` and ``beta`` are set by
    MacKay's fixed-point updates (the algorithm of ``thuml/LogME``, ``LogME.py``). Higher is
    better. Compare models on the same target rows: the value depends on the rows and labels
    (more classes or fewer rows shift it), so it ranks candidates rather than predicting an
    accuracy.

    Args:
        features (`np.ndarray` of shape `(N, D)`): the model's features of the target's texts.
        labels (`np.ndarray` of shape `(N,)`): integer target labels.

    Returns:
        `float`: the LogME score.

    Example:

    ```python
    >>> f = np.random.default_rng(0).normal(size=(100, 8)); y = (f[:, 0] > 0).astype(int)
    >>> logme(f, y) > logme(np.random.default_rng(1).normal(size=(100, 8)), y)
    True
    ```
    """
    return logme_fit(features, labels).score


# ---------------------------------------------------------------------------- H-score
def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al., "An Information-theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019), as in ``tllib/ranking/hscore.py``:
    ``tr(pinv(cov(f)) cov(E[f | y]))``, the between-class spread of the features measured in
    the metric of their overall spread. Higher is better; at most ``min(D, C - 1)``.

    With many feature dimensions and few rows ``cov(f)`` is poorly estimated and the score
    grows noisy; compare models on the same (and enough) rows.

    Args:
        features (`np.ndarray` of shape `(N, D)`): the model's features of the target's texts.
        labels (`np.ndarray` of shape `(N,)`): integer target labels.

    Returns:
        `float`: the H-score.
    """
    f, y = _check_labelled(features, labels)
    class_means = np.zeros_like(f)  # each row replaced by its class's mean feature: E[f | y]
    for c in np.unique(y):
        class_means[y == c] = f[y == c].mean(axis=0)
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    cov_g = np.atleast_2d(np.cov(class_means, rowvar=False))
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


# ---------------------------------------------------------------------------- LEEP
def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020), as in ``tllib/ranking/leep.py``.

    ``theta(x)`` is the source head's distribution over its own labels ``z``. The empirical joint
    ``P(y, z) = 1/N sum_i theta(x_i)_z [y_i = y]`` gives ``P(y | z)``, and LEEP is the mean log
    likelihood of the target labels under the "expected empirical predictor"
    ``sum_z P(y | z) theta(x)_z``. At most 0; higher is better; ``-H(y)`` when the head says
    nothing about the target.

    Args:
        source_probs (`np.ndarray` of shape `(N, Z)`): the source head's probabilities (softmax).
        labels (`np.ndarray` of shape `(N,)`): integer target labels.

    Returns:
        `float`: the LEEP score.
    """
    theta, y = _check_labelled(source_probs, labels)
    if np.any(theta < 0) or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("leep: source_probs must be probabilities (non-negative rows summing to 1, a softmax).")
    classes, y_index = np.unique(y, return_inverse=True)
    joint = np.zeros((len(classes), theta.shape[1]))
    np.add.at(joint, y_index, theta / len(y))
    marginal = joint.sum(axis=0, keepdims=True)
    # a source label no row puts mass on has no P(y | z); it contributes nothing either way
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    predicted = theta @ conditional.T  # (N, C_t): the expected empirical prediction
    return float(np.mean(np.log(predicted[np.arange(len(y)), y_index])))


# ---------------------------------------------------------------------------- task similarity
def centroid_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the mean embeddings of two sets of texts (Vu et al., "Exploring and
    Predicting Transferability across NLP Tasks", EMNLP 2020, TextEmb): 1 when the centroids
    point the same way. Higher means more similar text.

    Args:
        a (`np.ndarray` of shape `(N, D)`), b (`np.ndarray` of shape `(M, D)`): embeddings.

    Returns:
        `float`: in [-1, 1].
    """
    a, b = _check_pair(a, b)
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    denominator = np.linalg.norm(ca) * np.linalg.norm(cb)
    if denominator == 0:
        raise ValueError("centroid_cosine: a mean embedding is zero; its direction is undefined.")
    return float(ca @ cb / denominator)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 50, tol: float = 1e-8):
    """Binary L2-regularised logistic regression by Newton's method: ``(w, b)`` minimising
    ``sum_i log(1 + exp(-s_i (x_i w + b))) + l2/2 |w|^2`` (``s_i = 2 y_i - 1``; ``b`` not penalised).

    Why here and not scikit-learn: scikit-learn is not a dependency of the package (only of its
    tests), one logistic fit does not justify one, and this is deterministic and ~20 lines. The
    objective is strictly convex, so Newton steps with a backtracking line search converge in a
    few iterations; each costs a (D+1) x (D+1) solve (D = 384 for MiniLM: milliseconds).
    """
    x1 = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(x1.shape[1], float(l2))
    penalty[-1] = 0.0  # the intercept is not shrunk

    def loss(w):
        z = x1 @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * (penalty * w) @ w)

    w = np.zeros(x1.shape[1])
    current = loss(w)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x1 @ w)))
        grad = x1.T @ (p - y) + penalty * w
        hessian = (x1 * (p * (1 - p))[:, None]).T @ x1 + np.diag(penalty) + 1e-10 * np.eye(len(w))
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while scale > 1e-8 and (new := loss(w - scale * step)) > current:  # halve until it goes down
            scale /= 2
        if scale <= 1e-8:
            break
        w, previous, current = w - scale * step, current, new
        if previous - current <= tol * max(1.0, abs(current)):
            break
    return w[:-1], float(w[-1])


def proxy_a_distance(a: np.ndarray, b: np.ndarray, seed: int = 0, l2: float = 1.0) -> float:
    """Proxy A-distance (Ben-David et al., "Analysis of Representations for Domain Adaptation",
    NIPS 2007): ``2 (1 - 2 err)``, where ``err`` is the test error of a linear classifier told
    to tell the two domains apart.

    Both sets are cut to the same size (seeded) so that chance is 50%; each is halved, the
    classifier (:func:`fit_logistic` on features standardised with the training half's mean and
    spread) trains on the first halves and is tested on the others. 0 means the domains cannot
    be told apart; 2 means perfectly separable. An error above 50% (worse than chance on the
    held-out half, i.e. noise) is read as 50%, so the result lies in [0, 2].

    Args:
        a (`np.ndarray` of shape `(N, D)`), b (`np.ndarray` of shape `(M, D)`): the two domains'
            embeddings; each needs at least 2 rows.
        seed (`int`, *optional*, defaults to 0): seed of the subsample and the split.
        l2 (`float`, *optional*, defaults to 1.0): the classifier's L2 penalty.

    Returns:
        `float`: the proxy A-distance, in [0, 2].
    """
    a, b = _check_pair(a, b)
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError("proxy_a_distance: each domain needs at least 2 rows (one to train on, one to test).")
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    half = n // 2
    x_train = np.vstack([a[:half], b[:half]])
    x_test = np.vstack([a[half:], b[half:]])
    y_train = np.r_[np.zeros(half), np.ones(half)]
    y_test = np.r_[np.zeros(n - half), np.ones(n - half)]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    w, bias = fit_logistic((x_train - mean) / std, y_train, l2=l2)
    predicted = ((x_test - mean) / std) @ w + bias > 0
    err = float(np.mean(predicted != y_test.astype(bool)))
    return 2.0 * (1.0 - 2.0 * min(err, 0.5))


# ---------------------------------------------------------------------------- rank agreement
def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two sequences (ties counted as in ``scipy.stats.kendalltau``):
    1 when they order every pair alike, -1 when they order every pair oppositely.

    Args:
        x, y (sequences of numbers of the same length, at least 2).

    Returns:
        `float`, or `nan` when either sequence is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"kendall_tau: two 1-d sequences of the same length >= 2 are needed, got {x.shape} and "
                         f"{y.shape}.")
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = _order(x, i, j), _order(y, i, j)
    concordance = float(np.sum(dx * dy))
    pairs_x, pairs_y = float(np.sum(dx != 0)), float(np.sum(dy != 0))  # pairs not tied in x / in y
    if pairs_x == 0 or pairs_y == 0:
        return float("nan")
    return concordance / np.sqrt(pairs_x * pairs_y)


def _order(v: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The sign of ``v[i] - v[j]``, with values equal to 1e-9 relative counted as ties: a saturated
    score (H-score at classes - 1 with fewer rows than dimensions) differs between candidates only
    in its last bits, and rounding noise must not order them."""
    return np.where(np.isclose(v[i], v[j], rtol=1e-9, atol=0.0), 0.0, np.sign(v[i] - v[j]))


# ---------------------------------------------------------------------------- checks
def _check_labelled(values: np.ndarray, labels: np.ndarray):
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected a (N, D) matrix and N labels, got shapes {x.shape} and {y.shape}.")
    if len(y) < 2 or not np.all(np.isfinite(x)):
        raise ValueError("expected at least 2 rows of finite values.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers (class ids), got dtype {y.dtype}.")
    return x, y


def _check_pair(a: np.ndarray, b: np.ndarray):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"expected two non-empty (N, D) matrices of the same width, got {a.shape} and {b.shape}.")
    return a, b
