"""Interrupted dumps: a resumed writer must produce exactly the store an uninterrupted one would."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_store_support import HOOKS, assert_same_file_contents, make_sequences, write_store

from activations import Store, StoreError, StoreWriter, hook_name
from activations.recovery import lookup3

HOOK = hook_name(0, "resid_pre")
ARGS = {
    "chunk_rows": 16,
    "attrs": {"model_fingerprint": "m", "adapter_fingerprint": "a"},
    "config": {"seed": 1},
    "hook_attrs": {hook_name(0, "attn_z"): {"n_heads": 2, "head_dim": 4}},
}


def _sequences() -> list:
    sequences = make_sequences(21, 9)
    sequences[5][1][HOOK][3, 3] = 1e5  # float16 overflow after the interruption point
    return sequences


def _finish(path: Path, sequences: list, **extra: object) -> Path:
    """Resume the partial dump at ``path`` and append whatever it is missing; returns the final path."""
    with StoreWriter(path, HOOKS, **ARGS, **extra) as writer:
        for tokens, acts in sequences[writer.n_sequences :]:
            writer.append(tokens, acts)
    return writer.close()


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_store(tmp_path / "reference.h5", _sequences(), **ARGS)


def _start(path: Path, sequences: list, n: int) -> StoreWriter:
    writer = StoreWriter(path, HOOKS, **ARGS)
    for tokens, acts in sequences[:n]:
        writer.append(tokens, acts)
    return writer


def test_exception_inside_with_leaves_a_resumable_partial(tmp_path: Path, reference: Path) -> None:
    sequences, path = _sequences(), tmp_path / "r.h5"
    with pytest.raises(RuntimeError, match="interrupted"), StoreWriter(path, HOOKS, **ARGS) as writer:
        for tokens, acts in sequences[:4]:
            writer.append(tokens, acts)
        raise RuntimeError("interrupted")
    assert path.with_name("r.h5.partial").exists() and not path.exists()
    with pytest.raises(StoreError, match="dump incomplete"):
        Store(path)
    assert StoreWriter(path, HOOKS, **ARGS).n_sequences == 4  # a second open resumes again (file closed)
    assert_same_file_contents(_finish(path, sequences), reference)
    assert Store(path).tokens_sha256 == Store(reference).tokens_sha256


def test_writer_never_closed(tmp_path: Path, reference: Path) -> None:
    sequences, path = _sequences(), tmp_path / "r.h5"
    writer = _start(path, sequences, 7)  # past the overflow: the hook is float32 on disk already
    del writer
    gc.collect()
    assert_same_file_contents(_finish(path, sequences), reference)


def test_half_written_sequence_is_truncated(tmp_path: Path, reference: Path) -> None:
    sequences, path = _sequences(), tmp_path / "r.h5"
    writer = _start(path, sequences, 5)

    def die_before_commit(*args: object) -> None:
        raise KeyboardInterrupt

    writer._commit = die_before_commit  # rows of sequence 5 (with the overflow conversion) are written, not committed
    with pytest.raises(KeyboardInterrupt):
        writer.append(*sequences[5])
    writer._file.close()
    with h5py.File(path.with_name("r.h5.partial")) as f:
        assert f["tokens"].shape[0] > f["seq_offsets"][-1]  # the half-written rows are on disk
        assert f["hooks"][HOOK].dtype == np.float32
    resumed = StoreWriter(path, HOOKS, **ARGS)
    assert resumed.n_sequences == 5
    resumed._file.close()
    assert_same_file_contents(_finish(path, sequences), reference)


def test_killed_between_checkpoint_and_commit(tmp_path: Path, reference: Path) -> None:
    """The newer checkpoint slot (written just before the commit point) must be ignored."""
    sequences, path = _sequences(), tmp_path / "r.h5"
    _start(path, sequences, 4)._file.close()
    with h5py.File(path.with_name("r.h5.partial"), "r+") as f:
        slot = 5 % 2
        f["resume/slot_sequences"][slot] = 5
        for hook in HOOKS:
            f["resume/stats"][hook][slot] = 1e9
        f["resume/overflow_counts"][slot] = 7
        f["tokens"].resize(f["tokens"].shape[0] + 3, axis=0)
    assert_same_file_contents(_finish(path, sequences), reference)


@pytest.mark.parametrize("original_deleted", [False, True])
def test_float32_conversion_cut_short(tmp_path: Path, reference: Path, original_deleted: bool) -> None:
    sequences, path = _sequences(), tmp_path / "r.h5"
    _start(path, sequences, 5)._file.close()
    with h5py.File(path.with_name("r.h5.partial"), "r+") as f:
        old = f["hooks"][HOOK]
        copy = (
            f["resume"]
            .create_group("float32")
            .create_dataset(
                HOOK,
                data=old[()].astype(np.float32),
                maxshape=(None, old.shape[1]),
                chunks=(16, old.shape[1]),
                fletcher32=True,
            )
        )
        copy.attrs.update(dict(old.attrs))
        copy.attrs["stored_dtype"] = "float32"
        if original_deleted:
            del f["hooks"][HOOK]
        else:
            copy[0, 0] = 123.0  # an unfinished copy must be discarded, not used
    assert_same_file_contents(_finish(path, sequences), reference)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_store_resume import ARGS, HOOKS, _sequences
    from activations import StoreWriter
    writer = StoreWriter({path!r}, HOOKS, flush_interval=0, **ARGS)
    sequences = _sequences()
    for tokens, acts in sequences[:6]:
        writer.append(tokens, acts)
    writer._commit = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    writer.append(*sequences[6])
    """
)


