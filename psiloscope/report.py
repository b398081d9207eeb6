"""Render a results dict into one self-contained, offline HTML report.

The page carries everything it needs: the Vega, Vega-Lite and vega-embed JavaScript (inlined once, from
``vl_convert``), every chart's spec with its data inline, and its CSS. Nothing is fetched when it is opened,
so it can be mailed, archived, or opened on a machine without network. A summary in words comes first;
sections without data are skipped and listed in the summary as "not computed".
"""

from __future__ import annotations

import functools
import html
import json
import os
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert

from psiloscope.charts import CHARTS, charts_for
from psiloscope.results import SECTIONS, to_jsonable, validate_results, write_text_atomic

__all__ = ["charts_for", "render_report"]

SECTION_TITLES = {
    "layers": "Layer-wise similarity",
    "matrices": "Layer × layer similarity",
    "heads": "Attention heads",
    "pca": "Principal components",
    "probes": "Linear probes",
    "training": "Training",
    "eval": "Held-out evaluation",
    "novelty": "Novelty windows",
}
# Sections that hold measurements (as opposed to meta, headline and notes); absent ones are "not computed".
ANALYSIS_SECTIONS = tuple(SECTION_TITLES)

PAGE_STYLE = """
body { margin: 0; background: #fafafa; color: #222; line-height: 1.45;
       font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main.report { max-width: 960px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 0.6rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.headline { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 0 0 1.2rem; }
.headline .card { flex: 1 1 14rem; border: 1px solid #ddd; border-radius: 6px; padding: 0.7rem 0.9rem; }
.headline .value { font-size: 1.9rem; font-weight: 600; }
.headline .ci, .muted { color: #666; font-size: 0.9rem; }
dl.sides { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; margin: 0.5rem 0; }
dl.sides dt { font-weight: 600; }
dl.sides dd { margin: 0; overflow-wrap: anywhere; }
code { font-size: 0.88em; background: #f2f2f2; padding: 0 0.2em; border-radius: 3px; }
figure.chart { margin: 1rem 0 1.6rem; }
.chart-target { max-width: 100%; overflow-x: auto; }
figcaption { color: #444; font-size: 0.92rem; margin-top: 0.3rem; max-width: 50rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.82rem; }
.warning { color: #8a4b00; }
"""

# Draws every chart from the JSON block of specs once the bundle has defined window.vegaEmbed. Counting the
# drawn charts on <main> lets tests (and curious readers) see when the page is complete.
_EMBED_SCRIPT = """
const specs = JSON.parse(document.getElementById("psiloscope-specs").textContent);
const options = {mode: "vega-lite", renderer: "svg",
                 actions: {export: true, source: false, compiled: false, editor: false}};
const report = document.querySelector("main.report");
let drawn = 0;
for (const [name, spec] of Object.entries(specs)) {
  const target = document.getElementById("chart-" + name);
  window.vegaEmbed(target, spec, options).then(function () {
    drawn += 1;
    report.dataset.chartsDrawn = String(drawn);
  }).catch(function (error) {
    target.textContent = "This chart could not be drawn: " + error;
    console.error(error);
  });
}
"""


def _vega_lite_version() -> str | None:
    """The Vega-Lite version Altair writes specs for, if vl_convert can bundle it (else its default)."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vl_convert.get_vegalite_versions() else None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The Vega + Vega-Lite + vega-embed bundle; it defines ``window.vegaEmbed`` (about 0.9 MB).

    Cached because building it takes a second or two.
    """
    return _script_safe(vl_convert.javascript_bundle(vl_version=_vega_lite_version()))


def _script_safe(code: str) -> str:
    # Inside <script> the HTML parser ends the element at "</script" and treats "<!--" specially. Such text
    # can only sit in JavaScript string, template or regex literals, where the escape \x3C is the same "<".
    return code.replace("</script", "\\x3C/script").replace("<!--", "\\x3C!--")


