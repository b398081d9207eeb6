"""Checking what callers pass to a writer: arrays (numpy, ml_dtypes bfloat16, MLX, lists), hooks, attributes
and the run configuration."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .hooks import parse_hook, sort_hooks
from .layout import RESERVED_HOOK_ATTRS

_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def source_dtype_name(values: Any) -> str:
    """Short dtype name of an array-like: ``"bfloat16"`` for numpy (ml_dtypes) and MLX bfloat16 alike."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return np.asarray(values).dtype.name
    # MLX spells its dtypes "mlx.core.bfloat16"; numpy dtypes have .name.
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]


def _to_float32(values: Any) -> np.ndarray:
    """Convert an array with no numpy buffer format (bfloat16) to float32 through its own ``astype``."""
    try:
        return np.asarray(values.astype(np.float32))
    except TypeError:
        # Array libraries such as MLX only accept their own dtype objects; take float32 from the library's
        # already-imported module rather than importing it here.
        module = sys.modules.get(type(values).__module__)
        library_float32 = getattr(module, "float32", None)
        if library_float32 is None:
            raise
        return np.asarray(values.astype(library_float32))


def as_float_array(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as a numpy float16/float32/float64 array, converting bfloat16 to float32.

    Parameters
    ----------
    values : array-like
        Activations; numpy arrays of any float dtype, ``ml_dtypes.bfloat16`` arrays, or any array object whose
        ``astype`` converts to float32 (e.g. MLX arrays).
    what : str
        Names the value in error messages (e.g. the hook).
    """
    if isinstance(values, np.ndarray) and values.dtype in _NUMPY_FLOATS:
        return values
    dtype_name = source_dtype_name(values)
    try:
        if "bfloat16" in dtype_name or (hasattr(values, "astype") and not isinstance(values, np.ndarray)):
            array = _to_float32(values)
        else:
            array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what}: cannot convert a {type(values).__name__} of dtype {dtype_name} to a numpy float array "
            f"({exc}); convert it to float32 before appending"
        ) from exc
    if array.dtype not in _NUMPY_FLOATS:
        raise ValueError(
            f"{what}: activations must be floating point (float16/bfloat16/float32/float64), got {dtype_name}"
        )
    return array


def as_token_array(tokens: Any) -> np.ndarray:
    """Return one sequence's token ids as a non-empty 1-D int32 array of non-negative ids.

    Raises
    ------
    ValueError
        If the tokens are not a non-empty 1-D integer array within ``[0, 2**31)``.
    """
    array = np.asarray(tokens)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"tokens must be a non-empty 1-D array of one sequence, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() > _INT32.max:
        raise ValueError(
            f"token ids must lie in [0, {_INT32.max}], got range [{array.min()}, {array.max()}]; "
            "padding or sentinel ids do not belong in a store"
        )
    return array.astype(np.int32, copy=False)


def _check_attr_value(owner: str, key: str, value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{owner}[{key!r}] is {value}; attribute values must be finite")
    if not isinstance(value, (str, bool, int, float)):
        raise ValueError(
            f"{owner}[{key!r}] is a {type(value).__name__}; attribute values must be str, int, float or bool "
            "(put structured data in config)"
        )
    return value


def check_attrs(attrs: Mapping[str, Any] | None, reserved: frozenset[str], owner: str) -> dict[str, Any]:
    """Check caller attributes: none of the ``reserved`` names; values str/int/float/bool."""
    attrs = dict(attrs or {})
    clash = sorted(reserved & attrs.keys())
    if clash:
        raise ValueError(f"{owner} may not set {clash}: the store manages these itself")
    return {str(k): _check_attr_value(owner, k, v) for k, v in attrs.items()}


def config_json(config: Mapping[str, Any] | None) -> str:
    """The run configuration as canonical JSON (sorted keys), so resumed runs can compare it exactly."""
    try:
        return json.dumps(dict(config or {}), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must be JSON-serialisable (no NaN/inf): {exc}") from exc


def check_hooks(hooks: Mapping[str, int]) -> dict[str, int]:
    """Check ``{hook name: width}`` and return it sorted by layer, then kind."""
    if not isinstance(hooks, Mapping) or not hooks:
        raise ValueError("hooks must be a non-empty mapping of hook name -> width")
    for hook, width in hooks.items():
        parse_hook(hook)
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
            raise ValueError(f"width of {hook} must be a positive int, got {width!r}")
    return {hook: int(hooks[hook]) for hook in sort_hooks(hooks)}


def check_hook_attrs(
    hook_attrs: Mapping[str, Mapping[str, Any]], hooks: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Check per-hook attributes; returns one (possibly empty) dict for every hook of ``hooks``."""
    unknown = sorted(set(hook_attrs) - set(hooks))
    if unknown:
        raise ValueError(f"hook_attrs names hooks that are not in hooks: {unknown}")
    checked = {hook: check_attrs(hook_attrs.get(hook), RESERVED_HOOK_ATTRS, f"hook_attrs[{hook!r}]") for hook in hooks}
    for hook, extra in checked.items():
        heads, head_dim = extra.get("n_heads"), extra.get("head_dim")
        if heads is not None and head_dim is not None and heads * head_dim != hooks[hook]:
            raise ValueError(
                f"{hook}: n_heads * head_dim = {heads} * {head_dim} does not equal its width {hooks[hook]}"
            )
    return checked


@dataclass(frozen=True)
class HookInput:
    """One hook's activations for one sequence, checked and ready to write."""

    values: np.ndarray  # (T, width) source values, float16/32/64 (bfloat16 already widened to float32)
    as_float16: np.ndarray  # (T, width) their float16 rounding
    overflow: int  # how many values float16 rounds to +-inf
    source_dtype: str  # dtype name as handed over, e.g. "bfloat16"


def prepare_sequence(
    hooks: Mapping[str, int], n: int, acts: Any, source_dtypes: Mapping[str, str], where: str
) -> dict[str, HookInput]:
    """Check one sequence's activations for every hook before anything is written.

    Parameters
    ----------
    hooks : mapping of str to int
        Hook -> width of the store.
    n : int
        Number of tokens of the sequence.
    acts : mapping of str to array-like, each (n, width)
        The caller's activations.
    source_dtypes : mapping of str to str
        Dtype of earlier sequences per hook (``""`` if none yet); a hook may not change dtype.
    where : str
        Names the sequence in error messages.
    """
    if not isinstance(acts, Mapping):
        raise ValueError(f"acts must be a mapping of hook name -> (T, width) array, got {type(acts).__name__}")
    missing, extra = sorted(set(hooks) - set(acts)), sorted(set(acts) - set(hooks))
    if missing or extra:
        raise ValueError(f"acts must hold exactly the store's hooks; missing {missing}, unexpected {extra}")
    prepared = {}
    for hook, width in hooks.items():
        source_dtype = source_dtype_name(acts[hook])
        if source_dtypes[hook] and source_dtype != source_dtypes[hook]:
            raise ValueError(
                f"{hook}: {where} is {source_dtype} but earlier sequences were {source_dtypes[hook]}; "
                "append one dtype per hook"
            )
        values = as_float_array(acts[hook], hook)
        if values.shape != (n, width):
            raise ValueError(
                f"{hook}: {where} has shape {values.shape}, expected ({n}, {width}) "
                "(one row per token, the width given in hooks)"
            )
        finite = np.isfinite(values)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise ValueError(
                f"{hook}: {where} has non-finite activations (first at position {row}, column {col}); "
                "refusing to store NaN/inf"
            )
        if values.dtype.itemsize > 4 and np.abs(values).max() > _FLOAT32_MAX:
            raise ValueError(f"{hook}: {where} has values beyond the float32 range; rescale them")
        with np.errstate(over="ignore"):
            as_float16 = values.astype(np.float16)
        overflow = int(np.count_nonzero(np.isinf(as_float16)))
        prepared[hook] = HookInput(values, as_float16, overflow, source_dtype)
    return prepared
