"""Corpora, document-level splits, masking and token-set fingerprints."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainer.data import (
    SPLITS,
    load_documents,
    load_tokens,
    pack_sequences,
    split_documents,
    web_documents,
)
from trainer.errors import UserError


class CharTokenizer:
    """A deterministic stand-in tokenizer: one token per byte (enough to test splitting and packing)."""

    pad_token_id = 0
    eos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return [b + 1 for b in text.encode()]


def test_web_corpus_has_chapters():
    docs = web_documents()
    assert len(docs) == 1189  # chapters in the Protestant canon
    assert docs[0].startswith("In the beginning God created the heavens and the earth.")
    assert "`" not in docs[0]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_splits_are_deterministic_disjoint_and_cover(seed):
    docs = list(web_documents())
    a, b = split_documents(docs, seed), split_documents(docs, seed)
    assert a == b
    sets = [set(a[s]) for s in SPLITS]
    assert sum(map(len, sets)) == len(docs) and set().union(*sets) == set(range(len(docs)))
    assert 0.85 < len(a["train"]) / len(docs) < 0.95 and len(a["validation"]) > 20


def test_different_seed_gives_different_split():
    docs = list(web_documents())
    assert split_documents(docs, 0)["validation"] != split_documents(docs, 1)["validation"]


def test_padding_is_masked_and_never_crosses_documents():
    # A 1-token tail has no next-token target and is dropped; a 2-token tail is padded and masked.
    tokens, mask, doc_ids = pack_sequences([[5, 6, 7, 8, 9], [1, 2, 3], [4], [6, 5, 4, 3, 2, 1]], 4, pad_id=0)
    np.testing.assert_array_equal(tokens, [[5, 6, 7, 8], [1, 2, 3, 0], [6, 5, 4, 3], [2, 1, 0, 0]])
    np.testing.assert_array_equal(mask.sum(1), [4, 3, 4, 2])
    np.testing.assert_array_equal(doc_ids, [0, 1, 3, 3])
    assert (tokens[~mask] == 0).all() and mask[:, 0].all()


def test_fingerprint_is_stable_across_processes():
    ts = load_tokens("web", "validation", CharTokenizer(), seq_len=64, max_tokens=5000)
    code = ("from tests.test_data import CharTokenizer; from trainer.data import load_tokens; "
            "print(load_tokens('web','validation',CharTokenizer(),seq_len=64,max_tokens=5000).fingerprint)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert ts.fingerprint == other
    assert 5000 <= ts.n_tokens < 5000 + 64
    other_split = load_tokens("web", "test", CharTokenizer(), seq_len=64, max_tokens=5000)
    assert other_split.fingerprint != ts.fingerprint


def test_local_text_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("\n\n".join(f"Paragraph {i} " * 20 for i in range(200)))
    corpus_id, docs = load_documents(str(f))
    assert corpus_id.startswith("file:") and len(docs) == 200
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"document {i}")
    assert load_documents(str(folder))[1] == ["document 0", "document 1", "document 2"]


def test_wikitext_validation_file_as_local_corpus(wikitext_valid):
    _, docs = load_documents(str(wikitext_valid))
    ts = load_tokens(str(wikitext_valid), "train", CharTokenizer(), seq_len=128, max_tokens=20000)
    assert len(docs) > 100 and ts.n_tokens >= 20000


@pytest.mark.parametrize("content, needle", [(None, "no such file"), ("", "no text found"),
                                             ("\n\n  \n", "no text found")])
def test_bad_text_files(tmp_path, content, needle):
    f = tmp_path / "x.txt"
    if content is not None:
        f.write_text(content)
    with pytest.raises(UserError, match=needle):
        load_tokens(str(f), "train", CharTokenizer(), seq_len=16)


def test_corpus_too_small_for_one_sequence(tmp_path):
    f = tmp_path / "small.txt"
    f.write_text("\n\n".join(["tiny"] * 40))
    with pytest.raises(UserError, match="too little for one sequence"):
        load_tokens(str(f), "train", CharTokenizer(), seq_len=4096)


def test_unknown_data_and_split():
    with pytest.raises(UserError, match="unknown data"):
        load_tokens("nonsense-corpus", "train", CharTokenizer(), seq_len=16)
    with pytest.raises(UserError, match="unknown split"):
        load_tokens("web", "dev", CharTokenizer(), seq_len=16)


def test_hub_corpus_offline_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="offline alternatives: --data web"):
        load_tokens("wikitext2", "train", CharTokenizer(), seq_len=16)