def _specs_json(charts: dict[str, Any]) -> str:
    """Chart specs as JSON that is safe inside a <script> element ("<" only occurs in JSON strings)."""
    specs = {name: chart.to_dict() for name, chart in charts.items()}
    return json.dumps(specs, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _scripts_html(charts: dict[str, Any]) -> str:
    """The chart specs, the Vega bundle (once for all charts) and the embedding code; nothing without charts."""
    if not charts:
        return ""
    return (f'<script type="application/json" id="psiloscope-specs">{_specs_json(charts)}</script>\n'
            f'<script type="module">{vega_bundle()}</script>\n'
            f'<script type="module">{_EMBED_SCRIPT}</script>')


def _chart_figure(name: str) -> str:
    return (f'<figure class="chart"><div id="chart-{name}" class="chart-target"></div>'
            f"<figcaption>{html.escape(CHARTS[name].caption)}</figcaption></figure>")


def _sections_html(results: dict, chart_names: list[str]) -> str:
    parts = []
    for section, title in SECTION_TITLES.items():
        body = [_chart_figure(name) for name in chart_names if CHARTS[name].section == section]
        if section == "eval" and results.get("eval"):
            body.insert(0, eval_table_html(results["eval"]))
        if body:
            parts.append(f'<section id="{section}"><h2>{html.escape(title)}</h2>{"".join(body)}</section>')
    return "\n".join(parts)


def _page_title(results: dict) -> str:
    meta = results.get("meta") or {}
    names = [(meta.get(side) or {}).get("label") or (meta.get(side) or {}).get("path") for side in ("a", "b")]
    if all(names):
        return f"psiloscope: {names[0]} vs {names[1]}"
    return "psiloscope report"


def _num(value: Any) -> str:
    """A number as text: integers with thousands separators, floats with four significant digits."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _with_ci(value: Any, low: Any, high: Any) -> str:
    if low is None or high is None:
        return _num(value)
    return f"{_num(value)} <span class=\"ci\">[{_num(low)}, {_num(high)}]</span>"


def _headline_html(items: list[dict]) -> str:
    cards = []
    for item in items:
        text = f'<div class="muted">{html.escape(item["text"])}</div>' if item.get("text") else ""
        cards.append(f'<div class="card"><div>{html.escape(item["label"])}</div>'
                     f'<div class="value">{_num(item["value"])}</div>'
                     f'<div class="ci">{_interval_text(item)}</div>{text}</div>')
    return f'<div class="headline">{"".join(cards)}</div>'


def _interval_text(item: dict) -> str:
    if item.get("ci_low") is None or item.get("ci_high") is None:
        return "no interval"
    return f"interval [{_num(item['ci_low'])}, {_num(item['ci_high'])}]"


def _side_html(name: str, side: dict) -> str:
    parts = [html.escape(side.get("kind", "")), f"<code>{html.escape(side.get('path', ''))}</code>"]
    for key, label in (("model_fingerprint", "model"), ("adapter_fingerprint", "adapter")):
        if side.get(key):
            parts.append(f"{label} <code>{html.escape(side[key][:16])}</code>")
    label = f"{name} ({html.escape(side['label'])})" if side.get("label") else name
    return f"<dt>{label}</dt><dd>{' · '.join(parts)}</dd>"


def _tokens_sentence(tokens: dict) -> str:
    text = f"{_num(tokens['n_tokens'])} tokens"
    if tokens.get("n_sequences") is not None:
        text += f" in {_num(tokens['n_sequences'])} sequences"
    if tokens.get("seq_len") is not None:
        text += f" of up to {_num(tokens['seq_len'])} tokens"
    if tokens.get("data"):
        split = f" ({html.escape(tokens['split'])} split)" if tokens.get("split") else ""
        text += f" from {html.escape(tokens['data'])}{split}"
    return f"{text}; token-set hash <code>{html.escape(tokens['tokens_sha256'][:16])}</code>."


def _novelty_html(novelty: dict) -> str:
    if novelty.get("summary"):
        return f"<p><strong>Novelty:</strong> {html.escape(novelty['summary'])}</p>"
    windows = novelty.get("windows") or []
    if not windows:
        return f"<p><strong>Novelty:</strong> no window detected ({html.escape(novelty['measure'])}).</p>"
    items = "".join(
        f"<li>layers {w['start']}–{w['end']}: peak divergence "
        f"{_with_ci(w['peak_divergence'], w.get('ci_low'), w.get('ci_high'))} at layer {w['peak_layer']}</li>"
        for w in windows)
    return f"<p><strong>Novelty windows</strong> ({html.escape(novelty['measure'])}):</p><ul>{items}</ul>"


def _is_empty(section: Any) -> bool:
    if isinstance(section, dict):
        return all(_is_empty(value) for value in section.values())
    return not section


def summary_html(results: dict) -> str:
    """The opening section in words: what was compared, on which tokens, headline numbers, windows, gaps."""
    meta = results.get("meta") or {}
    parts = ["<section id=\"summary\"><h2>Summary</h2>"]
    if results.get("headline"):
        parts.append(_headline_html(results["headline"]))
    sides = [_side_html(name, meta[key]) for name, key in (("A", "a"), ("B", "b")) if meta.get(key)]
    if sides:
        parts.append(f'<p>Compared:</p><dl class="sides">{"".join(sides)}</dl>')
    else:
        parts.append('<p class="muted">What was compared was not recorded.</p>')
    if meta.get("tokens"):
        parts.append(f"<p>Tokens: {_tokens_sentence(meta['tokens'])}</p>")
    if results.get("novelty"):
        parts.append(_novelty_html(results["novelty"]))
    delta = (results.get("eval") or {}).get("delta")
    if delta:
        parts.append("<p><strong>Held-out loss, adapted minus base:</strong> "
                     f"{_with_ci(delta['value'], delta.get('ci_low'), delta.get('ci_high'))} nats/token.</p>")
    missing = [SECTION_TITLES.get(name, name) for name in SECTIONS
               if name in ANALYSIS_SECTIONS and _is_empty(results.get(name))]
    if missing:
        parts.append(f'<p class="muted">Not computed: {html.escape(", ".join(missing))}.</p>')
    if results.get("notes"):
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in results["notes"])
        parts.append(f'<p>Notes raised while computing:</p><ul class="warning">{notes}</ul>')
    parts.append("</section>")
    return "\n".join(parts)


def eval_table_html(evaluation: dict) -> str:
    """Held-out evaluation rows as a plain table; columns beyond loss and perplexity are shown as given."""
    rows = evaluation.get("rows") or []
    if not rows:
        return ""
    known = {"model", "loss", "loss_ci_low", "loss_ci_high", "ppl"}
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in known))
    columns = ["model", "loss [interval]", "perplexity", *extra]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        f"<tr><td>{html.escape(row['model'])}</td>"
        f"<td>{_with_ci(row['loss'], row.get('loss_ci_low'), row.get('loss_ci_high'))}</td>"
        f"<td>{_num(row.get('ppl'))}</td>"
        + "".join(f"<td>{_num(row.get(key))}</td>" for key in extra) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance_html(results: dict) -> str:
    """Creation time, library versions and options, so a reader can tell how the numbers were made."""
    meta = results.get("meta") or {}
    items = [f"<dt>results schema</dt><dd><code>{html.escape(results['schema'])}</code></dd>"]
    if meta.get("created"):
        items.append(f"<dt>created</dt><dd>{html.escape(meta['created'])}</dd>")
    for name, version in (meta.get("versions") or {}).items():
        items.append(f"<dt>{html.escape(str(name))}</dt><dd>{html.escape(str(version))}</dd>")
    options = ""
    if meta.get("options"):
        options_json = json.dumps(meta["options"], indent=1, sort_keys=True)
        options = f"<p>Options:</p><pre>{html.escape(options_json)}</pre>"
    return (f'<section id="provenance"><h2>Provenance</h2><dl class="sides">{"".join(items)}</dl>'
            f"{options}</section>")


def render_report(results: dict, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write the HTML report for ``results`` to ``path``.

    Parameters
    ----------
    results : dict
        A results document (layout in :mod:`psiloscope.results`), numpy values allowed; it is validated
        first.
    path : path-like
        Destination ``.html`` file, written atomically.
    title : str, optional
        Page title; by default built from the labels or paths of A and B.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    psiloscope.results.ResultsError
        If ``results`` does not follow the schema.
    """
    results = to_jsonable(results)
    validate_results(results)
    charts = charts_for(results)
    title = title or _page_title(results)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style>
</head>
<body>
<main class="report" data-chart-count="{len(charts)}" data-charts-drawn="0">
<h1>{html.escape(title)}</h1>
<noscript><p class="warning">The charts need JavaScript; every number is also in the results JSON.
</p></noscript>
{summary_html(results)}
{_sections_html(results, list(charts))}
{provenance_html(results)}
</main>
{_scripts_html(charts)}
</body>
</html>
"""
    return write_text_atomic(path, page)
