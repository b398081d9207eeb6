"""`psiloscope`: the analysis command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import click

from trainer.errors import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """Compare the internal representations of an adapted model and its frozen base."""


def main() -> None:
    run_cli(cli)
