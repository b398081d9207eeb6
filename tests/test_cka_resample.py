"""Resampling whole sequences through per-unit moments: replicates are exact, intervals cover."""

import numpy as np
import pytest

from psiloscope.cka import cka_from_sums, hsic_from_sums, linear_cka
from psiloscope.resample import (
    PairMoments,
    bootstrap_weights,
    percentile_interval,
    unit_of_sequence,
)

SEEDS = [0, 1, 2]


def unit_moments(X, Y, units, centre_shift=0.0):
    B = units.max() + 1
    moments = PairMoments(B, X.mean(0) + centre_shift, Y.mean(0) - centre_shift)
    for u in range(B):
        moments.add_rows(u, X[units == u], Y[units == u])
    return moments


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("debiased", [False, True])
def test_bootstrap_replicates_equal_cka_of_the_resampled_rows(seed, debiased):
    rng = np.random.default_rng(seed)
    units = np.repeat(np.arange(7), rng.integers(5, 15, size=7))
    X = rng.normal(size=(len(units), 5)) + 100.0
    Y = X[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(len(units), 4))
    moments = unit_moments(X, Y, units, centre_shift=0.3)
    weights = bootstrap_weights(7, 6, rng)
    hxy, hxx, hyy = hsic_from_sums(moments.weighted_sums(weights), debiased)
    for w, value in zip(weights, hxy / np.sqrt(hxx * hyy), strict=True):
        rows = np.concatenate([np.flatnonzero(units == u) for u in range(7) for _ in range(int(w[u]))])
        assert value == pytest.approx(linear_cka(X[rows], Y[rows], debiased=debiased), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_moments_about_any_centre_give_the_same_cka_and_recentre_exactly(seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(60, 4)), rng.normal(size=(60, 3))
    units = np.arange(60) // 20
    near, far = unit_moments(X, Y, units), unit_moments(X, Y, units, centre_shift=25.0)
    ones = np.ones((1, 3))
    for debiased in (False, True):
        # 25 standard deviations off-centre, fourth moments lose ~25⁴ in relative precision: why the
        # accumulators centre near the data mean
        assert cka_from_sums(far.weighted_sums(ones), debiased=debiased) == pytest.approx(
            cka_from_sums(near.weighted_sums(ones), debiased=debiased), rel=1e-6)
    moved = far.recentred(near.cx, near.cy)
    for name in ("n", "s", "t", "xx", "yy", "xy", "pp", "qq", "pq", "pu", "qu", "pv", "qv"):
        np.testing.assert_allclose(getattr(moved, name), getattr(near, name), rtol=1e-8, atol=1e-6)


def test_sequence_bootstrap_interval_covers_the_population_value():
    """Sequences share a random effect, so tokens are dependent; 90% intervals from resampling whole
    sequences should cover the population CKA in about 90% of simulated data sets."""
    rng = np.random.default_rng(123)
    M = rng.normal(size=(3, 3))
    s_xx = 1.25 * np.eye(3)  # sequence effect variance 0.25 + token variance 1
    s_xy, s_yy = s_xx @ M, M.T @ s_xx @ M + np.eye(3)
    truth = np.linalg.norm(s_xy) ** 2 / (np.linalg.norm(s_xx) * np.linalg.norm(s_yy))
    covered, n_sets = 0, 40
    for _ in range(n_sets):
        units = np.repeat(np.arange(30), 20)
        X = rng.normal(scale=0.5, size=(30, 3))[units] + rng.normal(size=(600, 3))
        Y = X @ M + rng.normal(size=(600, 3))
        moments = unit_moments(X, Y, units)
        hxy, hxx, hyy = hsic_from_sums(moments.weighted_sums(bootstrap_weights(30, 400, rng)), True)
        low, high = percentile_interval(hxy / np.sqrt(hxx * hyy), 0.9)
        covered += low <= truth <= high
    assert covered / n_sets >= 0.75  # P(Binomial(40, 0.9) < 30) < 1%


def test_units_are_contiguous_balanced_and_non_empty():
    for n_seq, n_units in [(10, 3), (7, 7), (5, 9), (100, 64)]:
        units = unit_of_sequence(n_seq, n_units)
        assert np.all(np.diff(units) >= 0)
        assert set(units) == set(range(min(n_seq, n_units)))
        counts = np.bincount(units)
        assert counts.max() - counts.min() <= 1


def test_resampling_argument_checks():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="ci"):
        percentile_interval(np.arange(10.0), 1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_weights(5, 0, rng)
    with pytest.raises(ValueError, match="different centres"):
        PairMoments(1, np.zeros(2), np.zeros(2)).add(PairMoments(1, np.ones(2), np.zeros(2)))
