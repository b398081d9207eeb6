"""Property tests for linear, RBF and streaming CKA against independent formulas and invariances."""

import numpy as np
import pytest

from psiloscope.cka import CKAAccumulator, centre_gram, cka_from_grams, linear_cka, rbf_cka

SEEDS = [0, 1, 2, 3]


def related_pair(seed, n=300, d1=12, d2=9, noise=1.0):
    """X with an anisotropic spectrum and Y a noisy linear read-out of it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1)) * np.linspace(3.0, 0.5, d1)
    Y = X @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))
    return X, Y


def textbook_cka(X, Y, debiased):
    """Kornblith et al.'s Gram-space recipe, written out independently: n×n Grams, explicit centring."""
    n = len(X)
    K, L = X @ X.T, Y @ Y.T
    if not debiased:
        H = np.eye(n) - 1.0 / n
        hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    else:
        def hsic(A, B):  # Song et al. 2012, eq. (5)
            A, B = A - np.diag(np.diag(A)), B - np.diag(np.diag(B))
            one = np.ones(n)
            return (np.trace(A @ B) + one @ A @ one * (one @ B @ one) / ((n - 1) * (n - 2))
                    - 2.0 / (n - 2) * one @ A @ B @ one) / (n * (n - 3))
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_matches_textbook_gram_formula(seed, debiased):
    X, Y = related_pair(seed, n=120)
    X[:, 0] += 50.0  # uncentred input: the textbook recipe works on raw Grams
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(textbook_cka(X, Y, debiased), rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_gram_space_and_feature_space_agree(seed, debiased):
    X, Y = related_pair(seed, n=40, d1=30, d2=25)  # n < d: linear_cka takes the Gram-space route
    feature = CKAAccumulator(debiased).update(X, Y).result()  # always feature space
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(feature, rel=1e-10)
    assert cka_from_grams(X @ X.T, Y @ Y.T, debiased=debiased) == pytest.approx(feature, rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_maps_scaling_and_translation(seed, debiased):
    X, Y = related_pair(seed)
    rng = np.random.default_rng(seed + 100)
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    reference = linear_cka(X, Y, debiased=debiased)
    assert linear_cka(X @ Q, Y, debiased=debiased) == pytest.approx(reference, rel=1e-9)
    assert linear_cka(3.7 * X + rng.normal(size=X.shape[1]), Y, debiased=debiased) == pytest.approx(
        reference, rel=1e-9)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(linear_cka(Y, X, debiased=debiased))


@pytest.mark.parametrize("seed", SEEDS)
def test_changes_under_a_general_linear_map(seed):
    X, Y = related_pair(seed)
    A = np.random.default_rng(seed + 7).normal(size=(X.shape[1], X.shape[1]))
    assert abs(linear_cka(X @ A, Y) - linear_cka(X, Y)) > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_self_similarity_is_one(seed):
    X, _ = related_pair(seed)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, X, debiased=True) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_independent_gaussians_null_levels(seed):
    n, d1, d2 = 500, 20, 30
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d1)), rng.normal(size=(n, d2))
    # E‖XᵀY‖² ≈ n·d1·d2 and E‖XᵀX‖² ≈ n·d1·(n + d1) give the biased null level
    expected = np.sqrt(d1 * d2 / ((n + d1) * (n + d2)))
    assert linear_cka(X, Y) == pytest.approx(expected, rel=0.15)
    assert abs(linear_cka(X, Y, debiased=True)) < 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_shuffled_rows_fall_to_the_null_level(seed):
    X, Y = related_pair(seed, n=2000, noise=0.3)
    assert linear_cka(X, Y, debiased=True) > 0.5
    shuffled = Y[np.random.default_rng(seed).permutation(len(Y))]
    assert abs(linear_cka(X, shuffled, debiased=True)) < 0.01


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_one_shot_and_shards_merge(seed, debiased):
    X, Y = related_pair(seed, n=403)
    X[:, 2] += 1000.0
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(5, 398), size=6, replace=False))
    shards = [CKAAccumulator(debiased) for _ in range(2)]
    whole = CKAAccumulator(debiased)
    for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, 403], strict=True)):
        whole.update(X[lo:hi], Y[lo:hi])
        shards[i % 2].update(X[lo:hi] * 1.0, Y[lo:hi])  # the shards start from different pilot centres
    expected = linear_cka(X, Y, debiased=debiased)
    assert whole.result() == pytest.approx(expected, rel=1e-10)
    assert shards[0].merge(shards[1]).result() == pytest.approx(expected, rel=1e-10)
    assert CKAAccumulator(debiased).merge(whole).result() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_rbf_tends_to_linear_as_bandwidth_grows(seed):
    X, Y = related_pair(seed, n=150)
    linear = linear_cka(X, Y)
    gaps = [abs(rbf_cka(X, Y, threshold=t) - linear) for t in (0.5, 5.0, 500.0)]
    assert gaps[2] < 1e-4
    assert gaps[2] < gaps[1] < gaps[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_rbf_invariances(seed):
    X, Y = related_pair(seed, n=150)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(X.shape[1], X.shape[1])))
    expected = rbf_cka(X, Y, debiased=True)
    assert rbf_cka(2.5 * X @ Q + 4.0, Y, debiased=True) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_inputs_with_offset_accumulate_in_float64(seed, dtype):
    X, Y = related_pair(seed, n=4000, d1=16, d2=16)
    X[:, 0] += 1000.0
    Xl, Yl = X.astype(dtype), Y.astype(dtype)
    exact = textbook_cka_feature_space(Xl.astype(np.float64), Yl.astype(np.float64))
    assert linear_cka(Xl, Yl) == pytest.approx(exact, rel=1e-9)
    streamed = CKAAccumulator()
    for lo in range(0, 4000, 512):
        streamed.update(Xl[lo:lo + 512], Yl[lo:lo + 512])
    assert streamed.result() == pytest.approx(exact, rel=1e-9)


