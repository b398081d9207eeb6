"""Training-step cost of the multi-tap skip adapter vs full fine-tuning, at one batch and sequence length.

Measures, on the real default base (or `--tiny`, a random 6-block model): forward-only tokens/s; adapter
training-step tokens/s with and without gradient checkpointing (and their peak memory); a full fine-tuning
step (every base weight trainable) and the adapter/full speed ratio. Each timing is the median of `--repeats`
steps after one warm-up (compilation) step. Run with OpenBLAS preloaded on Linux CPU:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 .venv/bin/python bench/train.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from trainer.adapter import AdapterArgs, MultiTapAdapter, parameter_counts
from trainer.forward import AdaptedModel, run, tiny_llama
from trainer.train import make_train_step


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds per call after one warm-up call, peak memory in GB over the timed calls)."""
    mx.eval(fn())
    mx.reset_peak_memory()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), mx.get_peak_memory() / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="Random 6-block model instead of the real base.")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--distances", default="1,2,3")
    p.add_argument("--json", help="Also write the results to this file.")
    a = p.parse_args()

    if a.tiny:
        model, name = tiny_llama(seed=0), "tiny"
    else:
        from trainer.base import load_base

        base = load_base()
        model, name = base.model, base.spec
    vocab = model.args.vocab_size
    tokens = mx.array(np.random.default_rng(0).integers(0, vocab, size=(a.batch_size, a.seq_len + 1)),
                      dtype=mx.int32)
    x, y, m = tokens[:, :-1], tokens[:, 1:], mx.ones((a.batch_size, a.seq_len))
    n_tok = a.batch_size * a.seq_len
    results = {"base": name, "batch_size": a.batch_size, "seq_len": a.seq_len, "repeats": a.repeats,
               "distances": a.distances}

    model.freeze()
    adapter = MultiTapAdapter(AdapterArgs.for_base(model, distances=[int(d) for d in a.distances.split(",")]))
    adapted = AdaptedModel(model, adapter)
    results["adapter_trainable"], results["frozen"] = parameter_counts(adapted)

    sec, peak = timed(lambda: run(model, x, adapter)[0], a.repeats)
    results["forward_tokens_per_sec"], results["forward_peak_gb"] = n_tok / sec, peak
    for ckpt in (False, True):
        step = make_train_step(adapted, optim.AdamW(learning_rate=1e-4), 1.0, ckpt)
        sec, peak = timed(lambda step=step: step(x, y, m), a.repeats)
        key = "adapter_step_ckpt" if ckpt else "adapter_step"
        results[f"{key}_tokens_per_sec"], results[f"{key}_peak_gb"] = n_tok / sec, peak

    # Full fine-tuning last: it unfreezes (and updates) the base weights.
    model.unfreeze()
    full = AdaptedModel(model, None, freeze_base=False)
    results["full_trainable"] = parameter_counts(full)[0]
    step = make_train_step(full, optim.AdamW(learning_rate=1e-5), 1.0, False)
    sec, peak = timed(lambda: step(x, y, m), a.repeats)
    results["full_step_tokens_per_sec"], results["full_step_peak_gb"] = n_tok / sec, peak
    results["adapter_vs_full_speed_ratio"] = results["adapter_step_tokens_per_sec"] / results[
        "full_step_tokens_per_sec"]

    for k, v in results.items():
        print(f"{k:34s} {v:.3f}" if isinstance(v, float) else f"{k:34s} {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
