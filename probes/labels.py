"""Probe targets built from the stored tokens: which token, which earlier token, which position.

Every row of a store is one token in one sequence; ``seq_offsets`` (n_sequences + 1,) marks where each
sequence starts. A target that would need a token from another sequence (the next token after a
sequence's last row, the token ``d`` back before its ``d``-th row) marks the row invalid rather than
reaching across the boundary.
"""

from __future__ import annotations

import numpy as np

MAX_PREV_DISTANCE = 5

#: Probe tasks: the current token, the next token, the token ``d`` positions back, the position bucket.
TASKS: tuple[str, ...] = (
    "current",
    "next",
    *(f"prev{d}" for d in range(1, MAX_PREV_DISTANCE + 1)),
    "position",
)


def positions_in_sequence(seq_offsets: np.ndarray) -> np.ndarray:
    """Zero-based position of every row inside its own sequence.

    Parameters
    ----------
    seq_offsets : (n_sequences + 1,) int, starting at 0, non-decreasing.

    Returns
    -------
    (n_tokens,) int64 where ``n_tokens = seq_offsets[-1]``.
    """
    offsets = np.asarray(seq_offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    starts = np.repeat(offsets[:-1], lengths)
    return np.arange(offsets[-1], dtype=np.int64) - starts


def position_bucket(positions: np.ndarray) -> np.ndarray:
    """Log2 bucket of a position: 0 -> 0, 1-2 -> 1, 3-6 -> 2, 7-14 -> 3, ...

    ``floor(log2(position + 1))``: early positions, where attention has little context, get their own
    classes while late positions share wide buckets.
    """
    return np.floor(np.log2(np.asarray(positions, dtype=np.float64) + 1)).astype(np.int64)


def task_targets(tokens: np.ndarray, seq_offsets: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw probe target of every row and whether that row has one.

    Parameters
    ----------
    tokens : (n_tokens,) int token ids.
    seq_offsets : (n_sequences + 1,) int row offsets of the sequences.
    task : one of :data:`TASKS`.

    Returns
    -------
    targets : (n_tokens,) int64; meaningful only where ``valid``.
    valid : (n_tokens,) bool; False where the target lies outside the row's sequence.
    """
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; choose one of {', '.join(TASKS)}")
    tokens = np.asarray(tokens, dtype=np.int64)
    offsets = np.asarray(seq_offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != tokens.size:
        raise ValueError(
            f"seq_offsets must run from 0 to n_tokens={tokens.size}, got {offsets[:1]}...{offsets[-1:]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise ValueError("seq_offsets must be non-decreasing")
    positions = positions_in_sequence(offsets)
    if task == "current":
        return tokens.copy(), np.ones(tokens.size, dtype=bool)
    if task == "position":
        return position_bucket(positions), np.ones(tokens.size, dtype=bool)
    lengths = np.repeat(np.diff(offsets), np.diff(offsets))
    shift = -1 if task == "next" else int(task.removeprefix("prev"))
    # Target of row t is tokens[t - shift]; valid when that index stays inside the same sequence.
    valid = (positions >= shift) & (positions - shift < lengths)
    targets = np.zeros(tokens.size, dtype=np.int64)
    rows = np.flatnonzero(valid)
    targets[rows] = tokens[rows - shift]
    return targets, valid


def top_k_classes(targets: np.ndarray, k: int, min_count: int) -> np.ndarray:
    """The (at most) ``k`` most frequent target values; each must occur at least ``min_count`` times.

    Fewer than ``k`` classes are returned when fewer distinct values exist (position buckets, say).
    Ties in frequency are broken by the smaller value so the choice is deterministic.

    Parameters
    ----------
    targets : (n_rows,) int targets of the candidate rows.
    k : largest number of classes wanted (>= 2).
    min_count : fewest rows a kept class needs (the number of folds, so every fold can hold one).

    Returns
    -------
    (n_classes,) int64 class values, most frequent first, ``2 <= n_classes <= k``.
    """
    if k < 2:
        raise ValueError(f"top_k must be at least 2 for a classification probe, got {k}")
    values, counts = np.unique(np.asarray(targets, dtype=np.int64), return_counts=True)
    if values.size < 2:
        raise ValueError(f"the labelled rows hold {values.size} distinct class(es); a probe needs at least 2")
    order = np.lexsort((values, -counts))
    values, counts = values[order][:k], counts[order][:k]
    if counts[-1] < min_count:
        supported = int(np.sum(counts >= min_count))
        advice = f"pass top_k<={supported} or raise max_rows" if supported >= 2 else "raise max_rows"
        raise ValueError(
            f"{values.size} classes requested but only {supported} have at least {min_count} rows "
            f"(one per fold) among the {targets.size} labelled rows; {advice}"
        )
    return values
