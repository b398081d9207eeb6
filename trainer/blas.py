"""Fast BLAS for MLX on Linux CPU.

The `mlx[cpu]` wheel for Linux bundles a reference BLAS (~5 GFLOP/s on a 2-core machine). Preloading a system
OpenBLAS (Debian: `libopenblas0-pthread`) makes MLX resolve its `sgemm` to OpenBLAS instead (~30x faster, the
same results to float32 tolerance). `LD_PRELOAD` only works if set before the process starts, so the CLIs
re-execute themselves once with it set. Opt out with PSILOSCOPE_NO_BLAS_FIX=1. No effect on macOS or CUDA.

Run any command with the fix: `python -m trainer.blas COMMAND ARGS...` (used by `make test`).
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import sys
from pathlib import Path

OPT_OUT = "PSILOSCOPE_NO_BLAS_FIX"
_MARK = "PSILOSCOPE_BLAS_PRELOADED"
_CANDIDATES = [
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas*.so.0",
    "/usr/lib/libopenblas.so.0",
]


def find_openblas() -> str | None:
    """Path of a system OpenBLAS shared library, or None."""
    for pattern in _CANDIDATES:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def needs_fix() -> bool:
    """True on Linux with a CPU-only MLX build (no CUDA distribution installed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions() if d.metadata["Name"]}
    except Exception:  # broken metadata must never stop the program
        return False
    return not any(n.startswith("mlx-cuda") or n.startswith("mlx_cuda") for n in names)


def active_blas() -> str:
    """Describe the BLAS MLX uses in this process: "openblas (<path>)" or "bundled reference BLAS"."""
    if not sys.platform.startswith("linux"):
        return "platform BLAS (Accelerate on macOS)" if sys.platform == "darwin" else "platform BLAS"
    if not needs_fix():
        return "CUDA build (BLAS not used for GEMM)"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for line in maps.splitlines():
        if "libopenblas" in line:
            return f"openblas ({line.split()[-1]})"
    return "bundled reference BLAS (slow; install libopenblas0-pthread)"


def gemm_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Measured MLX float32 GEMM speed (n x n @ n x n) in GFLOP/s on the default device."""
    import time

    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a @ b)  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - start < seconds:
        mx.eval(a @ b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def preload_env(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """A copy of `env` with OpenBLAS preloaded, or None when no change is needed or possible."""
    env = dict(os.environ if env is None else env)
    if env.get(OPT_OUT, "") not in ("", "0") or env.get(_MARK) or not needs_fix():
        return None
    lib = find_openblas()
    if lib is None or lib in env.get("LD_PRELOAD", ""):
        return None
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[_MARK] = lib
    return env


def reexec_with_openblas() -> None:
    """Re-execute the current program with OpenBLAS preloaded (once), printing a one-line notice.

    Returns normally when nothing needs doing (macOS, CUDA, opted out, already preloaded, no OpenBLAS).
    """
    env = preload_env()
    if env is None:
        return
    print(f"note: using system OpenBLAS for MLX ({env[_MARK]}); set {OPT_OUT}=1 to disable", file=sys.stderr)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str]) -> None:
    """`python -m trainer.blas CMD ARGS...`: exec CMD with OpenBLAS preloaded where it helps."""
    if not argv:
        sys.exit("usage: python -m trainer.blas COMMAND [ARGS...]")
    env = preload_env() or dict(os.environ)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
