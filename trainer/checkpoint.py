"""The run directory: atomic writes of adapter weights, optimizer state, config, metrics; loading a run back.

Layout of a run directory:
    config.json            every TrainConfig field, adapter args, base + data fingerprints, versions, git revision
    adapter.safetensors    trainable parameters only; metadata {"format": "psiloscope.multitap/1", "step": ...}
    state.safetensors      optimizer state (AdamW moments, step, learning rate)
    state.json             step, data position and running report accumulators, for an exact resume
    metrics.jsonl          one JSON object per report / held-out evaluation
    eval.json              frozen base vs adapted vs alpha=0 on held-out data, with intervals

The name is `adapter.safetensors`, never `adapters.safetensors`, which mlx-lm would read as LoRA weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from trainer.adapter import AdapterArgs, MultiTapAdapter
from trainer.errors import UserError

FORMAT = "psiloscope.multitap/1"
ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, then rename: readers see the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _atomic_save_arrays(path: Path, arrays: dict[str, mx.array], meta: dict[str, str]) -> None:
    # mx.save_safetensors appends ".safetensors" to names without it, so the temp name keeps the suffix.
    tmp = path.with_name(path.stem + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata=meta)
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, adapter: MultiTapAdapter, optimizer, state: dict) -> None:
    """Write adapter weights, optimizer state and `state` (must hold "step"); state.json goes last.

    Each file records the step, so a crash between the renames is detected on resume instead of mixing steps.
    """
    step = str(state["step"])
    _atomic_save_arrays(run_dir / ADAPTER_FILE, dict(tree_flatten(adapter.trainable_parameters())),
                        {"format": FORMAT, "step": step})
    _atomic_save_arrays(run_dir / STATE_FILE, dict(tree_flatten(optimizer.state)), {"step": step})
    atomic_write_json(run_dir / STATE_JSON, state)


def load_checkpoint(run_dir: Path, adapter: MultiTapAdapter, optimizer) -> dict:
    """Restore adapter weights and optimizer state in place; returns the saved state.json dict."""
    if not (run_dir / STATE_JSON).is_file():
        raise UserError(f"{run_dir}: no checkpoint to resume from (state.json missing); start a new run instead")
    state = json.loads((run_dir / STATE_JSON).read_text())
    weights, meta = _read_arrays(run_dir / ADAPTER_FILE)
    opt, opt_meta = _read_arrays(run_dir / STATE_FILE)
    steps = {meta.get("step"), opt_meta.get("step"), str(state["step"])}
    if len(steps) != 1:
        raise UserError(f"{run_dir}: checkpoint files disagree on the step ({sorted(map(str, steps))}); "
                        "the last save was interrupted")
    adapter.load_weights(list(weights.items()))
    optimizer.state = tree_unflatten(list(opt.items()))
    mx.eval(adapter.parameters(), optimizer.state)
    return state


def _read_arrays(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise UserError(f"{path} is missing")
    arrays, meta = mx.load(str(path), return_metadata=True)
    return arrays, meta


def load_adapter(run_dir: str | Path, model: nn.Module, config: dict) -> MultiTapAdapter:
    """Rebuild the adapter recorded in `config` for base `model` and load its weights."""
    weights, meta = _read_arrays(Path(run_dir) / ADAPTER_FILE)
    if meta.get("format") != FORMAT:
        raise UserError(f"{run_dir}/{ADAPTER_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
    adapter = MultiTapAdapter(AdapterArgs.from_dict(config["adapter"]))
    try:
        adapter.load_weights(list(weights.items()))
    except ValueError as e:
        raise UserError(f"{run_dir}/{ADAPTER_FILE} does not match its config.json: {e}") from None
    mx.eval(adapter.parameters())
    return adapter


def read_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory ({CONFIG_FILE} missing)")
    return json.loads(path.read_text())


def check_base_fingerprint(recorded: dict, base) -> None:
    """Refuse a base whose weights or tokenizer differ from the ones a run was trained on."""
    now = base.fingerprint()
    differing = [k for k in ("weights_sha256", "tokenizer_sha256") if recorded.get(k) != now.get(k)]
    if differing:
        k = differing[0]
        raise UserError(f"base {recorded.get('spec')!r} has changed since the run was trained: {k} is "
                        f"{str(now.get(k))[:12]}..., the run recorded {str(recorded.get(k))[:12]}...")


def load_run(run_dir: str | Path, base=None):
    """Load a finished (or checkpointed) run: (base, adapter, config).

    The base is loaded by its recorded spec (or given) and must match the recorded fingerprint.
    """
    config = read_run_config(run_dir)
    if base is None:
        from trainer.base import load_base

        base = load_base(config["base"]["spec"])
    check_base_fingerprint(config["base"], base)
    return base, load_adapter(run_dir, base.model, config), config


def adapter_sha256(run_dir: str | Path) -> str:
    """Content fingerprint of a run's adapter weights (for activation-store attributes)."""
    return hashlib.sha256((Path(run_dir) / ADAPTER_FILE).read_bytes()).hexdigest()


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records written after checkpoint `step` (a resumed run writes them again)."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


def provenance() -> dict:
    """Library versions and the git revision of the working tree (None outside a repository)."""
    versions = {"python": platform.python_version()}
    for dist in ("mlx", "mlx-lm", "numpy", "psiloscope"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        revision = out.stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=Path(__file__).parent, capture_output=True, text=True,
                                    timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        revision, dirty = None, None
    return {"versions": versions, "git_revision": revision, "git_dirty": dirty if revision else None}
