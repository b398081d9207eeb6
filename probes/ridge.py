"""Ridge classifier whose penalty is chosen by exact leave-one-out error, from one SVD.

scikit-learn's ``RidgeClassifierCV`` does the same job, but with an intercept on dense data it
recomputes an ``(n, p) @ (p, p)`` product for every candidate penalty; on 1,750 rows x 576 features
x 17 penalties that took about 3 s per fit on this machine, against about 0.15 s here. The saving is
the thin SVD ``X = U S V^T`` of the centred training matrix: for every penalty ``a`` the fitted
values are ``U diag(s^2 / (s^2 + a)) U^T Y`` and the leverages ``h = (U^2) (s^2 / (s^2 + a))``,
so each candidate costs ``O(n k c)`` (``k = min(n, p)``, ``c`` classes) instead of ``O(n p^2)``.
The SVD itself comes from the eigendecomposition of the smaller Gram matrix (``X^T X`` or
``X X^T``), about 5x faster than LAPACK's SVD at this shape.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: Candidate penalties. The top end matters: where a layer carries no signal the best penalty is huge
#: and the probe falls back to the class prior instead of fitting noise (which scores below chance).
DEFAULT_ALPHAS = tuple(np.logspace(-2, 6, 17))


def thin_svd(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U, s, Vt`` with ``X = U diag(s) Vt``, keeping only components with non-negligible ``s``.

    Components whose squared singular value is below ``1e-12`` of the largest carry no weight in a
    ridge fit with penalty >= 1e-2 on standardised data, and dropping them avoids dividing by ~0.

    Parameters
    ----------
    X : (n, p) float64.

    Returns
    -------
    U : (n, k), s : (k,), Vt : (k, p) with ``k <= min(n, p)``.
    """
    tall = X.shape[0] >= X.shape[1]
    eigvals, eigvecs = np.linalg.eigh(X.T @ X if tall else X @ X.T)
    keep = eigvals > 1e-12 * max(float(eigvals[-1]), np.finfo(np.float64).tiny)
    s = np.sqrt(eigvals[keep])
    if tall:
        V = eigvecs[:, keep]
        return (X @ V) / s, s, V.T
    U = eigvecs[:, keep]
    return U, s, ((X.T @ U) / s).T


class LeaveOneOutRidgeClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-all least squares on one-hot targets; penalty minimising leave-one-out squared error.

    The intercept is the mean one-hot target (features are centred on the training rows). The
    leave-one-out residual of row ``i`` is ``(y_i - yhat_i) / (1 - h_i)`` with ``h_i`` its leverage
    (the classic ridge identity), computed for all rows and penalties from one SVD.

    Parameters
    ----------
    alphas : candidate ridge penalties (positive).

    Attributes
    ----------
    classes_ : (n_classes,) class labels.
    alpha_ : chosen penalty.
    loo_errors_ : (n_alphas,) mean squared leave-one-out residual of each candidate penalty.
    coef_ : (n_features, n_classes) weights; intercept_ : (n_classes,).
    """

    def __init__(self, alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> LeaveOneOutRidgeClassifier:
        """Fit on ``X`` (n_samples, n_features) and class labels ``y`` (n_samples,)."""
        X = np.asarray(X, dtype=np.float64)
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty list of positive penalties, got {self.alphas!r}")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError("the training rows hold one class only; a classifier needs at least 2")
        targets = np.eye(self.classes_.size)[y_index]
        self.x_mean_ = X.mean(axis=0)
        self.intercept_ = targets.mean(axis=0)
        U, s, Vt = thin_svd(X - self.x_mean_)
        centred_targets = targets - self.intercept_
        Ut_y = U.T @ centred_targets
        U_squared = U**2
        errors = np.empty(alphas.size)
        for i, alpha in enumerate(alphas):
            shrink = s**2 / (s**2 + alpha)
            fitted = U @ (shrink[:, None] * Ut_y)
            # The unpenalised intercept adds 1/n to every leverage (centred X is orthogonal to 1).
            leverage = U_squared @ shrink + 1 / X.shape[0]
            loo_residual = (centred_targets - fitted) / (1 - leverage)[:, None]
            errors[i] = np.mean(loo_residual**2)
        # On ties prefer the larger penalty: the simpler probe.
        best = alphas.size - 1 - int(np.argmin(errors[::-1]))
        self.alpha_ = float(alphas[best])
        self.loo_errors_ = errors
        self.coef_ = Vt.T @ ((s / (s**2 + self.alpha_))[:, None] * Ut_y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class scores (n_samples, n_classes)."""
        return (np.asarray(X, dtype=np.float64) - self.x_mean_) @ self.coef_ + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class label of highest score per row (n_samples,)."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