def test_sigkilled_writer_resumes(tmp_path: Path, reference: Path) -> None:
    path = tmp_path / "r.h5"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert_same_file_contents(_finish(path, _sequences()), reference)


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"dtype": "float32"}, "dtype"),
        ({"compression": "lzf"}, "compression"),
        ({"attrs": {"model_fingerprint": "other", "adapter_fingerprint": "a"}}, "attrs"),
        ({"config": {"seed": 2}}, "config"),
        ({"hook_attrs": {}}, "hook_attrs of blocks.0.attn.hook_z"),
        ({"hooks": {**HOOKS, HOOK: 13}}, "hooks"),
    ],
)
def test_resume_refuses_other_arguments(tmp_path: Path, changes: dict, what: str) -> None:
    path = tmp_path / "r.h5"
    _start(path, _sequences(), 2)._file.close()
    kwargs = {**ARGS, **changes}
    hooks = kwargs.pop("hooks", HOOKS)
    with pytest.raises(StoreError, match=f"r.h5.partial: cannot resume: the partial dump has {what} "):
        StoreWriter(path, hooks, **kwargs)
    fresh = StoreWriter(path, hooks, resume=False, **kwargs)  # explicit restart replaces the partial file
    assert fresh.n_sequences == 0
    fresh._file.close()


def test_resume_refuses_damaged_partial(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _start(path, _sequences(), 2)._file.close()
    partial = path.with_name("r.h5.partial")
    with h5py.File(partial, "r+") as f:
        del f["resume/slot_sequences"]
    with pytest.raises(StoreError, match="r.h5.partial: cannot resume, the partial dump is damaged"):
        StoreWriter(path, HOOKS, **ARGS)
    partial.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="cannot resume the partial dump"):
        StoreWriter(path, HOOKS, **ARGS)
    assert os.path.exists(partial)


def test_lookup3_matches_reference_values() -> None:
    # Published test values of Bob Jenkins' lookup3.c driver (hashlittle).
    assert lookup3(b"", 0) == 0xDEADBEEF
    assert lookup3(b"", 0xDEADBEEF) == 0xBD5B7DDE
    assert lookup3(b"Four score and seven years ago", 0) == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_partial_held_by_a_live_process_is_not_resumed(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _start(path, _sequences(), 1)._file.close()
    holder = "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); print('open', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(path.with_name("r.h5.partial"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="locked by another writer"):
            StoreWriter(path, HOOKS, **ARGS)
        process.stdin.close()
    assert StoreWriter(path, HOOKS, **ARGS).n_sequences == 1
