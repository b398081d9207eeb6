"""Per-head CKA: column slices of ``blocks.{l}.attn.hook_z`` compared head by head.

``attn.hook_z`` holds the concatenated per-head attention outputs before the output projection, so
head h of layer l is columns h·head_dim : (h+1)·head_dim.  Each head becomes one
:class:`psiloscope.stores.Target`, and all heads of a layer share one streaming pass over the hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from activations import Store, hook_name, parse_hook
from psiloscope.stores import Target, compare_stores

__all__ = ["head_cka", "head_matrix", "head_targets"]


def _head_layout(store: Store, hook: str) -> tuple[int, int]:
    attrs = store.hook_attrs(hook)
    if "n_heads" not in attrs or "head_dim" not in attrs:
        raise ValueError(f"{hook} in {store.path} has no n_heads/head_dim attributes; write them with "
                         "StoreWriter(hook_attrs={hook: {'n_heads': ..., 'head_dim': ...}}).")
    n_heads, head_dim = int(attrs["n_heads"]), int(attrs["head_dim"])
    if n_heads * head_dim != store.width(hook):
        raise ValueError(f"{hook}: n_heads × head_dim = {n_heads} × {head_dim} != width {store.width(hook)}; "
                         "the store's head attributes are inconsistent.")
    return n_heads, head_dim


def head_targets(store_a: Store, store_b: Store, layers: Iterable[int] | None = None) -> list[Target]:
    """One Target per (layer, head) of the ``attn.hook_z`` hooks present in both stores.

    ``layers`` restricts the layers (default: every layer with attn.hook_z in both stores).  Both stores
    must agree on n_heads and head_dim per layer.
    """
    common = {parse_hook(h)[0] for h in store_a.hooks if parse_hook(h)[1] == "attn_z"} & {
        parse_hook(h)[0] for h in store_b.hooks if parse_hook(h)[1] == "attn_z"}
    wanted = sorted(common) if layers is None else list(layers)
    missing = sorted(set(wanted) - common)
    if missing or not wanted:
        raise ValueError(f"Layers {missing or 'none'} have no attn.hook_z in both stores (available: "
                         f"{sorted(common)}); dump attn_z hooks or pick other layers.")
    targets = []
    for layer in wanted:
        hook = hook_name(layer, "attn_z")
        layout = _head_layout(store_a, hook)
        if _head_layout(store_b, hook) != layout:
            raise ValueError(f"{hook}: the stores disagree on (n_heads, head_dim): {layout} vs "
                             f"{_head_layout(store_b, hook)}; per-head CKA needs the same head layout.")
        n_heads, head_dim = layout
        targets += [Target(f"L{layer}H{head}", hook, hook, slice(head * head_dim, (head + 1) * head_dim),
                           layer=layer, head=head) for head in range(n_heads)]
    return targets


def head_cka(store_a: Store, store_b: Store, layers: Iterable[int] | None = None,
             **kw: Any) -> list[dict[str, Any]]:
    """Linear CKA per (layer, head) between two paired stores.

    Keyword arguments go to :func:`psiloscope.stores.compare_stores` (measures, n_boot, ci, n_perm,
    seed, block_rows, progress, ...).  Returns its tidy rows with ``layer`` and ``head`` filled in.
    Cost per layer: one pass over attn.hook_z and O(n·n_heads·(2·head_dim)²).
    """
    return compare_stores(store_a, store_b, head_targets(store_a, store_b, layers), **kw)


def head_matrix(rows: Sequence[dict[str, Any]], measure: str = "debiased_cka",
                field: str = "value") -> tuple[list[int], np.ndarray]:
    """Arrange per-head rows of one measure into (layers, matrix: (n_layers, n_heads)) of ``field``.

    Raises ValueError rather than leaving NaN holes when a layer lacks some head.
    """
    picked = [r for r in rows if r["measure"] == measure and r["head"] is not None]
    if not picked:
        raise ValueError(f"No per-head rows for measure {measure!r}; run head_cka with that measure.")
    layers = sorted({r["layer"] for r in picked})
    n_heads = 1 + max(r["head"] for r in picked)
    matrix = np.full((len(layers), n_heads), np.nan)
    for r in picked:
        matrix[layers.index(r["layer"]), r["head"]] = r[field]
    if np.isnan(matrix).any():
        raise ValueError("Layers have different head counts or missing heads; a layer×head matrix would "
                         "contain holes. Build it per layer instead.")
    return layers, matrix
