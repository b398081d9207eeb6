"""GGUF -> mlx-lm conversion is right by construction: export a random Llama with mlx-lm's own GGUF writer,
convert it back with ours, and get the same logits. Also the real embedded GGUF and its failure modes."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.gguf import convert_to_gguf
from mlx_lm.models.llama import Model

from tests.conftest import tiny_args
from trainer.errors import UserError
from trainer.gguf import convert_gguf, hf_name, unpermute_qk


def test_unpermute_inverts_llama_cpp_permutation():
    from mlx_lm.gguf import permute_weights

    w = mx.random.normal((3 * 8, 5), key=mx.random.key(1))
    for n_heads in (1, 3):
        back = unpermute_qk(permute_weights(w, n_heads, n_heads), n_heads)
        assert mx.array_equal(back, w)
        assert not mx.array_equal(permute_weights(w, n_heads, n_heads), w)


def test_names_map_to_mlx_lm():
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output_norm.weight") == "model.norm.weight"
    assert hf_name("output.weight") == "lm_head.weight"


@pytest.mark.parametrize("tied", [True, False])
def test_roundtrip_through_mlx_lm_exporter_gives_same_logits(tmp_path, real_base, tied):
    # The exporter needs a Hugging Face tokenizer beside the weights: reuse the real base's.
    mx.random.seed(3)
    args = tiny_args(vocab_size=real_base.config["vocab_size"], num_attention_heads=4, num_key_value_heads=2,
                     tie_word_embeddings=tied)
    model = Model(args)
    src = tmp_path / "src"
    src.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (src / f).write_bytes((real_base.path / f).read_bytes())
    config = {k: v for k, v in vars(args).items() if v is not None}
    weights = dict(tree_flatten(model.parameters()))
    gguf = tmp_path / "tiny.gguf"
    convert_to_gguf(src, weights, config, str(gguf))

    out = convert_gguf(gguf, tmp_path / "converted", tokenizer_dir=src)
    from mlx_lm import load

    back, _ = load(str(out))
    tokens = mx.array([[5, 17, 300, 2, 9, 41, 7, 1000]])
    np.testing.assert_allclose(np.array(back(tokens)), np.array(model(tokens)), rtol=1e-5, atol=1e-5)
    saved = json.loads((out / "config.json").read_text())
    assert saved["tie_word_embeddings"] is tied
    assert saved["num_key_value_heads"] == 2


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(UserError, match="not a readable GGUF file"):
        convert_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
