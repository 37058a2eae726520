"""Each transferability score against a direct numpy implementation of its formula, on small fixed
matrices, and its behaviour: informative features score higher than random ones."""

import numpy as np
import pytest
from scipy.stats import kendalltau

from textransfer.metrics.transferability import (centroid_cosine, fit_logistic, h_score, kendall_tau, leep, logme,
                                                 logme_fit, proxy_a_distance)


def fixed_data(n=60, d=5, classes=3, seed=0, signal=1.0):
    """Features whose first columns carry the class (scaled by ``signal``), plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    f = rng.normal(size=(n, d))
    f[:, :classes] += signal * np.eye(classes)[y] * 2.0
    return f, y


# ---------------------------------------------------------------------------- LogME
def gaussian_log_evidence(f, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T/alpha): the marginal likelihood of Bayesian linear regression
    written straight from its definition (w ~ N(0, I/alpha), y = F w + N(0, I/beta))."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))


def posterior(f, y, alpha, beta):
    """m = beta A^-1 F^T y with A = alpha I + beta F^T F, and gamma = sum beta s / (alpha + beta s)."""
    a = alpha * np.eye(f.shape[1]) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    s = np.linalg.eigvalsh(f.T @ f)
    return m, float(np.sum(beta * s / (alpha + beta * s)))


def icml_logme(f, y_all):
    """The reference's ICML-2021 algorithm (thuml/LogME ``each_evidence``), written plainly:
    the full D x D SVD of F^T F, MacKay's updates until lambda moves by under 1%."""
    n, d = f.shape
    v, s, _ = np.linalg.svd(f.T @ f)
    scores = []
    for c in np.unique(y_all):
        y = (y_all == c).astype(float)
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        proj = v.T @ (f.T @ y)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (proj * beta / (alpha + beta * s))
            alpha_de = m @ m
            alpha = gamma / (alpha_de + 1e-5)
            beta_de = ((y - f @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + 1e-5)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2 * (beta_de + 1e-5) - alpha / 2 * (alpha_de + 1e-5) - n / 2 * np.log(2 * np.pi))
        scores.append(evidence / n)
    return float(np.mean(scores))


@pytest.mark.parametrize("n,d", [(60, 5), (8, 12)])  # N > D (the Gram-matrix SVD) and N < D (rank-deficient)
def test_logme_is_the_gaussian_evidence_at_its_alpha_and_beta(n, d):
    f, y = fixed_data(n=n, d=d)
    fit = logme_fit(f, y)
    assert fit.classes == [0, 1, 2]
    for c, evidence, alpha, beta in zip(fit.classes, fit.evidence, fit.alpha, fit.beta):
        target = (y == c).astype(float)
        assert evidence == pytest.approx(gaussian_log_evidence(f, target, alpha, beta) / n, rel=1e-9, abs=1e-9)
    assert fit.score == pytest.approx(np.mean(fit.evidence))
    assert logme(f, y) == fit.score


def test_logme_alpha_beta_are_mackays_fixed_point_and_maximise_the_evidence():
    f, y = fixed_data()
    fit = logme_fit(f, y)
    for c, evidence, alpha, beta in zip(fit.classes, fit.evidence, fit.alpha, fit.beta):
        target = (y == c).astype(float)
        m, gamma = posterior(f, target, alpha, beta)
        assert alpha == pytest.approx(gamma / (m @ m), rel=1e-2)
        assert beta == pytest.approx((len(y) - gamma) / np.sum((target - f @ m) ** 2), rel=1e-2)
        at_optimum = gaussian_log_evidence(f, target, alpha, beta)
        for da, db in ((1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5)):
            assert gaussian_log_evidence(f, target, alpha * da, beta * db) < at_optimum


def test_logme_agrees_with_the_reference_icml_algorithm():
    f, y = fixed_data(n=80, d=6, seed=3)
    assert logme(f, y) == pytest.approx(icml_logme(f, y), rel=1e-3)


def test_logme_prefers_features_that_separate_the_classes():
    f, y = fixed_data(n=200, d=8, signal=1.0)
    noise = np.random.default_rng(7).normal(size=f.shape)
    assert logme(f, y) > logme(noise, y) + 0.1
    weak, _ = fixed_data(n=200, d=8, signal=0.3)
    assert logme(f, y) > logme(weak, y) > logme(noise, y)


def test_logme_ignores_a_class_with_no_rows():
    f, y = fixed_data(classes=2)
    relabelled = np.where(y == 1, 3, y)  # classes 0 and 3: no rows of 1 and 2
    assert logme(f, relabelled) == pytest.approx(logme(f, y))


# ---------------------------------------------------------------------------- H-score
def direct_h_score(f, y):
    """tr(cov(f)^-1 S_B): S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1), the covariance of E[f | y]."""
    n = len(y)
    centred = f - f.mean(axis=0)
    cov_f = centred.T @ centred / (n - 1)
    between = np.zeros_like(cov_f)
    for c in np.unique(y):
        diff = f[y == c].mean(axis=0) - f.mean(axis=0)
        between += (y == c).sum() * np.outer(diff, diff) / (n - 1)
    return float(np.trace(np.linalg.inv(cov_f) @ between))


def test_h_score_is_the_trace_formula():
    f, y = fixed_data()
    assert h_score(f, y) == pytest.approx(direct_h_score(f, y), rel=1e-9)


