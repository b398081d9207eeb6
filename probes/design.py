"""Which rows a probe sees, with which labels, in which fold: decided from the tokens alone.

A design depends only on the token set and the seed, never on the activations, so two stores of the
same tokens (frozen and adapted model) are probed on exactly the same rows and folds: the comparison
is paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from probes.labels import task_targets, top_k_classes


@dataclass(frozen=True)
class ProbeDesign:
    """Rows, labels and folds of one probe task.

    Attributes
    ----------
    task : the probe task (see :data:`probes.labels.TASKS`).
    sequence_ids : (n_sampled,) sampled sequences, increasing.
    read_ranges : ((start, stop), ...) store row ranges covering the sampled sequences, adjacent ones merged.
    block_rows : (n_rows,) index of each kept row inside the concatenation of ``read_ranges``.
    rows : (n_rows,) store row index of each kept row, increasing.
    labels : (n_rows,) class index in ``0..n_classes-1``.
    classes : (n_classes,) raw target value (token id or position bucket) of each class index.
    groups : (n_rows,) sequence id of each kept row.
    folds : (n_rows,) index of the fold in which the row is held out.
    n_folds : number of cross-validation folds.
    shuffled_labels : whether labels were permuted across rows (a control that must score at chance).
    """

    task: str
    sequence_ids: np.ndarray
    read_ranges: tuple[tuple[int, int], ...]
    block_rows: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    groups: np.ndarray
    folds: np.ndarray
    n_folds: int
    shuffled_labels: bool

    @property
    def n_rows(self) -> int:
        return int(self.rows.size)

    @property
    def n_sequences(self) -> int:
        """Sequences that contribute at least one kept row."""
        return int(np.unique(self.groups).size)

    @property
    def n_classes(self) -> int:
        return int(self.classes.size)


def sample_sequences(seq_offsets: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """Whole sequences, in random order, while their rows fit into ``max_rows``; returned sorted.

    Sequences longer than the remaining budget are skipped, so the total never exceeds ``max_rows``.
    Empty sequences are never chosen.
    """
    lengths = np.diff(np.asarray(seq_offsets, dtype=np.int64))
    candidates = np.flatnonzero(lengths > 0)
    if max_rows is None or lengths.sum() <= max_rows:
        return candidates
    chosen, budget = [], int(max_rows)
    for seq in rng.permutation(candidates):
        if lengths[seq] <= budget:
            chosen.append(seq)
            budget -= int(lengths[seq])
            if budget == 0:
                break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _merged_ranges(seq_offsets: np.ndarray, sequence_ids: np.ndarray) -> tuple[tuple[int, int], ...]:
    ranges: list[list[int]] = []
    for seq in sequence_ids:
        start, stop = int(seq_offsets[seq]), int(seq_offsets[seq + 1])
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = stop
        else:
            ranges.append([start, stop])
    return tuple((a, b) for a, b in ranges)


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row; every sequence lies in exactly one fold, class proportions kept similar."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(labels.size, -1, dtype=np.int64)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(labels.size), labels, groups)):
        folds[test] = fold
    sizes = np.bincount(folds, minlength=n_folds)
    if np.any(sizes == 0):
        raise ValueError(
            f"grouping {np.unique(groups).size} sequences into {n_folds} folds left a fold empty; "
            "lower n_folds or raise max_rows"
        )
    return folds


def build_design(
    tokens: np.ndarray,
    seq_offsets: np.ndarray,
    task: str,
    top_k: int = 50,
    n_folds: int = 5,
    max_rows: int | None = 4000,
    seed: int = 0,
    shuffle_labels: bool = False,
) -> ProbeDesign:
    """Sample sequences, label their rows, keep the top-K classes, assign grouped folds.

    Parameters
    ----------
    tokens : (n_tokens,) int token ids of the store.
    seq_offsets : (n_sequences + 1,) int row offsets of the sequences.
    task : probe task, one of :data:`probes.labels.TASKS`.
    top_k : keep rows whose target is among the ``top_k`` most frequent targets of the sampled rows.
    n_folds : cross-validation folds (>= 2); every kept class needs at least this many rows.
    max_rows : cap on the rows read per hook, filled with whole sequences chosen at random
        (``None`` = all sequences).
    seed : seeds the sequence sample, the fold assignment and the label shuffle.
    shuffle_labels : permute the labels across the kept rows (a control: accuracy must fall to chance).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows!r}")
    offsets = np.asarray(seq_offsets, dtype=np.int64)
    targets, valid = task_targets(tokens, offsets, task)
    rng = np.random.default_rng(seed)
    sequence_ids = sample_sequences(offsets, max_rows, rng)
    if sequence_ids.size < n_folds:
        raise ValueError(
            f"only {sequence_ids.size} whole sequences fit (max_rows={max_rows}, store holds "
            f"{offsets.size - 1}); grouped cross-validation needs at least n_folds={n_folds}: "
            "lower n_folds or raise max_rows"
        )
    read_ranges = _merged_ranges(offsets, sequence_ids)
    block = np.concatenate([np.arange(a, b) for a, b in read_ranges])
    candidate = np.flatnonzero(valid[block])
    if candidate.size == 0:
        raise ValueError(f"no sampled row has a {task!r} target (sequences too short for this task)")
    classes = top_k_classes(targets[block[candidate]], top_k, n_folds)
    keep = candidate[np.isin(targets[block[candidate]], classes)]
    rows = block[keep]
    # classes is ordered by frequency; map each raw target to its class index through a sorted view.
    order = np.argsort(classes)
    labels = order[np.searchsorted(classes[order], targets[rows])]
    if shuffle_labels:
        labels = rng.permutation(labels)
    groups = np.searchsorted(offsets, rows, side="right") - 1
    if np.unique(groups).size < n_folds:
        raise ValueError(
            f"the kept rows come from {np.unique(groups).size} sequences, fewer than n_folds={n_folds}; "
            "lower n_folds, raise top_k or raise max_rows"
        )
    return ProbeDesign(
        task=task,
        sequence_ids=sequence_ids,
        read_ranges=read_ranges,
        block_rows=keep,
        rows=rows,
        labels=labels,
        classes=classes,
        groups=groups,
        folds=_grouped_folds(labels, groups, n_folds, seed),
        n_folds=int(n_folds),
        shuffled_labels=bool(shuffle_labels),
    )
