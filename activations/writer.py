"""StoreWriter: append whole sequences to ``NAME.h5.partial``; ``close()`` finalises and renames it to
``NAME.h5``.

Why a killed dump can resume: every :meth:`StoreWriter.append` writes, in this order,

1. the sequence's rows of every hook and its tokens (datasets grow past the committed end),
2. the float64 running sums, sums of squares and overflow counts *including* this sequence into
   checkpoint slot ``n % 2`` of the ``resume`` group, then the number ``n`` of sequences that slot covers,
3. the sequence's end row into ``seq_offsets``: this is the commit point.

A resumed writer trusts only ``seq_offsets``: it cuts every dataset back to ``seq_offsets[-1]`` rows and
takes the checkpoint slot that covers exactly ``len(seq_offsets) - 1`` sequences (the other slot may be newer,
half-written, or one sequence behind). Stats cannot be recomputed from stored rows because they are
accumulated from the unrounded source values, hence the double-buffered checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from .inputs import (
    HookInput,
    as_token_array,
    check_attrs,
    check_hook_attrs,
    check_hooks,
    config_json,
    prepare_sequence,
)
from .layout import (
    CHUNK_CACHE_BYTES,
    CHUNK_CACHE_SLOTS,
    COMPRESSIONS,
    CONFIG,
    FINGERPRINT_ATTRS,
    FORMAT_NAME,
    HOOKS_GROUP,
    LIBVER,
    PARTIAL_SUFFIX,
    RESERVED_ROOT_ATTRS,
    RESUME_GROUP,
    SCHEMA_VERSION,
    SEQ_OFFSETS,
    STATS_GROUP,
    STORAGE_DTYPES,
    TOKENS,
    VECTOR_CHUNK,
    StoreError,
    chunk_rows_for,
    partial_path_for,
    tokens_sha256,
)
from .recovery import clear_stale_write_flag
from .resume import restore_state

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


class StoreWriter:
    """Write an activation store sequence by sequence; resumable if interrupted.

    Parameters
    ----------
    path : str or Path
        Final store path ``NAME.h5``; data goes to ``NAME.h5.partial`` until :meth:`close`.
    hooks : mapping of str to int
        Hook name -> width (columns) for every hook of every appended sequence.
    dtype : {"float16", "float32"}
        Storage dtype. With float16, a hook whose values would overflow float16 is converted to float32
        (rows already written included) and its ``stored_dtype`` attribute says so.
    compression : {None, "lzf", "gzip"}
        Optional chunk compression (with byte shuffling).
    attrs : mapping, optional
        Root attributes (str/int/float/bool), e.g. ``model_fingerprint`` and ``adapter_fingerprint``
        (both default to ``""``, meaning unknown / no adapter).
    hook_attrs : mapping of str to mapping, optional
        Extra per-hook attributes, e.g. ``{"blocks.0.attn.hook_z": {"n_heads": 9, "head_dim": 64}}``.
    config : mapping, optional
        Full run configuration, stored as JSON.
    resume : bool
        Continue an existing ``NAME.h5.partial`` written with the same arguments (else start afresh,
        replacing it).
    overwrite : bool
        Allow replacing an existing ``NAME.h5`` when closing.
    chunk_rows : int, optional
        Rows per chunk of the hook datasets; default: 2-4 MiB chunks (see ``chunk_rows_for``).
    flush_interval : float
        Seconds between flushes of the file to disk; 0 flushes after every sequence.
    """

    def __init__(
        self,
        path: str | Path,
        hooks: Mapping[str, int],
        *,
        dtype: str = "float16",
        compression: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        hook_attrs: Mapping[str, Mapping[str, Any]] | None = None,
        config: Mapping[str, Any] | None = None,
        resume: bool = True,
        overwrite: bool = False,
        chunk_rows: int | None = None,
        flush_interval: float = 5.0,
    ) -> None:
        self.path = Path(path)
        if self.path.name.endswith(PARTIAL_SUFFIX):
            raise ValueError(f"pass the final store name, not the partial file: {self.path}")
        self.partial_path = partial_path_for(self.path)
        self.hooks = check_hooks(hooks)
        try:
            self.dtype = np.dtype(dtype)  # accepts "float16", np.float16, np.dtype("float16")
        except TypeError:
            self.dtype = None
        if self.dtype is None or self.dtype.name not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.compression = compression
        self.attrs = {name: "" for name in FINGERPRINT_ATTRS}
        self.attrs.update(check_attrs(attrs, RESERVED_ROOT_ATTRS, "attrs"))
        self.hook_attrs = check_hook_attrs(hook_attrs or {}, self.hooks)
        self.config_json = config_json(config)
        if chunk_rows is not None and (
            isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
        ):
            raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
        self._chunk_rows = chunk_rows
        self._flush_interval = float(flush_interval)
        self._overwrite = overwrite
        self._refuse_existing_final()

        self._filters = {"fletcher32": True, "compression": compression, "shuffle": compression is not None}
        self._sums = {hook: np.zeros(width) for hook, width in self.hooks.items()}
        self._sumsqs = {hook: np.zeros(width) for hook, width in self.hooks.items()}
        self._overflow = dict.fromkeys(self.hooks, 0)
        self._source_dtypes = dict.fromkeys(self.hooks, "")
        self._n_rows = 0
        self.n_sequences = 0
        self._closed = False
        if resume and self.partial_path.exists():
            self._file = self._open("r+")
            try:
                state = restore_state(self._file, self.partial_path, self)
            except BaseException:
                self._file.close()
                raise
            self._n_rows, self.n_sequences = state.n_rows, state.n_sequences
            self._sums, self._sumsqs = state.sums, state.sumsqs
            self._overflow, self._source_dtypes = state.overflow, state.source_dtypes
        else:
            self._file = self._open("w")
            try:
                self._create_layout()
            except BaseException:
                self._file.close()
                raise
        self._hold_datasets()
        self._last_flush = time.monotonic()

    def _hold_datasets(self) -> None:
        """Keep every dataset the writer touches open for its lifetime.

        HDF5 flushes and drops a dataset's chunk cache whenever its last handle closes, so reopening a hook
        per append would write out and re-read (and re-checksum) the partly filled chunk every time.
        """
        f = self._file
        resume = f[RESUME_GROUP]
        self._hook_datasets = {hook: f[HOOKS_GROUP][hook] for hook in self.hooks}
        self._slot_stats = {hook: resume["stats"][hook] for hook in self.hooks}
        self._tokens, self._offsets = f[TOKENS], f[SEQ_OFFSETS]
        self._slot_overflow, self._slot_sequences = resume["overflow_counts"], resume["slot_sequences"]

    def _refuse_existing_final(self) -> None:
        if self.path.exists() and not self._overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True to replace it")

    def _open(self, mode: str) -> h5py.File:
        def open_file() -> h5py.File:
            return h5py.File(
                self.partial_path,
                mode,
                libver=LIBVER,
                rdcc_nbytes=CHUNK_CACHE_BYTES,
                rdcc_nslots=CHUNK_CACHE_SLOTS,
            )

        try:
            try:
                return open_file()
            except OSError:
                # A writer that was killed leaves HDF5's "open for write" flag set; clear it unless alive.
                if mode == "r+" and clear_stale_write_flag(self.partial_path):
                    return open_file()
                raise
        except OSError as exc:
            action = "resume" if mode == "r+" else "create"
            raise StoreError(
                f"{self.partial_path}: cannot {action} the partial dump ({exc}); if it is damaged or "
                "locked by another writer, stop that writer or delete the file"
            ) from exc

    # ---------------------------------------------------------------------------------------------- layout
    def _create_layout(self) -> None:
        f = self._file
        f.attrs.update(
            {
                "format": FORMAT_NAME,
                "schema_version": SCHEMA_VERSION,
                "complete": False,
                "requested_dtype": self.dtype.name,
                "compression": self.compression or "none",
                "tokens_sha256": "",
                "config_sha256": hashlib.sha256(self.config_json.encode()).hexdigest(),
            }
        )
        # The hook list is kept apart from the hooks group so that a hook lost from the file is noticed.
        f.attrs["hooks"] = np.array(list(self.hooks), dtype=h5py.string_dtype("utf-8"))
        f.attrs.update(self.attrs)
        f.create_dataset(TOKENS, shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(VECTOR_CHUNK,), **self._filters)
        f.create_dataset(
            SEQ_OFFSETS, data=np.zeros(1, np.int64), maxshape=(None,), chunks=(VECTOR_CHUNK,), **self._filters
        )
        f.create_dataset(CONFIG, data=self.config_json, dtype=h5py.string_dtype("utf-8"))
        group = f.create_group(HOOKS_GROUP)
        resume = f.create_group(RESUME_GROUP)
        # Slot 0 holds the empty state (0 sequences); slot 1 is not valid yet. One chunk per slot, so writing
        # one slot never rewrites the other.
        resume.create_dataset("slot_sequences", data=np.array([0, -1], np.int64), chunks=(1,), fletcher32=True)
        resume.create_dataset(
            "overflow_counts", shape=(2, len(self.hooks)), dtype=np.int64, chunks=(1, len(self.hooks)), fletcher32=True
        )
        slot_stats = resume.create_group("stats")
        for hook, width in self.hooks.items():
            dataset = self._create_hook_dataset(group, hook, self.dtype, rows=0)
            dataset.attrs.update(
                {"width": width, "stored_dtype": self.dtype.name, "source_dtype": "", "overflow_count": 0}
            )
            dataset.attrs.update(self.hook_attrs[hook])
            slot_stats.create_dataset(
                hook, shape=(2, 2, width), dtype=np.float64, chunks=(1, 2, width), fletcher32=True
            )

    def _create_hook_dataset(self, group: h5py.Group, hook: str, dtype: np.dtype, rows: int) -> h5py.Dataset:
        width = self.hooks[hook]
        chunk = self._chunk_rows or chunk_rows_for(width, dtype.itemsize)
        return group.create_dataset(
            hook,
            shape=(rows, width),
            maxshape=(None, width),
            dtype=dtype,
            chunks=(chunk, width),
            **self._filters,
        )

    def _convert_to_float32(self, hook: str) -> h5py.Dataset:
        """Replace a float16 hook dataset by a float32 copy (exact: every float16 is a float32)."""
        f = self._file
        old = self._hook_datasets[hook]
        # Copy under resume/float32 first: a crash before the final move leaves the float16 original intact,
        # and one after the delete leaves a complete copy (resume.py finishes either case).
        new = self._create_hook_dataset(f[RESUME_GROUP].require_group("float32"), hook, _F32, rows=self._n_rows)
        step = new.chunks[0]
        for start in range(0, self._n_rows, step):
            stop = min(start + step, self._n_rows)
            new[start:stop] = old[start:stop].astype(_F32)
        new.attrs.update(dict(old.attrs))
        new.attrs["stored_dtype"] = _F32.name
        del f[HOOKS_GROUP][hook]
        f.move(new.name, f"{HOOKS_GROUP}/{hook}")  # the handle follows the object to its new name
        self._hook_datasets[hook] = new
        return new

    # ---------------------------------------------------------------------------------------------- append
    def append(self, tokens: Any, acts: Mapping[str, Any]) -> None:
        """Append one whole sequence.

        Parameters
        ----------
        tokens : array-like of int, shape (T,)
            Token ids of the sequence.
        acts : mapping of str to array-like, each shape (T, width)
            Activations of every hook of the store, any float dtype (bfloat16 included).
        """
        self._check_open()
        tokens = as_token_array(tokens)
        n = len(tokens)
        prepared = prepare_sequence(self.hooks, n, acts, self._source_dtypes, f"sequence {self.n_sequences}")
        start, stop = self._n_rows, self._n_rows + n
        # Datasets are resized to exactly `stop`, so rows left behind by a failed append are overwritten.
        for hook, hook_input in prepared.items():
            dataset = self._hook_datasets[hook]
            if dataset.dtype == _F16 and hook_input.overflow:
                dataset = self._convert_to_float32(hook)
            dataset.resize(stop, axis=0)
            if dataset.dtype == _F16:
                dataset[start:stop] = hook_input.as_float16
            else:
                dataset[start:stop] = hook_input.values.astype(_F32, copy=False)
        self._tokens.resize(stop, axis=0)
        self._tokens[start:stop] = tokens
        self._commit(prepared, stop)

    def _commit(self, prepared: dict[str, HookInput], stop: int) -> None:
        n_new = self.n_sequences + 1
        slot = n_new % 2
        sums, sumsqs, overflow = {}, {}, {}
        for hook, hook_input in prepared.items():
            wide = hook_input.values.astype(np.float64)
            sums[hook] = self._sums[hook] + wide.sum(axis=0)
            sumsqs[hook] = self._sumsqs[hook] + np.einsum("ij,ij->j", wide, wide)
            overflow[hook] = self._overflow[hook] + hook_input.overflow
            self._slot_stats[hook][slot] = np.stack([sums[hook], sumsqs[hook]])
            if not self._source_dtypes[hook]:
                self._hook_datasets[hook].attrs["source_dtype"] = hook_input.source_dtype
        self._slot_overflow[slot] = np.array([overflow[hook] for hook in self.hooks], np.int64)
        self._slot_sequences[slot] = n_new
        self._offsets.resize(n_new + 1, axis=0)
        self._offsets[n_new] = stop
        self._sums, self._sumsqs, self._overflow = sums, sumsqs, overflow
        self._source_dtypes = {hook: hook_input.source_dtype for hook, hook_input in prepared.items()}
        self._n_rows, self.n_sequences = stop, n_new
        if time.monotonic() - self._last_flush >= self._flush_interval:
            self._file.flush()
            self._last_flush = time.monotonic()

    # ----------------------------------------------------------------------------------------------- close
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")

    def close(self) -> Path:
        """Finalise the store (tokens_sha256, stats, attributes), rename it to ``NAME.h5``, return that."""
        if self._closed:
            return self.path
        self._refuse_existing_final()
        f = self._file
        n = self._n_rows
        self._tokens.resize(n, axis=0)
        stats = f.require_group(STATS_GROUP)
        for hook in self.hooks:
            dataset = self._hook_datasets[hook]
            dataset.resize(n, axis=0)
            dataset.attrs.update({"overflow_count": self._overflow[hook], "source_dtype": self._source_dtypes[hook]})
            if hook in stats:
                del stats[hook]
            # Chunked only so that fletcher32 can guard the statistics against silent corruption.
            summed = np.stack([self._sums[hook], self._sumsqs[hook]])
            stats.create_dataset(hook, data=summed, chunks=summed.shape, fletcher32=True)
            stats[hook].attrs["count"] = n
        f.attrs["tokens_sha256"] = tokens_sha256(self._tokens[:], self._offsets[:])
        del f[RESUME_GROUP]
        f.attrs["complete"] = True
        f.close()
        os.replace(self.partial_path, self.path)
        self._closed = True
        return self.path

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            # Keep the .partial: everything up to the last whole sequence is resumable.
            self._file.close()
            self._closed = True
