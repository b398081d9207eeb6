"""`psilotrain train / eval / sweep` through click's CliRunner, on the tiny base (load_base is patched)."""

from __future__ import annotations

import json
import sys

import click
import pytest
from click.testing import CliRunner
from test_train_fixtures import repeating_tokens, tiny_base, tiny_data

import trainer.base
import trainer.train
from trainer.errors import UserError, run_cli
from trainer.train_cli import COMMANDS

SHARED = ["--base", "tiny-test", "--data", "synthetic", "--start-layer", "2", "--steps", "4", "--batch-size", "4",
          "--seq-len", "24", "--warmup", "1", "--eval-seqs", "9", "--report-every", "2", "--eval-every", "0",
          "--no-eval-toggle"]
FAST = [*SHARED, "--distances", "1,2"]


@pytest.fixture
def group(monkeypatch):
    """The commands on a fresh group, with the base and corpus replaced by tiny in-memory ones."""
    base = tiny_base()
    train_ts, val_ts = tiny_data()
    monkeypatch.setattr(trainer.base, "load_base", lambda spec: base)
    monkeypatch.setattr(trainer.train, "training_tokens", lambda b, cfg: train_ts)
    monkeypatch.setattr(trainer.train, "held_out_tokens", lambda b, cfg, split="validation": val_ts)

    @click.group()
    def cli():
        pass

    for command in COMMANDS:
        cli.add_command(command)
    return cli


def invoke(group, args):
    return CliRunner().invoke(group, args, catch_exceptions=True)


def test_train_prints_parameter_counts_and_eval_and_eval_refuses_to_overwrite(group, tmp_path):
    out = tmp_path / "run"
    result = invoke(group, ["train", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trainable (adapter)" in result.output and "base - adapted" in result.output
    before = (out / "eval.json").read_bytes()
    again = invoke(group, ["eval", str(out)])
    assert isinstance(again.exception, UserError) and "--force" in str(again.exception)
    assert (out / "eval.json").read_bytes() == before
    forced = invoke(group, ["eval", str(out), "--force", "--no-toggle", "--n-boot", "100", "--out",
                            str(tmp_path / "e.json")])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "e.json").read_text())["alpha0"]["equals_base"]


def test_config_file_values_are_overridden_by_flags(group, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("alpha: 0.2\nlr: 3e-3\ntap-mix: output\n")
    out = tmp_path / "run"
    result = invoke(group, ["train", "-c", str(cfg), *FAST, "--alpha", "0.4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "config.json").read_text())["train"]
    assert (recorded["alpha"], recorded["lr"], recorded["tap_mix"]) == (0.4, 0.003, "output")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--alpha", "-0.5"], "--alpha must be"),
        (["--distances", ""], "--distances is empty"),
        (["--distances", "1,x"], "comma-separated integers"),
        (["--distances", "9"], "no skip path"),
        (["--seq-len", "100"], "exceeds the base's context"),
        (["--batch-size", "50"], "fewer than one batch"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_input_is_one_user_error(group, tmp_path, extra, message):
    out = tmp_path / "run"
    result = invoke(group, ["train", *FAST, "--out", str(out), *extra])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_resume_with_changed_flags_shows_the_keys(group, tmp_path):
    out = tmp_path / "run"
    assert invoke(group, ["train", *FAST, "--out", str(out)]).exit_code == 0
    result = invoke(group, ["train", *FAST, "--out", str(out), "--resume", "--lr", "0.5", "--seed", "3"])
    assert isinstance(result.exception, UserError)
    assert "lr (0.0003 -> 0.5)" in str(result.exception) and "seed (0 -> 3)" in str(result.exception)


def test_runner_prints_one_line_and_exits_2(group, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["psilotrain", "train", *FAST, "--alpha", "-1", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as exc:
        run_cli(group)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --alpha must be") and err.count("\n") == 1


def test_sweep_command_prints_the_summary_table(group, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *SHARED, "--out", str(out), "--alphas", "0.5", "--distance-sets", "1;0", "--seeds", "0"]
    result = invoke(group, args)
    assert result.exit_code == 0, result.output
    assert "(control)" in result.output and (out / "summary.json").is_file()
    rerun = invoke(group, args)
    assert rerun.exit_code == 0 and "trainable" not in rerun.output  # both runs were skipped


def test_data_smaller_than_one_batch_via_data_loader(group, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.train, "training_tokens", lambda b, cfg: repeating_tokens(2))
    result = invoke(group, ["train", *FAST, "--out", str(tmp_path / "run")])
    assert "fewer than one batch of 4" in str(result.exception)
