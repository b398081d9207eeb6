"""Writing and reading stores: round trips per dtype and compression, overflow, stats, blocks, pairing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from test_store_support import ATTN_ATTRS, HOOKS, concat, make_sequences, write_store

from activations import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    StoreMismatchError,
    StoreWriter,
    hook_name,
    paired_blocks,
    tokens_sha256,
)
from activations.layout import chunk_rows_for

HOOK = hook_name(0, "resid_pre")


def _expected(sequences: list, hook: str, stored: type) -> np.ndarray:
    return concat(sequences, hook).astype(stored).astype(np.float32)


@pytest.mark.parametrize(
    ("dtype", "source"),
    [("float16", np.float32), ("float32", np.float32), ("float16", np.float64), ("float32", np.float16)],
)
def test_round_trip(tmp_path: Path, dtype: str, source: type) -> None:
    sequences = make_sequences(0, 7, dtype=source)
    path = write_store(tmp_path / "a.h5", sequences, dtype=dtype)
    assert path == tmp_path / "a.h5" and not (tmp_path / "a.h5.partial").exists()
    with Store(path) as store:
        assert store.hooks == [hook_name(0, "resid_pre"), hook_name(0, "attn_z"), hook_name(1, "resid_post")]
        assert store.n_sequences == 7
        lengths = [len(tokens) for tokens, _ in sequences]
        assert store.n_tokens == sum(lengths)
        assert np.array_equal(store.tokens, np.concatenate([t for t, _ in sequences]))
        assert store.tokens.dtype == np.int32 and store.seq_offsets.dtype == np.int64
        assert np.array_equal(store.seq_offsets, np.concatenate([[0], np.cumsum(lengths)]))
        assert np.array_equal(store.row_sequence_ids, np.repeat(np.arange(7), lengths))
        assert store.tokens_sha256 == tokens_sha256(store.tokens, store.seq_offsets)
        assert store.attrs["schema_version"] == SCHEMA_VERSION
        assert store.attrs["model_fingerprint"] == "model-abc"
        assert store.attrs["tokens_sha256"] == store.tokens_sha256
        assert store.config == {"run": {"lr": 1e-3, "layers": [0, 1]}, "name": "test"}
        for hook, width in HOOKS.items():
            values = store.read(hook)
            assert values.dtype == np.float32 and values.shape == (store.n_tokens, width)
            assert np.array_equal(values, _expected(sequences, hook, np.dtype(dtype)))
            attrs = store.hook_attrs(hook)
            assert store.width(hook) == width and store.dtype(hook) == dtype
            assert attrs["stored_dtype"] == dtype and attrs["source_dtype"] == np.dtype(source).name
            assert attrs["overflow_count"] == 0
        assert store.hook_attrs(hook_name(0, "attn_z"))["n_heads"] == ATTN_ATTRS[hook_name(0, "attn_z")]["n_heads"]


class _Bfloat16Array:
    """Stands in for an array type with no numpy buffer format: exposes only dtype and astype."""

    dtype = "bfloat16"

    def __init__(self, values: np.ndarray) -> None:
        # Keep the top 16 bits of each float32, which is exactly what bfloat16 holds.
        self._values = (values.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)

    def astype(self, dtype: object) -> np.ndarray:
        return self._values.astype(dtype)

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise ValueError("'bfloat16' is not a valid PEP 3118 buffer format string")


def _bfloat16_round_trip(tmp_path: Path, to_bfloat16, to_float32) -> None:
    sequences = make_sequences(1, 4)
    as_bf16 = [(tokens, {hook: to_bfloat16(acts[hook]) for hook in acts}) for tokens, acts in sequences]
    with Store(write_store(tmp_path / "bf16.h5", as_bf16, dtype="float32")) as store:
        for hook in HOOKS:
            exact = np.concatenate([to_float32(acts[hook]) for _, acts in as_bf16])
            # bfloat16 values are float32 values whose low 16 bits are zero.
            assert not np.any(exact.view(np.uint32) & 0xFFFF)
            assert np.array_equal(store.read(hook), exact)
            assert store.hook_attrs(hook)["source_dtype"] == "bfloat16"
            stats = store.stats(hook)
            np.testing.assert_allclose(stats["sum"], exact.astype(np.float64).sum(0), rtol=1e-12, atol=1e-9)


def test_bfloat16_duck_typed_input(tmp_path: Path) -> None:
    _bfloat16_round_trip(tmp_path, _Bfloat16Array, lambda values: values.astype(np.float32))


def test_bfloat16_mlx_input(tmp_path: Path) -> None:
    mx = pytest.importorskip("mlx.core")
    _bfloat16_round_trip(
        tmp_path,
        lambda values: mx.array(values).astype(mx.bfloat16),
        lambda values: np.array(values.astype(mx.float32)),
    )


def test_bfloat16_ml_dtypes_input(tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    _bfloat16_round_trip(
        tmp_path, lambda values: values.astype(ml_dtypes.bfloat16), lambda values: values.astype(np.float32)
    )


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compressed_round_trip_equals_uncompressed(tmp_path: Path, compression: str) -> None:
    sequences = make_sequences(2, 6)
    plain = Store(write_store(tmp_path / "plain.h5", sequences))
    packed = Store(write_store(tmp_path / "packed.h5", sequences, compression=compression))
    assert packed.attrs["compression"] == compression
    assert packed.tokens_sha256 == plain.tokens_sha256
    for hook in HOOKS:
        assert np.array_equal(packed.read(hook), plain.read(hook))
        with h5py.File(packed.path) as f:
            assert f["hooks"][hook].compression == compression


def test_overflow_keeps_hook_in_float32_and_preserves_earlier_rows(tmp_path: Path) -> None:
    sequences = make_sequences(3, 6)
    sequences[3][1][HOOK][0, :3] = [70_000.0, -1e6, 65_520.0]  # all three round to +-inf in float16
    sequences[4][1][HOOK][1, 0] = 65_519.0  # rounds to 65504: no overflow
    with Store(write_store(tmp_path / "o.h5", sequences)) as store:
        assert store.dtype(HOOK) == np.float32
        attrs = store.hook_attrs(HOOK)
        assert attrs["stored_dtype"] == "float32" and attrs["overflow_count"] == 3
        before = int(store.seq_offsets[3])
        values = store.read(HOOK)
        source = concat(sequences, HOOK)
        assert np.array_equal(values[:before], source[:before].astype(np.float16).astype(np.float32))
        assert np.array_equal(values[before:], source[before:].astype(np.float32))
        for other in set(HOOKS) - {HOOK}:
            assert store.dtype(other) == np.float16 and store.hook_attrs(other)["overflow_count"] == 0


def test_overflow_in_first_sequence(tmp_path: Path) -> None:
    sequences = make_sequences(4, 2)
    sequences[0][1][HOOK][-1, -1] = 1e5
    with Store(write_store(tmp_path / "o.h5", sequences)) as store:
        assert store.dtype(HOOK) == np.float32
        assert np.array_equal(store.read(HOOK), concat(sequences, HOOK).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_stats_equal_float64_recomputation_from_source(tmp_path: Path, dtype: str) -> None:
    # A large mean makes float32 or float16 accumulation visibly wrong, so this checks float64 from source.
    sequences = make_sequences(5, 9, dtype=np.float64, offset=1000.0)
    with Store(write_store(tmp_path / "s.h5", sequences, dtype=dtype)) as store:
        for hook in HOOKS:
            source = concat(sequences, hook)
            stats = store.stats(hook)
            assert stats["count"] == len(source)
            assert stats["sum"].dtype == np.float64
            np.testing.assert_allclose(stats["sum"], source.sum(axis=0), rtol=1e-12)
            np.testing.assert_allclose(stats["sumsq"], (source**2).sum(axis=0), rtol=1e-12)


def test_partial_reads_sequences_and_blocks_equal_whole_read(tmp_path: Path) -> None:
    with Store(write_store(tmp_path / "b.h5", make_sequences(6, 12))) as store:
        whole = {hook: store.read(hook) for hook in HOOKS}
        rng = np.random.default_rng(0)
        for _ in range(20):
            start, stop = sorted(int(x) for x in rng.integers(0, store.n_tokens + 1, 2))
            assert np.array_equal(store.read(HOOK, start, stop), whole[HOOK][start:stop])
        for i in range(store.n_sequences):
            rows = slice(store.seq_offsets[i], store.seq_offsets[i + 1])
            assert np.array_equal(store.sequence(i, HOOK), whole[HOOK][rows])
        default = list(store.iter_blocks(list(HOOKS)))
        assert all((block.stop - block.start) % store.chunk_rows(HOOK) == 0 for block in default[:-1])
        for block_rows in (None, 7, 10_000):
            blocks = list(store.iter_blocks(list(HOOKS), block_rows=block_rows))
            assert blocks[0].start == 0 and blocks[-1].stop == store.n_tokens
            assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:], strict=False))
            for hook in HOOKS:
                assert np.array_equal(np.concatenate([b.arrays[hook] for b in blocks]), whole[hook])
            assert np.array_equal(np.concatenate([b.seq_ids for b in blocks]), store.row_sequence_ids)


def test_default_chunks_hold_two_to_four_mib(tmp_path: Path) -> None:
    for width, itemsize in [(576, 2), (576, 4), (4096, 2), (9 * 64, 2), (2048, 4)]:
        assert 2 * 2**20 <= chunk_rows_for(width, itemsize) * width * itemsize <= 4 * 2**20
    sequences = make_sequences(7, 2, hooks={HOOK: 576})
    with Store(write_store(tmp_path / "c.h5", sequences, hooks={HOOK: 576}, chunk_rows=None)) as store:
        assert store.chunk_rows(HOOK) == chunk_rows_for(576, 2)
        assert len(list(store.iter_blocks(HOOK))) == 1


def test_paired_blocks_align_rows_of_two_stores(tmp_path: Path) -> None:
    sequences = make_sequences(8, 10)
    shifted = [(tokens, {hook: acts[hook] + 1.0 for hook in acts}) for tokens, acts in sequences]
    a, b = Store(write_store(tmp_path / "a.h5", sequences)), Store(write_store(tmp_path / "b.h5", shifted))
    other = hook_name(1, "resid_post")
    blocks = list(paired_blocks(a, b, [HOOK], [other], block_rows=13))
    assert sum(block.stop - block.start for block in blocks) == a.n_tokens
    for block in blocks:
        assert np.array_equal(block.a[HOOK], a.read(HOOK, block.start, block.stop))
        assert np.array_equal(block.b[other], b.read(other, block.start, block.stop))
        assert np.array_equal(block.seq_ids, a.row_sequence_ids[block.start : block.stop])
    default = list(paired_blocks(a, b, HOOK))
    assert [(block.start, block.stop) for block in default] == [(0, a.n_tokens)]  # one aligned block of >= 1024
    assert np.array_equal(default[0].b[HOOK], b.read(HOOK))


def test_paired_blocks_refuse_different_tokens(tmp_path: Path) -> None:
    a = Store(write_store(tmp_path / "a.h5", make_sequences(9, 4)))
    b = Store(write_store(tmp_path / "b.h5", make_sequences(10, 4)))
    with pytest.raises(StoreMismatchError) as caught:
        paired_blocks(a, b, [HOOK])  # refused on the call, before any iteration
    message = str(caught.value)
    assert str(a.path) in message and str(b.path) in message
    assert a.tokens_sha256 in message and b.tokens_sha256 in message
    assert isinstance(caught.value, StoreError)


def test_unknown_hook_and_bad_ranges(tmp_path: Path) -> None:
    with Store(write_store(tmp_path / "r.h5", make_sequences(11, 3))) as store:
        with pytest.raises(StoreError, match="no hook 'blocks.7.hook_resid_pre'"):
            store.read(hook_name(7, "resid_pre"))
        with pytest.raises(ValueError, match="outside"):
            store.read(HOOK, 5, 2)
        with pytest.raises(ValueError, match="outside"):
            store.read(HOOK, 0, store.n_tokens + 1)
        with pytest.raises(IndexError, match="sequence index 3"):
            store.sequence(3, HOOK)
        with pytest.raises(ValueError, match="block_rows"):
            store.iter_blocks(HOOK, block_rows=0)
        with pytest.raises(ValueError):
            store.tokens[0] = 1  # read-only view


def test_writer_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    (tokens, acts), (tokens2, acts2) = make_sequences(12, 2)
    with StoreWriter(tmp_path / "w.h5", HOOKS, chunk_rows=16) as writer:
        bad = dict(acts)
        bad[HOOK] = acts[HOOK].copy()
        bad[HOOK][2, 1] = np.nan
        with pytest.raises(ValueError, match=r"non-finite activations \(first at position 2, column 1\)"):
            writer.append(tokens, bad)
        with pytest.raises(ValueError, match="expected"):
            writer.append(tokens[:-1], acts) if len(tokens) > 1 else writer.append(np.r_[tokens, 1], acts)
        with pytest.raises(ValueError, match="missing"):
            writer.append(tokens, {HOOK: acts[HOOK]})
        with pytest.raises(ValueError, match="must be floating point"):
            writer.append(tokens, {**acts, HOOK: acts[HOOK].astype(np.int64)})
        with pytest.raises(ValueError, match="token ids"):
            writer.append(-np.ones_like(tokens), acts)
        with pytest.raises(ValueError, match="float32 range"):
            writer.append(tokens, {**acts, HOOK: np.full(acts[HOOK].shape, 1e300)})
        writer.append(tokens, acts)
        with pytest.raises(ValueError, match="earlier sequences were float32"):
            writer.append(tokens2, {**acts2, HOOK: acts2[HOOK].astype(np.float64)})
        writer.append(tokens2, acts2)
    with Store(tmp_path / "w.h5") as store:
        assert store.n_sequences == 2
        assert np.array_equal(store.read(HOOK), concat([(tokens, acts), (tokens2, acts2)], HOOK).astype(np.float16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hooks": {"embed": 3}}, "not a hook name"),
        ({"hooks": {HOOK: 0}}, "positive int"),
        ({"hooks": {}}, "non-empty"),
        ({"dtype": "bfloat16"}, "dtype must be"),
        ({"dtype": np.float64}, "dtype must be"),
        ({"compression": "zstd"}, "compression must be"),
        ({"attrs": {"tokens_sha256": "x"}}, "manages these itself"),
        ({"attrs": {"nested": {"a": 1}}}, "put structured data in config"),
        ({"config": {"x": float("nan")}}, "JSON-serialisable"),
        ({"hook_attrs": {hook_name(5, "attn_z"): {}}}, "not in hooks"),
        ({"hook_attrs": {hook_name(0, "attn_z"): {"n_heads": 3, "head_dim": 4}}}, "does not equal its width"),
        ({"chunk_rows": 0}, "chunk_rows"),
    ],
)
def test_writer_refuses_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    hooks = kwargs.pop("hooks", HOOKS)
    with pytest.raises(ValueError, match=message):
        StoreWriter(tmp_path / "x.h5", hooks, **kwargs)
    assert not (tmp_path / "x.h5.partial").exists()


def test_existing_store_needs_overwrite(tmp_path: Path) -> None:
    path = write_store(tmp_path / "e.h5", make_sequences(13, 2))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        StoreWriter(path, HOOKS)
    replacement = make_sequences(14, 3)
    write_store(path, replacement, overwrite=True)
    with Store(path) as store:
        assert store.n_sequences == 3
        assert np.array_equal(store.read(HOOK), concat(replacement, HOOK).astype(np.float16))


def test_missing_and_incomplete_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store file"):
        Store(tmp_path / "nothing.h5")
    writer = StoreWriter(tmp_path / "p.h5", HOOKS)
    tokens, acts = make_sequences(15, 1)[0]
    writer.append(tokens, acts)
    for path in (tmp_path / "p.h5", tmp_path / "p.h5.partial"):
        with pytest.raises(StoreError, match=r"p\.h5\.partial: dump incomplete; resume it or delete it"):
            Store(path)
    writer.close()
    assert Store(tmp_path / "p.h5").n_sequences == 1


def test_every_finite_float16_value_reads_back_exactly(tmp_path: Path) -> None:
    # All 63488 finite bit patterns, subnormals and signed zeros included: checks the reader's own conversion.
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    values = patterns[np.isfinite(patterns)].reshape(-1, 8)
    hooks = {HOOK: 8}
    sequences = [(np.arange(len(values)), {HOOK: values})]
    with Store(write_store(tmp_path / "all.h5", sequences, hooks=hooks, hook_attrs={})) as store:
        assert store.dtype(HOOK) == np.float16
        read = store.read(HOOK)
        assert np.array_equal(read.view(np.uint32), values.astype(np.float32).view(np.uint32))
