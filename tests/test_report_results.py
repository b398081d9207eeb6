"""Results files (save, load, validation errors) and the computed results the report tests render.

The results are computed, not typed in: two toy "models" whose layer activations agree except for a
perturbation in the middle layers, compared with numpy linear CKA with intervals from resampling whole
sequences, segmented by :mod:`psiloscope.novelty`, probed with ridge linear probes, and a tiny gated logistic
model trained by gradient descent for the training and evaluation sections.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from psiloscope.novelty import novelty_from_rows
from psiloscope.results import SCHEMA, ResultsError, load_results, save_results

N_SEQ, SEQ_LEN, WIDTH, N_LAYERS, N_HEADS = 16, 16, 24, 6, 4
PERTURBATION = [0.0, 0.0, 1.2, 1.6, 0.0, 0.0]  # B departs from A at layers 2-3 only


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _activations(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Residual-style layer stacks of shape (n_tokens, WIDTH); B adds a perturbation at some layers."""
    h = rng.normal(size=(N_SEQ * SEQ_LEN, WIDTH))
    stack_a = []
    for _ in range(N_LAYERS):
        h = h + np.tanh(h @ rng.normal(scale=WIDTH**-0.5, size=(WIDTH, WIDTH)))
        stack_a.append(h)
    stack_b = [a + s * rng.normal(size=a.shape) * a.std() for a, s in zip(stack_a, PERTURBATION, strict=True)]
    return stack_a, stack_b


def _bootstrap(stat, n_tokens: int, rng: np.random.Generator, n_boot: int = 40) -> tuple[float, float]:
    """Normal-approximation interval of ``stat(rows)``, its spread estimated by resampling whole sequences."""
    seq_rows = np.arange(n_tokens).reshape(N_SEQ, SEQ_LEN)
    spread = np.std([stat(seq_rows[rng.integers(0, N_SEQ, N_SEQ)].ravel()) for _ in range(n_boot)])
    centre = stat(np.arange(n_tokens))
    return float(centre - 1.96 * spread), float(centre + 1.96 * spread)


def _similarity_section(stack_a, stack_b, rng) -> dict:
    layer_rows, head_rows = [], []
    for layer, (a, b) in enumerate(zip(stack_a, stack_b, strict=True)):
        for kind, (x, y) in {
            "resid_post": (a, b),
            "resid_pre": (stack_a[layer - 1], stack_b[layer - 1]),
        }.items():
            if kind == "resid_pre" and layer == 0:
                continue
            low, high = _bootstrap(lambda r, x=x, y=y: _linear_cka(x[r], y[r]), len(x), rng)
            hook = f"blocks.{layer}.hook_{kind}"
            layer_rows.append(
                {
                    "hook": hook,
                    "layer": layer,
                    "measure": "linear_cka",
                    "value": _linear_cka(x, y),
                    "ci_low": min(low, 1.0),
                    "ci_high": min(high, 1.0),
                    "n_tokens": len(x),
                }
            )
        for head, cols in enumerate(np.split(np.arange(WIDTH), N_HEADS)):
            head_rows.append({"layer": layer, "head": head, "value": _linear_cka(a[:, cols], b[:, cols])})
    labels = [str(layer) for layer in range(N_LAYERS)]

    def matrix(xs, ys):
        return {"rows": labels, "cols": labels, "values": [[_linear_cka(x, y) for y in ys] for x in xs]}

    novelty = novelty_from_rows(layer_rows, measure="linear_cka", hook_kind="resid_post")
    return {
        "layers": layer_rows,
        "heads": head_rows,
        "matrices": {
            "A_vs_A": matrix(stack_a, stack_a),
            "B_vs_B": matrix(stack_b, stack_b),
            "A_vs_B": matrix(stack_a, stack_b),
        },
        "novelty": {
            "measure": novelty.measure,
            "hook_kind": "resid_post",
            "summary": novelty.summary,
            "novel_threshold": novelty.novel_threshold,
            "aligned_threshold": novelty.aligned_threshold,
            "aligned_prefix_end": novelty.aligned_prefix_end,
            "reconvergence": novelty.reconvergence_layers,
            "labels": [
                {"layer": layer, "label": label}
                for layer, label in zip(novelty.layers, novelty.labels, strict=True)
            ],
            "windows": [
                {
                    "start": w.start,
                    "end": w.end,
                    "peak_layer": w.peak_layer,
                    "peak_divergence": w.peak_divergence,
                    "ci_low": w.peak_ci_low,
                    "ci_high": w.peak_ci_high,
                    "reconvergence_layer": w.reconvergence_layer,
                }
                for w in novelty.windows
            ],
        },
    }


