"""Centred kernel alignment (Kornblith et al. 2019): one-shot, streaming and Gram-space.

Notation: X: (n, d1) and Y: (n, d2) are paired activations (row t of both is the same token), K = XXᵀ and
L = YYᵀ their linear Gram matrices, H = I - 11ᵀ/n the centring matrix.

* Biased HSIC:  HSIC_b = tr(KHLH) / (n-1)² = ‖X_cᵀY_c‖²_F / (n-1)² with X_c, Y_c column-centred.
* Unbiased HSIC (Song et al. 2012), with K̃, L̃ the Gram matrices with zeroed diagonal:
  HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3)).
  With centred features K1 = 0, so 1ᵀK̃1 = -tr K and K̃L̃ row sums reduce to k_ii l_ii; in feature space
  n(n-3)·HSIC_u = ‖C_xy‖²_F + tr C_xx·tr C_yy / ((n-1)(n-2)) - n/(n-2)·Σ_i k_ii l_ii,
  where C_xy = X_cᵀY_c and k_ii = ‖x_i - x̄‖².  Unbiased HSIC is translation invariant (U-centring
  annihilates the a_i + a_j + c terms a shift adds to K), so centring at the end is exact.
* CKA = HSIC(X, Y) / √(HSIC(X, X)·HSIC(Y, Y)); "debiased CKA" uses HSIC_u throughout.

Negative values: HSIC_u(X, Y) is an unbiased estimate and often falls below zero when X and Y are
independent, so debiased CKA can be slightly negative; it is returned as is, because clipping would
bias the estimate and hide what the data say.  The denominators cannot go negative in exact arithmetic
(HSIC_u(X, X) = ‖U-centred K‖²_F / (n(n-3)) >= 0) and vanish only for a constant representation,
where ValueError is raised; a value <= 0 from rounding is treated the same way.

Streaming sufficient statistics are kept by :class:`psiloscope.resample.PairMoments`, which also serves
the block bootstrap; :func:`hsic_from_sums` turns their power sums into HSIC terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psiloscope._checks import (
    MIN_ROWS_UNBIASED,
    as_matrix,
    check_min_rows,
    check_not_constant,
    check_paired,
    check_positive_int,
)
from psiloscope.resample import PairMoments, WeightedSums

__all__ = [
    "CKAAccumulator",
    "MinibatchCKA",
    "cka_matrix",
    "cka_from_sums",
    "centre_gram",
    "cka_from_grams",
    "linear_cka",
    "rbf_cka",
    "rbf_gram",
]


#: Centred variance below this fraction of Σ‖x‖² is rounding noise: the representation is constant.
_CONSTANT_RTOL = 1e-12


def hsic_from_sums(z: WeightedSums, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSIC(X,Y), HSIC(X,X), HSIC(Y,Y) per replicate from power sums about an arbitrary centre.

    Returned unnormalised — (n-1)²·HSIC_b or n(n-3)·HSIC_u — since the factor cancels in CKA.
    With μ_x = s/n, the centred quantities are ‖C_xy‖² = ‖A_xy‖² - 2sᵀA_xy t/n + ‖s‖²‖t‖²/n² and
    Σ_i k_ii l_ii = Σpq - 2tᵀΣpv/n - 2sᵀΣqu/n + 4sᵀA_xy t/n² + N·Σp + M·Σq - 3nMN (M = ‖μ_x‖²,
    N = ‖μ_y‖²), obtained by expanding k_ii = p_i - 2μ_xᵀu_i + M.
    """
    n, M, N = z.n, z.ss / z.n**2, z.tt / z.n**2
    cxy2 = z.xy2 - 2 * z.s_xy_t / n + z.ss * z.tt / n**2
    cxx2 = z.xx2 - 2 * z.s_xx_s / n + z.ss**2 / n**2
    cyy2 = z.yy2 - 2 * z.t_yy_t / n + z.tt**2 / n**2
    if not debiased:
        return cxy2, cxx2, cyy2
    tr_x, tr_y = z.tr_x - z.ss / n, z.tr_y - z.tt / n
    kl = (z.pq - 2 * z.t_pv / n - 2 * z.s_qu / n + 4 * z.s_xy_t / n**2
          + N * z.tr_x + M * z.tr_y - 3 * n * M * N)
    kk = z.pp - 4 * z.s_pu / n + 4 * z.s_xx_s / n**2 + 2 * M * z.tr_x - 3 * n * M**2
    ll = z.qq - 4 * z.t_qv / n + 4 * z.t_yy_t / n**2 + 2 * N * z.tr_y - 3 * n * N**2

    def unbiased(c2, tr_a, tr_b, diag_products):
        return c2 + tr_a * tr_b / ((n - 1) * (n - 2)) - n / (n - 2) * diag_products

    return unbiased(cxy2, tr_x, tr_y, kl), unbiased(cxx2, tr_x, tr_x, kk), unbiased(cyy2, tr_y, tr_y, ll)


