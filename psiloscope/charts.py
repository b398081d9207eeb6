"""Altair chart builders for the report: one function per chart, each reading one section of a results dict.

Every builder takes the whole results dict (layout in :mod:`psiloscope.results`) and returns a chart, or
``None`` when its section is absent or empty. Data is inlined into each spec. Models have the same colours
everywhere (A blue, B orange), similarity colour scales are fixed to [0, 1], and layer 0 sits at the origin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import altair as alt

from activations import HOOK_KINDS, parse_hook
from psiloscope.results import to_jsonable

WIDTH = 720
MODEL_SCALE = alt.Scale(domain=["A", "B"], range=["#4c78a8", "#f58518"])
LABEL_SCALE = alt.Scale(domain=["novel", "uncertain", "aligned"], range=["#e45756", "#bab0ac", "#54a24b"])
UNIT_SCALE = alt.Scale(domain=[0, 1], scheme="viridis")
DEFAULT_HOOK_KIND = "resid_post"
# Upright labels on categorical layer/head axes, thinned out when 30 layers share a small heatmap.
LAYER_AXIS = alt.Axis(labelAngle=0, labelOverlap="greedy")

Rows = list[dict[str, Any]]


def _tip(field: str, title: str | None = None, fmt: str | None = None) -> alt.Tooltip:
    """A tooltip entry; numbers show six significant digits unless ``fmt`` says otherwise."""
    name, _, kind = field.partition(":")
    if fmt is None and kind == "Q":
        fmt = ".6~g"
    return alt.Tooltip(field, title=title or name, **({"format": fmt} if fmt else {}))


def _if_present(rows: Rows, *tips: alt.Tooltip) -> list[alt.Tooltip]:
    """The tooltips whose field has a value in some row: an optional field left out shows no "NaN"."""
    return [tip for tip in tips if any(row.get(tip.to_dict()["field"]) is not None for row in rows)]


def _ci_tips(rows: Rows) -> list[alt.Tooltip]:
    return _if_present(rows, _tip("ci_low:Q", "CI low"), _tip("ci_high:Q", "CI high"))


def _hook_kind(hook: str) -> str:
    """``blocks.3.hook_resid_post`` -> ``resid_post``; other names are kept whole (a panel of their own)."""
    try:
        return parse_hook(hook)[1]
    except ValueError:
        return hook


def _unit_domain(rows: Rows, *fields: str) -> list[float]:
    """[0, 1] widened to include every value, since debiased estimators can stray below 0."""
    values = [row[f] for row in rows for f in fields if row.get(f) is not None]
    return [min([0.0, *values]), max([1.0, *values])]


def _window_layer(results: dict, kind: str) -> alt.Chart | None:
    """Shaded novelty windows for the similarity panel of hook ``kind`` (None when not applicable)."""
    novelty = results.get("novelty") or {}
    windows = novelty.get("windows") or []
    if not windows or novelty.get("hook_kind", DEFAULT_HOOK_KIND) != kind:
        return None
    spans = [{**w, "x0": w["start"] - 0.5, "x1": w["end"] + 0.5} for w in windows]
    return alt.Chart(alt.Data(values=spans)).mark_rect(color=LABEL_SCALE.range[0], opacity=0.12).encode(
        x="x0:Q", x2="x1:Q",
        tooltip=[_tip("start:O", "window start"), _tip("end:O", "window end"),
                 _tip("peak_layer:O", "peak layer"), _tip("peak_divergence:Q", "peak divergence"),
                 *_ci_tips(windows)],
    )


def layer_similarity_chart(results: dict) -> alt.TopLevelMixin | None:
    """Similarity of A and B per layer, one panel per hook kind, one line per measure with its CI band."""
    rows = results.get("layers") or []
    if not rows:
        return None
    by_kind: dict[str, Rows] = {}
    for row in rows:
        by_kind.setdefault(_hook_kind(row["hook"]), []).append(row)
    # The hook kind novelty was detected on comes first; the others follow in forward-pass order.
    novelty_kind = (results.get("novelty") or {}).get("hook_kind", DEFAULT_HOOK_KIND)
    order = [novelty_kind, *HOOK_KINDS]
    panels = []
    for kind in sorted(by_kind, key=lambda k: order.index(k) if k in order else len(order)):
        kind_rows = by_kind[kind]
        data = alt.Data(values=kind_rows)
        x = alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1), scale=alt.Scale(nice=False))
        y = alt.Y("value:Q", title="similarity", scale=alt.Scale(domain=_unit_domain(kind_rows, "ci_low",
                                                                                      "value", "ci_high")))
        colour = alt.Color("measure:N", title="measure")
        # The band shares the line's colour encoding: a legend=None here would hide the measure legend.
        band = alt.Chart(data).mark_area(opacity=0.18).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=colour)
        line = alt.Chart(data).mark_line(point=True).encode(
            x=x, y=y, color=colour,
            tooltip=[_tip("hook:N"), _tip("layer:O"), _tip("measure:N"), _tip("value:Q"), *_ci_tips(kind_rows),
                     *_if_present(kind_rows, _tip("n_tokens:Q", "tokens", ",d"))],
        )
        layers = [layer for layer in (_window_layer(results, kind), band, line) if layer is not None]
        panels.append(alt.layer(*layers).properties(width=WIDTH - 140, height=230, title=kind))
    return alt.vconcat(*panels).resolve_scale(color="shared", x="shared")


def novelty_chart(results: dict) -> alt.TopLevelMixin | None:
    """Per-layer label (novel / uncertain / aligned) as a strip, with divergence bars when available."""
    novelty = results.get("novelty") or {}
    labels = novelty.get("labels") or []
    if not labels:
        return None
    kind = novelty.get("hook_kind", DEFAULT_HOOK_KIND)
    curve = {row["layer"]: row for row in results.get("layers") or []
             if row["measure"] == novelty["measure"] and _hook_kind(row["hook"]) == kind}
    values = []
    for item in labels:
        row = curve.get(item["layer"])
        divergence = {} if row is None else {
            "divergence": 1 - row["value"],
            "div_low": None if row.get("ci_high") is None else 1 - row["ci_high"],
            "div_high": None if row.get("ci_low") is None else 1 - row["ci_low"],
        }
        values.append({**item, **divergence})
    x = alt.X("layer:O", title="layer", sort="ascending", axis=alt.Axis(labelAngle=0))
    colour = alt.Color("label:N", title="label", scale=LABEL_SCALE)
    tips = [_tip("layer:O"), _tip("label:N"), *_if_present(values, _tip("divergence:Q"),
            _tip("div_low:Q", "divergence CI low"), _tip("div_high:Q", "divergence CI high"))]
    base = alt.Chart(alt.Data(values=values))
    if not any("divergence" in v for v in values):
        strip = base.mark_rect().encode(x=x, color=colour, tooltip=tips)
        return strip.properties(width=WIDTH - 120, height=36)
    y = alt.Y("divergence:Q", title="divergence (1 - similarity)")
    bars = base.mark_bar(opacity=0.85).encode(x=x, y=y, color=colour, tooltip=tips)
    # A dot on every bar keeps aligned layers (divergence near 0, so no visible bar) readable.
    dots = base.mark_point(filled=True, size=45, opacity=1).encode(x=x, y=y, color=colour, tooltip=tips)
    whiskers = base.mark_rule(color="#333").encode(x=x, y="div_low:Q", y2="div_high:Q")
    thresholds = [
        alt.Chart(alt.Data(values=[{"threshold": name, "y": novelty[f"{name}_threshold"]}])).mark_rule(
            strokeDash=[4, 3], color=LABEL_SCALE.range[LABEL_SCALE.domain.index(name)],
        ).encode(y="y:Q", tooltip=[_tip("threshold:N"), _tip("y:Q", "divergence")])
        for name in ("novel", "aligned")
    ]
    return alt.layer(bars, dots, whiskers, *thresholds).properties(width=WIDTH - 120, height=200)


def _heatmap(matrix: dict, title: str, row_title: str, col_title: str) -> alt.Chart:
    rows, cols = [str(r) for r in matrix["rows"]], [str(c) for c in matrix["cols"]]
    cells = [{"row": rows[i], "col": cols[j], "value": value}
             for i, line in enumerate(matrix["values"]) for j, value in enumerate(line) if value is not None]
    side = min(260, max(160, 14 * max(len(rows), len(cols))))
    return alt.Chart(alt.Data(values=cells), title=title).mark_rect().encode(
        x=alt.X("col:O", title=col_title, sort=cols, axis=LAYER_AXIS),
        # Reversed so the first row (layer 0) sits at the bottom, next to the x axis's layer 0.
        y=alt.Y("row:O", title=row_title, sort=rows[::-1], axis=LAYER_AXIS),
        color=alt.Color("value:Q", title="CKA", scale=UNIT_SCALE),
        tooltip=[_tip("row:N", row_title), _tip("col:N", col_title), _tip("value:Q", "CKA")],
    ).properties(width=side, height=side)


def matrices_chart(results: dict) -> alt.TopLevelMixin | None:
    """Layer x layer CKA heatmaps (A vs A, B vs B, A vs B) side by side on one [0, 1] colour scale."""
    matrices = results.get("matrices") or {}
    panels = [_heatmap(matrices[name], name.replace("_", " "), f"layer of {name[0]}", f"layer of {name[-1]}")
              for name in ("A_vs_A", "B_vs_B", "A_vs_B") if matrices.get(name)]
    if not panels:
        return None
    return alt.hconcat(*panels).resolve_scale(color="shared")


def heads_chart(results: dict) -> alt.TopLevelMixin | None:
    """Per-head CKA of A vs B as a layer x head matrix, layer 0 at the bottom."""
    rows = results.get("heads") or []
    if not rows:
        return None
    layers = sorted({row["layer"] for row in rows})
    return alt.Chart(alt.Data(values=rows)).mark_rect().encode(
        x=alt.X("head:O", title="head", axis=LAYER_AXIS),
        y=alt.Y("layer:O", title="layer", sort=layers[::-1], axis=LAYER_AXIS),
        color=alt.Color("value:Q", title="CKA", scale=UNIT_SCALE),
        tooltip=[_tip("layer:O"), _tip("head:O"), _tip("value:Q", "CKA"), *_ci_tips(rows)],
    ).properties(width=min(WIDTH - 120, 40 * len({row["head"] for row in rows})),
                 height=min(420, max(120, 16 * len(layers))))


def pca_rank_chart(results: dict) -> alt.TopLevelMixin | None:
    """Effective rank and participation ratio per layer for A and B."""
    rows = (results.get("pca") or {}).get("spectra") or []
    if not rows:
        return None
    rank_rows = [{k: v for k, v in row.items() if k != "explained_variance_ratio"} for row in rows]
    return alt.Chart(alt.Data(values=rank_rows)).transform_fold(
        ["effective_rank", "participation_ratio"], as_=["quantity", "dimensions"],
    ).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("dimensions:Q", title="dimensions"),
        color=alt.Color("model:N", scale=MODEL_SCALE),
        tooltip=[_tip("model:N"), _tip("layer:O"), _tip("quantity:N"), _tip("dimensions:Q", fmt=".2f")],
    ).properties(width=(WIDTH - 160) // 2, height=200).facet(
        column=alt.Column("quantity:N", title=None),
    ).resolve_scale(y="independent")


def pca_spectrum_chart(results: dict) -> alt.TopLevelMixin | None:
    """Explained-variance ratio of the top principal components, one line per layer, A and B side by side."""
    rows = (results.get("pca") or {}).get("spectra") or []
    values = [{"model": row["model"], "layer": row["layer"], "component": i + 1, "ratio": ratio}
              for row in rows for i, ratio in enumerate(row["explained_variance_ratio"]) if ratio > 0]
    if not values:
        return None
    return alt.Chart(alt.Data(values=values)).mark_line().encode(
        x=alt.X("component:Q", title="principal component", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("ratio:Q", title="explained variance ratio", scale=alt.Scale(type="log")),
        color=alt.Color("layer:Q", title="layer", scale=alt.Scale(scheme="viridis")),
        detail="layer:Q",
        tooltip=[_tip("model:N"), _tip("layer:O"), _tip("component:O"), _tip("ratio:Q", "ratio", ".5f")],
    ).properties(width=(WIDTH - 160) // 2, height=200).facet(column=alt.Column("model:N", title="model"))


def pca_angles_chart(results: dict) -> alt.TopLevelMixin | None:
    """Mean cosine of the principal angles between A's and B's top-k subspaces, per layer and k."""
    rows = (results.get("pca") or {}).get("angles") or []
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("mean_cos:Q", title="mean cosine of principal angles", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("k:O", title="k (subspace dim.)"),
        tooltip=[_tip("layer:O"), _tip("k:O"), _tip("mean_cos:Q", "mean cos")],
    ).properties(width=WIDTH - 120, height=220)


def probes_chart(results: dict) -> alt.TopLevelMixin | None:
    """Probe accuracy per layer for A and B with CI whiskers and a dashed chance line, one row per task."""
    rows = results.get("probes") or []
    if not rows:
        return None
    x = alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1))
    colour = alt.Color("model:N", scale=MODEL_SCALE)
    line = alt.Chart().mark_line(point=True).encode(
        x=x, y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])), color=colour,
        tooltip=[_tip("task:N"), _tip("model:N"), _tip("layer:O"), _tip("accuracy:Q"), *_ci_tips(rows),
                 *_if_present(rows, _tip("chance:Q"))],
    )
    whiskers = alt.Chart().mark_rule().encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=colour)
    chance = alt.Chart().mark_rule(color="#555", strokeDash=[5, 4]).encode(
        y="mean(chance):Q", tooltip=[_tip("mean(chance):Q", "chance")],
    )
    return alt.layer(whiskers, line, chance, data=alt.Data(values=rows)).properties(
        width=WIDTH - 160, height=180,
    ).facet(row=alt.Row("task:N", title=None, header=alt.Header(labelOrient="top", labelAngle=0,
                                                                 labelAnchor="start", labelFontSize=12)))


def training_loss_chart(results: dict) -> alt.TopLevelMixin | None:
    """Training (and validation) loss over steps, with the learning rate below when it was logged."""
    rows = (results.get("training") or {}).get("metrics") or []
    if not rows:
        return None
    data = alt.Data(values=rows)
    x = alt.X("step:Q", title="step")
    loss = alt.Chart(data).transform_fold(["loss", "val_loss"], as_=["series", "nats"]).transform_filter(
        "isValid(datum.nats)"
    ).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=x, y=alt.Y("nats:Q", title="loss (nats/token)", scale=alt.Scale(zero=False)),
        color=alt.Color("series:N", title=None),
        tooltip=[_tip("step:Q", fmt=",d"), _tip("series:N"), _tip("nats:Q", "loss"),
                 *_if_present(rows, _tip("tokens_per_s:Q", "tokens/s", ",.0f"))],
    ).properties(width=WIDTH - 120, height=220)
    if not any(row.get("lr") is not None for row in rows):
        return loss
    lr = alt.Chart(data).transform_filter("isValid(datum.lr)").mark_line(color="#888").encode(
        x=x, y=alt.Y("lr:Q", title="learning rate", axis=alt.Axis(format=".1e")),
        tooltip=[_tip("step:Q", fmt=",d"), _tip("lr:Q", "lr", ".3e")],
    ).properties(width=WIDTH - 120, height=90)
    return alt.vconcat(loss, lr)


def _per_layer_over_steps(rows: Rows | None, value: str, title: str, split_by: str) -> alt.Chart | None:
    """One line per layer (and per ``split_by`` value) of ``value`` against training step."""
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_line().encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y(f"{value}:Q", title=title),
        color=alt.Color("layer:Q", title="layer", scale=alt.Scale(scheme="viridis")),
        detail=["layer:Q", f"{split_by}:O"],
        tooltip=[_tip("step:Q", fmt=",d"), _tip("layer:O"), *_if_present(rows, _tip(f"{split_by}:O")),
                 _tip(f"{value}:Q", title)],
    ).properties(width=WIDTH - 120, height=220)


def tap_weights_chart(results: dict) -> alt.TopLevelMixin | None:
    """Weight of each layer's tap over training, one line per (layer, distance)."""
    return _per_layer_over_steps((results.get("training") or {}).get("taps"), "weight", "tap weight", "distance")


