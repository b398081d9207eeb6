"""Click commands `train`, `eval` and `sweep` (registered on the `psilotrain` group in trainer/cli.py).

Values come from, in increasing priority: TrainConfig defaults, `-c config.(json|yaml)`, the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from trainer.config import TrainConfig, load_config_file
from trainer.errors import UserError

# (flag, TrainConfig field, click kwargs). Defaults live in TrainConfig; None here means "not given".
TRAIN_OPTIONS = [
    ("--base", "base", dict(help="Base: embedded name (default smollm2-135m-instruct), mlx-lm dir or hub id.")),
    ("--data", "data", dict(help="Corpus: web (offline default), wikitext2, tinystories or a .txt file/folder.")),
    ("--split-seed", "split_seed", dict(type=int, help="Seed of the document-level train/validation/test split.")),
    ("--max-train-tokens", "max_train_tokens", dict(type=int, help="Cap on real training tokens.")),
    ("--distances", "distances", dict(help="Tap distances (default 3,4,5); 0 taps the block's own input (control).")),
    ("--alpha", "alpha", dict(type=float, help="Skip output scale alpha (>= 0; initial value if learnable).")),
    ("--alpha-mode", "alpha_mode", dict(type=click.Choice(["fixed", "learnable", "per-layer", "per-head"]),
                                        help="Fixed alpha, one learnable scalar, one per layer, or head gates.")),
    ("--tap-mix", "tap_mix", dict(type=click.Choice(["kv", "output"]),
                                  help="kv: mix histories before one attention; output: mix per-tap outputs.")),
    ("--init", "init", dict(type=click.Choice(["zero", "xavier"]),
                            help="zero: skip output projection starts at 0 (model = base at step 0).")),
    ("--norm", "norm", dict(type=click.Choice(["base", "learned"]),
                            help="Normalise histories with the block's frozen input norm or a learned RMSNorm.")),
    ("--start-layer", "start_layer", dict(type=int, help="First block with a skip path.")),
    ("--tap-penalty", "tap_penalty", dict(type=click.Choice(["none", "entropy", "l1"]),
                                          help="Regulariser on tap weights (entropy) or tap logits (l1).")),
    ("--tap-penalty-weight", "tap_penalty_weight", dict(type=float, help="Weight of the tap penalty.")),
    ("--steps", "steps", dict(type=int, help="Optimizer steps.")),
    ("--batch-size", "batch_size", dict(type=int, help="Sequences per step.")),
    ("--seq-len", "seq_len", dict(type=int, help="Tokens per sequence (at most the base's context).")),
    ("--lr", "lr", dict(type=float, help="Peak learning rate (AdamW).")),
    ("--warmup", "warmup", dict(type=int, help="Linear warm-up steps before the cosine decay.")),
    ("--weight-decay", "weight_decay", dict(type=float, help="AdamW weight decay.")),
    ("--grad-clip", "grad_clip", dict(type=float, help="Clip the global gradient norm to this value.")),
    ("--seed", "seed", dict(type=int, help="Seed of the adapter init and the data order.")),
    ("--grad-checkpoint/--no-grad-checkpoint", "grad_checkpoint",
     dict(default=None, help="Recompute each block in the backward pass to save memory.")),
    ("--report-every", "report_every", dict(type=int, help="Steps between metrics.jsonl records.")),
    ("--eval-every", "eval_every", dict(type=int, help="Steps between held-out evaluations (0: only at the end).")),
    ("--eval-seqs", "eval_seqs", dict(type=int, help="Held-out sequences used for evaluation.")),
    ("--eval-toggle/--no-eval-toggle", "eval_toggle",
     dict(default=None, help="Per-layer causal toggle in the final evaluation (one pass per skip layer).")),
    ("--save-every", "save_every", dict(type=int, help="Steps between checkpoints.")),
    ("--out", "out", dict(help="Run directory (sweep: the sweep directory).")),
    ("--resume/--no-resume", "resume", dict(default=None, help="Continue the interrupted run in --out.")),
]
SWEEP_VARIED = ("alpha", "distances", "seed", "resume")


def training_options(exclude: tuple[str, ...] = ()):
    """Decorator adding `-c` and every TRAIN_OPTIONS flag except the fields in `exclude`."""

    def decorate(fn):
        for flag, field, kwargs in reversed(TRAIN_OPTIONS):
            if field not in exclude:
                fn = click.option(flag, field, **{"default": None, **kwargs})(fn)
        return click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
                            help="JSON/YAML file of options (a run's config.json works); flags override it.")(fn)

    return decorate


def build_config(config_file: str | None, options: dict) -> TrainConfig:
    params = load_config_file(config_file) if config_file else {}
    params.update({k: v for k, v in options.items() if v is not None})
    return TrainConfig.from_dict(params)


def echo_progress(record: dict) -> None:
    if record["kind"] == "start":
        click.echo(f"parameters: {record['trainable']:,} trainable (adapter), {record['frozen']:,} frozen (base); "
                   f"starting at step {record['step']}", err=True)
    elif record["kind"] == "val":
        click.echo(f"step {record['step']}: held-out loss {record['val_loss']:.4f} "
                   f"(base {record['base_val_loss']:.4f})", err=True)


def echo_eval(result: dict) -> None:
    d, b, a = result["delta_base_minus_adapted"], result["base"], result["adapted"]
    click.echo(f"held-out ({result['n_predicted_tokens']} tokens): base {b['loss']:.4f} "
               f"[{b['loss_ci'][0]:.4f}, {b['loss_ci'][1]:.4f}], adapted {a['loss']:.4f} "
               f"[{a['loss_ci'][0]:.4f}, {a['loss_ci'][1]:.4f}]; base - adapted {d['mean']:+.4f} "
               f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] (95% CI, sequence bootstrap); "
               f"alpha=0 equals base: {result['alpha0']['equals_base']}")


@click.command("train")
@training_options()
def train_command(config_file: str | None, **options) -> None:
    """Train a multi-tap skip adapter on a frozen base and evaluate it on held-out data."""
    from trainer.train import train

    run_dir = train(build_config(config_file, options), callback=echo_progress)
    click.echo(f"run: {run_dir}")
    echo_eval(json.loads((run_dir / "eval.json").read_text()))


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(["validation", "test"]), default="validation", show_default=True,
              help="Held-out split (the run's data, split seed, sequence length and eval_seqs).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sequences per forward pass.")
@click.option("--n-boot", type=int, default=2000, show_default=True, help="Bootstrap replicates (over sequences).")
@click.option("--toggle/--no-toggle", default=True, show_default=True, help="Per-layer causal toggle.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: RUN_DIR/eval.json, RUN_DIR/eval-test.json for --split test].")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def eval_command(run_dir: str, split: str, batch_size: int, n_boot: int, toggle: bool, out: str | None,
                 force: bool) -> None:
    """Evaluate RUN_DIR: frozen base vs adapted vs alpha=0 and per-layer toggles, with 95% CIs."""
    from trainer.checkpoint import atomic_write_json, load_run
    from trainer.evaluate import evaluate
    from trainer.train import held_out_tokens

    target = Path(out) if out else Path(run_dir) / ("eval.json" if split == "validation" else f"eval-{split}.json")
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to recompute it or --out for another file")
    base, adapter, config = load_run(run_dir)
    result = evaluate(base.model, adapter, held_out_tokens(base, config["train"], split=split),
                      batch_size=batch_size, toggle=toggle, n_boot=n_boot, progress=True)
    atomic_write_json(target, result)
    echo_eval(result)
    click.echo(f"wrote {target}")


@click.command("sweep")
@training_options(exclude=SWEEP_VARIED)
@click.option("--alphas", default="0.65", show_default=True, help="Comma-separated alpha values.")
@click.option("--distance-sets", default="3,4,5;0", show_default=True,
              help="Semicolon-separated distance sets; '0' is the parameter-matched control arm.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
def sweep_command(config_file: str | None, alphas: str, distance_sets: str, seeds: str, **options) -> None:
    """Train and evaluate a grid alpha x distance sets x seeds on the same held-out tokens; rerun to resume."""
    from trainer.sweep import SweepGrid, format_summary, sweep

    if options["out"] is None and "out" not in (load_config_file(config_file) if config_file else {}):
        options["out"] = "runs/sweep"
    template = build_config(config_file, options)
    grid = SweepGrid.parse(alphas, distance_sets, seeds)
    summary = sweep(template, grid, template.out, callback=echo_progress)
    click.echo(format_summary(summary))
    click.echo(f"wrote {Path(template.out) / 'summary.json'}")


COMMANDS = [train_command, eval_command, sweep_command]
