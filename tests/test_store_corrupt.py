"""Damaged and foreign files: every problem is a StoreError naming the file, never another exception."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_support import HOOKS, make_sequences, write_store

from activations import Store, StoreError, hook_name

HOOK = hook_name(0, "resid_pre")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("good") / "good.h5", make_sequences(31, 6, max_len=20))


@pytest.fixture(scope="module")
def good_contents(good_store: Path) -> dict:
    with Store(good_store) as store:
        return {
            "tokens": store.tokens.copy(),
            "offsets": store.seq_offsets.copy(),
            "attrs": store.attrs,
            "config": store.config,
            "stats": {hook: store.stats(hook) for hook in HOOKS},
            "rows": {hook: store.read(hook) for hook in HOOKS},
            "hook_attrs": {hook: store.hook_attrs(hook) for hook in HOOKS},
        }


def _read_everything(path: Path) -> dict:
    with Store(path) as store:
        assert store.hooks == sorted(HOOKS, key=list(HOOKS).index)
        rows = {hook: np.concatenate([b.arrays[hook] for b in store.iter_blocks(store.hooks, 16)]) for hook in HOOKS}
        return {
            "tokens": store.tokens,
            "offsets": store.seq_offsets,
            "attrs": store.attrs,
            "config": store.config,
            "stats": {hook: store.stats(hook) for hook in HOOKS},
            "rows": rows,
            "hook_attrs": {hook: store.hook_attrs(hook) for hook in HOOKS},
        }


def _same(found: dict, expected: dict) -> bool:
    return (
        np.array_equal(found["tokens"], expected["tokens"])
        and np.array_equal(found["offsets"], expected["offsets"])
        and found["attrs"] == expected["attrs"]
        and found["config"] == expected["config"]
        and found["hook_attrs"] == expected["hook_attrs"]
        and all(np.array_equal(found["rows"][h], expected["rows"][h]) for h in HOOKS)
        and all(np.array_equal(found["stats"][h][k], expected["stats"][h][k]) for h in HOOKS for k in ("sum", "sumsq"))
    )


def _copy(good_store: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=good_store.parent)) / "damaged.h5"
    shutil.copyfile(good_store, target)
    return target


@FUZZ
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_files_raise_store_error(good_store: Path, fraction: float) -> None:
    path = _copy(good_store)
    data = good_store.read_bytes()
    path.write_bytes(data[: int(fraction * len(data))])
    with pytest.raises(StoreError, match="damaged.h5"):
        _read_everything(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 0.999999), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_raise_store_error_or_change_nothing(
    good_store: Path, good_contents: dict, flips: list[tuple[float, int]]
) -> None:
    path = _copy(good_store)
    data = bytearray(good_store.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path.write_bytes(bytes(data))
    try:
        found = _read_everything(path)
    except StoreError as exc:
        assert "damaged.h5" in str(exc)
        return
    # Bytes HDF5 never reads (free space, padding) may change without consequence; anything else must not.
    assert _same(found, good_contents)


def _objects(good_store: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(good_store) as f:
        f.visit(names.append)
    return names


@FUZZ
@given(data=st.data())
def test_deleted_objects_raise_store_error(good_store: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(_objects(good_store)))
    path = _copy(good_store)
    with h5py.File(path, "r+") as f:
        del f[name]
    with pytest.raises(StoreError, match="damaged.h5"):
        _read_everything(path)


@FUZZ
@given(data=st.data())
def test_resized_datasets_raise_store_error(good_store: Path, data: st.DataObject) -> None:
    with h5py.File(good_store) as f:
        resizable = [n for n in _objects(good_store) if isinstance(f[n], h5py.Dataset) and f[n].maxshape[:1] == (None,)]
    name = data.draw(st.sampled_from(resizable))
    path = _copy(good_store)
    with h5py.File(path, "r+") as f:
        rows = f[name].shape[0]
        f[name].resize(data.draw(st.integers(0, 2 * rows).filter(lambda n: n != rows)), axis=0)
    with pytest.raises(StoreError, match="damaged.h5"):
        _read_everything(path)


def _set_attr(name: str, key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[name].attrs[key] = value

    return edit


def _write(name: str, index: object, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[name][index] = value

    return edit


def _replace(name: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        if name in f:
            del f[name]
        f[name] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set_attr("/", "schema_version", 99), "unknown schema version 99"),
        (_set_attr("/", "format", "something.else"), "not an activation store"),
        (_set_attr("/", "complete", False), "dump incomplete; resume it or delete it"),
        (_set_attr("/", "tokens_sha256", "0" * 64), "do not match the tokens_sha256"),
        (_write("tokens", 0, 7), "do not match the tokens_sha256"),
        (_write("seq_offsets", 2, 1), "seq_offsets is inconsistent"),
        (_write("seq_offsets", -1, 3), "seq_offsets is inconsistent"),
        (_write("config", (), '{"other": 1}'), "config does not match"),
        (_write(f"hooks/{HOOK}", (1, 2), np.inf), r"non-finite value at row 1, column 2"),
        (_write(f"hooks/{HOOK}", (3, 0), np.nan), r"non-finite value at row 3, column 0"),
        (_set_attr(f"hooks/{HOOK}", "stored_dtype", "float32"), "stored_dtype attribute says 'float32'"),
        (_replace(f"stats/{HOOK}", np.zeros((2, 3))), f"statistics of {HOOK} are inconsistent"),
        (_write(f"stats/{HOOK}", (0, 0), np.nan), f"statistics of {HOOK} are inconsistent"),
        (_set_attr(f"stats/{HOOK}", "count", 1), f"statistics of {HOOK} are inconsistent"),
        (_replace(f"hooks/{HOOK}", np.zeros((3, 4, 5), np.float16)), "expected 2-D"),
        (_replace("tokens", np.zeros(3)), "expected 1-D of kind 'iu'"),
        (_replace("hooks/blocks.9.hook_embed", np.zeros((1, 1), np.float16)), "unexpected entry in 'hooks'"),
    ],
)
def test_specific_damage_is_named(good_store: Path, edit: Callable[[h5py.File], None], message: str) -> None:
    path = _copy(good_store)
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(StoreError, match=message) as caught:
        _read_everything(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"plain text, not HDF5\n" * 50, b"\x89HDF\r\n\x1a\n" + bytes(100)])
def test_non_hdf5_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"x\.h5: not an HDF5 file, or a damaged one"):
        Store(path)


def test_other_hdf5_files_and_directories(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(StoreError, match="foreign.h5: not an activation store"):
        Store(tmp_path / "foreign.h5")
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(StoreError, match="dir.h5: not a file"):
        Store(tmp_path / "dir.h5")
