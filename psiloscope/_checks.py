"""Input validation shared by the similarity measures.

Every public measure funnels its arrays through :func:`as_matrix` and :func:`check_paired` so that bad
input fails early with one message that says what is wrong and what to do, instead of surfacing later
as a NaN or a silently wrong similarity.
"""

from __future__ import annotations

import numpy as np

#: Unbiased HSIC (Song et al. 2012) divides by n(n-3): it needs at least four rows.
MIN_ROWS_UNBIASED = 4


def as_matrix(X: object, name: str = "X") -> np.ndarray:
    """Validate one activation matrix and return it as float64.

    Parameters
    ----------
    X : array-like, (n_samples, n_features), any real float or integer dtype.
    name : how the array is called in error messages.

    Returns
    -------
    ndarray, (n_samples, n_features), float64 (a copy only when the dtype changes).

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, is empty, is complex, or holds NaN/Inf.  Cost: O(n·d) for the finiteness scan.
    """
    arr = np.asarray(X)
    if arr.ndim != 2:
        hint = " (use X.reshape(-1, 1) for one feature)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}{hint}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one row and one column.")
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64, copy=False)
    check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first non-finite entry of ``arr`` (any shape)."""
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            "clean or drop those rows before comparing."
        )


def check_paired(X: np.ndarray, Y: np.ndarray, *, min_rows: int = 1, what: str = "this measure") -> int:
    """Check that ``X`` and ``Y`` describe the same rows and return the row count.

    Row *t* of ``X`` and row *t* of ``Y`` must be the same token in the same context, so the row counts
    must agree; ``min_rows`` is the smallest sample the estimator is defined for.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (paired samples); got {X.shape[0]} and {Y.shape[0]}. "
            "Pass activations of the same tokens for both models."
        )
    check_min_rows(X.shape[0], min_rows, what)
    return X.shape[0]


def check_min_rows(n: int, min_rows: int, what: str) -> None:
    """Raise ValueError when ``n`` rows are too few for ``what``."""
    if n < min_rows:
        raise ValueError(f"{what} needs at least {min_rows} rows; got {n}. Pass more samples.")


def check_not_constant(X: np.ndarray, name: str) -> None:
    """Raise ValueError when every row of ``X`` is identical (all variance is zero).

    A representation without variance has zero self-similarity, so CKA's denominator vanishes.
    """
    if not (X != X[:1]).any():
        raise ValueError(
            f"{name} is constant (every row is identical), so its similarity to anything is undefined; "
            "check that the right hook and rows were passed."
        )


def check_no_constant_columns(X: np.ndarray, name: str, *, remedy: str) -> None:
    """Raise ValueError listing the constant columns of ``X`` (those break CCA's whitening)."""
    constant = np.flatnonzero(~(X != X[:1]).any(axis=0))
    if constant.size:
        shown = ", ".join(str(int(i)) for i in constant[:8]) + (", ..." if constant.size > 8 else "")
        raise ValueError(f"{name} has {constant.size} constant column(s) [{shown}]; {remedy}")


def check_probability(value: float, name: str) -> float:
    """Return ``value`` as float if it lies strictly between 0 and 1, else raise ValueError."""
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {value}.")
    return value


def check_positive_int(value: int, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)
