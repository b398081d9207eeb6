"""Train a multi-tap skip adapter on a frozen base: masked next-token loss, AdamW, warm-up + cosine, clipping.

The run is a pure function of its config: the seed fixes the adapter init, and the batch at step s is a
function of (seed, s) alone, so a resumed run replays exactly the batches an uninterrupted one would see.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from tqdm import tqdm

from trainer.adapter import AdapterArgs, MultiTapAdapter, parameter_counts
from trainer.checkpoint import (
    CONFIG_FILE,
    EVAL_FILE,
    FORMAT,
    append_metrics,
    atomic_write_json,
    check_base_fingerprint,
    load_checkpoint,
    provenance,
    read_run_config,
    save_checkpoint,
    truncate_metrics,
)
from trainer.config import TrainConfig
from trainer.errors import UserError
from trainer.evaluate import evaluate, sequence_losses
from trainer.forward import AdaptedModel

Callback = Callable[[dict], None]
# Wall-clock fields: they legitimately differ between an uninterrupted and a resumed run.
TIMING_KEYS = ("tokens_per_sec", "peak_memory_gb", "elapsed_sec")


def held_out_tokens(base, cfg: TrainConfig | dict, split: str = "validation"):
    """The held-out tokens a run evaluates on: the first `eval_seqs` sequences of `split`."""
    from trainer.data import load_tokens

    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    ts = load_tokens(cfg.data, split, base.tokenizer, cfg.seq_len, split_seed=cfg.split_seed)
    if cfg.eval_seqs is not None:
        ts = dataclasses.replace(ts, tokens=ts.tokens[: cfg.eval_seqs], mask=ts.mask[: cfg.eval_seqs],
                                 doc_ids=ts.doc_ids[: cfg.eval_seqs])
    return ts


def training_tokens(base, cfg: TrainConfig):
    from trainer.data import load_tokens

    return load_tokens(cfg.data, "train", base.tokenizer, cfg.seq_len, split_seed=cfg.split_seed,
                       max_tokens=cfg.max_train_tokens)


def batch_indices(step: int, n_seq: int, batch_size: int, seed: int) -> np.ndarray:
    """Sequence indices of the batch at 0-based `step`: epoch-wise permutations, the last partial batch dropped."""
    per_epoch = n_seq // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_seq)
    return order[k * batch_size : (k + 1) * batch_size]


def lr_schedule(cfg: TrainConfig):
    """Linear warm-up from 0 to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    decay = optim.cosine_decay(cfg.lr, cfg.steps - cfg.warmup, end=cfg.lr * cfg.min_lr_ratio)
    if cfg.warmup == 0:
        return decay
    return optim.join_schedules([optim.linear_schedule(0.0, cfg.lr, cfg.warmup), decay], [cfg.warmup])


def masked_loss(model: AdaptedModel, x: mx.array, y: mx.array, m: mx.array, grad_checkpoint: bool = False):
    """Token-weighted mean cross-entropy over real targets, plus the tap penalty (returned separately too).

    x, y, m: (B, T-1) inputs, next-token targets, target mask. Returns (objective, cross-entropy).
    """
    logits = model(x, grad_checkpoint=grad_checkpoint)
    ce = (nn.losses.cross_entropy(logits.astype(mx.float32), y) * m).sum() / mx.maximum(m.sum(), 1)
    penalty = model.adapter.tap_penalty() if "adapter" in model else 0.0
    return ce + penalty, ce


def make_train_step(model: AdaptedModel, optimizer: optim.Optimizer, grad_clip: float, grad_checkpoint: bool):
    """A compiled step(x, y, m) -> cross-entropy that updates the model's trainable parameters in place."""
    # Create the optimizer state now (keeping any restored from a checkpoint): if the first call created
    # it, the compiled function's state would change shape after one call and be traced twice.
    optimizer.init(model.trainable_parameters())
    loss_and_grad = nn.value_and_grad(model, partial(masked_loss, grad_checkpoint=grad_checkpoint))
    compiled_state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=compiled_state, outputs=compiled_state)
    def step(x, y, m):
        (_, ce), grads = loss_and_grad(model, x, y, m)
        grads, _ = optim.clip_grad_norm(grads, grad_clip)
        optimizer.update(model, grads)
        return ce

    return step


