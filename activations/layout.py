"""The on-disk layout of an activation store: names, constants, the token-set hash and the store errors.

Everything a writer and a reader must agree on lives here; ``README.md`` next to this file describes the same
layout in prose for people writing stores without this package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "psiloscope.activations"
PARTIAL_SUFFIX = ".partial"

# Root-level datasets and groups.
TOKENS = "tokens"
SEQ_OFFSETS = "seq_offsets"
CONFIG = "config"
HOOKS_GROUP = "hooks"
STATS_GROUP = "stats"
# Present only while a dump is in progress (inside NAME.h5.partial); see writer.py for the protocol.
RESUME_GROUP = "resume"

# Root attributes the store manages itself; callers may not pass these in ``attrs``.
RESERVED_ROOT_ATTRS = frozenset(
    {
        "format",
        "hooks",
        "schema_version",
        "complete",
        "requested_dtype",
        "compression",
        "tokens_sha256",
        "config_sha256",
    }
)
# Per-hook dataset attributes the store manages itself; callers may not pass these in ``hook_attrs``.
RESERVED_HOOK_ATTRS = frozenset({"width", "stored_dtype", "source_dtype", "overflow_count"})
FINGERPRINT_ATTRS = ("model_fingerprint", "adapter_fingerprint")

STORAGE_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "lzf", "gzip")

# HDF5 format bounds: v1.10 gives checksummed superblock, object headers and chunk indexes, and HDF5 >= 1.10
# (2018) reads it. Together with fletcher32 on every chunked dataset, most corruption is detected, not read.
LIBVER = ("v110", "v110")
# Chunk cache per dataset: large enough to keep the chunk being appended to (or read sequence by sequence)
# in memory, so filters (checksum, compression) run once per chunk instead of once per sequence.
CHUNK_CACHE_BYTES = 16 * 2**20
CHUNK_CACHE_SLOTS = 1009

_TARGET_CHUNK_BYTES = 4 * 2**20
_MAX_CHUNK_ROWS = 65536
# 1-D datasets (tokens, seq_offsets) grow in chunks of this many elements (64-128 KiB).
VECTOR_CHUNK = 16384


class StoreError(ValueError):
    """A store file is missing, incomplete, damaged or inconsistent; the message names the file and the
    problem."""


class StoreMismatchError(StoreError):
    """Two stores cannot be compared row by row because they hold different token sets."""


def partial_path_for(path: str | Path) -> Path:
    """Return ``NAME.h5.partial`` for the final store path ``NAME.h5``."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def tokens_sha256(tokens: np.ndarray, seq_offsets: np.ndarray) -> str:
    """Hash a token set: sha256 hex over little-endian int32 tokens followed by little-endian int64 offsets.

    Parameters
    ----------
    tokens : np.ndarray, shape (n_tokens,)
        Token ids of every row.
    seq_offsets : np.ndarray, shape (n_sequences + 1,)
        Row where each sequence starts, then ``n_tokens``.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
    digest.update(np.ascontiguousarray(seq_offsets, dtype="<i8").tobytes())
    return digest.hexdigest()


def chunk_rows_for(width: int, itemsize: int) -> int:
    """Rows per chunk of a ``(n_tokens, width)`` dataset: the largest power of two whose chunk fits in 4 MiB.

    Chunks therefore hold 2-4 MiB (fewer bytes only for rows wider than 4 MiB, or below 1 MiB for very narrow
    hooks, where the row count is capped at 65536 to keep small stores small).
    """
    row_bytes = max(1, width * itemsize)
    rows = 1
    while rows * 2 * row_bytes <= _TARGET_CHUNK_BYTES and rows * 2 <= _MAX_CHUNK_ROWS:
        rows *= 2
    return rows
