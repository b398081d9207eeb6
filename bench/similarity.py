"""Benchmark of the similarity measures; every ratio is against a baseline measured in the same run.

(a) Per-layer linear CKA (debiased) for ``--pairs`` layer pairs at n rows, d = 576, with the streaming
    accumulator, against a textbook implementation (two n×n float64 Gram matrices per pair, centred,
    Frobenius inner products).  Textbook Grams at n = 32,768 would need 8.6 GB each, so the textbook is
    timed on a subsample and extrapolated by (n / n_sub)² (its cost is O(n²·d)).  Achieved GFLOP/s of
    the streaming path counts GEMM-equivalent work 2·n·(d1² + d2² + d1·d2) per pair and is set against
    numpy's float64 GEMM speed on the same block shape.
(b) A 30×30 layer×layer ``cka_matrix`` by minibatch HSIC over n rows, streamed in chunks.
(c) Peak traced memory of the streaming path at two row counts: it must not grow with n.

Synthetic activations are generated block by block outside the timed regions.
Run:  .venv/bin/python bench/similarity.py  [--rows 32768 --pairs 30 --width 576]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from psiloscope.cka import CKAAccumulator, MinibatchCKA, centre_gram

BLOCK = 4096


def blocks(rng: np.random.Generator, n: int, width: int, layer: int):
    """Yield (X, Y) float32 blocks of a layer pair with shared structure and a +1000 offset column."""
    mix = rng.normal(size=(width, width)).astype(np.float32) / np.sqrt(width)
    for lo in range(0, n, BLOCK):
        X = rng.standard_normal((min(BLOCK, n - lo), width), dtype=np.float32)
        X[:, layer % width] += 1000.0
        yield X, X @ mix + rng.standard_normal(X.shape, dtype=np.float32)


def gemm_gflops(width: int, repeats: int = 5) -> float:
    """numpy float64 GEMM speed on the accumulator's block product (BLOCK×width)ᵀ·(BLOCK×width)."""
    A, B = np.random.default_rng(0).normal(size=(2, BLOCK, width))
    A.T @ B  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        A.T @ B
    return 2.0 * BLOCK * width * width * repeats / (time.perf_counter() - start) / 1e9


def streaming_pairs(n: int, width: int, pairs: int) -> tuple[float, float]:
    """Total seconds of CKAAccumulator.update/result over ``pairs`` layer pairs, and the GEMM-equivalent
    FLOPs they did."""
    rng, elapsed = np.random.default_rng(1), 0.0
    for layer in range(pairs):
        accumulator = CKAAccumulator(debiased=True)
        for X, Y in blocks(rng, n, width, layer):
            start = time.perf_counter()
            accumulator.update(X, Y)
            elapsed += time.perf_counter() - start
        start = time.perf_counter()
        accumulator.result()
        elapsed += time.perf_counter() - start
    return elapsed, pairs * 2.0 * n * 3 * width * width


def textbook_pair(n_sub: int, width: int) -> float:
    """Seconds for one pair with n_sub×n_sub float64 Gram matrices (Kornblith et al.'s recipe)."""
    X, Y = next(blocks(np.random.default_rng(2), n_sub, width, 0))
    start = time.perf_counter()
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    K, L = centre_gram(X @ X.T, unbiased=True), centre_gram(Y @ Y.T, unbiased=True)
    float(np.vdot(K, L) / np.sqrt(np.vdot(K, K) * np.vdot(L, L)))
    return time.perf_counter() - start


def minibatch_matrix(n: int, width: int, layers: int, batch_size: int) -> float:
    """Seconds of MinibatchCKA over ``layers``×``layers`` layers and n rows, fed in chunks of 1024 rows."""
    rng, elapsed = np.random.default_rng(3), 0.0
    accumulator = MinibatchCKA(batch_size=batch_size, debiased=True, seed=0)
    for lo in range(0, n, 1024):
        base = rng.standard_normal((min(1024, n - lo), width), dtype=np.float32)
        As = [np.roll(base, l, axis=1) + 0.05 * l * base[:, ::-1] for l in range(layers)]
        Bs = [a[:, ::-1] + 0.5 for a in As]
        start = time.perf_counter()
        accumulator.update(As, Bs)
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    accumulator.result()
    return elapsed + time.perf_counter() - start


def streaming_peak_bytes(n: int, width: int) -> int:
    """Peak traced allocation while streaming one layer pair of n rows (blocks generated inside)."""
    tracemalloc.start()
    accumulator = CKAAccumulator(debiased=True)
    for X, Y in blocks(np.random.default_rng(4), n, width, 0):
        accumulator.update(X, Y)
    accumulator.result()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32_768, help="rows per layer for (a) and (b)")
    parser.add_argument("--width", type=int, default=576, help="features per layer")
    parser.add_argument("--pairs", type=int, default=30, help="layer pairs in (a); layers per side in (b)")
    parser.add_argument("--textbook-rows", type=int, default=2048, help="subsample for the textbook CKA")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch rows in (b)")
    args = parser.parse_args()
    n, d = args.rows, args.width

    gemm = gemm_gflops(d)
    seconds, flops = streaming_pairs(n, d, args.pairs)
    per_pair_textbook = textbook_pair(args.textbook_rows, d) * (n / args.textbook_rows) ** 2
    print(f"(a) {args.pairs} layer pairs, n={n}, d={d}, debiased linear CKA")
    print(f"    streaming: {seconds:.1f} s ({seconds / args.pairs:.2f} s/pair), "
          f"{flops / seconds / 1e9:.1f} GFLOP/s GEMM-equivalent = {flops / seconds / 1e9 / gemm:.2f} × "
          f"numpy float64 GEMM ({gemm:.1f} GFLOP/s measured now)")
    print(f"    textbook n×n Grams: timed at n={args.textbook_rows}, extrapolated by n² to "
          f"{per_pair_textbook * args.pairs:.0f} s ({per_pair_textbook:.1f} s/pair; each n×n Gram "
          f"would take {8 * n * n / 1e9:.1f} GB) -> streaming is "
          f"{per_pair_textbook * args.pairs / seconds:.0f}× faster")

    matrix_seconds = minibatch_matrix(n, d, args.pairs, args.batch_size)
    print(f"(b) {args.pairs}×{args.pairs} cka_matrix (minibatch HSIC, batch {args.batch_size}), n={n}: "
          f"{matrix_seconds:.1f} s = {matrix_seconds / seconds:.2f} × the time of (a)")

    small, large = streaming_peak_bytes(n, d), streaming_peak_bytes(4 * n, d)
    print(f"(c) streaming peak traced memory: n={n}: {small / 2**20:.1f} MiB, n={4 * n}: "
          f"{large / 2**20:.1f} MiB (ratio {large / small:.2f}; the data themselves would be "
          f"{2 * 4 * 4 * n * d / 2**20:.0f} MiB in float32)")


if __name__ == "__main__":
    main()