def _prepare_run_dir(cfg: TrainConfig) -> dict | None:
    """Refuse to overwrite an existing run; for `resume`, return its recorded config after checking it."""
    run_dir = Path(cfg.out)
    exists = run_dir.exists() and any(run_dir.iterdir())
    if not cfg.resume:
        if exists:
            raise UserError(f"run directory {run_dir} already exists; pass --resume to continue it or choose "
                            "another --out")
        return None
    if not exists:
        raise UserError(f"--resume: {run_dir} does not exist or is empty; nothing to resume")
    recorded = read_run_config(run_dir)
    # The directory may have been moved since: `out` is where it is now, not part of what was computed.
    asked = dataclasses.replace(cfg, out=recorded["train"]["out"])
    differing = TrainConfig.from_dict(recorded["train"]).differences(asked)
    if differing:
        shown = ", ".join(f"{k} ({recorded['train'][k]!r} -> {cfg.to_dict()[k]!r})" for k in differing)
        raise UserError(f"--resume with a changed config: {shown}; resume with the original settings")
    return recorded


def _check_data(cfg: TrainConfig, model: nn.Module, train_ts, val_ts, recorded: dict | None) -> None:
    max_pos = getattr(model.args, "max_position_embeddings", None)
    if max_pos and cfg.seq_len > max_pos:
        raise UserError(f"--seq-len {cfg.seq_len} exceeds the base's context of {max_pos} tokens")
    if len(train_ts.tokens) < cfg.batch_size:
        raise UserError(f"training data has {len(train_ts.tokens)} sequences of {cfg.seq_len} tokens, fewer than "
                        f"one batch of {cfg.batch_size}; use more data or a smaller --batch-size/--seq-len")
    if recorded is not None:
        for name, ts in (("train", train_ts), ("validation", val_ts)):
            if recorded["data"][name]["fingerprint"] != ts.fingerprint:
                raise UserError(f"--resume: the {name} tokens differ from the ones the run started with")


