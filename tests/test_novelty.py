"""Novelty-window detection on constructed similarity curves."""

import json

import numpy as np
import pytest

from psiloscope.novelty import detect_novelty_windows, novelty_from_rows

N_LAYERS = 30
HALF_WIDTH = 0.02  # confidence half-width of the synthetic curves


def noisy_curve(dips: list[tuple[int, int, float]], seed: int, noise: float = 0.01):
    """Similarity near 0.99 everywhere, dropping to ``1 - depth`` on layers ``start..end``.

    Returns (layers, value, ci_low, ci_high), each (N_LAYERS,).
    """
    rng = np.random.default_rng(seed)
    value = np.full(N_LAYERS, 0.99)
    for start, end, depth in dips:
        value[start : end + 1] = 1 - depth
    value = np.clip(value + rng.normal(0, noise, N_LAYERS), 0, 1)
    low = np.clip(value - HALF_WIDTH, 0, 1)
    high = np.clip(value + HALF_WIDTH, 0, 1)
    return np.arange(N_LAYERS), value, low, high


@pytest.mark.parametrize("seed", range(5))
def test_planted_window_is_found_with_reconvergence(seed):
    result = detect_novelty_windows(*noisy_curve([(10, 17, 0.4)], seed))
    assert [(w.start, w.end) for w in result.windows] == [(10, 17)]
    window = result.windows[0]
    assert 10 <= window.peak_layer <= 17
    assert window.peak_ci_low <= window.peak_divergence <= window.peak_ci_high
    assert window.peak_divergence == pytest.approx(0.4, abs=0.05)
    # Noise of 0.01 around 0.99 keeps the pessimistic bound above 0.95 only most of the time.
    assert result.aligned_prefix_end is not None and result.aligned_prefix_end <= 9
    assert window.reconvergence_layer is not None and window.reconvergence_layer >= 18
    assert result.reconvergence_layers == [window.reconvergence_layer]
    assert "layers 10-17" in result.summary


@pytest.mark.parametrize("seed", range(5))
def test_flat_curve_has_no_window(seed):
    result = detect_novelty_windows(*noisy_curve([], seed))
    assert result.windows == []
    assert result.reconvergence_layers == []
    assert "novel" not in result.labels
    assert "no window" in result.summary


def test_exactly_identical_prefix_is_aligned_through_the_window_start():
    layers, value, low, high = noisy_curve([(12, 20, 0.5)], seed=0, noise=0.0)
    value[:12], low[:12], high[:12] = 1.0, 1.0, 1.0
    result = detect_novelty_windows(layers, value, low, high)
    assert result.aligned_prefix_end == 11
    assert result.summary.startswith("linear_cka: aligned through layer 11;")


@pytest.mark.parametrize("seed", range(3))
def test_window_touching_the_first_layer(seed):
    result = detect_novelty_windows(*noisy_curve([(0, 6, 0.3)], seed))
    assert [(w.start, w.end) for w in result.windows] == [(0, 6)]
    assert result.aligned_prefix_end is None


@pytest.mark.parametrize("seed", range(3))
def test_window_touching_the_last_layer_does_not_reconverge(seed):
    result = detect_novelty_windows(*noisy_curve([(22, 29, 0.3)], seed))
    assert [(w.start, w.end) for w in result.windows] == [(22, 29)]
    assert result.windows[0].reconvergence_layer is None
    assert result.reconvergence_layers == []
    assert "not reconverging" in result.summary


@pytest.mark.parametrize("seed", range(3))
def test_two_windows_each_reconverge(seed):
    result = detect_novelty_windows(*noisy_curve([(5, 9, 0.3), (18, 23, 0.5)], seed))
    assert [(w.start, w.end) for w in result.windows] == [(5, 9), (18, 23)]
    first, second = result.windows
    assert 10 <= first.reconvergence_layer < 18
    assert second.reconvergence_layer >= 24
    assert second.peak_divergence > first.peak_divergence
    assert "2 novelty windows" in result.summary


def test_uncertain_gap_is_bridged_only_up_to_max_gap():
    layers = np.arange(10)
    #                  aligned     novel      uncertain  novel       aligned
    value = np.array([0.99, 0.99, 0.5, 0.5, 0.92, 0.5, 0.5, 0.99, 0.99, 0.99])
    low, high = value - 0.01, np.minimum(value + 0.01, 1)
    bridged = detect_novelty_windows(layers, value, low, high, max_gap=1)
    assert bridged.labels[4] == "uncertain"
    assert [(w.start, w.end) for w in bridged.windows] == [(2, 6)]
    split = detect_novelty_windows(layers, value, low, high, max_gap=0)
    assert [(w.start, w.end) for w in split.windows] == [(2, 3), (5, 6)]
    # No aligned layer between the two split windows: the first one has no reconvergence.
    assert split.windows[0].reconvergence_layer is None
    assert split.windows[1].reconvergence_layer == 7