def test_h_score_prefers_features_that_separate_the_classes():
    f, y = fixed_data(n=300, d=8)
    noise = np.random.default_rng(1).normal(size=f.shape)
    assert h_score(f, y) > 5 * h_score(noise, y)
    assert h_score(f, y) <= min(f.shape[1], 2) + 1e-9  # at most min(D, C - 1)


# ---------------------------------------------------------------------------- LEEP
def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def direct_leep(theta, y):
    """mean_i log sum_z P(y_i | z) theta_z(x_i), with P(y, z) = 1/N sum_i theta_z(x_i) [y_i = y], by loops."""
    n, z_count = theta.shape
    classes = sorted(set(y.tolist()))
    joint = {(c, z): sum(theta[i, z] for i in range(n) if y[i] == c) / n for c in classes for z in range(z_count)}
    p_z = {z: sum(joint[(c, z)] for c in classes) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += np.log(sum(joint[(y[i], z)] / p_z[z] * theta[i, z] for z in range(z_count)))
    return total / n


def test_leep_is_the_expected_empirical_prediction():
    rng = np.random.default_rng(0)
    theta = softmax(rng.normal(size=(40, 4)))
    y = rng.integers(0, 3, size=40)
    assert leep(theta, y) == pytest.approx(direct_leep(theta, y), rel=1e-9)


def test_leep_of_an_uninformative_head_is_minus_the_label_entropy():
    y = np.array([0, 0, 0, 1, 1, 2])
    theta = np.full((6, 5), 0.2)
    p = np.array([3, 2, 1]) / 6
    assert leep(theta, y) == pytest.approx(float(np.sum(p * np.log(p))))


def test_leep_prefers_a_head_whose_labels_predict_the_target():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=200)
    informative = softmax(4.0 * np.eye(3)[y] + rng.normal(size=(200, 3)))  # source label z = target label
    random = softmax(rng.normal(size=(200, 3)))
    assert leep(informative, y) > leep(random, y) + 0.2
    assert leep(informative, y) <= 0
    with pytest.raises(ValueError, match="probabilities"):
        leep(rng.normal(size=(200, 3)), y)


# ---------------------------------------------------------------------------- similarity
def test_centroid_cosine_is_the_cosine_of_the_means():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 4)) + 1, rng.normal(size=(7, 4))
    ca, cb = a.sum(axis=0) / 10, b.sum(axis=0) / 7
    assert centroid_cosine(a, b) == pytest.approx(ca @ cb / np.sqrt((ca @ ca) * (cb @ cb)))
    assert centroid_cosine(a, a) == pytest.approx(1.0)
    assert centroid_cosine(a, -a) == pytest.approx(-1.0)


def test_fit_logistic_reaches_the_penalised_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=1.0)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert np.allclose(x.T @ (p - y) + 1.0 * w, 0, atol=1e-6)  # the gradient of the objective is zero
    assert abs(np.sum(p - y)) < 1e-6  # and so is the intercept's
    assert w[0] > 1.0 and abs(w[0]) > 3 * max(abs(w[1]), abs(w[2]))


def test_proxy_a_distance_is_near_0_for_one_domain_and_near_2_for_separated_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(400, 8))
    assert proxy_a_distance(same[:200], same[200:]) < 0.4
    shifted = rng.normal(size=(200, 8)) + np.r_[4.0, np.zeros(7)]
    assert proxy_a_distance(same[:200], shifted) > 1.9
    assert proxy_a_distance(same[:200], same[:200] + 0.0) <= 0.4  # identical sets cannot be told apart


def test_proxy_a_distance_is_2_1_minus_2_err_of_the_held_out_half():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(70, 3)) + np.r_[1.0, 0, 0]
    # the same steps by hand: a seeded cut to 50 rows each, halves, standardise, fit, test
    order = np.random.default_rng(1)
    a2, b2 = a[order.permutation(50)[:50]], b[order.permutation(70)[:50]]
    train, test = np.vstack([a2[:25], b2[:25]]), np.vstack([a2[25:], b2[25:]])
    labels = np.r_[np.zeros(25), np.ones(25)]
    mu, sd = train.mean(axis=0), train.std(axis=0)
    w, bias = fit_logistic((train - mu) / sd, labels)
    err = np.mean((((test - mu) / sd) @ w + bias > 0) != labels.astype(bool))
    assert proxy_a_distance(a, b, seed=1) == pytest.approx(2 * (1 - 2 * min(err, 0.5)))
    assert 0.0 < proxy_a_distance(a, b, seed=1) < 2.0


# ---------------------------------------------------------------------------- Kendall tau
def test_kendall_tau_matches_scipy_with_and_without_ties():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.integers(0, 4, size=9), rng.normal(size=9)
        assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_bad_shapes_are_refused_with_what_was_given():
    with pytest.raises(ValueError, match=r"\(N, D\) matrix and N labels"):
        logme(np.zeros((5, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="integers"):
        h_score(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="same width"):
        centroid_cosine(np.zeros((5, 2)), np.zeros((5, 3)))


def test_kendall_tau_counts_rounding_noise_as_ties():
    # a saturated score (H-score at classes - 1) differs between candidates in its last bits only
    saturated = [1.0, 1.0 + 4e-16, 1.0 - 2e-16, 1.0 + 2e-16]
    assert np.isnan(kendall_tau(saturated, [0.1, 0.2, 0.3, 0.4]))
    # a real difference, however small against the values' scale of 1, still orders them
    assert kendall_tau([1.0, 1.0 + 1e-6, 1.0 + 2e-6], [1, 2, 3]) == pytest.approx(1.0)
