"""Held-out evaluation: losses against an independent numpy computation, bootstrap intervals, identities."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map
from test_train_fixtures import repeating_tokens, tiny_base

from trainer.adapter import AdapterArgs, MultiTapAdapter
from trainer.evaluate import bootstrap_indices, evaluate, paired_difference, sequence_losses, summarise


@pytest.fixture(scope="module")
def base():
    return tiny_base()


@pytest.fixture(scope="module")
def held_out():
    return repeating_tokens(7, seed=5, split="validation")


def adapter_for(base, init="zero", randomise=False) -> MultiTapAdapter:
    mx.random.seed(0)
    adapter = MultiTapAdapter(AdapterArgs.for_base(base.model, distances=(1, 3), start_layer=2, init=init))
    if randomise:
        rng = np.random.default_rng(0)
        adapter.update(tree_map(lambda p: mx.array(rng.normal(0, 0.3, p.shape).astype(np.float32)),
                                adapter.trainable_parameters()))
    return adapter


def test_sequence_losses_match_numpy_log_softmax(base, held_out):
    sums, counts = sequence_losses(base.model, held_out.tokens, held_out.mask, batch_size=3)
    logits = np.array(base.model(mx.array(held_out.tokens[:, :-1])), dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    targets = held_out.tokens[:, 1:]
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    m = held_out.mask[:, 1:]
    np.testing.assert_allclose(sums, (nll * m).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(counts, m.sum(1))
    assert counts.min() < held_out.tokens.shape[1] - 1  # padding really was excluded


def test_summary_is_token_weighted_and_bootstrap_matches_a_plain_loop():
    sums, counts = np.array([10.0, 2.0, 9.0, 4.0]), np.array([5, 1, 3, 4])
    idx = bootstrap_indices(4, 500, seed=1)
    s = summarise(sums, counts, idx)
    assert s["loss"] == pytest.approx(25 / 13)
    loop = [sums[i].sum() / counts[i].sum() for i in idx]
    assert s["loss_ci"] == pytest.approx([np.percentile(loop, 2.5), np.percentile(loop, 97.5)])
    assert s["ppl_ci"] == pytest.approx(np.exp(s["loss_ci"]).tolist())
    assert s["loss_ci"][0] <= s["loss"] <= s["loss_ci"][1]


def test_paired_difference_of_identical_models_is_exactly_zero():
    sums, counts = np.array([3.0, 1.0, 2.0]), np.array([2, 1, 2])
    d = paired_difference(sums, sums.copy(), counts, bootstrap_indices(3, 100, 0))
    assert d == {"mean": 0.0, "ci": [0.0, 0.0]}


def test_untrained_zero_init_adapter_scores_exactly_the_base(base, held_out):
    result = evaluate(base.model, adapter_for(base), held_out, n_boot=200)
    assert result["adapted"]["loss"] == result["base"]["loss"]
    assert result["delta_base_minus_adapted"] == {"mean": 0.0, "ci": [0.0, 0.0]}


def test_evaluate_report_with_a_non_trivial_adapter(base, held_out):
    adapter = adapter_for(base, init="xavier", randomise=True)
    result = evaluate(base.model, adapter, held_out, n_boot=300, batch_size=4)
    assert result["alpha0"]["equals_base"] and result["alpha0"]["max_abs_diff_vs_base"] == 0.0
    assert result["alpha0"]["loss"] == result["base"]["loss"]
    assert result["adapted"]["loss"] != result["base"]["loss"]
    delta = result["delta_base_minus_adapted"]
    assert delta["mean"] == pytest.approx(result["base"]["loss"] - result["adapted"]["loss"])
    assert delta["ci"][0] <= delta["mean"] <= delta["ci"][1]
    assert sorted(result["toggle"], key=int) == ["2", "3", "4", "5"]
    per_seq = result["per_sequence"]
    assert sum(per_seq["adapted"]) / sum(per_seq["n_tokens"]) == pytest.approx(result["adapted"]["loss"])
    assert result["tokens"]["fingerprint"] == held_out.fingerprint
    # Switching the skip path off at one layer moves the loss away from the adapted loss (toward the base).
    for t in result["toggle"].values():
        assert t["delta_off_minus_adapted"]["mean"] == pytest.approx(t["loss"] - result["adapted"]["loss"])
        assert t["loss"] != result["adapted"]["loss"]


def test_toggle_can_be_switched_off(base, held_out):
    assert evaluate(base.model, adapter_for(base), held_out, n_boot=50, toggle=False)["toggle"] == {}