def alpha_chart(results: dict) -> alt.TopLevelMixin | None:
    """The skip gate alpha over training, one line per layer (and head, when gates are per head)."""
    return _per_layer_over_steps((results.get("training") or {}).get("alpha"), "value", "alpha", "head")


def toggles_chart(results: dict) -> alt.TopLevelMixin | None:
    """Change in held-out loss when one layer's tap is switched off, with CI whiskers."""
    rows = (results.get("eval") or {}).get("toggles") or []
    if not rows:
        return None
    data = alt.Data(values=rows)
    x = alt.X("layer:O", title="layer switched off", sort="ascending", axis=alt.Axis(labelAngle=0))
    bars = alt.Chart(data).mark_bar(color="#4c78a8").encode(
        x=x, y=alt.Y("delta:Q", title="loss change (nats/token)"),
        tooltip=[_tip("layer:O"), _tip("loss:Q"), _tip("delta:Q", "loss change"), *_ci_tips(rows)],
    )
    whiskers = alt.Chart(data).mark_rule(color="#333").encode(x=x, y="ci_low:Q", y2="ci_high:Q")
    zero = alt.Chart(alt.Data(values=[{"y": 0}])).mark_rule(color="#555").encode(y="y:Q")
    return alt.layer(bars, whiskers, zero).properties(width=WIDTH - 120, height=200)