def textbook_cka_feature_space(X, Y):
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    return np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))


@pytest.mark.parametrize("seed", SEEDS)
def test_debiased_cka_can_be_negative_and_stays_finite(seed):
    rng = np.random.default_rng(seed)
    pairs = [(rng.normal(size=(30, 3)), rng.normal(size=(30, 3))) for _ in range(20)]
    values = [linear_cka(X, Y, debiased=True) for X, Y in pairs]
    assert np.all(np.isfinite(values))
    assert min(values) < 0 < max(values)


def test_unbiased_centring_has_zero_row_sums_and_diagonal():
    K = np.random.default_rng(0).normal(size=(9, 9))
    Ku = centre_gram(K + K.T, unbiased=True)
    np.testing.assert_allclose(Ku.sum(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(Ku), 0.0)


BAD_INPUTS = [
    (np.zeros((10, 3)) + np.arange(3), np.ones((10, 2)).cumsum(0), "constant"),
    (np.ones((10, 3)).cumsum(0), np.ones((9, 3)).cumsum(0), "same number of rows"),
    (np.arange(10.0), np.arange(10.0), "2-D"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
    (np.array([[1.0, np.nan]] * 5), np.ones((5, 2)).cumsum(0), "NaN or Inf"),
    (np.array([[1.0, np.inf]] * 5), np.ones((5, 2)).cumsum(0), "NaN or Inf"),
]


@pytest.mark.parametrize("X, Y, message", BAD_INPUTS)
@pytest.mark.parametrize("measure", [linear_cka, rbf_cka])
def test_bad_input_raises_actionable_value_error(X, Y, message, measure):
    with pytest.raises(ValueError, match=message):
        measure(X, Y)


def test_debiased_needs_four_rows():
    X = np.array([[0.0], [1.0], [3.0]])
    with pytest.raises(ValueError, match="at least 4 rows"):
        linear_cka(X, X, debiased=True)
    with pytest.raises(ValueError, match="at least 4 rows"):
        CKAAccumulator(debiased=True).update(X, X).result()


def test_accumulator_refuses_constant_stream_and_width_change():
    acc = CKAAccumulator().update(np.full((6, 2), 1000.1, dtype=np.float32), np.ones((6, 2)).cumsum(0))
    with pytest.raises(ValueError, match="constant"):
        acc.result()
    with pytest.raises(ValueError, match="widths"):
        acc.update(np.ones((3, 3)), np.ones((3, 2)))
