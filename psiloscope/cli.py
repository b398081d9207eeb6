"""`psiloscope`: the analysis command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from trainer.blas import reexec_with_openblas
from trainer.errors import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """Compare the internal representations of an adapted model and its frozen base."""


def _check_out(path: str) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise ValueError(f"output folder {out.parent} does not exist")
    return out


@cli.command()
@click.argument("a")
@click.argument("b", required=False)
@click.option("-o", "--out", default="report.html", show_default=True, help="HTML report path.")
@click.option("--json", "json_path", default=None, help="results.json path (default: beside the report).")
@click.option("--data", default="web", show_default=True, help="Corpus to dump models on (web, wikitext2, .txt path).")
@click.option("--split", default="validation", show_default=True, type=click.Choice(["train", "validation", "test"]),
              help="Document split to dump.")
@click.option("--tokens", default=20000, show_default=True, help="Tokens to dump per model.")
@click.option("--seq-len", default=256, show_default=True, help="Sequence length of the dumps.")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap replicates for confidence intervals.")
@click.option("--seed", default=0, show_default=True, help="Seed of subsampling, bootstrap and probes.")
@click.option("--no-probes", is_flag=True, help="Skip the linear probes.")
@click.option("--cache-dir", default=None, help="Where dumps are cached (default: the user cache).")
def compare(a: str, b: str | None, out: str, json_path: str | None, no_probes: bool, **options) -> None:
    """Compare A with B: run directories, base specs or activation stores (.h5).

    With a single run directory, the run is compared with its own frozen base.
    """
    from psiloscope.compare import compare as run_compare
    from psiloscope.compare import summary_lines

    html = _check_out(out)
    json_out = _check_out(json_path) if json_path else html.with_suffix(".json")
    result = run_compare(a, b, probes=not no_probes, **options)
    result.to_json(json_out)
    result.to_html(html)
    for line in summary_lines(result.results):
        click.echo(line)
    click.echo(f"report: {html}\nresults: {json_out}")


@cli.command()
@click.argument("results_json", type=click.Path(dir_okay=False))
@click.option("-o", "--out", default="report.html", show_default=True, help="HTML report path.")
def report(results_json: str, out: str) -> None:
    """Re-render a report from a results.json without recomputing anything."""
    from psiloscope.report import render_report
    from psiloscope.results import load_results

    html = _check_out(out)
    render_report(load_results(results_json), html)
    click.echo(f"report: {html}")


@cli.command()
@click.argument("store", type=click.Path(dir_okay=False))
def info(store: str) -> None:
    """Describe an activation store: hooks, tokens, fingerprints."""
    from activations import Store

    with Store(store) as s:
        click.echo(f"store          {s.path}\ntokens         {s.n_tokens} in {s.n_sequences} sequences")
        click.echo(f"tokens_sha256  {s.tokens_sha256}")
        for key in ("model_fingerprint", "adapter_fingerprint", "source"):
            click.echo(f"{key:14s} {s.attrs.get(key, '')}")
        click.echo(f"hooks          {len(s.hooks)}: " + ", ".join(s.hooks[:6]) + (" ..." if len(s.hooks) > 6 else ""))
        click.echo("config         " + json.dumps(s.config.get("dump", {}))[:300])


@cli.command()
@click.option("--out", default="demo-out", show_default=True, help="Folder for the run, dumps and report.")
@click.option("--steps", default=None, type=int, help="Training steps (default: the demo budget).")
@click.option("--tokens", default=None, type=int, help="Tokens to dump per model (default: the demo budget).")
def demo(out: str, steps: int | None, tokens: int | None) -> None:
    """Train a d=3,4,5 skip adapter on the embedded SmolLM2, compare it with its frozen base, write the report."""
    from psiloscope.demo import run_demo

    run_demo(out, steps=steps, tokens=tokens)


def main() -> None:
    reexec_with_openblas()
    run_cli(cli)


if __name__ == "__main__":
    main()
