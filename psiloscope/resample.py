"""Per-unit sufficient statistics of paired activations, and resampling over whole sequences.

Tokens within a sequence are not independent, so uncertainty comes from resampling whole sequences (or
groups of consecutive sequences: the *units*).  :class:`PairMoments` keeps, for each unit, the raw
moments of the rows about one common centre; any multiset of units (a bootstrap replicate, a shard
merge, the full sample) is then a weighted sum of unit moments, and linear CKA of that multiset follows
exactly from :meth:`PairMoments.weighted_sums` without touching the rows again.

Moments of unit b about centres c_x, c_y, with u_i = x_i - c_x, v_i = y_i - c_y, p_i = ‖u_i‖², q_i = ‖v_i‖²:
n_b, s = Σu, t = Σv, A_xx = Σuuᵀ, A_yy = Σvvᵀ, A_xy = Σuvᵀ, Σp², Σq², Σpq, Σp·u, Σq·u, Σp·v, Σq·v.
Memory per unit: 8·(d1+d2)² bytes plus O(d1+d2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from psiloscope._checks import check_positive_int, check_probability

_VECTOR_FIELDS = ("s", "t", "pu", "qu", "pv", "qv")
_SCALAR_FIELDS = ("n", "pp", "qq", "pq")


@dataclass
class WeightedSums:
    """Scalar power sums of a weighted multiset of units, one entry per replicate (arrays of shape (R,)).

    ``ss`` = ‖s‖², ``xy2`` = ‖A_xy‖²_F, ``s_xy_t`` = sᵀA_xy t, ``tr_x`` = tr A_xx = Σp, ``t_pv`` = tᵀΣpv,
    and so on; ``raw_x`` = Σ‖x_i‖² about the origin (used to recognise constant inputs).
    """

    n: np.ndarray
    ss: np.ndarray
    tt: np.ndarray
    xy2: np.ndarray
    xx2: np.ndarray
    yy2: np.ndarray
    s_xy_t: np.ndarray
    s_xx_s: np.ndarray
    t_yy_t: np.ndarray
    tr_x: np.ndarray
    tr_y: np.ndarray
    pp: np.ndarray
    qq: np.ndarray
    pq: np.ndarray
    s_pu: np.ndarray
    s_qu: np.ndarray
    t_pv: np.ndarray
    t_qv: np.ndarray
    raw_x: np.ndarray
    raw_y: np.ndarray


def _quadratic(W: np.ndarray, F: np.ndarray) -> np.ndarray:
    """‖Σ_b w_b F_b‖² for each row w of W: (R, B), F: (B, m), via the (B, B) Gram of F."""
    G = F @ F.T
    return np.einsum("rb,bc,rc->r", W, G, W)


def _cubic(W: np.ndarray, left: np.ndarray, mats: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(Σ w_a l_a)ᵀ (Σ w_b M_b) (Σ w_c r_c) for each row w of W: the tensor T_abc = l_aᵀ M_b r_c costs
    O(B²·d1·d2 + B³·d2) once, then O(B³) per replicate."""
    B = W.shape[1]
    T = np.matmul(np.matmul(left[None], mats), right.T[None])  # (b, a, c)
    TW = (W @ T.transpose(1, 0, 2).reshape(B, B * B)).reshape(-1, B, B)  # contract a
    return np.einsum("rbc,rb,rc->r", TW, W, W)


