"""Multi-tap skip adapter for a frozen mlx-lm Llama base.

Notation: the base has L blocks; H[j] is the residual stream entering block j (H[0] = token embeddings).
For every block i >= `start_layer` and every tap distance d in D with i - d >= 0, block i gets a *skip path*:
a causal attention whose queries come from the block's normalised input and whose keys/values come from the
normalised history H[i - d]. Its output, scaled by alpha, is added to the block's attention output before the
residual add. Distance 0 taps the block's own input: a parameter-matched control with no skip.

Design choices (each one recorded in the run's config through `AdapterArgs`):

- Head layout: the base's (grouped-query heads, same head_dim), with the base block's own RoPE applied to
  queries and keys. Query position t and key position s index the same tokens in every history, so relative
  positions mean what they mean in the base and the causal mask is the base's.
- Normalisation (`norm`): `base` reuses the block's frozen `input_layernorm` on the history, as the research
  did, so queries and keys live in the same normalised space; `learned` gives each layer its own RMSNorm.
- One set of q/k/v/o projections per layer is shared by all taps, so the parameter count does not depend on
  the tap mixing or on which distances are used: the control arm (`0`) matches a one-tap skip arm exactly.
- Tap weights: a per-layer softmax over learnable logits. Only the taps available at that layer get a logit,
  which is the masked softmax over D renormalised over the available taps.
- `init=zero` zero-initialises the output projection, so the adapted model equals the base at step 0; q/k/v
  are Xavier so the output projection gets a gradient at once, and q/k/v learn as soon as it moves (the LoRA
  trick). `init=xavier` initialises all four projections like the research.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.base import scaled_dot_product_attention

from trainer.errors import UserError

TAP_MIXES = ("kv", "output")
ALPHA_MODES = ("fixed", "learnable", "per-layer", "per-head")
INITS = ("zero", "xavier")
NORMS = ("base", "learned")
TAP_PENALTIES = ("none", "entropy", "l1")


@dataclass
class AdapterArgs:
    """Shape of the base plus every adapter option; saved verbatim in a run's config.json."""

    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    distances: tuple[int, ...] = (3, 4, 5)  # the research's taps
    start_layer: int = 3
    tap_mix: str = "kv"
    alpha: float = 0.65
    alpha_mode: str = "fixed"
    init: str = "zero"
    norm: str = "base"
    tap_penalty: str = "none"
    tap_penalty_weight: float = 0.0

    @classmethod
    def from_dict(cls, params: dict) -> AdapterArgs:
        known = inspect.signature(cls).parameters
        args = cls(**{k: v for k, v in params.items() if k in known})
        args.distances = tuple(sorted({int(d) for d in args.distances}))
        args.validate()
        return args

    @classmethod
    def for_base(cls, model: nn.Module, **options) -> AdapterArgs:
        """Adapter args with the head layout of an mlx-lm Llama `model`; `options` set the adapter knobs."""
        a = model.args
        shape = dict(
            n_layers=a.num_hidden_layers,
            hidden_size=a.hidden_size,
            n_heads=a.num_attention_heads,
            n_kv_heads=a.num_key_value_heads,
            head_dim=a.head_dim or a.hidden_size // a.num_attention_heads,
            rms_norm_eps=a.rms_norm_eps,
        )
        return cls.from_dict({**shape, **options})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["distances"] = list(self.distances)
        return d

    def validate(self) -> None:
        for name, value, allowed in [
            ("tap-mix", self.tap_mix, TAP_MIXES),
            ("alpha-mode", self.alpha_mode, ALPHA_MODES),
            ("init", self.init, INITS),
            ("norm", self.norm, NORMS),
            ("tap-penalty", self.tap_penalty, TAP_PENALTIES),
        ]:
            if value not in allowed:
                raise UserError(f"--{name} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.distances:
            raise UserError("--distances is empty; give at least one tap distance, e.g. 3,4,5 (0 = control)")
        if min(self.distances) < 0:
            raise UserError(f"--distances must be >= 0; got {list(self.distances)}")
        if not 0 <= self.start_layer < self.n_layers:
            raise UserError(f"--start-layer must be in [0, {self.n_layers - 1}]; got {self.start_layer}")
        if not self.skip_layers():
            raise UserError(
                f"--distances {list(self.distances)} give no skip path: a block i >= start layer "
                f"{self.start_layer} of this {self.n_layers}-block base needs some d with i - d >= 0"
            )
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise UserError(f"--alpha must be a finite number >= 0; got {self.alpha}")
        if self.tap_penalty_weight < 0:
            raise UserError(f"tap penalty weight must be >= 0; got {self.tap_penalty_weight}")

    def taps(self, layer: int) -> list[int]:
        """Distances available at block `layer` (empty below `start_layer`)."""
        if layer < self.start_layer:
            return []
        return [d for d in self.distances if layer - d >= 0]

    def skip_layers(self) -> list[int]:
        return [i for i in range(self.n_layers) if self.taps(i)]


def block_key(i: int) -> str:
    """Name of block i's skip path. Not a bare number: mlx's tree_unflatten turns numeric keys into lists."""
    return f"block{i}"


class SkipAttention(nn.Module):
    """The skip path of one block: shared q/k/v/o projections, tap logits, optional norm and alpha.

    Parameters
    ----------
    args : the adapter's args.
    n_taps : number of distances available at this block.
    """

    def __init__(self, args: AdapterArgs, n_taps: int):
        super().__init__()
        h, nq, nkv, hd = args.hidden_size, args.n_heads, args.n_kv_heads, args.head_dim
        self.n_heads, self.n_kv_heads = nq, nkv
        self.q_proj = nn.Linear(h, nq * hd, bias=False)
        self.k_proj = nn.Linear(h, nkv * hd, bias=False)
        self.v_proj = nn.Linear(h, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nq * hd, h, bias=False)
        xavier = nn.init.glorot_uniform()
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            proj.weight = xavier(proj.weight)
        if args.init == "zero":
            self.o_proj.weight = mx.zeros_like(self.o_proj.weight)
        self.tap_logits = mx.zeros((n_taps,))
        if args.norm == "learned":
            self.kv_norm = nn.RMSNorm(h, eps=args.rms_norm_eps)
        if args.alpha_mode == "per-layer":
            self.alpha = mx.array([args.alpha])
        elif args.alpha_mode == "per-head":
            self.gate_logits = mx.zeros((nq,))

    def tap_weights(self) -> mx.array:
        """(n_taps,) softmax of this block's tap logits."""
        return mx.softmax(self.tap_logits, axis=-1)

    def _attend(self, q: mx.array, kv_in: mx.array, rope: nn.Module, mask, scale: float) -> mx.array:
        """q: (B, n_heads, T, head_dim) already roped; kv_in: (B, T, hidden) -> (B, T, n_heads*head_dim)."""
        B, T, _ = kv_in.shape
        k = self.k_proj(kv_in).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(kv_in).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        o = scaled_dot_product_attention(q, rope(k), v, cache=None, scale=scale, mask=mask)
        return o.transpose(0, 2, 1, 3).reshape(B, T, -1)

    def mixed_heads(self, x_norm: mx.array, taps: list[mx.array], tap_mix: str, rope, mask,
                    scale: float) -> mx.array:
        """Tap-mixed per-head outputs before the output projection.

        x_norm: (B, T, hidden) the block's normalised input (queries); taps: normalised histories, one
        (B, T, hidden) per available distance. Returns (B, T, n_heads*head_dim).
        """
        B, T, _ = x_norm.shape
        q = rope(self.q_proj(x_norm).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3))
        w = self.tap_weights()
        if tap_mix == "kv":
            mixed = sum(w[j] * t for j, t in enumerate(taps))
            return self._attend(q, mixed, rope, mask, scale)
        return sum(w[j] * self._attend(q, t, rope, mask, scale) for j, t in enumerate(taps))


