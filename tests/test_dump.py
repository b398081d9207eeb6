"""`psilotrain dump`: paired token sets, faithful capture, resumable writes, clear errors."""

from __future__ import annotations

import h5py
import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

import trainer.forward as forward
from activations import Store, hook_name
from trainer.base import load_base
from trainer.cli import cli
from trainer.data import load_tokens
from trainer.dump import DumpConfig, dump, parse_layers
from trainer.errors import UserError


def small(tmp_path, source, name="a.h5", **kw) -> DumpConfig:
    opts = dict(tokens=600, seq_len=64, hooks="resid_pre,resid_post,attn_z", batch_size=3)
    opts.update(kw)
    return DumpConfig(source=str(source), out=str(tmp_path / name), **opts)


def test_dump_rows_equal_the_model_activations(tmp_path, tiny_base_dir):
    path = dump(small(tmp_path, tiny_base_dir), progress=False)
    store = Store(path)
    base = load_base(str(tiny_base_dir))
    ts = load_tokens("web", "validation", base.tokenizer, 64, max_tokens=600)
    assert store.n_sequences == len(ts.tokens) and store.n_tokens == ts.n_tokens
    np.testing.assert_array_equal(store.tokens, ts.tokens[ts.mask])
    # Sequence 1 recomputed with the plain mlx-lm model: resid_post of the last block before the final norm.
    x = mx.array(ts.tokens[1:2])
    inner = base.model.model
    h = inner.embed_tokens(x)
    from mlx_lm.models.base import create_attention_mask

    mask = create_attention_mask(h, None)
    for layer in inner.layers:
        h = layer(h, mask)
    real = ts.mask[1]
    np.testing.assert_allclose(store.sequence(1, "blocks.5.hook_resid_post"), np.array(h[0])[real],
                               rtol=2e-3, atol=2e-3)  # float16 storage
    attrs = store.hook_attrs("blocks.2.attn.hook_z")
    assert (attrs["n_heads"], attrs["head_dim"]) == (4, 16)
    assert store.attrs["adapter_fingerprint"] == "none"


def test_interrupted_dump_resumes_to_the_same_store(tmp_path, tiny_base_dir, monkeypatch):
    whole = Store(dump(small(tmp_path, tiny_base_dir, "whole.h5"), progress=False))
    calls = {"n": 0}

    original = forward.run

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(forward, "run", flaky)
    cfg = small(tmp_path, tiny_base_dir, "resumed.h5")
    with pytest.raises(KeyboardInterrupt):
        dump(cfg, progress=False)
    assert (tmp_path / "resumed.h5.partial").exists() and not (tmp_path / "resumed.h5").exists()
    monkeypatch.setattr(forward, "run", original)
    resumed = Store(dump(cfg, progress=False))
    assert resumed.tokens_sha256 == whole.tokens_sha256
    for hook in whole.hooks:
        np.testing.assert_array_equal(resumed.read(hook), whole.read(hook))


def test_same_arguments_give_paired_stores_across_sources(tmp_path, tiny_base_dir, real_base):
    tiny = Store(dump(small(tmp_path, tiny_base_dir, "tiny.h5", tokens=200, hooks="resid_post", layers="0"),
                      progress=False))
    real = Store(dump(small(tmp_path, "smollm2-135m-instruct", "real.h5", tokens=200, hooks="resid_post",
                            layers="0"), progress=False))
    assert tiny.tokens_sha256 == real.tokens_sha256  # same tokenizer, same arguments -> same tokens
    assert tiny.attrs["model_fingerprint"] != real.attrs["model_fingerprint"]


def test_existing_output_is_not_overwritten(tmp_path, tiny_base_dir):
    cfg = small(tmp_path, tiny_base_dir, hooks="resid_post", layers="0", tokens=100)
    dump(cfg, progress=False)
    with pytest.raises(UserError, match="--overwrite"):
        dump(cfg, progress=False)
    with h5py.File(cfg.out) as f:
        assert f.attrs["tokens_sha256"]


@pytest.mark.parametrize("args, needle", [
    (["--hooks", "bogus"], "unknown 'bogus'"),
    (["--hooks", "skip_out"], "needs an adapted run"),
    (["--layers", "99"], "outside 0..5"),
    (["-o", "/no/such/folder/x.h5"], "does not exist"),
])
def test_cli_bad_input_is_one_line(tmp_path, tiny_base_dir, args, needle):
    from trainer.errors import run_cli

    argv = ["psilotrain", "dump", str(tiny_base_dir), "-o", str(tmp_path / "x.h5"), "--tokens", "100", *args]
    runner_result = CliRunner().invoke(cli, argv[1:], standalone_mode=False)
    assert isinstance(runner_result.exception, UserError) and needle in str(runner_result.exception)
    import sys

    old = sys.argv
    sys.argv = argv
    try:
        with pytest.raises(SystemExit) as info:
            run_cli(cli)
    finally:
        sys.argv = old
    assert info.value.code == 2


def test_hooks_all_on_a_frozen_base_takes_what_exists():
    from trainer.dump import select_hooks

    available = [hook_name(l, k) for l in range(2) for k in ("resid_pre", "resid_post", "attn_z")]
    assert select_hooks("all", [0, 1], available) == sorted(available, key=lambda h: (int(h.split(".")[1]), h))
    with pytest.raises(UserError, match="needs an adapted run"):
        select_hooks("resid_post,skip_out", [0], available)
    with_skip = [*available, hook_name(1, "skip_out")]
    assert select_hooks("skip_out", [0, 1], with_skip) == [hook_name(1, "skip_out")]


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("1,3-5", 8) == [1, 3, 4, 5]
    with pytest.raises(UserError):
        parse_layers("x", 4)


@pytest.mark.slow
def test_base_and_adapted_dumps_of_the_real_base_pair(tmp_path, real_base):
    from trainer.config import TrainConfig
    from trainer.train import train

    run_dir = tmp_path / "run"
    cfg = TrainConfig(steps=2, batch_size=2, seq_len=64, warmup=0, eval_every=0, eval_seqs=2, eval_toggle=False,
                      report_every=1, save_every=2, max_train_tokens=2000, out=str(run_dir))
    train(cfg, base=real_base, progress=False)
    common = dict(tokens=150, seq_len=64, layers="3-4")
    base_store = Store(dump(small(tmp_path, "smollm2-135m-instruct", "base.h5", hooks="resid_post", **common),
                            progress=False))
    run_store = Store(dump(small(tmp_path, run_dir, "run.h5", hooks="resid_post,skip_out", **common), progress=False))
    assert base_store.tokens_sha256 == run_store.tokens_sha256
    assert base_store.attrs["model_fingerprint"] == run_store.attrs["model_fingerprint"] == real_base.weights_sha256
    assert base_store.attrs["adapter_fingerprint"] == "none" != run_store.attrs["adapter_fingerprint"]
    assert "blocks.3.hook_skip_out" in run_store.hooks
    # Two steps of training moved the adapted residual stream away from the base's.
    diff = np.abs(run_store.read("blocks.4.hook_resid_post") - base_store.read("blocks.4.hook_resid_post")).max()
    assert 0 < diff
