"""The sections of a comparison's results (see `psiloscope.results` for the layout), one function each.

Store-level sections stream the stores (CKA with sequence-bootstrap intervals, minibatch CKA matrices,
per-head CKA); measures that need whole matrices (RBF CKA, SVCCA, PWCCA, PCA, principal angles) run on a
seeded subsample of whole sequences and carry no interval, which the report says.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from activations import Store, parse_hook
from psiloscope.cca import pwcca, svcca
from psiloscope.cka import cka_matrix, rbf_cka
from psiloscope.heads import head_cka
from psiloscope.novelty import novelty_from_rows
from psiloscope.pca import pca, subspace_angles
from psiloscope.robust import robust_targets
from psiloscope.stores import compare_stores

N_SPECTRUM = 20
N_ANGLES = 10


def _row(r: dict, measure: str) -> dict:
    return {"hook": r["hook"], "layer": r["layer"], "measure": measure, "value": r["value"],
            "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_tokens": r["n_tokens"]}


def layer_rows(store_a: Store, store_b: Store, hooks: list[str], opts, notes: list[str]) -> list[dict]:
    """Linear and debiased CKA per layer, raw and without the top-k massive dimensions, with CIs."""
    planned = robust_targets(store_a, store_b, hooks, k=opts.robust_k)
    robust_names = {t.name for t, a, b in planned if a.size or b.size}
    rows = compare_stores(store_a, store_b, [t for t, _, _ in planned], measures=("linear_cka", "debiased_cka"),
                          n_boot=opts.n_boot, seed=opts.seed, progress=opts.progress)
    out = []
    for r in rows:
        measure = f"{r['measure']}_drop{opts.robust_k}" if r["target"] in robust_names else r["measure"]
        out.append(_row(r, measure))
    notes.append(f"_drop{opts.robust_k} measures drop the union of both models' {opts.robust_k} dimensions with the "
                 "largest |mean| before computing CKA (outlier-robust variant)")
    return out


def _sample_rows(store: Store, opts) -> np.ndarray:
    """Row indices of a seeded sample of whole sequences holding about `subsample_rows` rows."""
    rng = np.random.default_rng(opts.seed)
    offsets = store.seq_offsets
    order = rng.permutation(store.n_sequences)
    lengths = np.diff(offsets)[order]
    keep = order[: int(np.searchsorted(np.cumsum(lengths), opts.subsample_rows)) + 1]
    return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in np.sort(keep)])


def _read_rows(store: Store, hook: str, rows: np.ndarray) -> np.ndarray:
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    ends = [*starts[1:], len(rows)]
    pieces = [store.read(hook, int(rows[s]), int(rows[e - 1]) + 1) for s, e in zip(starts, ends, strict=True)]
    return np.concatenate(pieces).astype(np.float64)


def read_subsample(store_a: Store, store_b: Store, hooks: list[str], opts) -> tuple[dict, dict, int]:
    """({hook: (m, d) float64} for A, the same for B, m): a seeded sample of whole sequences, read once."""
    rows = _sample_rows(store_a, opts)
    return ({h: _read_rows(store_a, h, rows) for h in hooks}, {h: _read_rows(store_b, h, rows) for h in hooks},
            len(rows))


def subsample_measures(sub_a: dict, sub_b: dict, n_rows: int, opts, notes: list[str]) -> tuple[dict, list[dict]]:
    """PCA spectra, principal angles, and RBF CKA / SVCCA / PWCCA rows on the subsample."""
    spectra, angles, measures = [], [], []
    for hook, X in sub_a.items():
        Y, layer = sub_b[hook], parse_hook(hook)[0]
        fitted = {"A": pca(X), "B": pca(Y)}
        for model, p in fitted.items():
            spectra.append({"model": model, "layer": layer, "effective_rank": p.effective_rank,
                            "participation_ratio": p.participation_ratio,
                            "explained_variance_ratio": p.explained_variance_ratio[:N_SPECTRUM].tolist()})
        k = min(N_ANGLES, X.shape[1])
        theta = subspace_angles(fitted["A"].components[:k], fitted["B"].components[:k])
        angles.append({"layer": layer, "k": k, "mean_cos": float(np.mean(np.cos(theta)))})
        for name, fn in (("rbf_cka", rbf_cka), ("svcca", svcca), ("pwcca", pwcca)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = float(fn(X, Y))
            except ValueError as e:  # e.g. CCA saturation when width >= rows: say so, show nothing false
                notes.append(f"{name} at layer {layer} not computed: {e}")
                continue
            measures.append({"hook": hook, "layer": layer, "measure": name, "value": value, "ci_low": None,
                             "ci_high": None, "n_tokens": n_rows})
    notes.append(f"RBF CKA, SVCCA, PWCCA, PCA, principal angles and the layer x layer matrices use a subsample of "
                 f"{n_rows} rows (whole sequences, seed {opts.seed}) and carry no interval")
    return {"spectra": spectra, "angles": angles}, measures


def _matrix(values: np.ndarray, labels: list[str]) -> dict:
    return {"rows": labels, "cols": labels,
            "values": [[float(v) if np.isfinite(v) else None for v in row] for row in values]}


def matrices(sub_a: dict, sub_b: dict, opts) -> dict:
    """Layer x layer minibatch debiased CKA on the subsample: A vs A, B vs B and A vs B."""
    hooks = list(sub_a)
    labels = [f"L{parse_hook(h)[0]}" for h in hooks]
    As, Bs = [sub_a[h] for h in hooks], [sub_b[h] for h in hooks]
    kw = {"batch_size": opts.matrix_batch, "seed": opts.seed}
    return {"A_vs_A": _matrix(cka_matrix(As, As, **kw), labels), "B_vs_B": _matrix(cka_matrix(Bs, Bs, **kw), labels),
            "A_vs_B": _matrix(cka_matrix(As, Bs, **kw), labels)}


def heads(store_a: Store, store_b: Store, opts) -> list[dict]:
    rows = head_cka(store_a, store_b, measures=("linear_cka",), n_boot=opts.n_boot, seed=opts.seed,
                    progress=opts.progress)
    return [{"layer": r["layer"], "head": r["head"], "value": r["value"], "ci_low": r["ci_low"],
             "ci_high": r["ci_high"]} for r in rows]


def novelty(layer_rows_: list[dict], opts) -> dict:
    thresholds = {k: v for k, v in (("novel_threshold", opts.novel_threshold),
                                    ("aligned_threshold", opts.aligned_threshold)) if v is not None}
    found = novelty_from_rows(layer_rows_, measure="linear_cka", **thresholds)
    return {"measure": found.measure, "hook_kind": "resid_post", "novel_threshold": found.novel_threshold,
            "aligned_threshold": found.aligned_threshold, "summary": found.summary,
            "aligned_prefix_end": found.aligned_prefix_end,
            "labels": [{"layer": l, "label": lab} for l, lab in zip(found.layers, found.labels, strict=True)],
            "windows": [{"start": w.start, "end": w.end, "peak_layer": w.peak_layer,
                         "peak_divergence": w.peak_divergence, "ci_low": w.peak_ci_low, "ci_high": w.peak_ci_high,
                         "reconvergence_layer": w.reconvergence_layer} for w in found.windows],
            "reconvergence": list(found.reconvergence_layers)}


def probes(store_a: Store, store_b: Store, opts, notes: list[str]) -> list[dict]:
    from probes import compare_probes

    out = []
    for task in opts.probe_tasks:
        try:
            rows = compare_probes(store_a, store_b, task=task, max_rows=opts.probe_max_rows, seed=opts.seed,
                                  n_boot=opts.n_boot)
        except ValueError as e:
            notes.append(f"probe task {task} not computed: {e}")
            continue
        for r in rows:
            for model, sfx in (("A", "_a"), ("B", "_b")):
                out.append({"task": task, "layer": r["layer"], "model": model, "accuracy": r["accuracy" + sfx],
                            "ci_low": r["ci_low" + sfx], "ci_high": r["ci_high" + sfx], "chance": r["chance"],
                            "difference_b_minus_a": r["difference"]})
    return out


def _training(records: list[dict]) -> dict:
    metrics, taps, alpha = [], [], []
    val = {r["step"]: r.get("loss") for r in records if r.get("kind") == "val"}
    for r in records:
        if r.get("kind", "train") != "train":
            continue
        step = int(r["step"])
        metrics.append({"step": step, "loss": r["loss"], "lr": r.get("lr"), "tokens_per_s": r.get("tokens_per_sec"),
                        "val_loss": val.get(step)})
        for layer, weights in (r.get("tap_weights") or {}).items():
            taps += [{"step": step, "layer": int(layer), "distance": int(d), "weight": w} for d, w in weights.items()]
        for layer, value in (r.get("alpha") or {}).items():
            values = value if isinstance(value, list) else [value]
            alpha += [{"step": step, "layer": int(layer), "head": h if isinstance(value, list) else None, "value": v}
                      for h, v in enumerate(values)]
    return {"metrics": metrics, "taps": taps, "alpha": alpha}


def _evaluation(ev: dict) -> dict:
    rows = []
    for name in ("base", "adapted", "alpha0"):
        s = ev[name]
        rows.append({"model": name, "loss": s["loss"], "loss_ci_low": s["loss_ci"][0], "loss_ci_high": s["loss_ci"][1],
                     "ppl": s["ppl"]})
    toggles = []
    for layer, s in sorted(ev.get("toggle", {}).items(), key=lambda kv: int(kv[0])):
        d = s["delta_off_minus_adapted"]
        toggles.append({"layer": int(layer), "loss": s["loss"], "delta": d["mean"], "ci_low": d["ci"][0],
                        "ci_high": d["ci"][1]})
    d = ev["delta_base_minus_adapted"]
    # The report's delta is adapted minus base (negative = the adapter lowers the loss).
    return {"rows": rows, "delta": {"value": -d["mean"], "ci_low": -d["ci"][1], "ci_high": -d["ci"][0]},
            "toggles": toggles, "alpha0_equals_base": ev["alpha0"].get("equals_base")}


def run_metadata(run_dir: Path, notes: list[str]) -> dict:
    """Training curves, tap weights, alpha (metrics.jsonl) and the evaluation table (eval.json) of a run."""
    out: dict[str, Any] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        out["training"] = _training([json.loads(line) for line in metrics.read_text().splitlines() if line.strip()])
    ev = run_dir / "eval.json"
    if ev.is_file():
        out["eval"] = _evaluation(json.loads(ev.read_text()))
    else:
        notes.append(f"{run_dir}: no eval.json (run `psilotrain eval {run_dir}`)")
    return out


def headline(results: dict) -> list[dict]:
    """Up to three numbers for the top of the report."""
    items = []
    lin = [r for r in results.get("layers", []) if r["measure"] == "linear_cka"]
    if lin:
        worst = min(lin, key=lambda r: r["value"])
        items.append({"label": f"lowest linear CKA (layer {worst['layer']})", "value": worst["value"],
                      "ci_low": worst["ci_low"], "ci_high": worst["ci_high"],
                      "text": "1 = identical representations up to rotation and scale"})
    if "eval" in results:
        d = results["eval"]["delta"]
        items.append({"label": "held-out loss, adapted − base", "value": d["value"], "ci_low": d["ci_low"],
                      "ci_high": d["ci_high"], "text": "negative = the adapter lowers the loss (nats/token)"})
    nov = results.get("novelty")
    if nov is not None:
        if nov["windows"]:
            peak = max(nov["windows"], key=lambda w: w["peak_divergence"])
            items.append({"label": f"novelty window peak divergence (layer {peak['peak_layer']})",
                          "value": peak["peak_divergence"], "ci_low": peak["ci_low"], "ci_high": peak["ci_high"],
                          "text": nov.get("summary")})
        elif lin:
            mean = float(np.mean([r["value"] for r in lin]))
            items.append({"label": "mean linear CKA over layers", "value": mean, "text": nov.get("summary")})
    return items[:3]
