"""`psilotrain`: the model-side command line. Thin: parses arguments and calls library functions."""

from __future__ import annotations

import json
import platform

import click

from trainer.base import DEFAULT_BASE
from trainer.blas import reexec_with_openblas
from trainer.errors import run_cli


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


def main() -> None:
    reexec_with_openblas()
    run_cli(cli)


if __name__ == "__main__":
    main()
