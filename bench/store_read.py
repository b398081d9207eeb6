"""Reader throughput of the activation store against a plain h5py read of the same bytes.

Writes a store of 65536 rows x 576 columns x 4 hooks (float16) in a temporary directory, then times
``Store.iter_blocks`` over all hooks (float32 output, finiteness check) against reading the same aligned
blocks straight from h5py (float16 output, no checks; and once more converted with ``astype(float32)``).
Prints MB/s of stored bytes for each and the ratios. Best of 3 passes each, file in the page cache.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from activations import Store, StoreWriter, hook_name

N_ROWS = 65536
WIDTH = 576
SEQUENCE_LENGTH = 256
HOOKS = {hook_name(layer, "resid_post"): WIDTH for layer in range(4)}
REPEATS = 3


def write_store(path: Path) -> tuple[Path, float]:
    """Write the bench store; returns its path and the seconds spent inside the writer."""
    rng = np.random.default_rng(0)
    writing = 0.0
    with StoreWriter(path, HOOKS, attrs={"model_fingerprint": "bench"}) as writer:
        for _ in range(N_ROWS // SEQUENCE_LENGTH):
            tokens = rng.integers(0, 49152, SEQUENCE_LENGTH)
            acts = {hook: rng.standard_normal((SEQUENCE_LENGTH, WIDTH), dtype=np.float32) for hook in HOOKS}
            started = time.perf_counter()
            writer.append(tokens, acts)
            writing += time.perf_counter() - started
        started = time.perf_counter()
        final = writer.close()
    return final, writing + time.perf_counter() - started


def best_seconds(read_all) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        read_all()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, write_seconds = write_store(Path(tmp) / "bench.h5")
        stored_mb = N_ROWS * WIDTH * 2 * len(HOOKS) / 1e6
        with Store(path) as store:
            hooks = store.hooks
            block_rows = next(iter(store.iter_blocks(hooks))).stop

            def read_store() -> None:
                for block in store.iter_blocks(hooks):
                    assert block.arrays[hooks[0]].dtype == np.float32

            store_seconds = best_seconds(read_store)

        with h5py.File(path, "r") as f:
            datasets = [f["hooks"][hook] for hook in hooks]

            def read_plain() -> None:
                for start in range(0, N_ROWS, block_rows):
                    for dataset in datasets:
                        dataset[start : start + block_rows]

            def read_plain_as_float32() -> None:
                for start in range(0, N_ROWS, block_rows):
                    for dataset in datasets:
                        dataset[start : start + block_rows].astype(np.float32)

            plain_seconds = best_seconds(read_plain)
            plain_f32_seconds = best_seconds(read_plain_as_float32)

    print(
        f"store: {N_ROWS} rows x {WIDTH} x {len(HOOKS)} hooks, float16, {stored_mb:.0f} MB; blocks of {block_rows} rows"
    )
    print(f"write (StoreWriter.append, float32 input): {stored_mb / write_seconds:8.1f} MB/s")
    print(f"plain h5py read (float16, no checks):       {stored_mb / plain_seconds:8.1f} MB/s")
    print(f"plain h5py read + astype(float32):          {stored_mb / plain_f32_seconds:8.1f} MB/s")
    print(f"Store.iter_blocks (float32, checked):       {stored_mb / store_seconds:8.1f} MB/s")
    print(f"ratio iter_blocks / plain h5py:             {plain_seconds / store_seconds:8.2f}")
    print(f"ratio iter_blocks / plain h5py + astype:    {plain_f32_seconds / store_seconds:8.2f}")


if __name__ == "__main__":
    main()
