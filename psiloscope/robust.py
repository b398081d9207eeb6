"""Outlier-robust CKA: linear CKA with the "massive" dimensions left out.

Residual streams of language models carry a few dimensions with huge mean or variance (massive
activations, Sun et al. 2024).  Linear CKA weighs directions by variance, so those few dimensions can
decide the whole similarity.  Here they are found from the stores' float64 running statistics (no extra
pass over the rows) and dropped, and CKA of the remaining columns is reported beside the raw value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from activations import Store
from psiloscope._checks import check_positive_int
from psiloscope.stores import Target, compare_stores, default_targets

__all__ = ["massive_dims", "robust_cka", "robust_targets"]

SCORES = ("abs_mean", "variance")
SIDES = ("union", "each")


def massive_dims(store: Store, hook: str, k: int, by: str = "abs_mean") -> np.ndarray:
    """Indices of the ``k`` dimensions of ``hook`` with the largest score, largest first.

    by : "abs_mean" scores |Σx / n| (huge offsets); "variance" scores Σx²/n - (Σx/n)² (huge spread).
    Both come from the store's float64 sums, O(width).
    """
    if by not in SCORES:
        raise ValueError(f"by must be one of {SCORES}; got {by!r}.")
    width = store.width(hook)
    k = check_positive_int(k, "k")
    if k >= width:
        raise ValueError(f"k={k} would drop every dimension of {hook} (width {width}); choose k < {width}.")
    stats = store.stats(hook)
    mean = stats["sum"] / stats["count"]
    score = np.abs(mean) if by == "abs_mean" else np.maximum(stats["sumsq"] / stats["count"] - mean**2, 0.0)
    return np.argsort(-score, kind="stable")[:k]


def robust_targets(store_a: Store, store_b: Store, hooks: Iterable[str] | None = None, *, k: int = 4,
                   by: str = "abs_mean", side: str = "union") -> list[tuple[Target, np.ndarray, np.ndarray]]:
    """(target, dropped_a, dropped_b) for each hook: the raw hook, then the hook without its top-k dims.

    side : "union" drops the union of both stores' top-k dimensions from both sides — the same
        coordinates, which is right when the two models share a residual basis (a model and its adapted
        or fine-tuned version); "each" drops every store's own top-k, for models with unrelated bases.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}; got {side!r}.")
    hooks = [t.hook_a for t in default_targets(store_a, store_b)] if hooks is None else list(hooks)
    out = []
    for hook in hooks:
        top_a, top_b = massive_dims(store_a, hook, k, by), massive_dims(store_b, hook, k, by)
        if side == "union":
            top_a = top_b = np.union1d(top_a, top_b)
        keep_a = np.setdiff1d(np.arange(store_a.width(hook)), top_a)
        keep_b = np.setdiff1d(np.arange(store_b.width(hook)), top_b)
        if keep_a.size == 0 or keep_b.size == 0:
            raise ValueError(f"Dropping the top-{k} dims of {hook} on the union leaves no column; lower k.")
        empty = np.array([], dtype=np.int64)
        out.append((Target(hook, hook, hook), empty, empty))
        out.append((Target(f"{hook} without top-{k} {by} dims", hook, hook, keep_a, keep_b),
                    np.sort(top_a), np.sort(top_b)))
    return out


def robust_cka(store_a: Store, store_b: Store, hooks: Iterable[str] | None = None, *, k: int = 4,
               by: str = "abs_mean", side: str = "union", **kw: Any) -> list[dict[str, Any]]:
    """Raw and massive-dimension-free linear CKA per hook, as tidy rows.

    Keyword arguments go to :func:`psiloscope.stores.compare_stores`.  Each row gains ``variant``
    ("raw" or "robust"), ``dropped_a`` and ``dropped_b`` (lists of dropped column indices).  The raw and
    robust targets of a hook share one streaming pass.
    """
    planned = robust_targets(store_a, store_b, hooks, k=k, by=by, side=side)
    rows = compare_stores(store_a, store_b, [target for target, _, _ in planned], **kw)
    dropped = {target.name: (a, b) for target, a, b in planned}
    for row in rows:
        a, b = dropped[row["target"]]
        row.update(variant="robust" if a.size or b.size else "raw",
                   dropped_a=[int(i) for i in a], dropped_b=[int(i) for i in b])
    return rows
