"""Principal component analysis, spectrum summaries and principal angles between PCA subspaces.

Spectrum summaries use every eigenvalue λ_i of the sample covariance (not only the kept components):

* participation ratio PR = (Σλ)² / Σλ², between 1 (one direction) and d (isotropic);
* effective rank (Roy & Vetterli 2007) = exp(H(p)) with p_i = λ_i / Σλ and H the Shannon entropy.

Both are invariant to orthogonal maps, isotropic scaling and translation.  The streaming variant
:class:`CovarianceAccumulator` builds the covariance from the float64 sufficient statistics n, Σx, XᵀX
(the X half of :class:`psiloscope.resample.PairMoments`), so any number of rows fits in O(d²) memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psiloscope._checks import as_matrix, check_min_rows, check_not_constant, check_positive_int
from psiloscope.resample import PairMoments

__all__ = ["CovarianceAccumulator", "PCAResult", "pca", "principal_angles"]


@dataclass(frozen=True)
class PCAResult:
    """Principal components of one representation.

    components: (k, d) orthonormal rows, by decreasing variance; explained_variance: (k,);
    explained_variance_ratio: (k,); spectrum: (r,) every covariance eigenvalue; mean: (d,).
    """

    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    spectrum: np.ndarray
    mean: np.ndarray
    n_samples: int
    participation_ratio: float
    effective_rank: float


def _result(spectrum: np.ndarray, directions: np.ndarray, mean: np.ndarray, n: int,
            n_components: int | None) -> PCAResult:
    """Assemble a PCAResult from descending eigenvalues and matching (d, r) eigenvectors."""
    spectrum = np.clip(spectrum, 0.0, None)  # eigh returns -1e-17-type noise for null directions
    total = spectrum.sum()
    if not total > 0:
        raise ValueError("The data have zero variance, so principal components are undefined.")
    k = len(spectrum) if n_components is None else check_positive_int(n_components, "n_components")
    if k > len(spectrum):
        raise ValueError(f"n_components={k} exceeds the {len(spectrum)} available components "
                         f"(min(n_samples, n_features)); ask for fewer.")
    p = spectrum[spectrum > 0] / total
    return PCAResult(
        components=directions[:, :k].T.copy(),
        explained_variance=spectrum[:k].copy(),
        explained_variance_ratio=spectrum[:k] / total,
        spectrum=spectrum,
        mean=mean,
        n_samples=n,
        participation_ratio=float(total**2 / np.sum(spectrum**2)),
        effective_rank=float(np.exp(-np.sum(p * np.log(p)))),
    )


def pca(X: object, n_components: int | None = None) -> PCAResult:
    """PCA of X: (n_samples, n_features) by eigendecomposition of the smaller of the centred covariance
    (d x d) and Gram (n x n) matrices, O(n·d·min(n, d)).

    Eigenvalues are s²/(n-1) of the centred data.  ``n_components`` (default: all min(n, d)) only limits
    the returned components; the spectrum summaries always use the full spectrum.
    """
    X = as_matrix(X, "X")
    check_min_rows(len(X), 2, "PCA")
    check_not_constant(X, "X")
    mean = X.mean(axis=0)
    Xc = X - mean
    if len(X) >= X.shape[1]:
        evals, directions = np.linalg.eigh(Xc.T @ Xc)
        evals, directions = evals[::-1], directions[:, ::-1]
    else:  # Gram side: right singular vectors V = Xᵀ U / s
        evals, U = np.linalg.eigh(Xc @ Xc.T)
        evals, U = np.clip(evals[::-1], 0.0, None), U[:, ::-1]
        s = np.sqrt(evals)
        directions = (Xc.T @ U) / np.where(s > 0, s, 1.0)
    return _result(evals / (len(X) - 1), directions, mean, len(X), n_components)


def subspace_angles(Vx: np.ndarray, Vy: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the row spaces of orthonormal Vx: (k, d), Vy: (k, d)."""
    cosines = np.linalg.svd(Vx @ Vy.T, compute_uv=False)
    return np.arccos(np.clip(cosines, -1.0, 1.0))  # cosines descend, so angles ascend


class CovarianceAccumulator:
    """Streaming PCA from float64 sufficient statistics n, Σx, XᵀX (about the first block's mean).

    ``update(X_block)`` costs O(m·d²) per block of m rows, ``merge`` adds a shard exactly, ``result``
    eigendecomposes the (d, d) covariance in O(d³).

    Parameters
    ----------
    n_components : number of components ``result`` returns (default all d).
    """

    def __init__(self, n_components: int | None = None) -> None:
        self.n_components = n_components

    def update(self, X_block: object) -> CovarianceAccumulator:
        """Add rows X_block: (m, d); returns self."""
        X = as_matrix(X_block, "X_block")
        if not hasattr(self, "moments_"):
            # The covariance is the X half of the paired moments; the Y side is empty (width 0).
            self.moments_ = PairMoments(1, X.mean(axis=0), np.zeros(0))
        self.moments_.check_widths(X.shape[1], 0)
        self.moments_.add_rows(0, X, X[:, :0])
        return self

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Add the statistics of ``other`` (disjoint rows); returns self."""
        if hasattr(other, "moments_"):
            if not hasattr(self, "moments_"):
                self.moments_ = other.moments_.copy()
            else:
                self.moments_.check_widths(other.moments_.dx, 0)
                self.moments_.add(other.moments_.recentred(self.moments_.cx, self.moments_.cy))
        return self

    def result(self) -> PCAResult:
        """PCA of all rows seen: covariance (XᵀX - ssᵀ/n)/(n-1) about the centre, eigendecomposed."""
        if not hasattr(self, "moments_"):
            raise ValueError("No rows seen yet; call update(X_block) first.")
        m = self.moments_
        n, s = m.n[0], m.s[0]
        check_min_rows(int(n), 2, "PCA")
        cov = (m.xx[0] - np.outer(s, s) / n) / (n - 1)
        eigenvalues, vectors = np.linalg.eigh(cov)
        return _result(eigenvalues[::-1], vectors[:, ::-1], m.cx + s / n, int(n), self.n_components)


def principal_angles(X: object, Y: object, k: int) -> np.ndarray:
    """Principal angles (radians, ascending) between the top-k PCA subspaces of X and Y.

    X: (n_x, d), Y: (n_y, d) — the same feature space, rows need not be paired.  The cosines are the
    singular values of V_xᵀV_y with V: (d, k) the top-k principal directions.  Cost O(n·d·min(n, d)).
    """
    X, Y = as_matrix(X, "X"), as_matrix(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"Principal angles need the same feature space; got widths {X.shape[1]} and "
                         f"{Y.shape[1]}. Compare subspaces of the same hook.")
    return subspace_angles(pca(X, k).components, pca(Y, k).components)
