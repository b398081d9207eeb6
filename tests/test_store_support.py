"""Helpers shared by the activation-store tests (no tests here): random sequences, writing, comparing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations import StoreWriter, hook_name

HOOKS = {hook_name(0, "resid_pre"): 12, hook_name(0, "attn_z"): 8, hook_name(1, "resid_post"): 12}
ATTN_ATTRS = {hook_name(0, "attn_z"): {"n_heads": 2, "head_dim": 4}}
Sequence = tuple[np.ndarray, dict[str, np.ndarray]]


def make_sequences(
    seed: int,
    n_sequences: int,
    hooks: dict[str, int] = HOOKS,
    max_len: int = 40,
    dtype: Any = np.float32,
    offset: float = 0.0,
) -> list[Sequence]:
    """Random sequences of 1..max_len tokens; activations normal(offset, 3) in ``dtype``."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_sequences):
        length = int(rng.integers(1, max_len + 1))
        tokens = rng.integers(0, 50_000, length)
        acts = {
            hook: (offset + 3 * rng.standard_normal((length, width))).astype(dtype) for hook, width in hooks.items()
        }
        sequences.append((tokens, acts))
    return sequences


def write_store(path: Path, sequences: list[Sequence], hooks: dict[str, int] = HOOKS, **kwargs: Any) -> Path:
    """Write ``sequences`` to a new store at ``path`` with small chunks; returns the final path."""
    kwargs.setdefault("chunk_rows", 16)
    kwargs.setdefault("hook_attrs", {k: v for k, v in ATTN_ATTRS.items() if k in hooks})
    kwargs.setdefault("attrs", {"model_fingerprint": "model-abc", "adapter_fingerprint": "adapter-xyz"})
    kwargs.setdefault("config", {"run": {"lr": 1e-3, "layers": [0, 1]}, "name": "test"})
    with StoreWriter(path, hooks, **kwargs) as writer:
        for tokens, acts in sequences:
            writer.append(tokens, acts)
    return writer.close()


def concat(sequences: list[Sequence], hook: str) -> np.ndarray:
    """All rows of ``hook`` in append order, as float64 (the source values)."""
    return np.concatenate([np.asarray(acts[hook], dtype=np.float64) for _, acts in sequences])


def h5_contents(path: Path) -> dict[str, Any]:
    """Every dataset (dtype, chunks, values) and every attribute of an HDF5 file, for exact comparisons."""
    contents: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        contents["/attrs"] = dict(f.attrs)

        def visit(name: str, item: Any) -> None:
            contents[f"{name}/attrs"] = dict(item.attrs)
            if isinstance(item, h5py.Dataset):
                contents[name] = (item.dtype, item.chunks, item.compression, item[()])

        f.visititems(visit)
    return contents


def assert_same_file_contents(path_a: Path, path_b: Path) -> None:
    a, b = h5_contents(path_a), h5_contents(path_b)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("attrs"):
            assert a[key].keys() == b[key].keys(), key
            for name in a[key]:
                assert np.array_equal(a[key][name], b[key][name]), (key, name)
        else:
            assert a[key][:3] == b[key][:3], key
            assert np.array_equal(a[key][3], b[key][3]), key