class ChartSpec(NamedTuple):
    """Where a chart goes in the report and the sentence that tells a reader how to read it."""

    section: str
    build: Callable[[dict], alt.TopLevelMixin | None]
    caption: str


# Report order. Captions say what is measured and how to read it, for someone who did not run the comparison.
CHARTS: dict[str, ChartSpec] = {
    "layers": ChartSpec(
        "layers", layer_similarity_chart,
        "Similarity of A and B at each layer (1 = same representation up to the measure's invariances); "
        "bands are confidence intervals from resampling whole sequences, red shading marks detected "
        "novelty windows."),
    "novelty": ChartSpec(
        "layers", novelty_chart,
        "Divergence (1 - similarity) per layer, coloured by label: novel when even its lower bound exceeds "
        "the novel threshold, aligned when even its upper bound stays below the aligned threshold (dashed "
        "lines)."),
    "matrices": ChartSpec(
        "matrices", matrices_chart,
        "CKA between every pair of layers, within each model and across them; bright cells are similar "
        "layers, and a bright diagonal in A vs B means layer L of A matches layer L of B."),
    "heads": ChartSpec(
        "heads", heads_chart,
        "CKA between A's and B's output of each attention head (before the output projection); dark cells "
        "are heads whose behaviour changed."),
    "pca_rank": ChartSpec(
        "pca", pca_rank_chart,
        "How many directions each layer's representation really uses: effective rank (entropy of the "
        "spectrum) and participation ratio; higher means variance is spread over more dimensions."),
    "pca_spectrum": ChartSpec(
        "pca", pca_spectrum_chart,
        "Share of variance explained by each of the top principal components (log scale), one line per "
        "layer; steeper lines mean lower-dimensional representations."),
    "pca_angles": ChartSpec(
        "pca", pca_angles_chart,
        "Mean cosine of the principal angles between A's and B's top-k principal subspaces; 1 means the "
        "same subspace, values near 0 mean orthogonal ones."),
    "probes": ChartSpec(
        "probes", probes_chart,
        "Accuracy of a linear probe trained on each layer's activations, for A and B, with confidence "
        "intervals; the dashed line is chance level."),
    "training_loss": ChartSpec(
        "training", training_loss_chart,
        "Loss per token over training (validation loss where it was measured), with the learning-rate "
        "schedule below."),
    "tap_weights": ChartSpec(
        "training", tap_weights_chart,
        "Weight the adapter gives each layer's tap as training proceeds; lines that move far from zero "
        "mark the layers the adapter learned to read from."),
    "alpha": ChartSpec(
        "training", alpha_chart,
        "The skip gate alpha per layer over training; alpha = 0 gives back the frozen base model exactly."),
    "toggles": ChartSpec(
        "eval", toggles_chart,
        "Held-out loss change when a single layer's tap is switched off; bars above zero mark layers the "
        "adapted model depends on."),
}


def charts_for(results: dict) -> dict[str, alt.TopLevelMixin]:
    """Build every chart the results support, in report order.

    Parameters
    ----------
    results : dict
        A validated results document; numpy values are converted to plain ones first.

    Returns
    -------
    dict
        Chart name (a key of :data:`CHARTS`) to Altair chart; sections without data are left out.
    """
    results = to_jsonable(results)
    charts = {}
    for name, spec in CHARTS.items():
        chart = spec.build(results)
        if chart is not None:
            charts[name] = chart
    return charts
