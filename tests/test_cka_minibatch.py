"""Minibatch layer×layer CKA (Nguyen et al. 2021): exactness at one batch, invariances, streaming."""

import numpy as np
import pytest

from psiloscope.cka import MinibatchCKA, cka_matrix, linear_cka

SEEDS = [0, 1, 2]


def layers(seed, n=400, widths=(6, 8, 5)):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 6))
    return [base @ rng.normal(size=(6, w)) + rng.normal(scale=0.5 + i, size=(n, w))
            for i, w in enumerate(widths)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_one_batch_equals_the_full_sample_estimator(seed, debiased):
    As = layers(seed)
    matrix = cka_matrix(As, As[::-1], batch_size=len(As[0]), debiased=debiased, seed=seed)
    expected = [[linear_cka(a, b, debiased=debiased) for b in As[::-1]] for a in As]
    np.testing.assert_allclose(matrix, expected, rtol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_ratio_of_sums_over_batches(seed):
    """Four batches of 100 rows: CKA is Σ HSIC_u / √(Σ HSIC_u · Σ HSIC_u), not the mean of per-batch CKA."""
    As = layers(seed)
    rows = np.array_split(np.random.default_rng(seed).permutation(400), 4)

    def hsic(X, Y):
        n = len(X)
        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
        K, L = Xc @ Xc.T, Yc @ Yc.T
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (np.vdot(K, L) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one) / (
            n * (n - 3))

    a, b = As[0], As[2]
    expected = sum(hsic(a[r], b[r]) for r in rows) / np.sqrt(
        sum(hsic(a[r], a[r]) for r in rows) * sum(hsic(b[r], b[r]) for r in rows))
    mean_of_ckas = np.mean([linear_cka(a[r], b[r], debiased=True) for r in rows])
    got = cka_matrix([a], [b], batch_size=100, seed=seed)[0, 0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got != pytest.approx(mean_of_ckas, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_diagonal_is_one_and_invariant_to_similarity_transforms(seed):
    As = layers(seed)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    moved = [As[0] * 2.0 + 5.0, As[1] @ Q, As[2] - 100.0]
    matrix = cka_matrix(As, moved, batch_size=64, seed=seed)
    np.testing.assert_allclose(np.diag(matrix), 1.0, rtol=1e-10)
    np.testing.assert_allclose(matrix, cka_matrix(As, As, batch_size=64, seed=seed), rtol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_short_chunks_are_carried_into_full_batches(seed):
    As = layers(seed, n=203)
    acc = MinibatchCKA(batch_size=50, seed=seed)
    for lo in range(0, 203, 30):
        acc.update([a[lo:lo + 30] for a in As], [As[0][lo:lo + 30]])
    carried = len(acc.carry_[0][0]) if acc.carry_ else 0
    assert acc.n_used_ + carried == 203
    streamed = acc.result()
    assert np.all(np.isfinite(streamed)) and streamed[0, 0] == pytest.approx(1.0)
    # close to the exact debiased estimator (different batching, same target)
    exact = [linear_cka(a, As[0], debiased=True) for a in As]
    np.testing.assert_allclose(streamed[:, 0], exact, atol=0.15)


def test_bad_inputs():
    good = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="same number of rows"):
        cka_matrix([good], [good[:10]])
    with pytest.raises(ValueError, match="batch_size"):
        cka_matrix([good], [good], batch_size=3)
    with pytest.raises(ValueError, match="at least one"):
        cka_matrix([], [good])
    with pytest.raises(ValueError, match="NaN"):
        cka_matrix([good], [np.where(good > 1, np.nan, good)])
    with pytest.raises(ValueError, match=r"As\[0\].*<= 0"):
        cka_matrix([np.ones((20, 2))], [good], batch_size=5)
