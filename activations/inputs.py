"""Turning what callers append (numpy, ml_dtypes bfloat16, MLX arrays, lists) into checked numpy arrays."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_INT32 = np.iinfo(np.int32)
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
