"""Helpers for the store-comparison tests (no tests here): paired stores with planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activations import Store, StoreWriter


def paired_arrays(seed: int, n_sequences: int, widths: dict[str, int], noise: float = 1.0,
                  seq_len: tuple[int, int] = (8, 24)):
    """Token ids per sequence and, per hook, model-A rows X and model-B rows Y = X·M + noise."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(*seq_len, size=n_sequences)
    tokens = [rng.integers(0, 1000, size=length) for length in lengths]
    n = int(lengths.sum())
    A, B = {}, {}
    for hook, width in widths.items():
        X = rng.normal(size=(n, width)) * np.linspace(2.0, 0.5, width)
        A[hook] = X
        B[hook] = X @ rng.normal(size=(width, width)) / np.sqrt(width) + noise * rng.normal(size=(n, width))
    return tokens, A, B


def write(path: Path, tokens: list[np.ndarray], arrays: dict[str, np.ndarray], dtype: str = "float32",
          hook_attrs: dict | None = None) -> Store:
    """Write one store holding ``arrays`` (rows cut into the sequences of ``tokens``) and open it."""
    writer = StoreWriter(path, hooks={h: a.shape[1] for h, a in arrays.items()}, dtype=dtype,
                         hook_attrs=hook_attrs or {}, chunk_rows=64)
    start = 0
    for seq in tokens:
        writer.append(seq, {h: a[start:start + len(seq)] for h, a in arrays.items()})
        start += len(seq)
    return Store(writer.close())


def stored(store: Store, hook: str) -> np.ndarray:
    """The whole hook as float64, for reference computations on small test stores."""
    return store.read(hook).astype(np.float64)