def constant_sides(z: WeightedSums) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate, whether X and Y are constant: centred Σ‖x - x̄‖² at rounding level of Σ‖x‖²."""
    return (z.tr_x - z.ss / z.n <= _CONSTANT_RTOL * z.raw_x,
            z.tr_y - z.tt / z.n <= _CONSTANT_RTOL * z.raw_y)


def cka_ratio(hxy: float, hxx: float, hyy: float, *, debiased: bool) -> float:
    """CKA = HSIC(X,Y) / √(HSIC(X,X)·HSIC(Y,Y)), raising ValueError when a denominator is <= 0."""
    for value, name in ((hxx, "X"), (hyy, "Y")):
        if not value > 0:
            if debiased:
                raise ValueError(
                    f"The unbiased HSIC({name}, {name}) estimate is {value:.3g} <= 0, so debiased CKA is "
                    "undefined: the sample is too small or nearly constant. Use more rows or debiased=False."
                )
            raise ValueError(f"{name} has no variance after centring, so CKA is undefined; check the input.")
    return float(hxy / np.sqrt(hxx * hyy))


def cka_from_sums(z: WeightedSums, *, debiased: bool) -> float:
    """Linear CKA of a single multiset (replicate 0 of ``z``), with the constant-input checks."""
    const_x, const_y = constant_sides(z)
    for const, name in ((const_x[0], "X"), (const_y[0], "Y")):
        if const:
            raise ValueError(f"{name} is constant (no variance after centring), so CKA is undefined; "
                             "check that the right hook and rows were passed.")
    hxy, hxx, hyy = (h[0] for h in hsic_from_sums(z, debiased))
    return cka_ratio(hxy, hxx, hyy, debiased=debiased)


def _paired_inputs(X: object, Y: object, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    X, Y = as_matrix(X, "X"), as_matrix(Y, "Y")
    what = "debiased (unbiased-HSIC) CKA" if debiased else "CKA"
    check_paired(X, Y, min_rows=MIN_ROWS_UNBIASED if debiased else 2, what=what)
    check_not_constant(X, "X")
    check_not_constant(Y, "Y")
    return X, Y


def centre_gram(K: np.ndarray, *, unbiased: bool = False) -> np.ndarray:
    """Centre a symmetric Gram matrix.

    Parameters
    ----------
    K : (n, n) Gram matrix.
    unbiased : if False return HKH; if True return the U-centred matrix of Székely & Rizzo (2014),
        whose Frobenius inner products are n(n-3)·HSIC_u (diagonal zero).

    Cost O(n²) time and one (n, n) copy.
    """
    K = np.array(K, dtype=np.float64)
    n = K.shape[0]
    if unbiased:
        np.fill_diagonal(K, 0.0)
        means = K.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None]
        K -= means[None, :]
        np.fill_diagonal(K, 0.0)
    else:
        means = K.mean(axis=0)
        K -= means[:, None]
        K -= means[None, :]
        K += means.mean()
    return K


def hsic_scale(n: int, unbiased: bool) -> float:
    """Factor turning ⟨centred K, centred L⟩_F into HSIC: 1/(n-1)² (biased) or 1/(n(n-3)) (unbiased)."""
    return 1.0 / (n * (n - 3)) if unbiased else 1.0 / (n - 1) ** 2


def cka_from_grams(K: np.ndarray, L: np.ndarray, *, debiased: bool = False) -> float:
    """CKA from two (n, n) Gram matrices of the same rows; O(n²) time and memory.

    Invariances follow the kernel: for linear Grams, orthogonal maps, isotropic scaling, translation.
    """
    if K.shape != L.shape or K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K and L must be square Gram matrices of equal shape; got {K.shape} and {L.shape}.")
    Kc, Lc = centre_gram(K, unbiased=debiased), centre_gram(L, unbiased=debiased)
    return cka_ratio(np.vdot(Kc, Lc), np.vdot(Kc, Kc), np.vdot(Lc, Lc), debiased=debiased)


def linear_cka(X: object, Y: object, *, debiased: bool = False) -> float:
    """Linear CKA between paired activations.

    Parameters
    ----------
    X : (n_samples, d1), Y : (n_samples, d2); any real dtype, computed in float64.
    debiased : use unbiased HSIC (Song et al. 2012); needs n >= 4; may return slightly negative values.

    Returns
    -------
    float in [0, 1] (biased) or a value near [0, 1] (debiased).  Invariant to orthogonal maps, isotropic
    scaling and translation of either side; not to general linear maps.

    Cost: min(O(n·(d1+d2)²) feature space, O(n²·(d1+d2)) Gram space), whichever is cheaper.
    """
    X, Y = _paired_inputs(X, Y, debiased)
    n, d1, d2 = X.shape[0], X.shape[1], Y.shape[1]
    if n < d1 + d2:  # Gram space costs n²(d1+d2), feature space n(d1+d2)²
        Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
        return cka_from_grams(Xc @ Xc.T, Yc @ Yc.T, debiased=debiased)
    moments = PairMoments(1, X.mean(axis=0), Y.mean(axis=0))
    moments.add_rows(0, X, Y)
    return cka_from_sums(moments.weighted_sums(np.ones((1, 1))), debiased=debiased)


def rbf_gram(X: np.ndarray, threshold: float) -> np.ndarray:
    """RBF Gram exp(-‖x_i - x_j‖² / (2σ²)) with σ = threshold·√(median off-diagonal squared distance).

    X: (n, d) float64.  Cost O(n²·d).  The median excludes the zero diagonal (distances of distinct
    pairs); Kornblith et al.'s reference code includes it, which differs only at tiny n.
    """
    Xc = X - X.mean(axis=0)
    sq_norms = np.einsum("ij,ij->i", Xc, Xc)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (Xc @ Xc.T), 0.0)
    median = np.median(sq_dist[~np.eye(len(X), dtype=bool)])
    if median <= 0:
        raise ValueError(
            "The median squared pairwise distance is 0 (most rows are identical), so the RBF bandwidth is "
            "undefined; deduplicate rows or use linear_cka."
        )
    return np.exp(-sq_dist / (2.0 * threshold**2 * median))


def rbf_cka(X: object, Y: object, *, threshold: float = 0.5, debiased: bool = False) -> float:
    """CKA with RBF kernels, bandwidth σ = threshold × √(median squared pairwise distance).

    X : (n_samples, d1), Y : (n_samples, d2).  Invariant to orthogonal maps, translation and isotropic
    scaling (the bandwidth scales along).  As threshold → ∞ it tends to linear CKA.  Cost O(n²(d1+d2))
    time and O(n²) memory: subsample large n.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive; got {threshold}.")
    X, Y = _paired_inputs(X, Y, debiased)
    return cka_from_grams(rbf_gram(X, threshold), rbf_gram(Y, threshold), debiased=debiased)


