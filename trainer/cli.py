"""`psilotrain`: the model-side command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import json
import platform

import click

from trainer.base import DEFAULT_BASE
from trainer.blas import reexec_with_openblas
from trainer.errors import run_cli
from trainer.train_cli import COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """Train multi-tap skip adapters on a frozen MLX base, evaluate them, and dump activations."""


@cli.command()
@click.option("--base", default=DEFAULT_BASE, show_default=True, help="Base spec: embedded name, model dir or hub id.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(base: str, as_json: bool) -> None:
    """Platform, MLX device, BLAS in use (with measured GEMM speed) and the resolved base model."""
    import mlx.core as mx

    from trainer.base import load_base
    from trainer.blas import active_blas, gemm_gflops

    b = load_base(base)
    report = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
        "blas": active_blas(),
        "gemm_gflops_float32": round(gemm_gflops(), 1),
        "base": b.fingerprint(),
        "base_config": {k: b.config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                      "num_key_value_heads", "vocab_size", "max_position_embeddings")},
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k:24s} {v}")
        else:
            click.echo(f"{key:26s} {value}")


@cli.command()
@click.argument("source")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output store path (NAME.h5).")
@click.option("--data", default="web", show_default=True, help="Corpus: web, wikitext2, tinystories or a .txt path.")
@click.option("--split", default="validation", show_default=True,
              type=click.Choice(["train", "validation", "test"]), help="Document split to dump.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the document-level split.")
@click.option("--tokens", default=20000, show_default=True, help="Number of real tokens to dump (whole sequences).")
@click.option("--seq-len", default=256, show_default=True, help="Sequence length (context per row).")
@click.option("--hooks", default="resid_post,attn_z", show_default=True,
              help="Comma list of kinds (resid_pre, resid_post, attn_z, skip_out, all) or hook names.")
@click.option("--layers", default="all", show_default=True, help="'all', a list like 3,5,7 or a range like 2-10.")
@click.option("--dtype", default="float16", show_default=True, type=click.Choice(["float16", "float32"]),
              help="Storage dtype (hooks that would overflow float16 are kept in float32).")
@click.option("--compression", default=None, type=click.Choice(["lzf", "gzip"]), help="Optional compression.")
@click.option("--batch-size", default=4, show_default=True, help="Sequences per forward pass.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def dump(source: str, out: str, **options) -> None:
    """Dump activations of SOURCE (a base spec or a run directory) on a fixed token set into an HDF5 store.

    Dumps of a base and of a run adapted from it on the same options pair row for row. An interrupted dump
    resumes from its NAME.h5.partial.
    """
    from trainer.dump import DumpConfig
    from trainer.dump import dump as run_dump

    run_dump(DumpConfig(source=source, out=out, **options))


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    reexec_with_openblas()
    run_cli(cli)


if __name__ == "__main__":
    main()