def test_aligned_layer_always_splits_windows():
    value = np.array([0.5, 0.99, 0.5])
    result = detect_novelty_windows([0, 1, 2], value, value - 0.005, np.minimum(value + 0.005, 1), max_gap=5)
    assert [(w.start, w.end) for w in result.windows] == [(0, 0), (2, 2)]
    assert result.windows[0].reconvergence_layer == 1


def test_wide_interval_makes_a_layer_uncertain_not_novel():
    value = np.array([0.99, 0.7, 0.99])
    low = np.array([0.98, 0.3, 0.98])
    high = np.array([1.0, 0.95, 1.0])  # divergence lower bound 0.05 < 0.10
    result = detect_novelty_windows([0, 1, 2], value, low, high)
    assert result.labels == ["aligned", "uncertain", "aligned"]
    assert result.windows == []


def test_result_is_json_serialisable():
    result = detect_novelty_windows(*noisy_curve([(10, 17, 0.4)], seed=0))
    restored = json.loads(json.dumps(result.to_dict()))
    assert restored["windows"][0]["start"] == 10
    assert restored["measure"] == "linear_cka"
    assert restored["novel_threshold"] == 0.10


@pytest.mark.parametrize(
    ("layers", "value", "low", "high", "message"),
    [
        ([0, 1], [0.9], [0.8], [1.0], "equal lengths"),
        ([0, 1], [0.9, float("nan")], [0.8, 0.8], [1.0, 1.0], "NaN"),
        ([0, 1], [0.9, 0.7], [0.8, 0.8], [1.0, 1.0], "ci_low <= value <= ci_high"),
        ([1, 0], [0.9, 0.9], [0.8, 0.8], [1.0, 1.0], "strictly increasing"),
        ([0, 0], [0.9, 0.9], [0.8, 0.8], [1.0, 1.0], "strictly increasing"),
        ([0, 1], [0.9, 0.9], [-0.2, 0.8], [1.0, 1.0], r"\[0, 1\]"),
        ([], [], [], [], "empty"),
    ],
)
def test_bad_curves_are_refused(layers, value, low, high, message):
    with pytest.raises(ValueError, match=message):
        detect_novelty_windows(layers, value, low, high)


def test_bad_thresholds_are_refused():
    args = noisy_curve([], seed=0)
    with pytest.raises(ValueError, match="aligned_threshold <= novel_threshold"):
        detect_novelty_windows(*args, novel_threshold=0.05, aligned_threshold=0.1)
    with pytest.raises(ValueError, match="max_gap"):
        detect_novelty_windows(*args, max_gap=-1)


def comparison_rows(seed: int = 0) -> list[dict]:
    layers, value, low, high = noisy_curve([(10, 17, 0.4)], seed)
    rows = []
    for kind in ("resid_post", "resid_pre"):
        for measure, shift in (("linear_cka", 0.0), ("svcca", 0.3)):
            for layer in layers[::-1]:  # deliberately unsorted
                rows.append({
                    "hook": f"blocks.{layer}.hook_{kind}", "layer": int(layer), "measure": measure,
                    "value": value[layer] - shift * (kind == "resid_pre"),
                    "ci_low": low[layer] - shift * (kind == "resid_pre"),
                    "ci_high": high[layer] - shift * (kind == "resid_pre"), "n_rows": 1000,
                })
    return rows


def test_rows_helper_picks_measure_and_hook_kind():
    result = novelty_from_rows(comparison_rows(), measure="linear_cka")
    direct = detect_novelty_windows(*noisy_curve([(10, 17, 0.4)], seed=0))
    assert result.to_dict() == direct.to_dict()
    svcca = novelty_from_rows(comparison_rows(), measure="svcca", hook_kind="resid_pre", max_gap=0)
    assert svcca.measure == "svcca" and svcca.max_gap == 0
    assert len(svcca.windows) >= 1


def test_rows_helper_refuses_missing_measure_kind_or_duplicates():
    rows = comparison_rows()
    with pytest.raises(ValueError, match="available: \\['linear_cka', 'svcca'\\]"):
        novelty_from_rows(rows, measure="rbf_cka")
    with pytest.raises(ValueError, match="hook kind 'attn_out'"):
        novelty_from_rows(rows, hook_kind="attn_out")
    with pytest.raises(ValueError, match="same 'resid_post' layer"):
        novelty_from_rows(rows + rows[:1])
    with pytest.raises(ValueError, match="lacks keys"):
        novelty_from_rows([{"hook": "blocks.0.hook_resid_post"}])
