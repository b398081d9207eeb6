"""PCA, spectrum summaries, streaming covariance and principal angles."""

import numpy as np
import pytest

from psiloscope.pca import CovarianceAccumulator, pca, principal_angles

SEEDS = [0, 1, 2]


def data(seed, n=300, d=8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.geomspace(5.0, 0.2, d) @ np.linalg.qr(rng.normal(size=(d, d)))[0], rng


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_the_covariance_eigendecomposition(seed):
    X, _ = data(seed)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1]
    result = pca(X, n_components=3)
    np.testing.assert_allclose(result.spectrum, eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(result.explained_variance_ratio, eigenvalues[:3] / eigenvalues.sum())
    np.testing.assert_allclose(result.components @ result.components.T, np.eye(3), atol=1e-12)
    p = eigenvalues / eigenvalues.sum()
    assert result.participation_ratio == pytest.approx(1.0 / np.sum(p**2))
    assert result.effective_rank == pytest.approx(np.exp(-np.sum(p * np.log(p))))


def test_spectrum_summaries_at_the_extremes():
    rng = np.random.default_rng(0)
    isotropic = np.linalg.qr(rng.normal(size=(64, 16)))[0] * 8.0  # every eigenvalue equal
    assert pca(isotropic).participation_ratio == pytest.approx(16.0, rel=0.1)
    one_direction = np.outer(rng.normal(size=100), rng.normal(size=5))
    result = pca(one_direction)
    assert result.participation_ratio == pytest.approx(1.0) and result.effective_rank == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_summaries_are_invariant_to_orthogonal_maps_scaling_and_translation(seed):
    X, rng = data(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    moved, original = pca(3.0 * X @ Q + 10.0), pca(X)
    assert moved.participation_ratio == pytest.approx(original.participation_ratio)
    assert moved.effective_rank == pytest.approx(original.effective_rank)


@pytest.mark.parametrize("seed", SEEDS)
def test_streaming_covariance_equals_one_shot_and_merges(seed):
    X, _ = data(seed)
    X[:, 0] += 1000.0
    halves = [CovarianceAccumulator(4), CovarianceAccumulator(4)]
    for i, lo in enumerate(range(0, 300, 45)):
        halves[i % 2].update(X[lo:lo + 45].astype(np.float32))
    streamed = halves[0].merge(halves[1]).result()
    expected = pca(X.astype(np.float32), 4)
    np.testing.assert_allclose(streamed.spectrum, expected.spectrum[:8], rtol=1e-8)
    np.testing.assert_allclose(np.abs(streamed.components @ expected.components.T), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(streamed.mean, expected.mean, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_principal_angles(seed):
    X, rng = data(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    np.testing.assert_allclose(principal_angles(X, 2.0 * X[::-1] + 1.0, 3), 0.0, atol=1e-6)
    angles = principal_angles(X, X @ Q, 3)
    assert np.all(np.diff(angles) >= 0) and np.all((angles >= 0) & (angles <= np.pi / 2))
    with pytest.raises(ValueError, match="same feature space"):
        principal_angles(X, X[:, :4], 2)


def test_bad_input():
    with pytest.raises(ValueError, match="exceeds"):
        pca(np.random.default_rng(0).normal(size=(5, 3)), n_components=4)
    with pytest.raises(ValueError, match="constant"):
        pca(np.ones((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        pca(np.arange(4.0))
    with pytest.raises(ValueError, match="No rows"):
        CovarianceAccumulator().result()