def train(cfg: TrainConfig, *, base=None, data=None, callback: Callback | None = None,
          progress: bool = True) -> Path:
    """Train (or resume) one run; returns its directory, which ends with eval.json.

    Parameters
    ----------
    cfg : the run's configuration (`cfg.out` is the run directory).
    base : a loaded `trainer.base.Base`; default loads `cfg.base`.
    data : (train TokenSet, held-out TokenSet); default loads them from `cfg.data`.
    callback : called with every metrics record (dicts with "kind": "train" | "val"), and first with a
        "start" record (parameter counts, starting step) that is not written to metrics.jsonl.
    """
    cfg.validate()
    recorded = _prepare_run_dir(cfg)
    if base is None:
        from trainer.base import load_base

        base = load_base(cfg.base)
    if recorded is not None:
        check_base_fingerprint(recorded["base"], base)
    args = AdapterArgs.for_base(base.model, **cfg.adapter_options())
    train_ts, val_ts = data if data is not None else (training_tokens(base, cfg), held_out_tokens(base, cfg))
    _check_data(cfg, base.model, train_ts, val_ts, recorded)

    mx.random.seed(cfg.seed)
    adapter = MultiTapAdapter(args)
    model = AdaptedModel(base.model, adapter)
    optimizer = optim.AdamW(learning_rate=lr_schedule(cfg), weight_decay=cfg.weight_decay)
    n_train, n_frozen = parameter_counts(model)
    run_dir = Path(cfg.out)
    if recorded is not None:
        state = load_checkpoint(run_dir, adapter, optimizer)
        truncate_metrics(run_dir, state["step"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / CONFIG_FILE, {
            "format": FORMAT, "train": cfg.to_dict(), "adapter": args.to_dict(), "base": base.fingerprint(),
            "base_config": base.config, "data": {"train": train_ts.describe(), "validation": val_ts.describe()},
            "parameters": {"trainable": n_train, "frozen": n_frozen}, **provenance(),
        })
        state = {"step": 0, "trained_tokens": 0, "report_loss_sum": 0.0, "report_tokens": 0}
    if callback is not None:
        callback({"kind": "start", "step": state["step"], "trainable": n_train, "frozen": n_frozen})
    if state["step"] >= cfg.steps and (run_dir / EVAL_FILE).is_file():
        return run_dir

    step_fn = make_train_step(model, optimizer, cfg.grad_clip, cfg.grad_checkpoint)

    def emit(record: dict) -> None:
        append_metrics(run_dir, record)
        if callback is not None:
            callback(record)

    base_val = None
    tokens_all, targets_mask = train_ts.tokens, train_ts.mask[:, 1:]
    bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", disable=not progress, desc=run_dir.name)
    window_start, window_tokens = time.perf_counter(), 0
    mx.reset_peak_memory()
    while state["step"] < cfg.steps:
        idx = batch_indices(state["step"], len(tokens_all), cfg.batch_size, cfg.seed)
        batch = mx.array(tokens_all[idx])
        m_np = targets_mask[idx]
        ce = step_fn(batch[:, :-1], batch[:, 1:], mx.array(m_np, dtype=mx.float32))
        n_tok = int(m_np.sum())
        state["step"] += 1
        state["report_loss_sum"] += ce.item() * n_tok
        state["report_tokens"] += n_tok
        state["trained_tokens"] += n_tok
        window_tokens += n_tok
        s, last = state["step"], state["step"] == cfg.steps
        bar.update()
        if s % cfg.report_every == 0 or last:
            elapsed = time.perf_counter() - window_start
            record = {
                "kind": "train", "step": s, "loss": state["report_loss_sum"] / max(state["report_tokens"], 1),
                "lr": optimizer.learning_rate.item(), "trained_tokens": state["trained_tokens"],
                "tokens_per_sec": window_tokens / max(elapsed, 1e-9), "peak_memory_gb": mx.get_peak_memory() / 1e9,
                "tap_weights": {str(k): {str(d): w for d, w in v.items()} for k, v in adapter.tap_weights().items()},
                "alpha": {str(k): v for k, v in adapter.alpha_values().items()},
            }
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_sec']:.0f}")
            emit(record)
            state["report_loss_sum"], state["report_tokens"] = 0.0, 0
            window_start, window_tokens = time.perf_counter(), 0
        if cfg.eval_every and (s % cfg.eval_every == 0 or last):
            if base_val is None:
                sums, counts = sequence_losses(base.model, val_ts.tokens, val_ts.mask)
                base_val = sums.sum() / counts.sum()
            sums, counts = sequence_losses(base.model, val_ts.tokens, val_ts.mask, adapter)
            val = sums.sum() / counts.sum()
            emit({"kind": "val", "step": s, "val_loss": float(val), "val_ppl": float(np.exp(val)),
                  "base_val_loss": float(base_val), "delta_base_minus_adapted": float(base_val - val)})
        if s % cfg.save_every == 0 or last:
            per_epoch = len(tokens_all) // cfg.batch_size
            state["data_position"] = {"epoch": s // per_epoch, "batch_in_epoch": s % per_epoch}
            save_checkpoint(run_dir, adapter, optimizer, state)
    bar.close()
    result = evaluate(base.model, adapter, val_ts, toggle=cfg.eval_toggle, seed=cfg.seed, progress=progress)
    atomic_write_json(run_dir / EVAL_FILE, result)
    return run_dir
