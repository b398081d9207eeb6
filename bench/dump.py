"""Dump throughput against forward-only throughput of the same model on the same tokens, and store reads.

Part 1 times `trainer.dump.dump` (resid_post + attn_z of every layer, float16 store) against plain forward
passes of the same batches through the same layer loop without capture; the ratio is the cost of capturing
and writing (aim: >= 0.85). Part 2 runs bench/store_read.py: aligned block iteration against a plain h5py read.

Usage: python -m trainer.blas .venv/bin/python bench/dump.py [--base smollm2-135m-instruct] [--tokens 3000]
"""

from __future__ import annotations

import argparse
import runpy
import tempfile
import time
from pathlib import Path

import mlx.core as mx

from trainer.base import DEFAULT_BASE, load_base
from trainer.data import load_tokens
from trainer.dump import DumpConfig, dump
from trainer.forward import run


def forward_only(base, ts, batch_size: int) -> float:
    """Seconds for plain forward passes over the token set, batched as the dump batches it."""
    start = time.perf_counter()
    for i in range(0, len(ts.tokens), batch_size):
        logits, _ = run(base.model, mx.array(ts.tokens[i:i + batch_size]))
        mx.eval(logits)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help="base spec")
    ap.add_argument("--tokens", type=int, default=3000, help="tokens to dump")
    ap.add_argument("--seq-len", type=int, default=256, help="sequence length")
    ap.add_argument("--batch-size", type=int, default=4, help="sequences per forward pass")
    args = ap.parse_args()
    start = time.perf_counter()
    base = load_base(args.base)
    ts = load_tokens("web", "validation", base.tokenizer, args.seq_len, max_tokens=args.tokens)
    setup = time.perf_counter() - start  # the dump repeats this set-up; subtracted below
    forward_only(base, ts, args.batch_size)  # warm-up: page in weights, build kernels
    fwd = forward_only(base, ts, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DumpConfig(source=args.base, out=str(Path(tmp) / "bench.h5"), tokens=args.tokens,
                         seq_len=args.seq_len, batch_size=args.batch_size)
        start = time.perf_counter()
        dump(cfg, progress=False)
        dumped = time.perf_counter() - start - setup
    n = ts.n_tokens
    print(f"forward only : {n / fwd:8.1f} tokens/s  ({n} tokens, batch {args.batch_size} x {args.seq_len})")
    print(f"dump         : {n / dumped:8.1f} tokens/s  (resid_post + attn_z, all layers, float16; "
          f"set-up of {setup:.1f} s excluded)")
    print(f"ratio dump/forward: {fwd / dumped:.2f}")
    print("\nstore reads:")
    runpy.run_path(str(Path(__file__).with_name("store_read.py")), run_name="__main__")


if __name__ == "__main__":
    main()
