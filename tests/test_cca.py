"""CCA family and Procrustes: invariances, known values and saturation refusals."""

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from psiloscope.cca import canonical_correlations, mean_cca, procrustes, pwcca, svcca

SEEDS = [0, 1, 2, 3]


def pair(seed, n=400, d1=6, d2=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1)) * np.linspace(2.0, 0.3, d1)
    Y = X @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))
    return X, Y, rng


@pytest.mark.parametrize("seed", SEEDS)
def test_canonical_correlations_are_cosines_of_column_space_angles(seed):
    X, Y, _ = pair(seed)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    expected = np.sort(np.cos(subspace_angles(Xc, Yc)))[::-1]  # independent SciPy route
    np.testing.assert_allclose(canonical_correlations(X, Y), expected, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_cca_measures_are_invariant_to_invertible_maps(seed):
    X, Y, rng = pair(seed)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(5, 5))
    for squared in (False, True):
        assert mean_cca(X @ A + 3.0, Y @ B, squared=squared) == pytest.approx(mean_cca(X, Y, squared=squared))
    assert pwcca(X, Y @ B - 7.0) == pytest.approx(pwcca(X, Y))  # weights come from X only
    assert pwcca(2.5 * X + 1.0, Y) == pytest.approx(pwcca(X, Y))


@pytest.mark.parametrize("seed", SEEDS)
def test_svcca_keeps_components_by_variance_and_is_orthogonally_invariant(seed):
    X, Y, rng = pair(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert svcca(X @ Q * 3.0, Y) == pytest.approx(svcca(X, Y))
    # variance=1 keeps every component: plain mean CCA
    assert svcca(X, Y, variance=1.0) == pytest.approx(mean_cca(X, Y))
    # a tiny-variance noise column is cut at 99% but would count as a perfectly matched pair otherwise
    noise = 1e-3 * rng.normal(size=(len(X), 1))
    assert svcca(np.hstack([X, noise]), np.hstack([Y, noise])) == pytest.approx(svcca(X, Y))


@pytest.mark.parametrize("seed", SEEDS)
def test_pwcca_and_mean_cca_are_one_for_identical_and_low_for_independent(seed):
    X, _, rng = pair(seed)
    assert pwcca(X, X) == pytest.approx(1.0) and mean_cca(X, X) == pytest.approx(1.0)
    independent = rng.normal(size=X.shape)
    assert mean_cca(X, independent) < 0.2 and pwcca(X, independent) < 0.2


@pytest.mark.parametrize("seed", SEEDS)
def test_procrustes_is_a_shape_metric(seed):
    X, Y, rng = pair(seed, d2=6)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert procrustes(X, 4.0 * X @ Q - 2.0) == pytest.approx(0.0, abs=1e-6)
    assert procrustes(X @ Q, Y) == pytest.approx(procrustes(X, Y))
    assert procrustes(X, Y) == pytest.approx(procrustes(Y, X))
    Z = rng.normal(size=X.shape)
    assert procrustes(X, Z) <= procrustes(X, Y) + procrustes(Y, Z) + 1e-12  # triangle inequality
    assert 0.0 < procrustes(X, Y) <= np.pi / 2


def test_refuses_saturated_or_rank_deficient_input():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 12)), rng.normal(size=(20, 8))
    for measure in (mean_cca, pwcca, canonical_correlations):
        with pytest.raises(ValueError, match="saturates"):
            measure(X, Y)
    with pytest.raises(ValueError, match="saturates"):
        svcca(rng.normal(size=(20, 30)), rng.normal(size=(20, 30)), variance=1.0)
    constant = np.hstack([rng.normal(size=(50, 2)), np.ones((50, 1))])
    with pytest.raises(ValueError, match="constant column"):
        mean_cca(constant, rng.normal(size=(50, 2)))
    collinear = np.hstack([constant[:, :2], constant[:, :1] * 2.0])
    with pytest.raises(ValueError, match="collinear"):
        mean_cca(collinear, rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="same number of rows"):
        procrustes(X, Y[:10])
    with pytest.raises(ValueError, match="variance must"):
        svcca(X, X, variance=0.0)
    with pytest.raises(ValueError, match="constant"):
        procrustes(np.ones((5, 2)), X[:5])
