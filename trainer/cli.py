"""`psilotrain`: the model-side command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import click

from trainer.errors import UserError, run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train multi-tap skip adapters on a frozen MLX base, evaluate them, and dump activations."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main() -> None:
    run_cli(cli)


__all__ = ["cli", "main", "UserError"]
