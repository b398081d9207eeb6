"""Multi-tap skip adapter: identities with the base, tap bookkeeping, parameter matching, bad options."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from trainer.adapter import AdapterArgs, MultiTapAdapter, parameter_counts
from trainer.errors import UserError
from trainer.forward import AdaptedModel, run, tiny_llama

L = 6


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def tokens():
    return mx.array(np.random.default_rng(0).integers(0, 128, size=(2, 24)), dtype=mx.int32)


def make_adapter(base, seed=1, **options) -> MultiTapAdapter:
    mx.random.seed(seed)
    adapter = MultiTapAdapter(AdapterArgs.for_base(base, **options))
    mx.eval(adapter.parameters())
    return adapter


def randomise(adapter: MultiTapAdapter, seed: int = 2) -> None:
    """Give every parameter (tap logits, gates, alphas too) a random value so nothing is at its init."""
    rng = np.random.default_rng(seed)
    adapter.update(tree_map(lambda p: mx.array(rng.normal(0, 0.5, p.shape).astype(np.float32)),
                            adapter.trainable_parameters()))


def test_zero_init_equals_base(base, tokens):
    ref = base(tokens)
    out, _ = run(base, tokens, make_adapter(base, distances=(1, 2, 3), init="zero"))
    assert mx.abs(out - ref).max().item() <= 1e-5
    # The same adapter with Xavier init must move the logits, or the check above proves nothing.
    out_x, _ = run(base, tokens, make_adapter(base, distances=(1, 2, 3), init="xavier"))
    assert mx.abs(out_x - ref).max().item() > 1e-3


@pytest.mark.parametrize("mode", ["fixed", "learnable", "per-layer", "per-head"])
def test_alpha_zero_equals_base_exactly(base, tokens, mode):
    adapter = make_adapter(base, distances=(0, 1, 4), init="xavier", alpha_mode=mode)
    randomise(adapter)
    out, _ = run(base, tokens, adapter, alpha_override=0.0)
    assert mx.array_equal(out, base(tokens)).item()


@pytest.mark.parametrize("d", [0, 2])
def test_single_tap_kv_and_output_mixing_agree(base, tokens, d):
    kv = make_adapter(base, distances=(d,), init="xavier", tap_mix="kv")
    randomise(kv)
    out_mix = make_adapter(base, distances=(d,), init="xavier", tap_mix="output")
    out_mix.update(kv.parameters())
    a, _ = run(base, tokens, kv)
    b, _ = run(base, tokens, out_mix)
    assert mx.abs(a - b).max().item() <= 1e-5
    assert mx.abs(a - base(tokens)).max().item() > 1e-3


def test_two_taps_kv_and_output_mixing_differ(base, tokens):
    # Softmax attention is non-linear in its keys, so mixing before or after it must differ with two taps.
    kv = make_adapter(base, distances=(1, 2), init="xavier", tap_mix="kv")
    randomise(kv)
    out_mix = make_adapter(base, distances=(1, 2), init="xavier", tap_mix="output")
    out_mix.update(kv.parameters())
    assert mx.abs(run(base, tokens, kv)[0] - run(base, tokens, out_mix)[0]).max().item() > 1e-4


@pytest.mark.parametrize("distances,start", [((0, 2, 5, 9), 3), ((1, 2, 3), 0), ((4,), 2)])
def test_tap_weights_sum_to_one_and_respect_availability(base, distances, start):
    adapter = make_adapter(base, distances=distances, start_layer=start)
    randomise(adapter, seed=5)
    weights = adapter.tap_weights()
    expected = {i: [d for d in distances if i >= start and i - d >= 0] for i in range(L)}
    assert sorted(weights) == [i for i in range(L) if expected[i]]
    for i, w in weights.items():
        assert sorted(w) == expected[i]
        assert math.isclose(sum(w.values()), 1.0, abs_tol=1e-6)
        assert all(v > 0 for v in w.values())


def test_tap_weights_are_softmax_of_logits(base):
    adapter = make_adapter(base, distances=(1, 2, 3))
    randomise(adapter, seed=3)
    logits = np.array(adapter.layers["block5"].tap_logits)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(list(adapter.tap_weights()[5].values()), expected, rtol=1e-5)


def test_control_arm_matches_one_tap_parameter_count(base):
    control = AdaptedModel(base, make_adapter(base, distances=(0,)))
    one_tap = AdaptedModel(base, make_adapter(base, distances=(1,)))
    assert parameter_counts(control) == parameter_counts(one_tap)
    n_train, n_frozen = parameter_counts(control)
    base_total = sum(v.size for _, v in tree_flatten(base.parameters()))
    assert n_frozen == base_total
    # Per skip layer: q,o (64x64) + k,v (64x32) + one tap logit; layers 3, 4, 5 have a skip path.
    assert n_train == 3 * (2 * 64 * 64 + 2 * 64 * 32 + 1)


def test_only_adapter_parameters_train(base):
    model = AdaptedModel(base, make_adapter(base, distances=(1, 2), alpha_mode="learnable", norm="learned"))
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    assert names and all(k.startswith("adapter.") for k in names)
    assert "adapter.alpha" in names and "adapter.layers.block3.kv_norm.weight" in names


def test_per_head_gates_start_at_alpha(base):
    adapter = make_adapter(base, distances=(1,), alpha=0.3, alpha_mode="per-head")
    assert all(np.allclose(v, 0.3) for v in adapter.alpha_values().values())


def test_alpha_scales_skip_output_linearly(base, tokens):
    a1 = make_adapter(base, distances=(1, 3), init="xavier", alpha=0.5)
    randomise(a1)
    _, c1 = run(base, tokens, a1, capture=["blocks.3.hook_skip_out"])
    _, c2 = run(base, tokens, a1, capture=["blocks.3.hook_skip_out"], alpha_override=1.0)
    # Block 3 is the first skip block, so its input does not depend on alpha.
    s1, s2 = np.array(c1["blocks.3.hook_skip_out"]), np.array(c2["blocks.3.hook_skip_out"])
    np.testing.assert_allclose(s1, 0.5 * s2, rtol=1e-5, atol=1e-6)


def test_entropy_penalty_matches_formula(base):
    adapter = make_adapter(base, distances=(1, 2, 3), tap_penalty="entropy", tap_penalty_weight=0.1)
    randomise(adapter)
    ent = []
    for w in adapter.tap_weights().values():
        p = np.array(list(w.values()))
        ent.append(-(p * np.log(p)).sum())
    assert math.isclose(adapter.tap_penalty().item(), 0.1 * np.mean(ent), rel_tol=1e-5)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(distances=()), "empty"),
        (dict(distances=(6, 7)), "no skip path"),
        (dict(distances=(5,), start_layer=3, n_layers=5), "no skip path"),
        (dict(distances=(-1,)), ">= 0"),
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(tap_mix="both"), "tap-mix"),
        (dict(alpha_mode="global"), "alpha-mode"),
        (dict(start_layer=6), "start-layer"),
    ],
)
def test_bad_options_raise_user_error(base, options, message):
    with pytest.raises(UserError, match=message):
        AdapterArgs.for_base(base, **options)


def test_zero_init_trains_output_projection_first(base, tokens):
    model = AdaptedModel(base, make_adapter(base, distances=(1, 2)))

    def loss(m):
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    grads = dict(tree_flatten(nn.value_and_grad(model, loss)(model)[1]))
    assert mx.abs(grads["adapter.layers.block4.o_proj.weight"]).max().item() > 0
    # dL/dWq is zero at step 0 (o_proj = 0 blocks it); it opens once o_proj moves.
    assert mx.abs(grads["adapter.layers.block4.q_proj.weight"]).max().item() == 0
