"""The HDF5 activation store: the contract between the model side and the analysis side
(numpy + h5py only)."""

from .blocks import Block, PairedBlock, paired_blocks
from .hooks import HOOK_KINDS, hook_name, parse_hook, sort_hooks
from .layout import SCHEMA_VERSION, StoreError, StoreMismatchError, partial_path_for, tokens_sha256
from .reader import Store
from .writer import StoreWriter

__all__ = [
    "HOOK_KINDS",
    "SCHEMA_VERSION",
    "Block",
    "PairedBlock",
    "Store",
    "StoreError",
    "StoreMismatchError",
    "StoreWriter",
    "hook_name",
    "paired_blocks",
    "parse_hook",
    "partial_path_for",
    "sort_hooks",
    "tokens_sha256",
]