class CKAAccumulator:
    """Exact linear CKA in one streaming pass over row blocks (feature space, O(d²) memory).

    Keeps the sufficient statistics n, Σx, Σy, XᵀX, YᵀY, XᵀY and, for the debiased estimator, the
    row-norm sums Σ‖x‖⁴, Σ‖x‖²‖y‖², Σ‖y‖⁴, Σ‖x‖²x, Σ‖x‖²y, Σ‖y‖²x, Σ‖y‖²y, all in float64 about a
    reference centre (the first block's mean) so that large offsets do not cancel catastrophically.
    Centring happens in :meth:`result`.  Shards merge exactly (:meth:`merge` re-centres the other
    accumulator's moments onto this one's centre).  Cost per block of m rows: O(m·(d1+d2)²).

    Parameters
    ----------
    debiased : use unbiased HSIC (needs >= 4 rows in total).
    """

    def __init__(self, debiased: bool = False) -> None:
        self.debiased = debiased

    def update(self, X_block: object, Y_block: object) -> CKAAccumulator:
        """Add paired rows X_block: (m, d1), Y_block: (m, d2); returns self."""
        X, Y = as_matrix(X_block, "X_block"), as_matrix(Y_block, "Y_block")
        check_paired(X, Y, what="an update")
        if not hasattr(self, "moments_"):
            self.moments_ = PairMoments(1, X.mean(axis=0), Y.mean(axis=0))
        self.moments_.check_widths(X.shape[1], Y.shape[1])
        self.moments_.add_rows(0, X, Y)
        return self

    def merge(self, other: CKAAccumulator) -> CKAAccumulator:
        """Add the statistics of ``other`` (rows disjoint from ours); returns self."""
        if not hasattr(other, "moments_"):
            return self
        if not hasattr(self, "moments_"):
            self.moments_ = other.moments_.copy()
            return self
        self.moments_.check_widths(other.moments_.dx, other.moments_.dy)
        self.moments_.add(other.moments_.recentred(self.moments_.cx, self.moments_.cy))
        return self

    def result(self) -> float:
        """Linear CKA (debiased if so constructed) of every row seen so far."""
        if not hasattr(self, "moments_"):
            raise ValueError("No rows seen yet; call update(X_block, Y_block) first.")
        check_min_rows(int(self.moments_.n.sum()), MIN_ROWS_UNBIASED if self.debiased else 2,
                       "debiased (unbiased-HSIC) CKA" if self.debiased else "CKA")
        return cka_from_sums(self.moments_.weighted_sums(np.ones((1, 1))), debiased=self.debiased)


