"""Layer-wise probes on activation stores: one tidy row per hook, or frozen vs adapted side by side."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from activations import Store, hook_name, parse_hook
from probes.design import ProbeDesign, build_design
from probes.fit import majority_baseline_correct, out_of_fold_predictions, sequence_bootstrap_ci


@contextmanager
def _opened(store: Store | str | os.PathLike) -> Iterator[Store]:
    """The store itself, or the store at a path, closed afterwards only if opened here."""
    if isinstance(store, Store):
        yield store
        return
    with Store(store) as opened:
        yield opened


def probe_hooks(store: Store, layers: list[int] | None, hook_kind: str) -> list[tuple[int, str]]:
    """``(layer, hook)`` pairs to probe, sorted by layer; every requested hook must be in the store."""
    of_kind = {}
    for hook in store.hooks:
        layer, kind = parse_hook(hook)
        if kind == hook_kind:
            of_kind[layer] = hook
    if not of_kind:
        kinds = sorted({parse_hook(hook)[1] for hook in store.hooks})
        raise ValueError(f"the store has no {hook_kind!r} hooks; it holds hook kinds {kinds}")
    if layers is None:
        return sorted(of_kind.items())
    if len(layers) == 0:
        raise ValueError(f"layers is empty; pass None for every layer or some of {sorted(of_kind)}")
    missing = [hook_name(int(layer), hook_kind) for layer in layers if int(layer) not in of_kind]
    if missing:
        raise ValueError(
            f"the store lacks hooks {missing}; its {hook_kind!r} layers are {sorted(of_kind)} "
            "(dump those layers or pass layers= from that list)"
        )
    return [(int(layer), of_kind[int(layer)]) for layer in sorted(set(layers))]


def read_design_rows(store: Store, hook: str, design: ProbeDesign) -> np.ndarray:
    """Activations of the design's rows at ``hook``, reading only the sampled sequences.

    Returns
    -------
    (n_rows, width) float64 (standardisation and least squares run in double precision).
    """
    block = np.concatenate([store.read(hook, start, stop) for start, stop in design.read_ranges])
    return block[design.block_rows].astype(np.float64)


def _design_fields(design: ProbeDesign, hook: str, layer: int, chance: float, classifier: str) -> dict:
    return {
        "task": design.task, "hook": hook, "layer": layer, "chance": chance,
        "n_rows": design.n_rows, "n_sequences": design.n_sequences, "n_classes": design.n_classes,
        "n_folds": design.n_folds, "classifier": classifier, "shuffled_labels": design.shuffled_labels,
    }


def _probe_stores(
    stores: list[Store], layers: list[int] | None, hook_kind: str, design_args: dict, fit_args: dict
) -> tuple[ProbeDesign, list[tuple[int, str, list[np.ndarray]]]]:
    """Shared design on the first store's tokens; per layer, per store, (n_rows,) bool correctness."""
    if layers is None:
        shared = set.intersection(*({layer for layer, _ in probe_hooks(s, None, hook_kind)} for s in stores))
        if not shared:
            raise ValueError(f"the stores share no {hook_kind!r} layer")
        layers = sorted(shared)
    hooks_per_store = [probe_hooks(s, layers, hook_kind) for s in stores]
    design = build_design(stores[0].tokens, stores[0].seq_offsets, **design_args)
    per_layer = []
    for pairs in zip(*hooks_per_store, strict=True):
        correct = [
            out_of_fold_predictions(read_design_rows(s, hook, design), design, **fit_args) == design.labels
            for s, (_, hook) in zip(stores, pairs, strict=True)
        ]
        per_layer.append((pairs[0][0], pairs[0][1], correct))
    return design, per_layer


