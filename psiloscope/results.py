"""The results file: every number a report shows, in one JSON document.

A comparison writes ``results.json``; the HTML report is rendered from it alone, so a report can be
re-rendered (or restyled) without recomputing anything. Every section except ``schema`` is optional: a
comparison of two bare activation stores has no training curves, a quick run may skip probes. Absent
sections are listed in the report as "not computed".

Layout (``schema`` = ``"psiloscope.results/1"``)::

    meta      {a: Side, b: Side, tokens: Tokens, versions: {name: str}, created: ISO-8601 str,
               options: {...}}
              Side   = {kind: "run"|"base"|"store", path, model_fingerprint?, adapter_fingerprint?,
                        label?}
              Tokens = {tokens_sha256, n_tokens, n_sequences?, data?, split?, seq_len?}
    headline  [{label, value, ci_low?, ci_high?, text?}]           at most three, shown big
    layers    [{hook, layer, measure, value, ci_low?, ci_high?, n_tokens?}]
              tidy, one row per (hook, layer, measure); measures such as linear_cka, debiased_cka,
              rbf_cka, svcca, pwcca and robust variants such as linear_cka_drop8
    matrices  {"A_vs_A"|"B_vs_B"|"A_vs_B": {rows: [label], cols: [label], values: [[float|null]]}}
              values[i][j] compares rows[i] with cols[j]; rows and cols go from layer 0 upwards
    heads     [{layer, head, value, ci_low?, ci_high?}]            per-head CKA, A vs B
    pca       {spectra: [{model: "A"|"B", layer, effective_rank, participation_ratio,
                          explained_variance_ratio: [float] (top 20)}],
               angles:  [{layer, k, mean_cos}]}                    principal angles, A vs B
    novelty   {measure, hook_kind?, novel_threshold, aligned_threshold, summary?: str,
               aligned_prefix_end?: int, labels: [{layer, label: "novel"|"aligned"|"uncertain"}],
               windows: [{start, end, peak_layer, peak_divergence, ci_low?, ci_high?,
                          reconvergence_layer?}],
               reconvergence: [layer]}
              as found by :mod:`psiloscope.novelty` on the ``layers`` rows of ``measure`` at
              ``hook_kind`` (default "resid_post"); divergence = 1 - similarity; windows are
              inclusive layer ranges; ci_low/ci_high bound the divergence at the peak layer
    probes    [{task, layer, model: "A"|"B", accuracy, ci_low?, ci_high?, chance?}]
    training  {metrics: [{step, loss, lr?, tokens_per_s?, val_loss?}],
               taps:    [{step, layer, distance?, weight}],
               alpha:   [{step, layer, head?, value}]}
    eval      {rows:    [{model: "base"|"adapted"|"alpha0"|"toggle_L", loss, loss_ci_low?,
                          loss_ci_high?, ppl?, ...}],
               delta:   {value, ci_low?, ci_high?}                 adapted minus base loss
               toggles: [{layer, loss, delta, ci_low?, ci_high?}]} loss change with layer L's tap off
    notes     [str]                                                warnings raised while computing

Fields marked ``?`` may be missing or ``null``. Numbers must be finite: a quantity that could not be
computed is ``null``, never NaN. Rows may carry extra keys; they are kept and ignored by the report.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "psiloscope.results/1"

# Field kinds: "str", "int", "num" (finite number), "nums"/"ints" (lists of those), or a choice of
# strings such as "A|B"; a trailing "?" means null or missing is allowed. One table drives validation so
# the documented layout and the checks agree.
_FieldSpec = dict[str, str]

ROW_FIELDS: dict[str, _FieldSpec] = {
    "headline": {"label": "str", "value": "num", "ci_low": "num?", "ci_high": "num?", "text": "str?"},
    "layers": {"hook": "str", "layer": "int", "measure": "str", "value": "num",
               "ci_low": "num?", "ci_high": "num?", "n_tokens": "int?"},
    "heads": {"layer": "int", "head": "int", "value": "num", "ci_low": "num?", "ci_high": "num?"},
    "pca.spectra": {"model": "A|B", "layer": "int", "effective_rank": "num", "participation_ratio": "num",
                    "explained_variance_ratio": "nums"},
    "pca.angles": {"layer": "int", "k": "int", "mean_cos": "num"},
    "novelty.labels": {"layer": "int", "label": "novel|aligned|uncertain"},
    "novelty.windows": {"start": "int", "end": "int", "peak_layer": "int", "peak_divergence": "num",
                        "ci_low": "num?", "ci_high": "num?", "reconvergence_layer": "int?"},
    "probes": {"task": "str", "layer": "int", "model": "A|B", "accuracy": "num",
               "ci_low": "num?", "ci_high": "num?", "chance": "num?"},
    "training.metrics": {"step": "int", "loss": "num", "lr": "num?", "tokens_per_s": "num?",
                         "val_loss": "num?"},
    "training.taps": {"step": "int", "layer": "int", "distance": "int?", "weight": "num"},
    "training.alpha": {"step": "int", "layer": "int", "head": "int?", "value": "num"},
    "eval.rows": {"model": "str", "loss": "num", "loss_ci_low": "num?", "loss_ci_high": "num?",
                  "ppl": "num?"},
    "eval.toggles": {"layer": "int", "loss": "num", "delta": "num", "ci_low": "num?", "ci_high": "num?"},
}
RECORD_FIELDS: dict[str, _FieldSpec] = {
    "meta.a": {"kind": "run|base|store", "path": "str", "model_fingerprint": "str?",
               "adapter_fingerprint": "str?", "label": "str?"},
    "meta.tokens": {"tokens_sha256": "str", "n_tokens": "int", "n_sequences": "int?", "data": "str?",
                    "split": "str?", "seq_len": "int?"},
    "novelty": {"measure": "str", "hook_kind": "str?", "novel_threshold": "num", "aligned_threshold": "num",
                "summary": "str?", "aligned_prefix_end": "int?"},
    "eval.delta": {"value": "num", "ci_low": "num?", "ci_high": "num?"},
}
RECORD_FIELDS["meta.b"] = RECORD_FIELDS["meta.a"]

SECTIONS = ("meta", "headline", "layers", "matrices", "heads", "pca", "novelty", "probes", "training", "eval",
            "notes")
MATRIX_NAMES = ("A_vs_A", "B_vs_B", "A_vs_B")
MAX_HEADLINE = 3


_KIND_NAMES = {"str": "a string", "int": "an integer", "num": "a finite number (use null, not NaN)",
               "nums": "a list of finite numbers", "ints": "a list of integers"}


class ResultsError(ValueError):
    """A results file could not be read or does not follow the schema; the message names the file."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(value: Any, kind: str, where: str) -> None:
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return
        raise ResultsError(f"{where} is required but null")
    if "|" in base:
        ok = value in base.split("|")
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "num":
        ok = _is_number(value)
    elif base == "nums":
        ok = isinstance(value, list) and all(_is_number(v) for v in value)
    elif base == "ints":
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        raise AssertionError(f"unknown field kind {kind!r}")
    if not ok:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        expected = _KIND_NAMES.get(base) or "one of " + ", ".join(repr(c) for c in base.split("|"))
        raise ResultsError(f"{where} should be {expected}, got {shown}")