def _pca_section(stack_a, stack_b) -> dict:
    spectra, bases = [], {}
    for model, stack in (("A", stack_a), ("B", stack_b)):
        for layer, x in enumerate(stack):
            _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
            var = s**2 / np.sum(s**2)
            spectra.append(
                {
                    "model": model,
                    "layer": layer,
                    "explained_variance_ratio": var[:20],
                    "effective_rank": float(np.exp(-np.sum(var * np.log(var)))),
                    "participation_ratio": float(1 / np.sum(var**2)),
                }
            )
            bases[model, layer] = vt
    angles = [
        {
            "layer": layer,
            "k": k,
            "mean_cos": float(np.mean(np.linalg.svd(bases["A", layer][:k] @ bases["B", layer][:k].T)[1])),
        }
        for layer in range(N_LAYERS)
        for k in (2, 4, 8)
    ]
    return {"spectra": spectra, "angles": angles}


def _probe_rows(stack_a, stack_b, target: np.ndarray) -> list[dict]:
    """Ridge least-squares linear probes for a binary target; held-out accuracy with a Wald interval."""
    train = np.arange(len(target)) < len(target) * 3 // 4
    signs = 2.0 * target - 1
    chance = max(target[~train].mean(), 1 - target[~train].mean())
    rows = []
    for model, stack in (("A", stack_a), ("B", stack_b)):
        for layer, x in enumerate(stack):
            x = np.hstack([x, np.ones((len(x), 1))])
            weights = np.linalg.solve(x[train].T @ x[train] + np.eye(x.shape[1]), x[train].T @ signs[train])
            accuracy = float(np.mean(np.sign(x[~train] @ weights) == signs[~train]))
            half_width = 1.96 * np.sqrt(accuracy * (1 - accuracy) / (~train).sum())
            rows.append({"task": "sign of input feature 0", "layer": layer, "model": model,
                         "accuracy": accuracy, "ci_low": max(0.0, accuracy - half_width),
                         "ci_high": min(1.0, accuracy + half_width), "chance": float(chance)})
    return rows


def _training_and_eval(stack_a, stack_b, rng) -> tuple[dict, dict]:
    """Gradient descent on a logistic model reading every layer of A through a tap weight and a gate."""
    features = np.stack([x @ rng.normal(size=WIDTH) / np.sqrt(WIDTH) for x in stack_a], axis=1)
    features /= features.std(0)
    target = (stack_b[3] @ np.ones(WIDTH) > 0).astype(float)
    taps, alpha = np.full(N_LAYERS, 0.1), np.full(N_LAYERS, 0.5)

    def token_loss(tap_weights, gates):
        z = features @ (tap_weights * gates)
        return np.logaddexp(0, z) - target * z

    metrics, tap_rows, alpha_rows = [], [], []
    for step in range(1, 61):
        lr = 0.5 * (1 + np.cos(np.pi * step / 60)) / 2
        residual = 1 / (1 + np.exp(-features @ (taps * alpha))) - target
        grad = features.T @ residual / len(target)
        taps, alpha = taps - lr * grad * alpha, alpha - lr * grad * taps
        row = {"step": step, "loss": float(token_loss(taps, alpha).mean()), "lr": float(lr)}
        if step % 10 == 0:
            row["val_loss"] = row["loss"]
        metrics.append(row)
        tap_rows += [
            {"step": step, "layer": layer, "distance": 1, "weight": w} for layer, w in enumerate(taps)
        ]
        alpha_rows += [{"step": step, "layer": layer, "value": a} for layer, a in enumerate(alpha)]

    def mean_ci(per_token: np.ndarray) -> tuple[float, float, float]:
        return (float(per_token.mean()), *_bootstrap(lambda r: per_token[r].mean(), len(per_token), rng))

    adapted = token_loss(taps, alpha)
    rows = []
    for model, losses in (
        ("base", token_loss(taps, 0 * alpha)),
        ("adapted", adapted),
        ("alpha0", token_loss(taps, 0 * alpha)),
    ):
        loss, low, high = mean_ci(losses)
        rows.append(
            {"model": model, "loss": loss, "loss_ci_low": low, "loss_ci_high": high, "ppl": np.exp(loss)}
        )
    toggles = []
    for layer in range(N_LAYERS):
        toggled = token_loss(np.where(np.arange(N_LAYERS) == layer, 0.0, taps), alpha)
        delta, low, high = mean_ci(toggled - adapted)
        toggles.append(
            {"layer": layer, "loss": float(toggled.mean()), "delta": delta, "ci_low": low, "ci_high": high}
        )
    delta, low, high = mean_ci(adapted - token_loss(taps, 0 * alpha))
    training = {"metrics": metrics, "taps": tap_rows, "alpha": alpha_rows}
    return training, {
        "rows": rows,
        "delta": {"value": delta, "ci_low": low, "ci_high": high},
        "toggles": toggles,
    }


