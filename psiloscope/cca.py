"""CCA-family similarity measures and the angular Procrustes distance.

Canonical correlations ρ_1 >= ... >= ρ_m (m = min(d1, d2)) are the singular values of Q_xᵀQ_y, where
Q_x: (n, d1) and Q_y: (n, d2) are orthonormal bases of the column-centred X and Y.  They are invariant
to any invertible linear map (and translation) of either side, and that is also their weakness: once
d1 + d2 >= n the two column spaces must intersect inside the (n-1)-dimensional centred sample space,
and the leading correlations are 1 whatever the data.  Every function here refuses that case.

* :func:`mean_cca` — mean ρ (or mean ρ², Yanai's R²_CCA), invariant to invertible maps.
* :func:`svcca` — Raghu et al. 2017: SVD-reduce each side to the top components explaining ``variance``
  of the variance, then mean ρ; invariant to orthogonal maps, isotropic scaling, translation.
* :func:`pwcca` — Morcos et al. 2018: ρ weighted by how much of X each canonical variate accounts for;
  asymmetric; invariant to invertible maps of Y and to isotropic scaling / translation of X.
* :func:`procrustes` — Williams et al. 2021: arccos of the nuclear norm of X̃ᵀỸ with X̃, Ỹ centred and
  scaled to unit Frobenius norm; a metric on shapes modulo orthogonal maps, translation and scale.
"""

from __future__ import annotations

import numpy as np

from psiloscope._checks import (
    as_matrix,
    check_no_constant_columns,
    check_not_constant,
    check_paired,
)

__all__ = ["canonical_correlations", "mean_cca", "procrustes", "pwcca", "svcca"]

_REDUCE_HINT = "use more rows, or reduce dimensions first (svcca(X, Y, variance=0.99) or PCA)"


def _centred_pair(X: object, Y: object) -> tuple[np.ndarray, np.ndarray]:
    X, Y = as_matrix(X, "X"), as_matrix(Y, "Y")
    check_paired(X, Y, min_rows=2, what="CCA")
    return X - X.mean(axis=0), Y - Y.mean(axis=0)


def _check_not_saturated(n: int, d1: int, d2: int) -> None:
    if d1 + d2 >= n:
        raise ValueError(
            f"CCA saturates with d1 + d2 = {d1} + {d2} >= n_samples = {n}: centred columns live in an "
            f"{n - 1}-dimensional space, so the leading canonical correlations are 1 whatever the data; "
            f"{_REDUCE_HINT}."
        )


def _orthonormal_basis(Xc: np.ndarray, name: str) -> np.ndarray:
    """Q: (n, d) with orthonormal columns spanning the centred columns of Xc; refuses rank deficiency.

    Householder QR (about 5x cheaper than an SVD); a |r_jj| negligible against the largest flags a column
    that is (numerically) a combination of the earlier ones.
    """
    check_no_constant_columns(Xc, name, remedy=f"CCA needs full column rank: drop them or {_REDUCE_HINT}.")
    Q, R = np.linalg.qr(Xc)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > diag.max() * max(Xc.shape) * np.finfo(np.float64).eps))
    if rank < Xc.shape[1]:
        raise ValueError(
            f"{name} has collinear columns (rank {rank} < {Xc.shape[1]} features), so CCA is ill-posed; "
            f"drop redundant columns or {_REDUCE_HINT}."
        )
    return Q


