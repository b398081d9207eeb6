"""Dump a model's activations on a fixed token set into an HDF5 activation store.

The tokens depend only on (data, split, split seed, sequence length, token count) and the tokenizer, so a dump
of a frozen base and a dump of a run adapted from it on the same arguments pair row for row (equal
`tokens_sha256`). Capture goes through the same explicit layer loop as training (`trainer.forward.run`), so
it cannot change the model's outputs. Only real tokens are stored: padding rows are dropped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from tqdm import tqdm

from activations import StoreWriter, hook_name, parse_hook
from trainer.errors import UserError

KIND_ALIASES = {"resid_pre": "resid_pre", "resid_post": "resid_post", "attn_z": "attn_z", "z": "attn_z",
                "skip_out": "skip_out", "skip": "skip_out"}


@dataclass
class DumpConfig:
    """Everything that determines a dump (recorded in the store's config)."""

    source: str
    out: str
    data: str = "web"
    split: str = "validation"
    split_seed: int = 0
    tokens: int = 20000
    seq_len: int = 256
    hooks: str = "resid_post,attn_z"
    layers: str = "all"
    dtype: str = "float16"
    compression: str | None = None
    batch_size: int = 4
    overwrite: bool = False


def is_run_dir(source: str) -> bool:
    p = Path(source)
    return p.is_dir() and (p / "config.json").is_file() and (p / "adapter.safetensors").is_file()


def load_source(source: str):
    """(base, adapter or None, run config or None, adapter fingerprint) for a base spec or a run directory."""
    if is_run_dir(source):
        from trainer.checkpoint import adapter_sha256, load_run

        base, adapter, config = load_run(source)
        return base, adapter, config, adapter_sha256(source)
    from trainer.base import load_base

    return load_base(source), None, None, "none"


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all', '3,5,7' or '2-10' (inclusive) -> sorted layer indices, checked against the model depth."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UserError(f"--layers {spec!r}: use 'all', a list like 3,5,7 or a range like 2-10") from None
    bad = sorted(l for l in layers if not 0 <= l < n_layers)
    if bad:
        raise UserError(f"--layers {spec!r}: layer(s) {bad} outside 0..{n_layers - 1}")
    return sorted(layers)


def select_hooks(spec: str, layers: list[int], available: list[str]) -> list[str]:
    """Hook names from a kinds list ('resid_post,attn_z', 'all') or explicit hook names."""
    kinds, explicit, skip_named = set(), [], False
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            kinds.update({"resid_pre", "resid_post", "attn_z", "skip_out"})
        elif part in KIND_ALIASES:
            kinds.add(KIND_ALIASES[part])
            skip_named = skip_named or KIND_ALIASES[part] == "skip_out"
        elif part.startswith("blocks."):
            parse_hook(part)  # ValueError with a clear message on a malformed name
            explicit.append(part)
        else:
            raise UserError(f"--hooks: unknown {part!r}; use kinds {sorted(set(KIND_ALIASES.values()))}, 'all', "
                            "or hook names like blocks.3.hook_resid_post")
    if skip_named and not any(h.endswith("hook_skip_out") for h in available):
        raise UserError("--hooks skip_out needs an adapted run directory as SOURCE; a frozen base has no skip path")
    # skip_out exists only at layers with a skip path: a kind request takes the layers that have one.
    by_kind = [hook_name(l, k) for l in layers for k in sorted(kinds)]
    wanted = [h for h in by_kind if h in available or parse_hook(h)[1] != "skip_out"] + explicit
    missing = [h for h in wanted if h not in available]
    if missing:
        raise UserError(f"hook(s) not produced by this model: {', '.join(missing[:4])}")
    return sorted(dict.fromkeys(wanted), key=lambda h: (parse_hook(h)[0], h))


def dump(cfg: DumpConfig, *, progress: bool = True) -> Path:
    """Write the activation store described by `cfg`; resumes an interrupted `.partial` dump. Returns its path."""
    from trainer.data import load_tokens
    from trainer.forward import hook_names, run

    out = Path(cfg.out)
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist")
    if out.exists() and not cfg.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if cfg.batch_size < 1 or cfg.tokens < 1:
        raise UserError("--batch-size and --tokens must be positive")
    base, adapter, run_config, adapter_fp = load_source(cfg.source)
    n_layers = len(base.model.model.layers)
    max_pos = base.config.get("max_position_embeddings")
    if max_pos and cfg.seq_len > max_pos:
        raise UserError(f"--seq-len {cfg.seq_len} exceeds the base's context of {max_pos} tokens")
    hooks = select_hooks(cfg.hooks, parse_layers(cfg.layers, n_layers), hook_names(base.model, adapter))
    ts = load_tokens(cfg.data, cfg.split, base.tokenizer, cfg.seq_len, split_seed=cfg.split_seed,
                     max_tokens=cfg.tokens)

    attn = base.model.model.layers[0].self_attn
    n_heads, head_dim = attn.n_heads, attn.head_dim
    hidden = base.config["hidden_size"]
    widths = {h: n_heads * head_dim if parse_hook(h)[1] == "attn_z" else hidden for h in hooks}
    hook_attrs = {h: {"n_heads": n_heads, "head_dim": head_dim} for h in hooks if parse_hook(h)[1] == "attn_z"}
    attrs = {
        "model_fingerprint": base.weights_sha256, "adapter_fingerprint": adapter_fp,
        "tokenizer_sha256": base.tokenizer_sha256, "token_set_fingerprint": ts.fingerprint,
        "source": str(cfg.source), "source_dtype": "float32",
    }
    config = {"dump": asdict(cfg), "base": base.fingerprint(), "data": ts.describe(), "run": run_config}
    writer = StoreWriter(out, widths, dtype=cfg.dtype, compression=cfg.compression, attrs=attrs,
                         hook_attrs=hook_attrs, config=config, resume=True, overwrite=cfg.overwrite)
    done = writer.n_sequences
    n_seq = len(ts.tokens)
    bar = tqdm(total=ts.n_tokens, initial=int(ts.mask[:done].sum()), unit="tok", desc="dump",
               disable=not progress, dynamic_ncols=True)
    start, dumped = time.perf_counter(), 0
    try:
        with writer:  # on an exception the .partial stays, resumable from its last whole sequence
            for i in range(done, n_seq, cfg.batch_size):
                x = mx.array(ts.tokens[i:i + cfg.batch_size])
                _, captured = run(base.model, x, adapter, capture=hooks)
                mx.eval(captured)
                arrays = {h: np.asarray(captured[h].astype(mx.float32)) for h in hooks}
                for j in range(x.shape[0]):
                    real = ts.mask[i + j]
                    writer.append(ts.tokens[i + j][real], {h: arrays[h][j][real] for h in hooks})
                    dumped += int(real.sum())
                    bar.update(int(real.sum()))
    finally:
        bar.close()
    path = writer.path
    elapsed = time.perf_counter() - start
    if progress:
        print(f"dumped {ts.n_tokens} tokens x {len(hooks)} hooks to {path} "
              f"({dumped / max(elapsed, 1e-9):.0f} tokens/s this run)")
    return path
