"""MLX float32 GEMM speed with and without the OpenBLAS preload, measured in one run, as a ratio.

Usage: python bench/blas.py [--n 1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from trainer.blas import OPT_OUT, find_openblas, needs_fix, preload_env

PROBE = "from trainer.blas import gemm_gflops, active_blas; print(gemm_gflops({n}, 2.0)); print(active_blas())"


def measure(env: dict[str, str], n: int) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(n=n)], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    return float(out[0]), out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1024, help="matrix size")
    n = ap.parse_args().n
    base_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PSILOSCOPE_BLAS_PRELOADED")}
    slow, slow_name = measure({**base_env, OPT_OUT: "1"}, n)
    print(f"without fix: {slow:8.1f} GFLOP/s  [{slow_name}]")
    fast_env = preload_env(base_env)
    if fast_env is None:
        why = "not Linux CPU" if not needs_fix() else "no system OpenBLAS found" if not find_openblas() else "n/a"
        print(f"with fix:    not applicable ({why})")
        return
    fast, fast_name = measure(fast_env, n)
    print(f"with fix:    {fast:8.1f} GFLOP/s  [{fast_name}]")
    print(f"speed-up:    {fast / slow:8.1f}x  (float32 GEMM {n}x{n}, same machine, same run)")


if __name__ == "__main__":
    main()
