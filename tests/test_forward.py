"""The explicit layer loop: equality with mlx-lm, hook identities, an independent skip-attention reference,
gradient checkpointing and the causal toggle."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from trainer.adapter import AdapterArgs, MultiTapAdapter, block_key
from trainer.errors import UserError
from trainer.forward import AdaptedModel, hook_names, run, tiny_llama


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def tokens():
    return mx.array(np.random.default_rng(1).integers(0, 128, size=(2, 20)), dtype=mx.int32)


def trained_like_adapter(base, seed=3, **options) -> MultiTapAdapter:
    """An adapter whose parameters are all random (as after training), so every path is non-trivial."""
    mx.random.seed(seed)
    adapter = MultiTapAdapter(AdapterArgs.for_base(base, **options))
    rng = np.random.default_rng(seed)
    adapter.update(tree_map(lambda p: mx.array(rng.normal(0, 0.3, p.shape).astype(np.float32)),
                            adapter.trainable_parameters()))
    return adapter


def test_plain_loop_equals_mlx_lm_exactly(base, tokens):
    logits, captured = run(base, tokens)
    assert captured == {}
    assert mx.array_equal(logits, base(tokens)).item()


def test_untied_base_equals_mlx_lm_exactly(tokens):
    untied = tiny_llama(seed=4, tie_word_embeddings=False)
    assert mx.array_equal(run(untied, tokens)[0], untied(tokens)).item()


def test_capture_leaves_logits_unchanged(base, tokens):
    adapter = trained_like_adapter(base, distances=(0, 1, 3))
    plain, _ = run(base, tokens, adapter)
    names = hook_names(base, adapter)
    captured_logits, captured = run(base, tokens, adapter, capture=names)
    assert mx.array_equal(plain, captured_logits).item()
    assert sorted(captured) == sorted(names)
    assert captured["blocks.2.attn.hook_z"].shape == (2, 20, 4 * 16)
    assert "blocks.2.hook_skip_out" not in names and "blocks.3.hook_skip_out" in names


def test_hook_z_through_o_proj_reproduces_attention_output(base, tokens):
    names = [f"blocks.{l}.{h}" for l in (0, 4) for h in ("attn.hook_z", "hook_resid_pre")]
    _, cap = run(base, tokens, capture=names)
    for l in (0, 4):
        layer = base.layers[l]
        ref = layer.self_attn(layer.input_layernorm(cap[f"blocks.{l}.hook_resid_pre"]), mask="causal")
        got = layer.self_attn.o_proj(cap[f"blocks.{l}.attn.hook_z"])
        assert mx.abs(got - ref).max().item() <= 1e-5


def test_residual_stream_bookkeeping(base, tokens):
    """resid_post = resid_pre + attn + skip + mlp, and resid_pre of block l+1 = resid_post of block l."""
    adapter = trained_like_adapter(base, distances=(1, 2))
    _, c = run(base, tokens, adapter, capture=hook_names(base, adapter))
    layer = base.layers[4]
    attn = layer.self_attn.o_proj(c["blocks.4.attn.hook_z"])
    h = c["blocks.4.hook_resid_pre"] + attn + c["blocks.4.hook_skip_out"]
    post = h + layer.mlp(layer.post_attention_layernorm(h))
    assert mx.abs(post - c["blocks.4.hook_resid_post"]).max().item() <= 1e-5
    assert mx.array_equal(c["blocks.4.hook_resid_post"], c["blocks.5.hook_resid_pre"]).item()


def reference_skip(base, adapter, cap, i) -> np.ndarray:
    """The skip output of block i in plain numpy (float64): explicit softmax, GQA head repetition, RoPE.

    RoPE comes from mlx-lm's module (that is the base's definition); everything else is recomputed here.
    """
    args, layer, skip = adapter.args, base.layers[i], adapter.layers[block_key(i)]
    norm = layer.input_layernorm
    x = np.array(norm(cap[f"blocks.{i}.hook_resid_pre"]), dtype=np.float64)
    hist = [np.array(norm(cap[f"blocks.{i - d}.hook_resid_pre"]), dtype=np.float64) for d in args.taps(i)]
    w = np.exp(np.array(skip.tap_logits, dtype=np.float64))
    w /= w.sum()
    mixed = sum(wj * hj for wj, hj in zip(w, hist, strict=True))
    B, T, _ = x.shape
    nq, nkv, hd = args.n_heads, args.n_kv_heads, args.head_dim

    def heads(a, W, n):
        proj = a @ np.array(W.weight, dtype=np.float64).T
        return proj.reshape(B, T, n, hd).transpose(0, 2, 1, 3)

    def rope(a):
        return np.array(layer.self_attn.rope(mx.array(a.astype(np.float32))), dtype=np.float64)

    q = rope(heads(x, skip.q_proj, nq))
    k = np.repeat(rope(heads(mixed, skip.k_proj, nkv)), nq // nkv, axis=1)
    v = np.repeat(heads(mixed, skip.v_proj, nkv), nq // nkv, axis=1)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    z = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, nq * hd)
    return args.alpha * z @ np.array(skip.o_proj.weight, dtype=np.float64).T


def test_skip_output_matches_numpy_reference(base, tokens):
    adapter = trained_like_adapter(base, distances=(0, 2, 3), tap_mix="kv", alpha=0.65)
    _, cap = run(base, tokens, adapter, capture=hook_names(base, adapter))
    for i in (3, 5):
        got = np.array(cap[f"blocks.{i}.hook_skip_out"])
        np.testing.assert_allclose(got, reference_skip(base, adapter, cap, i), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [dict(distances=(1, 2), tap_mix="kv", alpha_mode="learnable", norm="learned"),
     dict(distances=(0, 3), tap_mix="output", alpha_mode="per-head"),
     dict(distances=(1,), alpha_mode="per-layer")],
)
def test_gradients_with_and_without_checkpointing_agree(base, tokens, options):
    model = AdaptedModel(base, trained_like_adapter(base, **options))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def grads(ckpt):
        def loss(m):
            return nn.losses.cross_entropy(m(x, grad_checkpoint=ckpt), y).mean()

        value, g = nn.value_and_grad(model, loss)(model)
        return value.item(), dict(tree_flatten(g))

    (v0, g0), (v1, g1) = grads(False), grads(True)
    assert abs(v0 - v1) <= 1e-6
    assert g0.keys() == g1.keys() and len(g0) == len(tree_flatten(model.trainable_parameters()))
    for k in g0:
        # A lone tap's logit is a softmax over one entry: its gradient is zero by construction.
        if not (k.endswith("tap_logits") and g0[k].size == 1):
            assert mx.abs(g0[k]).max().item() > 0, k
        np.testing.assert_allclose(np.array(g1[k]), np.array(g0[k]), rtol=1e-4, atol=1e-6, err_msg=k)


def test_disabling_every_skip_layer_gives_the_base(base, tokens):
    adapter = trained_like_adapter(base, distances=(1, 2))
    ref = base(tokens)
    all_off, _ = run(base, tokens, adapter, disable_layers=adapter.args.skip_layers())
    assert mx.array_equal(all_off, ref).item()
    one_off, _ = run(base, tokens, adapter, disable_layers=[4])
    on, _ = run(base, tokens, adapter)
    assert mx.abs(one_off - on).max().item() > 1e-4 and mx.abs(one_off - ref).max().item() > 1e-4


def test_toggle_at_layer_leaves_earlier_blocks_alone(base, tokens):
    adapter = trained_like_adapter(base, distances=(1,))
    names = ["blocks.4.hook_resid_pre", "blocks.5.hook_resid_pre"]
    _, on = run(base, tokens, adapter, capture=names)
    _, off = run(base, tokens, adapter, capture=names, disable_layers=[4])
    assert mx.array_equal(on[names[0]], off[names[0]]).item()
    assert not mx.array_equal(on[names[1]], off[names[1]]).item()


def test_bad_requests_raise_user_error(base, tokens):
    adapter = trained_like_adapter(base, distances=(1,))
    with pytest.raises(UserError, match="unknown hook"):
        run(base, tokens, capture=["blocks.9.hook_resid_pre"])
    with pytest.raises(UserError, match="unknown hook"):
        run(base, tokens, adapter, capture=["blocks.1.hook_skip_out"])
    with pytest.raises(UserError, match="skip layers"):
        run(base, tokens, adapter, disable_layers=[1])
    with pytest.raises(UserError, match="grad_checkpoint"):
        run(base, tokens, adapter, capture=["blocks.1.hook_resid_pre"], grad_checkpoint=True)
