"""Hook names: the TransformerLens-style vocabulary shared by the model side and the analysis side."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Hook kinds in forward-pass order inside one block; stores list their hooks in this order per layer.
HOOK_KINDS: tuple[str, ...] = ("resid_pre", "attn_z", "skip_out", "resid_post")

_SUFFIX_OF_KIND = {
    "resid_pre": "hook_resid_pre",
    "attn_z": "attn.hook_z",
    "skip_out": "hook_skip_out",
    "resid_post": "hook_resid_post",
}
_KIND_OF_SUFFIX = {suffix: kind for kind, suffix in _SUFFIX_OF_KIND.items()}
# Canonical layer numbers only ("blocks.03" is refused) so that names round-trip exactly.
_HOOK_PATTERN = re.compile(r"blocks\.(0|[1-9][0-9]*)\.(" + "|".join(re.escape(s) for s in _KIND_OF_SUFFIX) + ")")


def hook_name(layer: int, kind: str) -> str:
    """Return the hook name of ``kind`` in block ``layer``.

    Parameters
    ----------
    layer : int
        Zero-based transformer block index.
    kind : str
        One of :data:`HOOK_KINDS`.

    Examples
    --------
    >>> hook_name(3, "resid_post")
    'blocks.3.hook_resid_post'
    >>> hook_name(3, "attn_z")
    'blocks.3.attn.hook_z'
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a non-negative int, got {layer!r}")
    if kind not in _SUFFIX_OF_KIND:
        raise ValueError(f"unknown hook kind {kind!r}; expected one of {', '.join(HOOK_KINDS)}")
    return f"blocks.{layer}.{_SUFFIX_OF_KIND[kind]}"


def parse_hook(name: str) -> tuple[int, str]:
    """Split a hook name into ``(layer, kind)``; the inverse of :func:`hook_name`.

    Raises
    ------
    ValueError
        If ``name`` is not exactly ``blocks.{layer}.hook_resid_pre``, ``blocks.{layer}.hook_resid_post``,
        ``blocks.{layer}.attn.hook_z`` or ``blocks.{layer}.hook_skip_out``.
    """
    match = _HOOK_PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        examples = ", ".join(hook_name(0, kind) for kind in HOOK_KINDS)
        raise ValueError(f"{name!r} is not a hook name; expected one of the forms {examples}")
    return int(match.group(1)), _KIND_OF_SUFFIX[match.group(2)]


def sort_hooks(names: Iterable[str]) -> list[str]:
    """Sort hook names by layer, then by kind in forward-pass order (:data:`HOOK_KINDS`)."""

    def key(name: str) -> tuple[int, int]:
        layer, kind = parse_hook(name)
        return layer, HOOK_KINDS.index(kind)

    return sorted(names, key=key)
