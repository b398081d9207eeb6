"""Shared helpers for the training, evaluation, sweep and CLI tests: a tiny base and tiny token sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.base import Base
from trainer.config import TrainConfig
from trainer.data import TokenSet
from trainer.forward import tiny_llama


def tiny_base(seed: int = 0, weights_sha256: str = "0" * 64) -> Base:
    """A random 6-block Llama wrapped as a `Base` (no tokenizer: tests hand over token sets directly)."""
    model = tiny_llama(seed=seed, max_position_embeddings=64)
    model.freeze()
    return Base(model, None, "tiny-test", Path("."), weights_sha256, "1" * 64, {"model_type": "llama"})


def repeating_tokens(n_seq: int, seq_len: int = 24, seed: int = 0, split: str = "train") -> TokenSet:
    """Sequences that repeat a random 6-token motif (learnable by looking back), some padded at the end."""
    rng = np.random.default_rng(seed)
    motifs = rng.integers(0, 128, size=(n_seq, 6))
    tokens = np.tile(motifs, (1, seq_len // 6 + 1))[:, :seq_len].astype(np.int32)
    mask = np.ones((n_seq, seq_len), dtype=bool)
    for i in range(0, n_seq, 3):  # every third sequence ends in padding
        cut = int(rng.integers(seq_len // 2, seq_len))
        tokens[i, cut:], mask[i, cut:] = 0, False
    return TokenSet(tokens, mask, np.arange(n_seq), "synthetic-repeats", split, 0)


def tiny_data(n_train: int = 24, n_val: int = 9) -> tuple[TokenSet, TokenSet]:
    return repeating_tokens(n_train, seed=1), repeating_tokens(n_val, seed=2, split="validation")


def tiny_config(out: Path, **overrides) -> TrainConfig:
    """A config that trains in about a second on the tiny base."""
    params = dict(base="tiny-test", data="synthetic", distances=(1, 2), start_layer=2, steps=8, batch_size=4,
                  seq_len=24, lr=3e-3, warmup=2, report_every=2, eval_every=4, save_every=4, eval_seqs=None,
                  eval_toggle=True, out=str(out))
    return TrainConfig.from_dict({**params, **overrides})
