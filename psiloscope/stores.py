"""Store-level comparison: streaming linear CKA with sequence-bootstrap intervals and a permutation null.

One pass over the paired rows of two activation stores (never a whole hook in memory) fills, for every
*target* and every resampling *unit* (a group of consecutive whole sequences), the moments of
:class:`psiloscope.resample.PairMoments` about the stores' float64 running means.  The point estimate
is the sum over units; a bootstrap replicate re-weights the units by their resampling counts, so the
1000 replicates cost O(B³) each once the O(B²·(d1+d2)²) unit inner products exist.

A target is ``(name, hook_a, hook_b, columns)``: a column selection (slice, index or boolean array)
turns the same machinery into per-head CKA (column slices of ``attn.hook_z``) or outlier-robust CKA
(columns without the massive dimensions).  See :class:`Target`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activations import Store, StoreMismatchError, paired_blocks, parse_hook, sort_hooks
from psiloscope._checks import check_positive_int, check_probability
from psiloscope.cka import MinibatchCKA, centre_gram, cka_from_sums, hsic_from_sums
from psiloscope.resample import (
    PairMoments,
    bootstrap_weights,
    percentile_interval,
    permutation_pvalue,
    unit_of_sequence,
)

__all__ = ["MEASURES", "Target", "cka_matrix_stores", "compare_stores", "default_targets"]

#: Measures compare_stores computes: biased and debiased linear CKA.
MEASURES = ("linear_cka", "debiased_cka")

Selection = slice | Sequence[int] | np.ndarray | None


@dataclass(frozen=True)
class Target:
    """What to compare: ``columns`` of ``hook_a`` in store A against ``columns_b`` (default: the same
    selection) of ``hook_b`` in store B.  ``layer`` defaults to the layer parsed from ``hook_a``."""

    name: str
    hook_a: str
    hook_b: str
    columns: Selection = None
    columns_b: Selection = None
    layer: int | None = None
    head: int | None = None

    @classmethod
    def coerce(cls, target: Target | tuple) -> Target:
        """Accept a Target or a tuple (name, hook_a, hook_b[, columns])."""
        if isinstance(target, Target):
            return target
        if not isinstance(target, tuple) or not 3 <= len(target) <= 4:
            raise ValueError(f"A target is Target(...) or (name, hook_a, hook_b[, columns]); got {target!r}.")
        return cls(*target)

    def resolved_layer(self) -> int | None:
        if self.layer is not None:
            return self.layer
        try:
            return parse_hook(self.hook_a)[0]
        except ValueError:
            return None


def default_targets(store_a: Store, store_b: Store) -> list[Target]:
    """One whole-hook target per hook present in both stores, in forward-pass order."""
    common = sort_hooks(set(store_a.hooks) & set(store_b.hooks))
    if not common:
        raise ValueError(f"The stores share no hook (A has {store_a.hooks}, B has {store_b.hooks}); "
                         "pass explicit targets=(name, hook_a, hook_b, columns).")
    return [Target(hook, hook, hook) for hook in common]


def _column_index(selection: Selection, width: int, what: str) -> np.ndarray:
    """Integer column indices of ``selection`` within ``width`` columns, validated and non-empty."""
    if selection is None:
        return np.arange(width)
    index = np.arange(width)[selection]
    if index.ndim != 1 or index.size == 0:
        raise ValueError(f"The column selection of {what} picks no columns (width {width}); fix the target.")
    return index


def _units_for(stats_bytes: int, n_sequences: int, n_units: int | None, max_stats_bytes: int) -> int:
    if n_units is not None:
        return min(check_positive_int(n_units, "n_units"), n_sequences)
    return max(1, min(n_sequences, 64, max_stats_bytes // max(stats_bytes, 1)))


def _progress_callback(progress: bool | Callable[[int, int], None] | None, total: int):
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="row", desc="compare", leave=False)
    return lambda done, _total: bar.update(done - bar.n), bar


def _permutation_pvalues(store_a: Store, store_b: Store, target: Target, cols: tuple[np.ndarray, np.ndarray],
                         measures: Sequence[str], n_perm: int, rng: np.random.Generator,
                         max_rows: int) -> dict[str, float]:
    """Permutation p-values on a subsample of whole sequences (Gram space, O(m²) per permutation).

    Up to 64 sequences are drawn and cut to a common length ℓ (at most ``max_rows`` rows in all); the
    sequences of side B are permuted among themselves, which keeps within-sequence dependence intact.
    """
    if store_a.n_sequences < 5:
        raise ValueError(f"A permutation test needs at least 5 sequences; the stores hold "
                         f"{store_a.n_sequences}. Use n_perm=0 or dump more sequences.")
    offsets = store_a.seq_offsets
    chosen = np.sort(rng.choice(store_a.n_sequences, size=min(store_a.n_sequences, 64), replace=False))
    length = int(max(1, min(np.diff(offsets)[chosen].min(), max_rows // len(chosen))))
    X = np.concatenate([store_a.read(target.hook_a, int(offsets[s]), int(offsets[s]) + length)
                        for s in chosen])[:, cols[0]].astype(np.float64)
    Y = np.concatenate([store_b.read(target.hook_b, int(offsets[s]), int(offsets[s]) + length)
                        for s in chosen])[:, cols[1]].astype(np.float64)
    X -= X.mean(axis=0)
    Y -= Y.mean(axis=0)
    groups = np.arange(len(X)).reshape(len(chosen), length)
    return {measure: permutation_pvalue(centre_gram(X @ X.T, unbiased=measure == "debiased_cka"),
                                        centre_gram(Y @ Y.T, unbiased=measure == "debiased_cka"),
                                        groups, n_perm, rng)
            for measure in measures}


def _bootstrap_values(moments: PairMoments, weights: np.ndarray, debiased: bool, name: str) -> np.ndarray:
    """CKA of every bootstrap replicate; replicates with an undefined value are dropped with a warning."""
    hxy, hxx, hyy = hsic_from_sums(moments.weighted_sums(weights), debiased)
    valid = (hxx > 0) & (hyy > 0)
    if not valid.all():
        warnings.warn(f"{name}: {int((~valid).sum())} of {len(valid)} bootstrap replicates had no variance "
                      "on one side and were dropped from the interval.", RuntimeWarning, stacklevel=3)
    return hxy[valid] / np.sqrt(hxx[valid] * hyy[valid])


def compare_stores(store_a: Store, store_b: Store, targets: Iterable[Target | tuple] | None = None, *,
                   measures: Sequence[str] = MEASURES, n_boot: int = 1000, ci: float = 0.95, n_perm: int = 0,
                   seed: int = 0, block_rows: int | None = None,
                   progress: bool | Callable[[int, int], None] | None = None,
                   n_units: int | None = None, max_stats_bytes: int = 256 * 2**20,
                   perm_rows: int = 2048) -> list[dict[str, Any]]:
    """Linear CKA of paired activation stores, per target, with sequence-bootstrap intervals.

    Parameters
    ----------
    store_a, store_b : stores over the same tokens (``tokens_sha256`` must match, else StoreMismatchError).
    targets : Target objects or tuples (name, hook_a, hook_b[, columns]); default every common hook.
    measures : subset of ``MEASURES``.
    n_boot, ci : bootstrap replicates (0 disables the interval) and interval level.  Units of resampling
        are ``n_units`` groups of consecutive whole sequences (default: as many as fit ``max_stats_bytes``
        for one hook pair, at most 64 and at most one per sequence).
    n_perm : permutations for the one-sided p-value ``p_perm`` (0: not computed, value None); computed on a
        subsample of at most ``perm_rows`` rows of whole sequences, see :func:`_permutation_pvalues`.
    block_rows : rows per read (default: the store's chunk-aligned block).
    progress : True for a progress bar, or a callable(rows_done, rows_total).

    Returns
    -------
    list of JSON-serialisable dicts, one per (target, measure): target, hook, layer, head, measure, value,
    ci_low, ci_high, n_tokens, n_sequences, n_units, p_perm.

    Cost: one read of each target's hooks and O(n·(d1+d2)²) per target, plus O(n_boot·B³).
    """
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown or not measures:
        raise ValueError(f"Unknown measures {unknown or list(measures)}; choose from {list(MEASURES)}.")
    if n_boot:
        check_positive_int(n_boot, "n_boot")
        check_probability(ci, "ci")
    if store_a.tokens_sha256 != store_b.tokens_sha256:
        raise StoreMismatchError(f"{store_a.path} and {store_b.path} hold different token sets "
                                 "(tokens_sha256 differ); dump both models over the same tokens.")
    targets = default_targets(store_a, store_b) if targets is None else [Target.coerce(t) for t in targets]
    if not targets:
        raise ValueError("No targets to compare; pass at least one or None for every common hook.")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[Target]] = {}
    for target in targets:
        groups.setdefault((target.hook_a, target.hook_b), []).append(target)
    report, bar = _progress_callback(progress, len(groups) * store_a.n_tokens)
    rows, done = [], 0
    for (hook_a, hook_b), members in groups.items():
        stats_a, stats_b = store_a.stats(hook_a), store_b.stats(hook_b)
        centre_a, centre_b = stats_a["sum"] / stats_a["count"], stats_b["sum"] / stats_b["count"]
        cols = [(_column_index(t.columns, store_a.width(hook_a), f"{t.name} (A)"),
                 _column_index(t.columns if t.columns_b is None else t.columns_b, store_b.width(hook_b),
                               f"{t.name} (B)")) for t in members]
        unit_bytes = sum(PairMoments.nbytes_per_unit(a.size, b.size) for a, b in cols)
        B = _units_for(unit_bytes, store_a.n_sequences, n_units, max_stats_bytes)
        if n_boot and B < 10:
            warnings.warn(f"{hook_a}: only {B} resampling units (sequence groups); bootstrap intervals "
                          "will be coarse. Dump more sequences or raise max_stats_bytes.", RuntimeWarning,
                          stacklevel=2)
        unit_of_seq = unit_of_sequence(store_a.n_sequences, B)
        moments = [PairMoments(B, centre_a[a], centre_b[b]) for a, b in cols]
        for block in paired_blocks(store_a, store_b, [hook_a], [hook_b], block_rows):
            X, Y = block.a[hook_a], block.b[hook_b]
            units = unit_of_seq[block.seq_ids]
            bounds = [0, *(np.flatnonzero(np.diff(units)) + 1), len(units)]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                for moment, (a, b) in zip(moments, cols, strict=True):
                    moment.add_rows(int(units[lo]), X[lo:hi, a], Y[lo:hi, b])
            done += block.stop - block.start
            if report:
                report(done, len(groups) * store_a.n_tokens)
        weights = bootstrap_weights(B, n_boot, rng) if n_boot else None
        for target, moment, col in zip(members, moments, cols, strict=True):
            sums = moment.weighted_sums(np.ones((1, B)))
            p_values = (_permutation_pvalues(store_a, store_b, target, col, measures, n_perm, rng, perm_rows)
                        if n_perm else {})
            for measure in measures:
                debiased = measure == "debiased_cka"
                low = high = None
                if weights is not None:
                    low, high = percentile_interval(
                        _bootstrap_values(moment, weights, debiased, target.name), ci)
                rows.append({
                    "target": target.name, "hook": target.hook_a, "layer": target.resolved_layer(),
                    "head": target.head, "measure": measure,
                    "value": cka_from_sums(sums, debiased=debiased), "ci_low": low, "ci_high": high,
                    "n_tokens": int(store_a.n_tokens), "n_sequences": int(store_a.n_sequences),
                    "n_units": int(B), "p_perm": p_values.get(measure),
                })
    if bar is not None:
        bar.close()
    return rows


def cka_matrix_stores(store_a: Store, hooks_a: Sequence[str], store_b: Store, hooks_b: Sequence[str], *,
                      batch_size: int = 256, debiased: bool = True, seed: int = 0,
                      block_rows: int | None = None) -> np.ndarray:
    """(len(hooks_a), len(hooks_b)) minibatch CKA matrix streamed from two paired stores.

    Rows are shuffled within each block of ``block_rows`` rows (default 16·batch_size, so that a batch
    mixes many sequences) and cut into batches; see :class:`psiloscope.cka.MinibatchCKA`.  With one block
    holding every row this equals ``cka_matrix`` on the arrays with the same seed.
    """
    hooks_a, hooks_b = list(hooks_a), list(hooks_b)
    accumulator = MinibatchCKA(batch_size, debiased, seed)
    rows = 16 * batch_size if block_rows is None else block_rows
    for block in paired_blocks(store_a, store_b, hooks_a, hooks_b, rows):
        accumulator.update([block.a[h] for h in hooks_a], [block.b[h] for h in hooks_b])
    return accumulator.result()
