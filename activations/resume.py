"""Reopening an interrupted dump (``NAME.h5.partial``): check it matches the writer, then roll back to the
last whole sequence. The write protocol this relies on is described at the top of ``writer.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .layout import (
    CONFIG,
    FORMAT_NAME,
    HOOKS_GROUP,
    RESERVED_HOOK_ATTRS,
    RESERVED_ROOT_ATTRS,
    RESUME_GROUP,
    SCHEMA_VERSION,
    SEQ_OFFSETS,
    STATS_GROUP,
    TOKENS,
    StoreError,
)

if TYPE_CHECKING:
    from .writer import StoreWriter


@dataclass
class WriterState:
    """Everything a writer keeps in memory, as of the last whole sequence of a partial dump."""

    n_rows: int
    n_sequences: int
    sums: dict[str, np.ndarray]
    sumsqs: dict[str, np.ndarray]
    overflow: dict[str, int]
    source_dtypes: dict[str, str]


def native(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (numpy scalars -> int/float/bool, bytes -> str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return value


def _user_attrs(attrs: h5py.AttributeManager, reserved: frozenset[str]) -> dict[str, Any]:
    return {key: native(value) for key, value in attrs.items() if key not in reserved}


def _mismatch(path: Path, what: str, found: Any, wanted: Any) -> StoreError:
    return StoreError(
        f"{path}: cannot resume: the partial dump has {what} {found!r} but this writer asks for {wanted!r}; "
        "pass the same arguments as the interrupted run or delete the partial file to start over"
    )


def _check_matches(f: h5py.File, path: Path, writer: StoreWriter) -> None:
    attrs = f.attrs
    if native(attrs.get("format")) != FORMAT_NAME or native(attrs.get("schema_version")) != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: not a partial activation store of schema version {SCHEMA_VERSION}; delete it to start over"
        )
    if native(attrs.get("complete")) is not False or RESUME_GROUP not in f:
        raise StoreError(
            f"{path}: the dump was finalised but not renamed; rename it to {writer.path.name} or delete it"
        )
    expected = {
        "dtype": (native(attrs.get("requested_dtype")), writer.dtype.name),
        "compression": (native(attrs.get("compression")), writer.compression or "none"),
        "attrs": (_user_attrs(attrs, RESERVED_ROOT_ATTRS), writer.attrs),
        "config": (native(f[CONFIG][()]), writer.config_json),
    }
    hooks = f[HOOKS_GROUP]
    expected["hooks"] = ({name: native(hooks[name].attrs.get("width")) for name in hooks}, writer.hooks)
    for name, dataset in hooks.items():
        if name in writer.hooks:
            expected[f"hook_attrs of {name}"] = (
                _user_attrs(dataset.attrs, RESERVED_HOOK_ATTRS),
                writer.hook_attrs[name],
            )
    for what, (found, wanted) in expected.items():
        if found != wanted:
            raise _mismatch(path, what, found, wanted)


def _finish_float32_conversions(f: h5py.File) -> None:
    """Complete or discard a float16 -> float32 conversion that was cut short.

    See ``StoreWriter._convert_to_float32`` for the order of its steps.
    """
    pending = f[RESUME_GROUP].get("float32")
    if pending is None:
        return
    for hook in list(pending):
        if hook in f[HOOKS_GROUP]:
            del pending[hook]  # the original was not deleted yet: the copy may be incomplete
        else:
            f.move(pending[hook].name, f"{HOOKS_GROUP}/{hook}")


def restore_state(f: h5py.File, path: Path, writer: StoreWriter) -> WriterState:
    """Check that the partial dump ``f`` was started with ``writer``'s arguments and roll it back to its last
    whole sequence; returns the writer state at that point.

    Raises
    ------
    StoreError
        If the partial dump was written with other arguments or is damaged.
    """
    try:
        if RESUME_GROUP in f:
            _finish_float32_conversions(f)  # first: until then a hook may be missing from the hooks group
        _check_matches(f, path, writer)
        offsets = f[SEQ_OFFSETS][:]
        n_sequences = len(offsets) - 1
        if offsets.ndim != 1 or n_sequences < 0 or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
            raise StoreError(f"{path}: seq_offsets is damaged; delete the partial file to start over")
        n_rows = int(offsets[-1])
        resume = f[RESUME_GROUP]
        slots = np.flatnonzero(resume["slot_sequences"][:] == n_sequences)
        if len(slots) == 0:
            raise StoreError(
                f"{path}: no statistics checkpoint for its {n_sequences} whole sequences; "
                "delete the partial file to start over"
            )
        slot = int(slots[0])
        datasets = [f[TOKENS]] + [f[HOOKS_GROUP][hook] for hook in writer.hooks]
        for dataset in datasets:
            if dataset.shape[0] < n_rows:
                raise StoreError(
                    f"{path}: {dataset.name} has {dataset.shape[0]} rows but seq_offsets ends at "
                    f"{n_rows}; delete the partial file to start over"
                )
            dataset.resize(n_rows, axis=0)
        if STATS_GROUP in f:  # left by a close() that was cut short
            del f[STATS_GROUP]
        slot_stats = {hook: resume["stats"][hook][slot] for hook in writer.hooks}
        overflow = resume["overflow_counts"][slot]
        hooks = f[HOOKS_GROUP]
        return WriterState(
            n_rows=n_rows,
            n_sequences=n_sequences,
            sums={hook: stats[0] for hook, stats in slot_stats.items()},
            sumsqs={hook: stats[1] for hook, stats in slot_stats.items()},
            overflow={hook: int(count) for hook, count in zip(writer.hooks, overflow, strict=True)},
            source_dtypes={
                hook: native(hooks[hook].attrs["source_dtype"]) if n_sequences else "" for hook in writer.hooks
            },
        )
    except StoreError:
        raise
    except (KeyError, OSError, RuntimeError, TypeError, IndexError, ValueError) as exc:
        raise StoreError(
            f"{path}: cannot resume, the partial dump is damaged ({exc}); delete it to start over"
        ) from exc