class PairMoments:
    """Raw moments of paired rows, per unit, about common centres ``cx``: (d1,) and ``cy``: (d2,).

    Parameters
    ----------
    n_units : number of resampling units B.
    cx, cy : float64 centres; choose them near the data mean (e.g. the store's running mean or the first
        block's mean) so that the final centring does not cancel large numbers.
    """

    def __init__(self, n_units: int, cx: np.ndarray, cy: np.ndarray) -> None:
        self.cx, self.cy = np.asarray(cx, np.float64).copy(), np.asarray(cy, np.float64).copy()
        B, d1, d2 = n_units, self.cx.size, self.cy.size
        self.n, self.pp, self.qq, self.pq = (np.zeros(B) for _ in range(4))
        self.s, self.qu, self.pu = (np.zeros((B, d1)) for _ in range(3))
        self.t, self.pv, self.qv = (np.zeros((B, d2)) for _ in range(3))
        self.xx, self.yy, self.xy = np.zeros((B, d1, d1)), np.zeros((B, d2, d2)), np.zeros((B, d1, d2))

    @property
    def dx(self) -> int:
        return self.cx.size

    @property
    def dy(self) -> int:
        return self.cy.size

    @property
    def n_units(self) -> int:
        return self.n.size

    @staticmethod
    def nbytes_per_unit(d1: int, d2: int) -> int:
        """Memory one unit needs, in bytes (8·(d1+d2)² plus vectors)."""
        return 8 * ((d1 + d2) ** 2 + 3 * (d1 + d2) + 4)

    def check_widths(self, d1: int, d2: int) -> None:
        if (d1, d2) != (self.dx, self.dy):
            raise ValueError(
                f"Block widths ({d1}, {d2}) differ from the first block's ({self.dx}, {self.dy}); "
                "feed the same hooks to one accumulator."
            )

    def add_rows(self, unit: int, X: np.ndarray, Y: np.ndarray) -> None:
        """Add rows X: (m, d1), Y: (m, d2) (any float dtype) to unit ``unit``; O(m·(d1+d2)²)."""
        U = np.subtract(X, self.cx, dtype=np.float64)
        V = np.subtract(Y, self.cy, dtype=np.float64)
        p, q = np.einsum("ij,ij->i", U, U), np.einsum("ij,ij->i", V, V)
        self.n[unit] += len(U)
        self.s[unit] += U.sum(axis=0)
        self.t[unit] += V.sum(axis=0)
        self.xx[unit] += U.T @ U
        self.yy[unit] += V.T @ V
        self.xy[unit] += U.T @ V
        self.pp[unit] += p @ p
        self.qq[unit] += q @ q
        self.pq[unit] += p @ q
        self.pu[unit] += p @ U
        self.qu[unit] += q @ U
        self.pv[unit] += p @ V
        self.qv[unit] += q @ V

    def add(self, other: PairMoments) -> None:
        """Add ``other``'s moments unit by unit; both must share centres and unit count."""
        if not (np.array_equal(self.cx, other.cx) and np.array_equal(self.cy, other.cy)):
            raise ValueError("Moments about different centres cannot be added; recentre one first.")
        for name in (*_SCALAR_FIELDS, *_VECTOR_FIELDS, "xx", "yy", "xy"):
            getattr(self, name).__iadd__(getattr(other, name))

    def copy(self) -> PairMoments:
        return copy.deepcopy(self)

    def recentred(self, cx: np.ndarray, cy: np.ndarray) -> PairMoments:
        """The same rows' moments about new centres (u' = u + δ with δ = old centre - new centre).

        Expanding p' = p + 2δᵀu + ‖δ‖² gives every new moment from the old ones; exact, O(B·(d1+d2)²).
        """
        out = PairMoments(self.n_units, cx, cy)
        dx, dy = self.cx - out.cx, self.cy - out.cy
        Dx, Dy, n = dx @ dx, dy @ dy, self.n
        tr_x, tr_y = np.trace(self.xx, axis1=1, axis2=2), np.trace(self.yy, axis1=1, axis2=2)
        xy_dy, xyT_dx = self.xy @ dy, np.einsum("bij,i->bj", self.xy, dx)
        ds, dt = self.s @ dx, self.t @ dy

        def norm_product(pq, dy_pv, dx_qu, cross, tr_p, tr_q, dx_s, dy_t, Dp, Dq):
            # Σ (p + 2δxᵀu + Dx)(q + 2δyᵀv + Dy), expanded term by term
            return (pq + 2 * dy_pv + Dq * tr_p + 2 * dx_qu + 4 * cross + 2 * Dq * dx_s
                    + Dp * tr_q + 2 * Dp * dy_t + n * Dp * Dq)

        dx_pu, dy_qv = self.pu @ dx, self.qv @ dy
        out.pq = norm_product(self.pq, self.pv @ dy, self.qu @ dx, xy_dy @ dx, tr_x, tr_y, ds, dt, Dx, Dy)
        out.pp = norm_product(self.pp, dx_pu, dx_pu, np.einsum("bij,i,j->b", self.xx, dx, dx),
                              tr_x, tr_x, ds, ds, Dx, Dx)
        out.qq = norm_product(self.qq, dy_qv, dy_qv, np.einsum("bij,i,j->b", self.yy, dy, dy),
                              tr_y, tr_y, dt, dt, Dy, Dy)

        def norm_vector(pw, tr_p, cross_dp, dp_sp, Dp, sw, dw):
            # Σ p'(w + δw) = Σpw + tr·δw + 2·(Σ w uᵀ)δp + 2(δpᵀs_p)δw + Dp·s_w + n·Dp·δw
            return pw + (tr_p + 2 * dp_sp + n * Dp)[:, None] * dw + 2 * cross_dp + Dp * sw

        out.pu = norm_vector(self.pu, tr_x, self.xx @ dx, ds, Dx, self.s, dx)
        out.pv = norm_vector(self.pv, tr_x, xyT_dx, ds, Dx, self.t, dy)
        out.qu = norm_vector(self.qu, tr_y, xy_dy, dt, Dy, self.s, dx)
        out.qv = norm_vector(self.qv, tr_y, self.yy @ dy, dt, Dy, self.t, dy)
        out.xy = self.xy + self.s[:, :, None] * dy + dx[:, None] * self.t[:, None, :] \
            + n[:, None, None] * np.outer(dx, dy)
        out.xx = self.xx + self.s[:, :, None] * dx + dx[:, None] * self.s[:, None, :] \
            + n[:, None, None] * np.outer(dx, dx)
        out.yy = self.yy + self.t[:, :, None] * dy + dy[:, None] * self.t[:, None, :] \
            + n[:, None, None] * np.outer(dy, dy)
        out.n = n.copy()
        out.s, out.t = self.s + n[:, None] * dx, self.t + n[:, None] * dy
        return out

    def weighted_sums(self, W: np.ndarray, chunk: int = 256) -> WeightedSums:
        """Power sums of the multisets Σ_b W[r, b]·unit_b, for each replicate r.

        W : (R, B) non-negative weights (bootstrap counts; a row of ones is the full sample).
        Cost: O(B²·(d1+d2)²) once, then O(R·B³) for the cubic terms, processed ``chunk`` rows at a time.
        """
        W = np.asarray(W, dtype=np.float64)
        Fxy, Fxx, Fyy = (m.reshape(self.n_units, -1) for m in (self.xy, self.xx, self.yy))
        parts = []
        for lo in range(0, len(W), chunk):
            w = W[lo:lo + chunk]
            s, t = w @ self.s, w @ self.t
            tr_x, tr_y = w @ np.trace(self.xx, axis1=1, axis2=2), w @ np.trace(self.yy, axis1=1, axis2=2)
            n, ss, tt = w @ self.n, np.einsum("ri,ri->r", s, s), np.einsum("ri,ri->r", t, t)
            parts.append(WeightedSums(
                n=n, ss=ss, tt=tt,
                xy2=_quadratic(w, Fxy), xx2=_quadratic(w, Fxx), yy2=_quadratic(w, Fyy),
                s_xy_t=_cubic(w, self.s, self.xy, self.t), s_xx_s=_cubic(w, self.s, self.xx, self.s),
                t_yy_t=_cubic(w, self.t, self.yy, self.t), tr_x=tr_x, tr_y=tr_y,
                pp=w @ self.pp, qq=w @ self.qq, pq=w @ self.pq,
                s_pu=np.einsum("ri,ri->r", s, w @ self.pu), s_qu=np.einsum("ri,ri->r", s, w @ self.qu),
                t_pv=np.einsum("ri,ri->r", t, w @ self.pv), t_qv=np.einsum("ri,ri->r", t, w @ self.qv),
                raw_x=tr_x + 2 * s @ self.cx + n * (self.cx @ self.cx),
                raw_y=tr_y + 2 * t @ self.cy + n * (self.cy @ self.cy),
            ))
        return WeightedSums(**{k: np.concatenate([getattr(p, k) for p in parts])
                               for k in WeightedSums.__dataclass_fields__})


