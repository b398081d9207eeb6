"""The leave-one-out ridge classifier against brute force and against scikit-learn."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier

from probes.ridge import LeaveOneOutRidgeClassifier, thin_svd


def classification_data(seed: int, n: int = 60, width: int = 8, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    means = rng.normal(size=(n_classes, width))
    return means[y] + rng.normal(size=(n, width)) + 50.0, y  # an offset the centring must remove


def brute_force_loo_error(X, y, alpha):
    """Mean squared leave-one-out residual of one-hot ridge with intercept, refitting n times."""
    targets = np.eye(np.unique(y).size)[y]
    residuals = []
    for i in range(X.shape[0]):
        keep = np.arange(X.shape[0]) != i
        model = Ridge(alpha=alpha).fit(X[keep], targets[keep])
        residuals.append(targets[i] - model.predict(X[i : i + 1])[0])
    return np.mean(np.square(residuals))


@pytest.mark.parametrize("seed", range(3))
def test_loo_errors_equal_brute_force_refits(seed):
    X, y = classification_data(seed)
    alphas = (0.1, 3.0, 100.0, 1e4)
    model = LeaveOneOutRidgeClassifier(alphas=alphas).fit(X, y)
    brute = [brute_force_loo_error(X, y, a) for a in alphas]
    np.testing.assert_allclose(model.loo_errors_, brute, rtol=1e-8)
    assert model.alpha_ == alphas[int(np.argmin(brute))]


@pytest.mark.parametrize("wide", [False, True])
def test_fit_matches_sklearn_ridge_classifier_at_the_chosen_penalty(wide):
    X, y = classification_data(0, n=40, width=60 if wide else 8)
    model = LeaveOneOutRidgeClassifier().fit(X, y)
    # RidgeClassifier codes targets as +-1, i.e. 2 * one-hot - 1: same argmax, scores scaled by 2.
    reference = RidgeClassifier(alpha=model.alpha_).fit(X, y)
    np.testing.assert_allclose(2 * model.decision_function(X) - 1, reference.decision_function(X), atol=1e-8)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_pure_noise_falls_back_to_the_prior():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 40)), np.repeat([0, 1, 2], [150, 100, 50])
    model = LeaveOneOutRidgeClassifier().fit(X, y)
    assert model.alpha_ >= 1e3
    assert np.mean(model.predict(rng.normal(size=(200, 40))) == 0) > 0.9


def test_bad_input_is_refused():
    X, y = classification_data(0)
    with pytest.raises(ValueError, match="one class only"):
        LeaveOneOutRidgeClassifier().fit(X, np.zeros(X.shape[0]))
    with pytest.raises(ValueError, match="positive penalties"):
        LeaveOneOutRidgeClassifier(alphas=(1.0, -1.0)).fit(X, y)


@pytest.mark.parametrize("shape", [(50, 8), (8, 50)])
def test_thin_svd_reconstructs_and_drops_null_directions(shape):
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape)
    X[:, 3] = X[:, 1] - X[:, 2] if shape[1] < shape[0] else X[:, 3]
    U, s, Vt = thin_svd(X)
    np.testing.assert_allclose((U * s) @ Vt, X, atol=1e-10)
    np.testing.assert_allclose(U.T @ U, np.eye(s.size), atol=1e-10)
    assert s.size == np.linalg.matrix_rank(X)