class MinibatchCKA:
    """Layer×layer CKA by minibatch unbiased HSIC (Nguyen et al. 2021), streaming over row chunks.

    Rows of each chunk are shuffled (seeded) and split into batches of ``batch_size`` to ``2·batch_size-1``
    rows.  Per batch, the centred Gram matrices of all layers are stacked as rows of Gₐ: (La, b²) and
    G_b: (Lb, b²), so one product Gₐ G_bᵀ gives every pair's HSIC.  CKA is the ratio of the *sums* over
    batches, Σ HSIC(A_i, B_j) / √(Σ HSIC(A_i, A_i) · Σ HSIC(B_j, B_j)); averaging per-batch CKA instead
    would be biased.  A chunk shorter than one batch is carried into the next; at most 3 trailing rows
    (too few for unbiased HSIC) are left out.  Cost per batch O(b²·Σd + b²·La·Lb).

    Parameters
    ----------
    batch_size : rows per batch (>= 4 for debiased, >= 2 otherwise).
    debiased : unbiased (U-centred) HSIC per batch; with False the per-batch biased HSIC is summed,
        which stays biased at small batch sizes.
    seed : seed of the row shuffle.
    """

    def __init__(self, batch_size: int = 256, debiased: bool = True, seed: int = 0) -> None:
        self.batch_size = batch_size
        self.debiased = debiased
        self.seed = seed

    @property
    def _min_rows(self) -> int:
        return MIN_ROWS_UNBIASED if self.debiased else 2

    def update(self, As: Sequence[object], Bs: Sequence[object]) -> MinibatchCKA:
        """Add paired rows: As is a list of (m, d_i) arrays, Bs a list of (m, d_j) arrays; returns self."""
        As = [as_matrix(a, f"As[{i}]") for i, a in enumerate(As)]
        Bs = [as_matrix(b, f"Bs[{j}]") for j, b in enumerate(Bs)]
        if not As or not Bs:
            raise ValueError("As and Bs must each hold at least one (n_samples, n_features) array.")
        for j, b in enumerate(As[1:] + Bs):
            check_paired(As[0], b, what=f"array {j + 1} of the chunk")
        if not hasattr(self, "cross_"):
            check_positive_int(self.batch_size, "batch_size", minimum=self._min_rows)
            self.rng_ = np.random.default_rng(self.seed)
            self.cross_ = np.zeros((len(As), len(Bs)))
            self.self_a_, self.self_b_ = np.zeros(len(As)), np.zeros(len(Bs))
            self.carry_: tuple[list[np.ndarray], list[np.ndarray]] | None = None
            self.n_used_ = 0
        elif self.cross_.shape != (len(As), len(Bs)):
            raise ValueError(f"Expected {self.cross_.shape[0]} + {self.cross_.shape[1]} arrays per chunk, "
                             f"as in the first update; got {len(As)} + {len(Bs)}.")
        if self.carry_ is not None:
            As = [np.concatenate([c, a]) for c, a in zip(self.carry_[0], As, strict=True)]
            Bs = [np.concatenate([c, b]) for c, b in zip(self.carry_[1], Bs, strict=True)]
            self.carry_ = None
        n_batches = len(As[0]) // self.batch_size
        if n_batches == 0:
            self.carry_ = (As, Bs)
            return self
        for rows in np.array_split(self.rng_.permutation(len(As[0])), n_batches):
            cross, self_a, self_b = self._batch_hsic([a[rows] for a in As], [b[rows] for b in Bs])
            self.cross_ += cross
            self.self_a_ += self_a
            self.self_b_ += self_b
            self.n_used_ += len(rows)
        return self

    def _batch_hsic(self, As: list[np.ndarray], Bs: list[np.ndarray]):
        scale = hsic_scale(len(As[0]), self.debiased)

        def stacked_grams(arrays: list[np.ndarray]) -> np.ndarray:
            centred = [a - a.mean(axis=0) for a in arrays]  # Gram centring is exact; this avoids cancellation
            return np.stack([centre_gram(c @ c.T, unbiased=self.debiased).ravel() for c in centred])

        Ga, Gb = stacked_grams(As), stacked_grams(Bs)
        self_a, self_b = np.einsum("ij,ij->i", Ga, Ga), np.einsum("ij,ij->i", Gb, Gb)
        return scale * (Ga @ Gb.T), scale * self_a, scale * self_b

    def result(self) -> np.ndarray:
        """(len(As), len(Bs)) CKA matrix of all rows seen so far."""
        if not hasattr(self, "cross_"):
            raise ValueError("No rows seen yet; call update(As, Bs) first.")
        cross, self_a, self_b = self.cross_.copy(), self.self_a_.copy(), self.self_b_.copy()
        if self.carry_ is not None and len(self.carry_[0][0]) >= self._min_rows:
            for total, part in zip((cross, self_a, self_b), self._batch_hsic(*self.carry_), strict=True):
                total += part
        elif self.n_used_ == 0:
            raise ValueError(f"Minibatch CKA needs at least {self._min_rows} rows in total; "
                             "pass more samples.")
        for values, name in ((self_a, "As"), (self_b, "Bs")):
            bad = np.flatnonzero(~(values > 0))
            if bad.size:
                raise ValueError(f"{name}[{int(bad[0])}] has summed self-HSIC {values[bad[0]]:.3g} <= 0 "
                                 "(constant or too few rows per batch); drop it or use larger batches.")
        return cross / np.sqrt(np.outer(self_a, self_b))


def cka_matrix(As: Sequence[object], Bs: Sequence[object], *, batch_size: int = 256, debiased: bool = True,
               seed: int = 0) -> np.ndarray:
    """Layer×layer CKA matrix by minibatch HSIC (see :class:`MinibatchCKA`).

    As : list of (n_samples, d_i) arrays (e.g. every layer of model A); Bs : list of (n_samples, d_j).
    Returns (len(As), len(Bs)).  Rows are shuffled with ``seed`` before batching.  Invariant to orthogonal
    maps, isotropic scaling and translation of each layer.  Cost O(n·b·Σd + n·b·La·Lb).
    """
    return MinibatchCKA(batch_size, debiased, seed).update(As, Bs).result()