class MultiTapAdapter(nn.Module):
    """All skip paths of one adapted base. Holds no base weights: the frozen block is passed in per call."""

    def __init__(self, args: AdapterArgs):
        super().__init__()
        self.args = args
        self.layers = {block_key(i): SkipAttention(args, len(args.taps(i))) for i in args.skip_layers()}
        if args.alpha_mode == "learnable":
            self.alpha = mx.array([args.alpha])

    def has_layer(self, i: int) -> bool:
        return block_key(i) in self.layers

    def layer_parameters(self, i: int) -> dict:
        """The trainable parameters block `i`'s skip path reads (for per-block gradient checkpointing)."""
        params = {"layers": {block_key(i): self.layers[block_key(i)].trainable_parameters()}}
        if self.args.alpha_mode == "learnable":
            params["alpha"] = self.alpha
        return params

    def skip(self, i: int, block: nn.Module, x_norm: mx.array, sources: list[mx.array], mask,
             alpha_override: float | None = None) -> mx.array:
        """The alpha-scaled skip contribution of block `i`.

        Parameters
        ----------
        block : the frozen mlx-lm TransformerBlock `i` (its input_layernorm and RoPE are reused).
        x_norm : (B, T, hidden) = block.input_layernorm(H[i]).
        sources : the raw histories H[i - d] for d in `args.taps(i)`, each (B, T, hidden).
        alpha_override : replaces every alpha (and per-head gate) with this value; 0 gives the base exactly.

        Returns
        -------
        (B, T, hidden) added to the block's attention output.
        """
        layer = self.layers[block_key(i)]
        norm = layer.kv_norm if self.args.norm == "learned" else block.input_layernorm
        taps = [norm(src) for src in sources]
        attn = block.self_attn
        z = layer.mixed_heads(x_norm, taps, self.args.tap_mix, attn.rope, mask, attn.scale)
        if alpha_override is not None:
            return alpha_override * layer.o_proj(z)
        mode = self.args.alpha_mode
        if mode == "per-head":
            # 2*sigmoid(0) = 1, so every head starts at exactly alpha and stays in (0, 2*alpha).
            gates = self.args.alpha * 2 * mx.sigmoid(layer.gate_logits)
            B, T, _ = z.shape
            return layer.o_proj((z.reshape(B, T, layer.n_heads, -1) * gates[:, None]).reshape(B, T, -1))
        alpha = {"fixed": self.args.alpha, "learnable": self.get("alpha"), "per-layer": layer.get("alpha")}
        return alpha[mode] * layer.o_proj(z)

    def tap_weights(self) -> dict[int, dict[int, float]]:
        """{layer: {distance: weight}} for every skip layer (weights sum to 1 per layer)."""
        out = {}
        for i in self.args.skip_layers():
            w = self.layers[block_key(i)].tap_weights().tolist()
            out[i] = dict(zip(self.args.taps(i), w, strict=True))
        return out

    def alpha_values(self) -> dict[int, float | list[float]]:
        """{layer: effective alpha} (a list of per-head values in per-head mode)."""
        mode, a = self.args.alpha_mode, self.args.alpha
        out = {}
        for i in self.args.skip_layers():
            layer = self.layers[block_key(i)]
            if mode == "fixed":
                out[i] = a
            elif mode == "learnable":
                out[i] = self.alpha.item()
            elif mode == "per-layer":
                out[i] = layer.alpha.item()
            else:
                out[i] = (a * 2 * mx.sigmoid(layer.gate_logits)).tolist()
        return out

    def tap_penalty(self) -> mx.array:
        """Scalar regulariser on the tap weights, already multiplied by its weight.

        `entropy`: mean Shannon entropy of the per-layer tap distributions (pushes towards picking one tap).
        `l1`: mean |logit| (shrinks the logits, i.e. pulls the mixture towards uniform); softmax weights
        always have L1 norm 1, so the logits are the meaningful target.
        """
        kind, weight = self.args.tap_penalty, self.args.tap_penalty_weight
        if kind == "none" or weight == 0:
            return mx.array(0.0)
        terms = []
        for layer in self.layers.values():
            if kind == "entropy":
                logp = layer.tap_logits - mx.logsumexp(layer.tap_logits, axis=-1)
                terms.append(-(mx.exp(logp) * logp).sum())
            else:
                terms.append(mx.abs(layer.tap_logits).mean())
        return weight * mx.stack(terms).mean()


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) numbers of scalars in `module`; a tied embedding is one array, counted once."""
    total = sum(v.size for _, v in tree_flatten(module.parameters()))
    trainable = sum(v.size for _, v in tree_flatten(module.trainable_parameters()))
    return trainable, total - trainable