def computed_results(path_a: str = "runs/adapted", path_b: str = "base") -> dict:
    """A complete results document (every section) from the toy comparison above."""
    rng = np.random.default_rng(0)
    stack_a, stack_b = _activations(rng)
    similarity = _similarity_section(stack_a, stack_b, rng)
    training, evaluation = _training_and_eval(stack_a, stack_b, rng)
    curve = [row for row in similarity["layers"] if row["hook"].endswith("resid_post")]
    least = min(curve, key=lambda row: row["value"])
    return {
        "schema": SCHEMA,
        "meta": {
            "a": {
                "kind": "run",
                "path": path_a,
                "model_fingerprint": "f" * 64,
                "adapter_fingerprint": "a" * 64,
            },
            "b": {"kind": "base", "path": path_b, "model_fingerprint": "f" * 64},
            "tokens": {
                "tokens_sha256": "0123456789abcdef" * 4,
                "n_tokens": N_SEQ * SEQ_LEN,
                "n_sequences": N_SEQ,
                "seq_len": SEQ_LEN,
                "data": "toy",
                "split": "test",
            },
            "versions": {"numpy": np.__version__},
            "created": "2026-01-01T00:00:00+00:00",
            "options": {"bootstrap": 40, "note": "<b>not bold</b>"},
        },
        "headline": [
            {
                "label": f"Lowest linear CKA (layer {least['layer']})",
                "value": least["value"],
                "ci_low": least["ci_low"],
                "ci_high": least["ci_high"],
                "text": "A vs B, residual stream",
            },
            {
                "label": "Held-out loss change",
                **evaluation["delta"],
                "text": "adapted minus base, nats/token",
            },
        ],
        **similarity,
        "pca": _pca_section(stack_a, stack_b),
        "probes": _probe_rows(stack_a, stack_b, (stack_a[0][:, 0] > 0).astype(int)),
        "training": training,
        "eval": evaluation,
        "notes": ["toy data: 256 tokens"],
    }


@pytest.fixture(scope="module")
def results() -> dict:
    return computed_results()


def test_save_then_load_gives_back_the_same_document(results, tmp_path):
    path = save_results(results, tmp_path / "results.json")
    assert load_results(path) == json.loads(json.dumps(results, default=lambda a: a.tolist()))
    assert not [p for p in tmp_path.iterdir() if p.name != "results.json"], "temporary file left behind"


def _document(**sections) -> str:
    return json.dumps({"schema": SCHEMA, **sections})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"schema": "psiloscope.results/1", "layers": [], "x": NaN}', "NaN is not valid JSON"),
        ("[1, 2]", "top level should be a JSON object"),
        ('{"schema": "psiloscope.results/99"}', "unsupported schema 'psiloscope.results/99'"),
        (_document(layer=[]), "unknown section(s) ['layer']"),
        (
            _document(layers=[{"hook": "h", "layer": "3", "measure": "m", "value": 1}]),
            "layers[0].layer should be an integer",
        ),
        (
            _document(probes=[{"task": "t", "layer": 0, "model": "C", "accuracy": 1}]),
            "probes[0].model should be one of 'A', 'B'",
        ),
        (
            _document(matrices={"A_vs_B": {"rows": ["0"], "cols": ["0", "1"], "values": [[1.0]]}}),
            "matrices.A_vs_B.values should be a 1x2",
        ),
        (_document(eval={"delta": {"ci_low": 0.1}}), "eval.delta lacks the required field 'value'"),
    ],
)
def test_load_results_names_the_file_and_the_problem(tmp_path, content, expected):
    path = tmp_path / "bad results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError) as caught:
        load_results(path)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_every_section_is_optional(tmp_path):
    path = save_results({}, tmp_path / "results.json")
    assert load_results(path) == {"schema": SCHEMA}


def test_save_refuses_nan_and_writes_nothing(tmp_path):
    row = {"hook": "blocks.0.hook_resid_post", "layer": 0, "measure": "linear_cka", "value": np.nan}
    with pytest.raises(ResultsError, match=r"layers\[0\]\.value should be a finite number"):
        save_results({"layers": [row]}, tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []


