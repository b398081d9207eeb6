"""One explicit layer loop over a frozen mlx-lm Llama base, with an optional multi-tap skip adapter.

Training, evaluation and activation dumps all go through `run`; mlx-lm classes are never patched. The loop
calls the base's own modules (embedding, norms, q/k/v/o projections, RoPE, MLP) in the same order as
`mlx_lm.models.llama`, so with no adapter it reproduces `base_model(inputs)` bit for bit, and capturing an
activation is just keeping a reference to an array the loop computes anyway.

Hook names follow TransformerLens:
`blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_resid_post`, `blocks.{l}.attn.hook_z` (per-head attention
outputs before o_proj, width n_heads*head_dim) and `blocks.{l}.hook_skip_out` (the alpha-scaled skip output).
"""

from __future__ import annotations

from collections.abc import Iterable

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama
from mlx_lm.models.base import create_attention_mask, scaled_dot_product_attention

from trainer.adapter import MultiTapAdapter
from trainer.errors import UserError

BLOCK_HOOKS = ("hook_resid_pre", "hook_resid_post", "attn.hook_z")


def hook_names(model: nn.Module, adapter: MultiTapAdapter | None = None) -> list[str]:
    """Every hook `run` can capture for this base (and adapter), in layer order."""
    names = []
    for l in range(len(model.layers)):
        names += [f"blocks.{l}.{h}" for h in BLOCK_HOOKS]
        if adapter is not None and adapter.has_layer(l):
            names.append(f"blocks.{l}.hook_skip_out")
    return names


