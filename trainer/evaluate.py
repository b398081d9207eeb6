"""Held-out evaluation: frozen base vs adapted vs alpha=0, per-layer causal toggle, sequence-bootstrap CIs.

Every model variant is scored on the same sequences, so comparisons are paired. Losses are token-weighted:
loss = sum of per-token cross-entropies / number of predicted tokens. Tokens inside one sequence are not
independent, so intervals come from resampling whole sequences: each bootstrap replicate draws n sequences
with replacement and recomputes sum(loss sums) / sum(token counts) for every variant with the same draw,
which also gives the paired interval of a difference.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tqdm import tqdm

from trainer.adapter import MultiTapAdapter
from trainer.checkpoint import EVAL_FILE, atomic_write_json, load_run
from trainer.forward import run

EVAL_FORMAT = "psiloscope.multitap-eval/1"


def sequence_losses(model: nn.Module, tokens: np.ndarray, mask: np.ndarray, adapter: MultiTapAdapter | None = None,
                    batch_size: int = 8, **run_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence next-token cross-entropy sums and predicted-token counts.

    tokens, mask: (n_seq, seq_len); position t predicts token t+1, counted only where token t+1 is real.
    `run_kwargs` go to `forward.run` (alpha_override, disable_layers). Returns float64 (n_seq,), int (n_seq,).
    """
    target_mask = mask[:, 1:]
    sums = np.zeros(len(tokens), dtype=np.float64)
    for s in range(0, len(tokens), batch_size):
        batch = mx.array(tokens[s : s + batch_size])
        logits, _ = run(model, batch[:, :-1], adapter, **run_kwargs)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), batch[:, 1:], reduction="none")
        m = mx.array(target_mask[s : s + batch_size])
        sums[s : s + batch_size] = np.array((ce * m).sum(axis=1), dtype=np.float64)
    return sums, target_mask.sum(axis=1).astype(np.int64)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) sequence indices drawn with replacement; shared by every variant for paired intervals."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _ratio(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def _interval(x: np.ndarray) -> list[float]:
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]


def summarise(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> dict:
    """Token-weighted mean loss and perplexity with 95% percentile-bootstrap intervals."""
    loss = float(sums.sum() / counts.sum())
    boot = _ratio(sums, counts, idx)
    lo, hi = _interval(boot)
    return {"loss": loss, "loss_ci": [lo, hi], "ppl": float(np.exp(loss)), "ppl_ci": [float(np.exp(lo)),
                                                                                    float(np.exp(hi))]}


def paired_difference(sums_a: np.ndarray, sums_b: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> dict:
    """loss(a) - loss(b) on the same sequences, with its paired 95% interval."""
    diff = float(sums_a.sum() / counts.sum() - sums_b.sum() / counts.sum())
    boot = _ratio(sums_a, counts, idx) - _ratio(sums_b, counts, idx)
    return {"mean": diff, "ci": _interval(boot)}


def evaluate(model: nn.Module, adapter: MultiTapAdapter, token_set, *, batch_size: int = 8, toggle: bool = True,
             n_boot: int = 2000, seed: int = 0, progress: bool = False) -> dict:
    """Score the frozen base, the adapted model, alpha=0 and (with `toggle`) each skip layer switched off.

    Parameters
    ----------
    model : the frozen mlx-lm base.
    adapter : its trained skip adapter.
    token_set : `trainer.data.TokenSet` (or anything with tokens, mask and describe()).

    Returns
    -------
    dict written as eval.json: summaries per variant, the paired base - adapted difference (positive = the
    adapter helps), the alpha=0 identity check, per-layer toggles and the per-sequence sums (so sweeps can
    pool runs on the same tokens).
    """
    toggles = adapter.args.skip_layers() if toggle else []
    bar = tqdm(total=3 + len(toggles), desc="eval", disable=not progress, leave=False)

    def score(**kwargs):
        out = sequence_losses(model, token_set.tokens, token_set.mask, batch_size=batch_size, **kwargs)
        bar.update()
        return out[0]

    base = score()
    counts = token_set.mask[:, 1:].sum(axis=1).astype(np.int64)
    adapted = score(adapter=adapter)
    alpha0 = score(adapter=adapter, alpha_override=0.0)
    idx = bootstrap_indices(len(counts), n_boot, seed)
    alpha0_diff = float(np.abs(alpha0 - base).max())
    result = {
        "format": EVAL_FORMAT,
        "tokens": token_set.describe(),
        "n_predicted_tokens": int(counts.sum()),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "sequence", "level": 0.95},
        "base": summarise(base, counts, idx),
        "adapted": summarise(adapted, counts, idx),
        "alpha0": {**summarise(alpha0, counts, idx), "max_abs_diff_vs_base": alpha0_diff,
                   "equals_base": alpha0_diff == 0.0},
        "delta_base_minus_adapted": paired_difference(base, adapted, counts, idx),
        "toggle": {},
        "per_sequence": {"n_tokens": counts.tolist(), "base": base.tolist(), "adapted": adapted.tolist()},
    }
    for layer in toggles:
        off = score(adapter=adapter, disable_layers=[layer])
        result["toggle"][str(layer)] = {**summarise(off, counts, idx),
                                        "delta_off_minus_adapted": paired_difference(off, adapted, counts, idx)}
    bar.close()
    return result


def evaluate_run(run_dir: str | Path, *, base=None, token_set=None, write: bool = True, **kwargs) -> dict:
    """Evaluate a run directory on its recorded held-out tokens (or `token_set`); writes eval.json atomically.

    `kwargs` go to `evaluate` (batch_size, toggle, n_boot, seed, progress).
    """
    base, adapter, config = load_run(run_dir, base)
    if token_set is None:
        from trainer.train import held_out_tokens

        token_set = held_out_tokens(base, config["train"])
    result = evaluate(base.model, adapter, token_set, **kwargs)
    if write:
        atomic_write_json(Path(run_dir) / EVAL_FILE, result)
    return result
