"""Find the layers where an adapted model departs from its frozen base ("novelty windows").

The input is one similarity curve over the layer stack, e.g. linear CKA between the frozen and the adapted
model's residual stream at each layer, with a confidence interval per layer. Similarity lives in [0, 1]
(1 = same representation up to the measure's invariances).

Definitions
-----------
divergence
    ``1 - similarity``. Its confidence interval is ``[1 - ci_high, 1 - ci_low]``.
novel layer
    The *lower* confidence bound of the divergence exceeds ``novel_threshold``: even the most optimistic
    reading of the similarity says the representations differ by more than the threshold.
aligned layer
    The *upper* confidence bound of the divergence stays below ``aligned_threshold``: even the most
    pessimistic reading says the representations agree.
uncertain layer
    Neither novel nor aligned (the interval straddles a threshold, or the divergence sits between them).
novelty window
    A maximal run of consecutive novel layers. Runs of at most ``max_gap`` uncertain layers *between* two
    novel layers are bridged into one window; an aligned layer always ends a window. Windows start and
    end on novel layers.
aligned prefix
    The maximal run of aligned layers starting at the first layer; ``aligned_prefix_end`` is its last
    layer (``None`` when the first layer is not aligned).
reconvergence
    For each window, the first aligned layer after its end and before the next window starts
    (``None`` when the stack never realigns in between).

"Consecutive" means adjacent in the given (sorted) layer list, so a curve sampled at every other layer
is segmented along the sampled layers.

Default thresholds: ``aligned_threshold=0.05`` (similarity provably above 0.95) and
``novel_threshold=0.10`` (similarity provably below 0.90). Layers before an adapter's first tap are
bit-identical in both models (similarity exactly 1), and linear CKA between corresponding layers of
independently trained networks of the same architecture is typically around 0.9 or above (Kornblith et
al. 2019), so a layer whose similarity is confidently below 0.90 has moved further than an
independent re-training would move it; above 0.95 is well inside what counts as "the same
representation". The gap between the two thresholds keeps a layer near 0.9-0.95 from flipping between
labels on resampling noise. ``max_gap=1`` bridges a single uncertain layer inside a window, which is
more plausibly a noisy dip than a return to the base.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from activations import parse_hook

NOVEL, ALIGNED, UNCERTAIN = "novel", "aligned", "uncertain"

# Estimators such as debiased CKA can overshoot [0, 1] by rounding error; beyond this we refuse.
_RANGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class NoveltyWindow:
    """One novelty window: layers ``start..end`` (inclusive) with its most divergent layer."""

    start: int
    end: int
    peak_layer: int
    peak_divergence: float
    peak_ci_low: float
    peak_ci_high: float
    reconvergence_layer: int | None


@dataclass(frozen=True)
class NoveltyResult:
    """Segmentation of a layer stack into aligned prefix, novelty windows and reconvergence.

    ``labels[i]`` is the label (``"novel"``, ``"aligned"``, ``"uncertain"``) of ``layers[i]``.
    """

    measure: str
    layers: list[int]
    labels: list[str]
    windows: list[NoveltyWindow]
    aligned_prefix_end: int | None
    reconvergence_layers: list[int]
    novel_threshold: float
    aligned_threshold: float
    max_gap: int
    summary: str

    def to_dict(self) -> dict:
        """Plain-JSON form (ints, floats, strings, lists, dicts, None)."""
        return asdict(self)


def _validated_curve(
    layers: Sequence[int], value: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(a, dtype=np.float64) for a in (layers, value, ci_low, ci_high)]
    names = ("layers", "value", "ci_low", "ci_high")
    for name, a in zip(names, arrays, strict=True):
        if a.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    lengths = {name: a.size for name, a in zip(names, arrays, strict=True)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"layers, value, ci_low and ci_high must have equal lengths, got {lengths}")
    if lengths["layers"] == 0:
        raise ValueError("the similarity curve is empty: pass at least one layer")
    layer_f, val, low, high = arrays
    for name, a in zip(names, arrays, strict=True):
        if not np.all(np.isfinite(a)):
            bad = layer_f[~np.isfinite(a)] if name != "layers" else a[~np.isfinite(a)]
            raise ValueError(f"{name} contains NaN or infinite entries (at layers {bad.tolist()})")
    if np.any(layer_f != np.round(layer_f)):
        raise ValueError(f"layers must be integers, got {layers!r}")
    layer_idx = layer_f.astype(np.int64)
    if np.any(np.diff(layer_idx) <= 0):
        raise ValueError(
            f"layers must be strictly increasing (sort the curve first), got {layer_idx.tolist()}"
        )
    tol = _RANGE_TOLERANCE
    if np.any(low > val + tol) or np.any(val > high + tol):
        bad = layer_idx[(low > val + tol) | (val > high + tol)]
        raise ValueError(f"need ci_low <= value <= ci_high at every layer; violated at layers {bad.tolist()}")
    if np.any(low < -tol) or np.any(high > 1 + tol):
        raise ValueError(
            "similarity and its interval must lie in [0, 1] (clip estimators that can go negative, "
            "such as debiased CKA, before detecting windows)"
        )
    return layer_idx, np.clip(val, 0, 1), np.clip(low, 0, 1), np.clip(high, 0, 1)


def _label_layers(
    div_low: np.ndarray, div_high: np.ndarray, novel_threshold: float, aligned_threshold: float
) -> list[str]:
    labels = np.full(div_low.size, UNCERTAIN, dtype=object)
    labels[div_low > novel_threshold] = NOVEL
    labels[div_high < aligned_threshold] = ALIGNED
    return labels.tolist()


def _window_spans(labels: list[str], max_gap: int) -> list[tuple[int, int]]:
    """Index spans ``(i, j)`` inclusive of novel runs, bridging <= max_gap uncertain layers."""
    novel_idx = [i for i, lab in enumerate(labels) if lab == NOVEL]
    spans: list[tuple[int, int]] = []
    for i in novel_idx:
        if spans:
            prev_end = spans[-1][1]
            between = labels[prev_end + 1 : i]
            if len(between) <= max_gap and all(lab == UNCERTAIN for lab in between):
                spans[-1] = (spans[-1][0], i)
                continue
        spans.append((i, i))
    return spans


def _summary(measure: str, layers: np.ndarray, result_windows: list[NoveltyWindow], prefix_end: int | None,
             novel_threshold: float) -> str:
    if not result_windows:
        return (f"{measure}: no window; no layer's divergence is confidently above "
                f"{novel_threshold:.2f} (layers {layers[0]}-{layers[-1]}).")
    parts = []
    for w in result_windows:
        span = f"layer {w.start}" if w.start == w.end else f"layers {w.start}-{w.end}"
        text = (f"{span} (peak divergence {w.peak_divergence:.3f} "
                f"[{w.peak_ci_low:.3f}, {w.peak_ci_high:.3f}] at layer {w.peak_layer})")
        text += (f", reconverging at layer {w.reconvergence_layer}" if w.reconvergence_layer is not None
                 else ", not reconverging")
        parts.append(text)
    noun = "novelty window" if len(parts) == 1 else f"{len(parts)} novelty windows"
    prefix = f"aligned through layer {prefix_end}; " if prefix_end is not None else ""
    return f"{measure}: {prefix}{noun} at " + "; ".join(parts) + "."


def detect_novelty_windows(
    layers: Sequence[int],
    value: Sequence[float],
    ci_low: Sequence[float],
    ci_high: Sequence[float],
    measure: str = "linear_cka",
    novel_threshold: float = 0.10,
    aligned_threshold: float = 0.05,
    max_gap: int = 1,
) -> NoveltyResult:
    """Segment a per-layer similarity curve into aligned prefix, novelty windows and reconvergence.

    Parameters
    ----------
    layers : (n_layers,) strictly increasing integer layer indices.
    value, ci_low, ci_high : (n_layers,) similarity in [0, 1] and its confidence bounds.
    measure : name of the similarity measure, carried into the result.
    novel_threshold : a layer is novel when ``1 - ci_high > novel_threshold``.
    aligned_threshold : a layer is aligned when ``1 - ci_low < aligned_threshold``;
        must not exceed ``novel_threshold`` so that no layer can be both.
    max_gap : longest run of uncertain layers bridged inside one window (0 = no bridging).

    Returns
    -------
    NoveltyResult (see the module docstring for the exact definitions).
    """
    if not 0 < aligned_threshold <= novel_threshold < 1:
        raise ValueError(
            f"need 0 < aligned_threshold <= novel_threshold < 1, got aligned_threshold={aligned_threshold}, "
            f"novel_threshold={novel_threshold}"
        )
    if int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"max_gap must be a non-negative integer, got {max_gap!r}")
    layer_idx, val, low, high = _validated_curve(layers, value, ci_low, ci_high)
    div, div_low, div_high = 1 - val, 1 - high, 1 - low
    labels = _label_layers(div_low, div_high, novel_threshold, aligned_threshold)
    spans = _window_spans(labels, int(max_gap))

    windows = []
    for k, (i, j) in enumerate(spans):
        peak = i + int(np.argmax(div[i : j + 1]))
        next_start = spans[k + 1][0] if k + 1 < len(spans) else len(labels)
        realigned = [m for m in range(j + 1, next_start) if labels[m] == ALIGNED]
        windows.append(NoveltyWindow(
            start=int(layer_idx[i]), end=int(layer_idx[j]), peak_layer=int(layer_idx[peak]),
            peak_divergence=float(div[peak]),
            peak_ci_low=float(div_low[peak]),
            peak_ci_high=float(div_high[peak]),
            reconvergence_layer=int(layer_idx[realigned[0]]) if realigned else None,
        ))

    n_prefix = next((m for m, lab in enumerate(labels) if lab != ALIGNED), len(labels))
    prefix_end = int(layer_idx[n_prefix - 1]) if n_prefix > 0 else None
    return NoveltyResult(
        measure=measure,
        layers=layer_idx.tolist(),
        labels=labels,
        windows=windows,
        aligned_prefix_end=prefix_end,
        reconvergence_layers=[w.reconvergence_layer for w in windows if w.reconvergence_layer is not None],
        novel_threshold=float(novel_threshold),
        aligned_threshold=float(aligned_threshold),
        max_gap=int(max_gap),
        summary=_summary(measure, layer_idx, windows, prefix_end, novel_threshold),
    )


def novelty_from_rows(
    rows: Iterable[Mapping],
    measure: str = "linear_cka",
    hook_kind: str = "resid_post",
    **thresholds: float,
) -> NoveltyResult:
    """Detect novelty windows from the tidy rows of a store comparison.

    Parameters
    ----------
    rows : dicts with keys ``hook``, ``layer``, ``measure``, ``value``, ``ci_low``, ``ci_high``
        (other keys are ignored).
    measure : which measure's curve to use.
    hook_kind : which hook kind to use (``"resid_post"`` selects ``blocks.{l}.hook_resid_post``).
    **thresholds : ``novel_threshold``, ``aligned_threshold``, ``max_gap`` passed to
        :func:`detect_novelty_windows`.
    """
    rows = list(rows)
    required = ("hook", "layer", "measure", "value", "ci_low", "ci_high")
    for row in rows:
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"comparison row lacks keys {missing}; each row needs {list(required)}")
    of_kind = [r for r in rows if parse_hook(r["hook"])[1] == hook_kind]
    if not of_kind:
        kinds = sorted({parse_hook(r["hook"])[1] for r in rows})
        raise ValueError(f"no rows for hook kind {hook_kind!r}; the rows hold hook kinds {kinds}")
    chosen = sorted((r for r in of_kind if r["measure"] == measure), key=lambda r: r["layer"])
    if not chosen:
        measures = sorted({r["measure"] for r in of_kind})
        raise ValueError(f"no rows for measure {measure!r} at hook kind {hook_kind!r}; available: {measures}")
    layer_list = [int(r["layer"]) for r in chosen]
    if len(set(layer_list)) != len(layer_list):
        raise ValueError(f"several {measure!r} rows for the same {hook_kind!r} layer; pass one row per layer")
    return detect_novelty_windows(
        layer_list,
        [float(r["value"]) for r in chosen],
        [float(r["ci_low"]) for r in chosen],
        [float(r["ci_high"]) for r in chosen],
        measure=measure,
        **thresholds,
    )