def _cca(Xc: np.ndarray, Yc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ρ: (m,), Q_x: (n, d1), P: (d1, m)) with canonical variates of X = Q_x P.  Cost O(n·(d1+d2)²)."""
    _check_not_saturated(*Xc.shape, Yc.shape[1])
    Qx, Qy = _orthonormal_basis(Xc, "X"), _orthonormal_basis(Yc, "Y")
    P, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), Qx, P


def canonical_correlations(X: object, Y: object) -> np.ndarray:
    """Canonical correlations, descending.  X: (n, d1), Y: (n, d2) → (min(d1, d2),).

    Requires d1 + d2 < n and full column rank on each side (ValueError otherwise).
    """
    return _cca(*_centred_pair(X, Y))[0]


def mean_cca(X: object, Y: object, *, squared: bool = False) -> float:
    """Mean canonical correlation ρ̄ = Σρ_i/m, or with ``squared`` the mean ρ² (R²_CCA).

    X: (n, d1), Y: (n, d2).  Invariant to invertible linear maps and translation of either side.
    """
    rho = canonical_correlations(X, Y)
    return float(np.mean(rho**2 if squared else rho))


def _top_components(Xc: np.ndarray, variance: float, name: str) -> np.ndarray:
    """Scores U_k S_k of the fewest principal components whose Σs² reaches ``variance`` of the total.

    From the eigendecomposition of the smaller of XᵀX and XXᵀ (s² are its eigenvalues), O(n·d·min(n, d))
    like an SVD but several times cheaper; scores are X V_k (or U_k S_k from the Gram side).
    """
    check_not_constant(Xc, name)
    gram_side = Xc.shape[0] < Xc.shape[1]
    evals, evecs = np.linalg.eigh(Xc @ Xc.T if gram_side else Xc.T @ Xc)
    evals, evecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
    cumulative = np.cumsum(evals) / np.sum(evals)
    k = min(int(np.searchsorted(cumulative, variance)) + 1, int(np.sum(evals > 0)))
    return evecs[:, :k] * np.sqrt(evals[:k]) if gram_side else Xc @ evecs[:, :k]


def svcca(X: object, Y: object, *, variance: float = 0.99) -> float:
    """SVCCA: mean canonical correlation after keeping, on each side, the top principal components that
    explain ``variance`` of the variance (squared singular values of the centred data, cumulated).

    X: (n, d1), Y: (n, d2).  Cost O(n·d·min(n, d)) for the SVDs.  Raises ValueError when the kept
    dimensions still saturate CCA (k1 + k2 >= n).
    """
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must lie in (0, 1] (fraction of variance to keep); got {variance}.")
    Xc, Yc = _centred_pair(X, Y)
    Xr, Yr = _top_components(Xc, variance, "X"), _top_components(Yc, variance, "Y")
    return float(np.mean(_cca(Xr, Yr)[0]))


def pwcca(X: object, Y: object) -> float:
    """Projection-weighted CCA (Morcos et al. 2018) of Y onto X: Σ α_i ρ_i with α_i ∝ Σ_j |h_iᵀ x_j|,
    h_i the i-th canonical variate of X (unit norm) and x_j the j-th centred column of X.

    X: (n, d1), Y: (n, d2).  Asymmetric: weights come from X.  Cost O(n·(d1+d2)²).
    """
    Xc, Yc = _centred_pair(X, Y)
    rho, Qx, P = _cca(Xc, Yc)
    variates = Qx @ P  # (n, m)
    weights = np.abs(variates.T @ Xc).sum(axis=1)
    return float(weights @ rho / weights.sum())


def procrustes(X: object, Y: object) -> float:
    """Angular Procrustes distance arccos(‖X̃ᵀỸ‖_*) in radians, in [0, π/2].

    X̃ = X_c / ‖X_c‖_F, Ỹ likewise (X: (n, d1), Y: (n, d2); widths may differ, which amounts to zero
    padding).  0 iff Y is an orthogonal map of X up to translation and scale.  Cost O(n·d1·d2 + d³).
    """
    Xc, Yc = _centred_pair(X, Y)
    check_not_constant(Xc, "X")
    check_not_constant(Yc, "Y")
    Xc /= np.linalg.norm(Xc)
    Yc /= np.linalg.norm(Yc)
    nuclear = np.linalg.svd(Xc.T @ Yc, compute_uv=False).sum()
    return float(np.arccos(np.clip(nuclear, -1.0, 1.0)))