def attention_heads(attn: nn.Module, x: mx.array, mask) -> mx.array:
    """Per-head outputs of an mlx-lm llama `Attention` before its output projection.

    x: (B, T, hidden), already normalised. Returns (B, T, n_heads*head_dim); `attn.o_proj` of it is
    exactly `attn(x, mask)`.
    """
    B, T, _ = x.shape
    q = attn.q_proj(x).reshape(B, T, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(x).reshape(B, T, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(x).reshape(B, T, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    o = scaled_dot_product_attention(attn.rope(q), attn.rope(k), v, cache=None, scale=attn.scale, mask=mask)
    return o.transpose(0, 2, 1, 3).reshape(B, T, -1)


def _block(i: int, layer: nn.Module, h: mx.array, sources: list[mx.array], mask, adapter, alpha_override,
           captured: dict | None) -> mx.array:
    """Block `i` of the base plus its skip path (if `sources` is non-empty); records hooks into `captured`."""
    x_norm = layer.input_layernorm(h)
    z = attention_heads(layer.self_attn, x_norm, mask)
    r = layer.self_attn.o_proj(z)
    if sources:
        skip = adapter.skip(i, layer, x_norm, sources, mask, alpha_override)
        r = r + skip
    h_mid = h + r
    out = h_mid + layer.mlp(layer.post_attention_layernorm(h_mid))
    if captured is not None:
        captured[f"blocks.{i}.hook_resid_pre"] = h
        captured[f"blocks.{i}.attn.hook_z"] = z
        captured[f"blocks.{i}.hook_resid_post"] = out
        if sources:
            captured[f"blocks.{i}.hook_skip_out"] = skip
    return out


def _checkpointed_block(i, layer, h, sources, mask, adapter, alpha_override) -> mx.array:
    """`_block` under `mx.checkpoint`: activations inside the block are recomputed in the backward pass.

    The parameters the block reads are passed as explicit inputs (as mlx-lm's `grad_checkpoint` does) so
    their gradients flow through the checkpoint boundary.
    """
    params = {"block": layer.trainable_parameters()}
    if sources:
        params["adapter"] = adapter.layer_parameters(i)

    def inner(params, h, *sources):
        layer.update(params["block"])
        if sources:
            adapter.update(params["adapter"])
        return _block(i, layer, h, list(sources), mask, adapter, alpha_override, None)

    return mx.checkpoint(inner)(params, h, *sources)


def run(
    model: nn.Module,
    inputs: mx.array,
    adapter: MultiTapAdapter | None = None,
    capture: Iterable[str] = (),
    alpha_override: float | None = None,
    disable_layers: Iterable[int] = (),
    grad_checkpoint: bool = False,
) -> tuple[mx.array, dict[str, mx.array]]:
    """Forward pass of an mlx-lm Llama `model` with an optional skip adapter.

    Parameters
    ----------
    model : mlx-lm llama `Model` (frozen or not).
    inputs : (B, T) int token ids.
    adapter : skip paths to add; None runs the plain base.
    capture : hook names (see `hook_names`) to return.
    alpha_override : replace every alpha by this value (0 reproduces the base exactly).
    disable_layers : blocks whose skip path is switched off (the causal toggle).
    grad_checkpoint : recompute each block in the backward pass (saves memory; not with `capture`).

    Returns
    -------
    logits : (B, T, vocab)
    captured : {hook name: (B, T, width)}
    """
    capture = set(capture)
    disabled = set(disable_layers)
    if capture:
        unknown = sorted(capture - set(hook_names(model, adapter)))
        if unknown:
            raise UserError(f"unknown hook name(s) for this model: {', '.join(unknown[:5])}")
        if grad_checkpoint:
            raise UserError("capturing activations and grad_checkpoint cannot be combined")
    if disabled and (adapter is None or not all(adapter.has_layer(l) for l in disabled)):
        skip = adapter.args.skip_layers() if adapter is not None else []
        raise UserError(f"can only disable skip layers {skip}; got {sorted(disabled)}")

    inner = model.model
    h = inner.embed_tokens(inputs)
    fa_mask = create_attention_mask(h, None)
    swa_mask = create_attention_mask(h, None, window_size=inner.sliding_window) if inner.swa_idx is not None \
        else None
    history = [h]
    all_hooks: dict | None = {} if capture else None
    for i, layer in enumerate(inner.layers):
        mask = swa_mask if layer.use_sliding else fa_mask
        use_skip = adapter is not None and adapter.has_layer(i) and i not in disabled
        sources = [history[i - d] for d in adapter.args.taps(i)] if use_skip else []
        if grad_checkpoint:
            h = _checkpointed_block(i, layer, h, sources, mask, adapter, alpha_override)
        else:
            h = _block(i, layer, h, sources, mask, adapter, alpha_override, all_hooks)
        # Only the skip paths read the history; the plain base needs none of it kept alive.
        if adapter is not None:
            history.append(h)
    out = inner.norm(h)
    logits = inner.embed_tokens.as_linear(out) if model.args.tie_word_embeddings else model.lm_head(out)
    captured = {k: v for k, v in all_hooks.items() if k in capture} if capture else {}
    return logits, captured


class AdaptedModel(nn.Module):
    """A base plus an adapter as one module, for `nn.value_and_grad` and the optimizer.

    With `freeze_base` (the default) only adapter parameters are trainable.
    """

    def __init__(self, base: nn.Module, adapter: MultiTapAdapter | None = None, freeze_base: bool = True):
        super().__init__()
        self.base = base
        if freeze_base:
            base.freeze()
        if adapter is not None:
            self.adapter = adapter

    def __call__(self, inputs: mx.array, grad_checkpoint: bool = False, **kwargs) -> mx.array:
        logits, _ = run(self.base, inputs, self.get("adapter"), grad_checkpoint=grad_checkpoint, **kwargs)
        return logits


def tiny_llama(seed: int = 0, **overrides) -> llama.Model:
    """A small randomly initialised mlx-lm Llama (6 blocks, width 64, 4 query / 2 kv heads, vocab 128).

    For tests and `bench/train.py --tiny`: same code paths as a real base at a fraction of the cost.
    """
    config = dict(model_type="llama", hidden_size=64, num_hidden_layers=6, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=128,
                  max_position_embeddings=256, tie_word_embeddings=True)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict({**config, **overrides}))
    mx.eval(model.parameters())
    return model
