"""Sweeps: every run on the same held-out tokens, pooled paired summaries, resumption, bad grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train_fixtures import tiny_base, tiny_config, tiny_data

from trainer.errors import UserError
from trainer.sweep import SweepGrid, format_summary, run_name, summarise_sweep, sweep

GRID = SweepGrid(alphas=(0.5,), distance_sets=((1, 2), (0,)), seeds=(0, 1))


@pytest.fixture(scope="module")
def base():
    return tiny_base()


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, base, data):
    out = tmp_path_factory.mktemp("sweep") / "grid"
    template = tiny_config(out / "unused", steps=4, eval_every=0, eval_toggle=False)
    return out, template, sweep(template, GRID, out, base=base, data=data, progress=False)


def test_summary_pools_seeds_and_pairs_against_base_and_control(finished):
    out, _, summary = finished
    rows = {tuple(r["distances"]): r for r in summary["rows"]}
    assert set(rows) == {(1, 2), (0,)} and rows[(0,)]["control"]
    evals = {(d, s): json.loads((out / run_name(0.5, d, s) / "eval.json").read_text())
             for d in rows for s in (0, 1)}
    fingerprints = {e["tokens"]["fingerprint"] for e in evals.values()}
    base_losses = {e["base"]["loss"] for e in evals.values()}
    assert len(fingerprints) == 1 and len(base_losses) == 1
    for d, row in rows.items():
        # Each sequence has the same token count in every run, so pooling sums = averaging seed losses.
        seed_losses = [evals[d, s]["adapted"]["loss"] for s in (0, 1)]
        assert row["adapted"]["loss"] == pytest.approx(np.mean(seed_losses))
        assert row["base_loss"] in base_losses
        assert row["delta_base_minus_adapted"]["mean"] == pytest.approx(row["base_loss"] - np.mean(seed_losses))
        lo, hi = row["delta_base_minus_adapted"]["ci"]
        assert lo <= row["delta_base_minus_adapted"]["mean"] <= hi
    skip, control = rows[(1, 2)], rows[(0,)]
    assert "delta_control_minus_adapted" not in control
    assert skip["delta_control_minus_adapted"]["mean"] == pytest.approx(
        control["adapted"]["loss"] - skip["adapted"]["loss"])
    table = format_summary(summary)
    assert "(control)" in table and len(table.splitlines()) == 4
    assert json.loads((out / "summary.json").read_text()) == summary


def test_rerun_skips_finished_runs_and_finishes_missing_evaluations(finished, base, data):
    out, template, summary = finished
    target = out / run_name(0.5, (0,), 1) / "eval.json"
    saved = target.read_text()
    target.unlink()
    records = []
    again = sweep(template, GRID, out, base=base, data=data, callback=records.append, progress=False)
    # No run trained again: the one without eval.json was only re-evaluated from its final checkpoint.
    assert [r for r in records if r["kind"] != "start"] == []
    assert [r["step"] for r in records] == [4]
    assert json.loads(target.read_text()) == json.loads(saved)
    assert again == summary


def test_changed_template_or_grid_is_refused(finished, base, data):
    out, template, _ = finished
    with pytest.raises(UserError, match="template.lr"):
        sweep(template.__class__.from_dict({**template.to_dict(), "lr": 0.1}), GRID, out, base=base, data=data)
    with pytest.raises(UserError, match="grid.seeds"):
        sweep(template, SweepGrid(GRID.alphas, GRID.distance_sets, (0,)), out, base=base, data=data)


def test_bad_grids_fail_before_training(tmp_path, base, data):
    template = tiny_config(tmp_path / "unused")
    with pytest.raises(UserError, match="no skip path"):
        sweep(template, SweepGrid((0.5,), ((1,), (7, 8)), (0,)), tmp_path / "s1", base=base, data=data)
    assert not (tmp_path / "s1").exists()
    with pytest.raises(UserError, match="alpha"):
        sweep(template, SweepGrid((-0.5,), ((1,),), (0,)), tmp_path / "s2", base=base, data=data)
    with pytest.raises(UserError, match="comma-separated"):
        SweepGrid.parse("0.5,x", "1", "0")
    assert SweepGrid.parse("0.3, 0.65", "1,2,3;0", "0,1").distance_sets == ((1, 2, 3), (0,))


def test_summary_refuses_runs_on_different_tokens(finished, tmp_path):
    out, _, _ = finished
    grid = SweepGrid((0.5,), ((1, 2), (0,)), (0,))
    fake = tmp_path / "mixed"
    for d in grid.distance_sets:
        run = fake / run_name(0.5, d, 0)
        run.mkdir(parents=True)
        ev = json.loads((out / run_name(0.5, d, 0) / "eval.json").read_text())
        if d == (0,):
            ev["tokens"]["fingerprint"] = "other"
        (run / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(UserError, match="different held-out tokens"):
        summarise_sweep(fake, grid)
