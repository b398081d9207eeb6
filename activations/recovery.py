"""Reopening a partial dump whose writer was killed: clearing HDF5's "open for write" superblock flag.

HDF5 (superblock version 3, which ``LIBVER`` selects for its checksums) marks a file as open for writing in
its superblock and refuses to open it again until the flag is cleared, which a killed process never does.
This is what ``h5clear -s`` does, done here so that a dump killed hard can be resumed without extra tools:
only when no live process holds the file's lock, and only for the superblock layout this package writes.
"""

from __future__ import annotations

import struct
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; never clear the flag there
    fcntl = None

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUPERBLOCK_V3 = 3
_FLAGS_OFFSET = 11
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    a = b = c = (0xDEADBEEF + len(data) + initval) & _MASK
    rest = data
    while len(rest) > 12:
        x, y, z = struct.unpack("<3I", rest[:12])
        a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 4)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
        rest = rest[12:]
    if not rest:
        return c
    x, y, z = struct.unpack("<3I", rest.ljust(12, b"\0"))
    a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return c


def clear_stale_write_flag(path: Path) -> bool:
    """Clear the "open for write" flag of an HDF5 file no live process holds; returns whether it did.

    Does nothing (returns False) if another process holds the file's lock, if advisory locks are unavailable,
    or if the superblock is not a version-3 superblock at offset 0 with a valid checksum.
    """
    if fcntl is None:
        return False
    with open(path, "r+b") as handle:
        try:
            # HDF5 writers hold an exclusive flock() on the file while it is open.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        try:
            header = handle.read(12)
            if len(header) < 12 or header[:8] != _SIGNATURE or header[8] != _SUPERBLOCK_V3:
                return False
            size_of_offsets = header[9]
            body_length = 12 + 4 * size_of_offsets
            handle.seek(0)
            superblock = handle.read(body_length + 4)
            if len(superblock) != body_length + 4:
                return False
            (checksum,) = struct.unpack("<I", superblock[body_length:])
            if lookup3(superblock[:body_length]) != checksum:
                return False
            cleared = bytearray(superblock[:body_length])
            cleared[_FLAGS_OFFSET] = 0
            handle.seek(0)
            handle.write(bytes(cleared) + struct.pack("<I", lookup3(bytes(cleared))))
            handle.flush()
            return True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
