"""Integration on the real default base (SmolLM2-135M-Instruct, offline): identities and a two-step run."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from trainer.adapter import AdapterArgs, MultiTapAdapter
from trainer.checkpoint import load_run, read_metrics
from trainer.config import TrainConfig
from trainer.forward import hook_names, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    from trainer.base import load_base

    return load_base()


def test_loop_and_zero_init_adapter_reproduce_the_real_base(base):
    x = mx.array(base.tokenizer.encode("The capital of France is"))[None]
    ref = base.model(x)
    plain, _ = run(base.model, x)
    assert mx.array_equal(plain, ref).item()
    assert base.tokenizer.decode([mx.argmax(plain[0, -1]).item()]).strip() == "Paris"
    adapter = MultiTapAdapter(AdapterArgs.for_base(base.model, distances=(1, 2, 3)))
    adapted, cap = run(base.model, x, adapter, capture=["blocks.7.attn.hook_z", "blocks.7.hook_resid_pre"])
    assert mx.abs(adapted - ref).max().item() <= 1e-5
    layer = base.model.layers[7]
    attn = layer.self_attn(layer.input_layernorm(cap["blocks.7.hook_resid_pre"]), mask="causal")
    assert mx.abs(layer.self_attn.o_proj(cap["blocks.7.attn.hook_z"]) - attn).max().item() <= 1e-4
    assert len(hook_names(base.model, adapter)) == 3 * 30 + 27


def test_two_step_run_on_web_data(base, tmp_path):
    from trainer.train import train

    cfg = TrainConfig.from_dict(dict(distances=(1, 2), steps=2, batch_size=2, seq_len=64, warmup=1,
                                     report_every=1, eval_every=0, eval_seqs=4, eval_toggle=False,
                                     max_train_tokens=2000, out=str(tmp_path / "run")))
    run_dir = train(cfg, base=base, progress=False)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] < 8 for r in records)
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["alpha0"]["equals_base"] and ev["tokens"]["split"] == "validation"
    assert 0 < ev["base"]["loss"] < 4  # perplexity of the real model on Bible text is about 9
    config = json.loads((run_dir / "config.json").read_text())
    assert config["base"]["weights_sha256"] == base.weights_sha256
    _, adapter, _ = load_run(run_dir, base)
    assert adapter.args.distances == (1, 2)
