"""Iterating over stores in row blocks: one store (``Store.iter_blocks``) or two paired stores."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .layout import StoreMismatchError

if TYPE_CHECKING:
    from .reader import Store

# Default blocks hold at least this many rows (rounded up to a multiple of every chunk's rows).
MIN_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of some hooks of one store; ``seq_ids``: (rows,) sequence index of every row;
    ``arrays``: hook -> float32 (rows, width)."""

    start: int
    stop: int
    seq_ids: np.ndarray
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class PairedBlock:
    """Rows ``start:stop`` of two stores over the same tokens; ``a``/``b``: hook -> float32 (rows, width)."""

    start: int
    stop: int
    seq_ids: np.ndarray
    a: dict[str, np.ndarray]
    b: dict[str, np.ndarray]


def block_rows_for(selections: list[tuple[Store, list[str]]], block_rows: int | None) -> int:
    if block_rows is not None:
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
        return int(block_rows)
    chunk = math.lcm(*(store.chunk_rows(hook) for store, hooks in selections for hook in hooks))
    return chunk * math.ceil(MIN_BLOCK_ROWS / chunk)


def paired_blocks(
    a: Store,
    b: Store,
    hooks_a: str | Iterable[str],
    hooks_b: str | Iterable[str] | None = None,
    block_rows: int | None = None,
) -> Iterator[PairedBlock]:
    """Yield row-aligned :class:`PairedBlock` s of two stores over the same token set.

    Parameters
    ----------
    a, b : Store
        Stores whose ``tokens_sha256`` must match (same tokens, same sequences, same order).
    hooks_a, hooks_b : str or iterable of str
        Hooks to read from ``a`` and ``b`` (``hooks_b`` defaults to ``hooks_a``).
    block_rows : int, optional
        Rows per block; default aligned to the chunks of every hook read.

    Raises
    ------
    StoreMismatchError
        Immediately (not at the first block) if the token sets differ.
    """
    if a.tokens_sha256 != b.tokens_sha256:
        raise StoreMismatchError(
            f"cannot pair {a.path} (tokens_sha256 {a.tokens_sha256}) with {b.path} (tokens_sha256 "
            f"{b.tokens_sha256}): they hold different token sets; dump both models over the same tokens"
        )
    hooks_a = a.checked_hooks(hooks_a)
    hooks_b = b.checked_hooks(hooks_a if hooks_b is None else hooks_b)
    rows = block_rows_for([(a, hooks_a), (b, hooks_b)], block_rows)

    def blocks() -> Iterator[PairedBlock]:
        ids = a.row_sequence_ids
        for start in range(0, a.n_tokens, rows):
            stop = min(start + rows, a.n_tokens)
            yield PairedBlock(
                start,
                stop,
                ids[start:stop],
                {hook: a.read(hook, start, stop) for hook in hooks_a},
                {hook: b.read(hook, start, stop) for hook in hooks_b},
            )

    return blocks()