def run_probes(
    store: Store | str | os.PathLike,
    task: str = "prev1",
    layers: list[int] | None = None,
    hook_kind: str = "resid_post",
    top_k: int = 50,
    n_folds: int = 5,
    max_rows: int | None = 4000,
    seed: int = 0,
    classifier: str = "ridge",
    max_features: int | None = None,
    shuffle_labels: bool = False,
    n_boot: int = 1000,
) -> list[dict]:
    """Cross-validated probe accuracy of ``task`` at every requested layer.

    Parameters
    ----------
    store : an activation store or its path.
    task : ``current``, ``next``, ``prev1``..``prev5`` (token d positions back) or ``position``.
    layers : layers to probe (default: every layer with a ``hook_kind`` hook).
    hook_kind : hook kind to probe, e.g. ``resid_post``.
    top_k : keep rows whose label is among the ``top_k`` most frequent labels of the sample.
    n_folds : folds of cross-validation grouped by sequence.
    max_rows : rows read per hook, filled with whole sequences sampled with ``seed`` (None = all).
    classifier : ``ridge`` (default, fast) or ``logistic`` (see :func:`probes.fit.make_probe`).
    max_features : project standardised features onto this many principal components (None = off).
    shuffle_labels : permute labels across rows, a control whose accuracy should sit at ``chance``.
    n_boot : sequence-bootstrap draws for the 95% interval.

    Returns
    -------
    One dict per layer: task, hook, layer, accuracy, ci_low, ci_high, chance (accuracy of predicting
    the training folds' majority class), n_rows, n_sequences, n_classes, n_folds, classifier,
    shuffled_labels.
    """
    design_args = {"task": task, "top_k": top_k, "n_folds": n_folds, "max_rows": max_rows, "seed": seed,
                   "shuffle_labels": shuffle_labels}
    fit_args = {"classifier": classifier, "max_features": max_features, "seed": seed}
    with _opened(store) as opened:
        design, per_layer = _probe_stores([opened], layers, hook_kind, design_args, fit_args)
    chance = float(majority_baseline_correct(design).mean())
    results = []
    for layer, hook, (correct,) in per_layer:
        (accuracy,), (low,), (high,) = sequence_bootstrap_ci(correct, design.groups, n_boot, seed=seed)
        results.append({**_design_fields(design, hook, layer, chance, classifier),
                        "accuracy": float(accuracy), "ci_low": float(low), "ci_high": float(high)})
    return results


def compare_probes(
    store_a: Store | str | os.PathLike,
    store_b: Store | str | os.PathLike,
    task: str = "prev1",
    layers: list[int] | None = None,
    hook_kind: str = "resid_post",
    top_k: int = 50,
    n_folds: int = 5,
    max_rows: int | None = 4000,
    seed: int = 0,
    classifier: str = "ridge",
    max_features: int | None = None,
    shuffle_labels: bool = False,
    n_boot: int = 1000,
) -> list[dict]:
    """Probe two stores of the same tokens (e.g. frozen ``a`` vs adapted ``b``) on identical rows and folds.

    Parameters are those of :func:`run_probes`; ``layers`` defaults to the layers both stores hold.

    Returns
    -------
    One dict per layer with the design fields of :func:`run_probes` plus accuracy_a, ci_low_a,
    ci_high_a, accuracy_b, ci_low_b, ci_high_b and difference (b - a) with difference_ci_low,
    difference_ci_high from a paired sequence bootstrap (the same resampled sequences for both).
    """
    design_args = {"task": task, "top_k": top_k, "n_folds": n_folds, "max_rows": max_rows, "seed": seed,
                   "shuffle_labels": shuffle_labels}
    fit_args = {"classifier": classifier, "max_features": max_features, "seed": seed}
    with _opened(store_a) as opened_a, _opened(store_b) as opened_b:
        if opened_a.tokens_sha256 != opened_b.tokens_sha256:
            raise ValueError(
                "the two stores hold different token sets (tokens_sha256 differ); dump both models over "
                "the same tokens to compare them"
            )
        design, per_layer = _probe_stores([opened_a, opened_b], layers, hook_kind, design_args, fit_args)
    chance = float(majority_baseline_correct(design).mean())
    results = []
    for layer, hook, (correct_a, correct_b) in per_layer:
        scores = np.stack([correct_a, correct_b, correct_b.astype(np.float64) - correct_a])
        est, low, high = sequence_bootstrap_ci(scores, design.groups, n_boot, seed=seed)
        results.append({
            **_design_fields(design, hook, layer, chance, classifier),
            "accuracy_a": float(est[0]), "ci_low_a": float(low[0]), "ci_high_a": float(high[0]),
            "accuracy_b": float(est[1]), "ci_low_b": float(low[1]), "ci_high_b": float(high[1]),
            "difference": float(est[2]), "difference_ci_low": float(low[2]),
            "difference_ci_high": float(high[2]),
        })
    return results