def _check_record(record: Any, fields: _FieldSpec, where: str) -> None:
    if not isinstance(record, dict):
        raise ResultsError(f"{where} should be an object, got {type(record).__name__}")
    for name, kind in fields.items():
        if name not in record and not kind.endswith("?"):
            raise ResultsError(f"{where} lacks the required field {name!r}")
        _check_value(record.get(name), kind, f"{where}.{name}")


def _check_rows(rows: Any, fields: _FieldSpec, where: str) -> None:
    if not isinstance(rows, list):
        raise ResultsError(f"{where} should be a list of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        _check_record(row, fields, f"{where}[{i}]")


def _check_matrix(matrix: Any, where: str) -> None:
    _check_record(matrix, {}, where)
    for axis in ("rows", "cols", "values"):
        if not isinstance(matrix.get(axis), list):
            raise ResultsError(f"{where}.{axis} should be a list")
    n_rows, n_cols = len(matrix["rows"]), len(matrix["cols"])
    values = matrix["values"]
    if len(values) != n_rows or any(not isinstance(r, list) or len(r) != n_cols for r in values):
        raise ResultsError(f"{where}.values should be a {n_rows}x{n_cols} list of lists (rows x cols)")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            _check_value(value, "num?", f"{where}.values[{i}][{j}]")


def _check_nested_rows(section: dict, name: str) -> None:
    """Check every ``name.sub`` row list of ``section`` that is present."""
    for key, fields in ROW_FIELDS.items():
        prefix, _, sub = key.partition(".")
        if prefix == name and sub and section.get(sub) is not None:
            _check_rows(section[sub], fields, key)


def validate_results(results: Any) -> None:
    """Check ``results`` against the schema described in this module's docstring.

    Parameters
    ----------
    results : object
        A decoded results document.

    Raises
    ------
    ResultsError
        With the dotted path of the first offending field.
    """
    if not isinstance(results, dict):
        raise ResultsError(f"the top level should be a JSON object, got {type(results).__name__}")
    schema = results.get("schema")
    if schema != SCHEMA:
        raise ResultsError(f"unsupported schema {schema!r}; this version of psiloscope reads {SCHEMA!r}")
    unknown = sorted(set(results) - set(SECTIONS) - {"schema"})
    if unknown:
        raise ResultsError(f"unknown section(s) {unknown}; known sections are {list(SECTIONS)}")
    meta = results.get("meta")
    if meta is not None:
        _check_record(meta, {"created": "str?"}, "meta")
        for key in ("a", "b", "tokens"):
            if meta.get(key) is not None:
                _check_record(meta[key], RECORD_FIELDS[f"meta.{key}"], f"meta.{key}")
    for name in ("headline", "layers", "heads", "probes"):
        if results.get(name) is not None:
            _check_rows(results[name], ROW_FIELDS[name], name)
    if len(results.get("headline") or []) > MAX_HEADLINE:
        raise ResultsError(f"headline holds at most {MAX_HEADLINE} numbers")
    for name in ("matrices", "pca", "novelty", "training", "eval"):
        section = results.get(name)
        if section is not None:
            _check_record(section, RECORD_FIELDS.get(name, {}), name)
            _check_nested_rows(section, name)
    for name, matrix in (results.get("matrices") or {}).items():
        if name not in MATRIX_NAMES:
            raise ResultsError(f"unknown matrix {name!r}; expected one of {list(MATRIX_NAMES)}")
        _check_matrix(matrix, f"matrices.{name}")
    reconvergence = (results.get("novelty") or {}).get("reconvergence")
    if reconvergence is not None:
        _check_value(reconvergence, "ints", "novelty.reconvergence")
    delta = (results.get("eval") or {}).get("delta")
    if delta is not None:
        _check_record(delta, RECORD_FIELDS["eval.delta"], "eval.delta")
    notes = results.get("notes")
    if notes is not None and not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        raise ResultsError("notes should be a list of strings")


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays (at any depth) into plain Python values for JSON.

    Non-finite floats are kept as they are so that validation can reject them with the field's path.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename.

    A reader never sees a half-written file, and an interrupted write leaves any previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file private (0600); give it the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def save_results(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate ``results`` and write it as JSON atomically (temporary file, then rename).

    Parameters
    ----------
    results : mapping
        A results document; numpy values are converted. ``schema`` is filled in when absent.
    path : path-like
        Destination file.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ResultsError
        If the document does not follow the schema; nothing is written then.
    """
    path = Path(path)
    document = to_jsonable(results)
    document = {"schema": document.pop("schema", SCHEMA), **document}
    try:
        validate_results(document)
    except ResultsError as error:
        raise ResultsError(f"refusing to write {path}: {error}") from None
    text = json.dumps(document, indent=1, allow_nan=False, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON (write null for a value that could not be computed)")


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results file.

    Parameters
    ----------
    path : path-like
        A JSON file written by :func:`save_results`.

    Returns
    -------
    dict
        The validated document.

    Raises
    ------
    ResultsError
        If the file cannot be read, is not JSON, or does not follow the schema; the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"cannot read results file {path}: {error}") from error
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise ResultsError(f"results file {path} is not valid JSON: {error}") from error
    try:
        validate_results(document)
    except ResultsError as error:
        raise ResultsError(f"invalid results file {path}: {error}") from None
    return document
