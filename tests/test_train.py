"""Training runs on a tiny base: exact resume, run-directory safety, config round trip, bad input."""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import numpy as np
import pytest
from test_train_fixtures import repeating_tokens, tiny_base, tiny_config, tiny_data

from trainer.checkpoint import load_run, read_metrics
from trainer.config import TrainConfig, load_config_file
from trainer.errors import UserError
from trainer.train import TIMING_KEYS, batch_indices, train


class Interrupted(Exception):
    pass


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def snapshot(run_dir) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


@pytest.fixture(scope="module")
def base():
    return tiny_base()


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, base, data):
    """One uninterrupted 8-step run, shared by the read-only tests."""
    seen = []
    run_dir = train(tiny_config(tmp_path_factory.mktemp("runs") / "full"), base=base, data=data,
                    callback=seen.append, progress=False)
    return run_dir, seen


def test_resume_writes_the_same_metrics_as_an_uninterrupted_run(tmp_path, base, data, finished):
    full_dir, _ = finished
    cfg = tiny_config(tmp_path / "resumed")

    def crash_after_step_6(record):
        if record["kind"] == "train" and record["step"] == 6:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, base=base, data=data, callback=crash_after_step_6, progress=False)
    # The crash came after the step-4 checkpoint and after metrics for steps 5-6 were written.
    assert max(r["step"] for r in read_metrics(cfg.out)) == 6
    train(dataclasses.replace(cfg, resume=True), base=base, data=data, progress=False)

    full, resumed = read_metrics(full_dir), read_metrics(cfg.out)
    assert [r["step"] for r in full] == [2, 4, 4, 6, 8, 8]
    assert without_timing(resumed) == without_timing(full)
    a = mx.load(str(full_dir / "adapter.safetensors"))
    b = mx.load(str(tmp_path / "resumed" / "adapter.safetensors"))
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    assert json.loads((full_dir / "eval.json").read_text()) == json.loads((tmp_path / "resumed/eval.json").read_text())


def test_training_lowers_held_out_loss_and_reports_progress(finished):
    run_dir, seen = finished
    val = [r for r in seen if r["kind"] == "val"]
    train_records = [r for r in seen if r["kind"] == "train"]
    assert val[-1]["val_loss"] < val[-1]["base_val_loss"]
    assert train_records[0]["lr"] < train_records[1]["lr"]  # still warming up at step 2
    for r in train_records:
        assert set(r["tap_weights"]) == {"2", "3", "4", "5"}
        assert all(abs(sum(w.values()) - 1) < 1e-6 for w in r["tap_weights"].values())
        assert r["tokens_per_sec"] > 0 and r["peak_memory_gb"] > 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["alpha0"]["equals_base"] and ev["delta_base_minus_adapted"]["mean"] > 0


def test_run_directory_records_everything_needed_to_repeat_it(finished, tmp_path, base, data):
    run_dir, _ = finished
    config = json.loads((run_dir / "config.json").read_text())
    assert config["format"] == "psiloscope.multitap/1"
    assert config["base"]["weights_sha256"] == base.weights_sha256
    assert config["data"]["train"]["fingerprint"] == data[0].fingerprint
    assert config["parameters"]["trainable"] > 0 and config["parameters"]["frozen"] > 0
    assert {"mlx", "mlx-lm", "numpy"} <= set(config["versions"])
    assert not (run_dir / "adapters.safetensors").exists()
    _, meta = mx.load(str(run_dir / "adapter.safetensors"), return_metadata=True)
    assert meta["format"] == "psiloscope.multitap/1"
    # Repeating the run from its own config.json reproduces it.
    cfg = TrainConfig.from_dict({**load_config_file(run_dir / "config.json"), "out": str(tmp_path / "again")})
    again = train(cfg, base=base, data=data, progress=False)
    assert without_timing(read_metrics(again)) == without_timing(read_metrics(run_dir))


def test_grad_checkpointing_does_not_change_training(finished, tmp_path, base, data):
    run_dir, _ = finished
    ckpt = train(tiny_config(tmp_path / "ckpt", grad_checkpoint=True), base=base, data=data, progress=False)
    plain = [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]
    checkpointed = [r["loss"] for r in read_metrics(ckpt) if r["kind"] == "train"]
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-4)


def test_load_run_round_trip_and_fingerprint_check(finished, base):
    run_dir, _ = finished
    _, adapter, config = load_run(run_dir, base)
    saved = mx.load(str(run_dir / "adapter.safetensors"))
    from mlx.utils import tree_flatten

    loaded = dict(tree_flatten(adapter.parameters()))
    assert saved.keys() == loaded.keys() and all(mx.array_equal(saved[k], loaded[k]).item() for k in saved)
    other = tiny_base(weights_sha256="f" * 64)
    with pytest.raises(UserError, match="weights_sha256"):
        load_run(run_dir, other)


def test_existing_run_directory_is_never_overwritten(finished, base, data):
    run_dir, _ = finished
    before = snapshot(run_dir)
    with pytest.raises(UserError, match="already exists"):
        train(tiny_config(run_dir), base=base, data=data, progress=False)
    assert snapshot(run_dir) == before


def test_resume_with_changed_config_names_the_differing_keys(finished, base, data):
    run_dir, _ = finished
    before = snapshot(run_dir)
    with pytest.raises(UserError, match=r"alpha \(0.65 -> 0.5\), lr \(0.003 -> 0.01\)"):
        train(tiny_config(run_dir, lr=0.01, alpha=0.5, resume=True), base=base, data=data, progress=False)
    assert snapshot(run_dir) == before


def test_resume_of_missing_run_is_an_error(tmp_path, base, data):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny_config(tmp_path / "nope", resume=True), base=base, data=data, progress=False)


@pytest.mark.parametrize(
    "overrides,data_override,message",
    [
        (dict(distances=(6, 9)), None, "no skip path"),
        (dict(distances=()), None, "empty"),
        (dict(alpha=-1.0), None, "alpha"),
        (dict(seq_len=65), None, "context of 64"),
        (dict(batch_size=4), (repeating_tokens(3), repeating_tokens(2, split="validation")), "fewer than one batch"),
        (dict(warmup=8), None, "warmup"),
    ],
)
def test_bad_input_is_one_user_error_and_writes_nothing(tmp_path, base, data, overrides, data_override, message):
    out = tmp_path / "bad"
    with pytest.raises(UserError, match=message):
        train(tiny_config(out, **overrides), base=base, data=data_override or data, progress=False)
    assert not out.exists()


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    first_epoch = np.concatenate([batch_indices(s, 10, 3, seed=7) for s in range(3)])
    assert len(set(first_epoch.tolist())) == 9
    assert np.array_equal(batch_indices(4, 10, 3, seed=7), batch_indices(4, 10, 3, seed=7))
    assert not np.array_equal(batch_indices(0, 10, 3, seed=7), batch_indices(0, 10, 3, seed=8))