def bootstrap_weights(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) resampling counts: each replicate draws n_units units with replacement."""
    check_positive_int(n_boot, "n_boot")
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)


def percentile_interval(replicates: np.ndarray, ci: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of the finite bootstrap replicates at level ``ci``."""
    check_probability(ci, "ci")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def unit_of_sequence(n_sequences: int, n_units: int) -> np.ndarray:
    """Assign sequences to ``n_units`` groups of consecutive sequences (equal sequence counts ±1).

    Returns (n_sequences,) non-decreasing int unit ids covering 0..min(n_units, n_sequences)-1.  Grouping
    consecutive sequences keeps each unit a contiguous run of rows, so a block of rows splits into a few
    runs and a unit's rows stay together as the block bootstrap requires.
    """
    n_units = min(check_positive_int(n_units, "n_units"), n_sequences)
    return np.arange(n_sequences) * n_units // n_sequences


def permutation_pvalue(Kc: np.ndarray, Lc: np.ndarray, groups: np.ndarray, n_perm: int,
                       rng: np.random.Generator) -> float:
    """One-sided permutation p-value for ⟨Kc, Lc⟩ being larger than chance.

    Kc, Lc : (m, m) centred (biased: HKH, or U-centred) Gram matrices of the same rows; centring commutes
        with a simultaneous row/column permutation, so the denominators of CKA stay fixed and only the
        cross term needs recomputing, O(m²) per permutation.
    groups : (n_groups, length) row indices; whole groups (sequences) of the L side are permuted.
    Returns (1 + #{null >= observed}) / (1 + n_perm), never 0.
    """
    observed = np.vdot(Kc, Lc)
    groups = np.asarray(groups)
    exceed = 0
    for _ in range(check_positive_int(n_perm, "n_perm")):
        perm = groups[rng.permutation(len(groups))].ravel()
        exceed += np.vdot(Kc, Lc[np.ix_(perm, perm)]) >= observed
    return (1.0 + exceed) / (1.0 + n_perm)
