"""`psiloscope compare`: everything we measure about two paired models, as one results dict.

A and B are each a run directory (base + adapter), a base spec (the frozen model) or an activation store
(`.h5`). With a single run directory, A is its frozen base and B the adapted run. Models are dumped on the
same tokens (dumps are cached by source and token options), stores are checked for paired tokens, and the
measures of `psiloscope` run on them. The model side (`trainer`, MLX) is imported only when a dump is needed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from activations import Store, StoreMismatchError, parse_hook
from psiloscope import sections
from psiloscope.results import save_results

PROBE_TASKS = ("current", "prev1", "prev3")


@dataclass
class CompareOptions:
    """Options of a comparison (recorded in results.json)."""

    data: str = "web"
    split: str = "validation"
    split_seed: int = 0
    tokens: int = 20000
    seq_len: int = 256
    n_boot: int = 1000
    seed: int = 0
    subsample_rows: int = 2048  # rows (whole sequences) for RBF CKA, SVCCA, PWCCA, PCA and principal angles
    robust_k: int = 8
    matrix_batch: int = 256
    probes: bool = True
    probe_tasks: tuple[str, ...] = PROBE_TASKS
    probe_max_rows: int = 3000
    novel_threshold: float | None = None
    aligned_threshold: float | None = None
    cache_dir: str | None = None
    progress: bool = True


@dataclass
class Side:
    """One side of a comparison: what the user named, and the store that holds its activations."""

    kind: str  # "run" | "base" | "store"
    spec: str
    store_path: Path | None = None
    run_dir: Path | None = None
    label: str = ""
    meta: dict = field(default_factory=dict)


def classify(spec: str) -> Side:
    """Decide whether `spec` names a store, a run directory or a base spec; unknown paths are refused."""
    path = Path(spec).expanduser()
    if path.suffix == ".h5" or path.name.endswith(".h5.partial"):
        if not path.exists():
            raise ValueError(f"{spec}: no such activation store")
        return Side("store", spec, store_path=path)
    if path.is_dir() and (path / "adapter.safetensors").is_file() and (path / "config.json").is_file():
        return Side("run", spec, run_dir=path)
    if path.is_dir() and (path / "config.json").is_file():
        return Side("base", str(path))
    if path.exists():
        raise ValueError(f"{spec}: not an activation store (.h5), a run directory (adapter.safetensors + "
                         "config.json) or an mlx-lm model directory")
    if spec.count("/") > 1 or spec.startswith((".", "/", "~")):  # a path, not an embedded name or hub id
        raise ValueError(f"{spec}: no such file or directory")
    return Side("base", spec)  # an embedded name or hub id: the trainer says if it is unknown


def resolve_sides(a: str, b: str | None) -> tuple[Side, Side]:
    side_a = classify(a)
    if b is not None:
        return side_a, classify(b)
    if side_a.kind != "run":
        raise ValueError("with a single argument, A must be a run directory (it is compared with its frozen base); "
                         "otherwise give both A and B")
    config = json.loads((side_a.run_dir / "config.json").read_text())
    return Side("base", config["base"]["spec"], label="frozen base"), Side("run", a, run_dir=side_a.run_dir,
                                                                            label="adapted run")


def _dump_key(side: Side, opts: CompareOptions) -> str:
    ident = {"kind": side.kind, "spec": side.spec, "data": opts.data, "split": opts.split,
             "split_seed": opts.split_seed, "tokens": opts.tokens, "seq_len": opts.seq_len,
             "hooks": "resid_post,attn_z"}
    if side.run_dir is not None:
        ident["spec"] = str(side.run_dir.resolve())
        ident["adapter"] = hashlib.sha256((side.run_dir / "adapter.safetensors").read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def ensure_store(side: Side, opts: CompareOptions) -> Path:
    """The side's activation store: given, cached, or dumped now (resuming an interrupted dump)."""
    if side.store_path is not None:
        return side.store_path
    from trainer.base import cache_dir
    from trainer.dump import DumpConfig, dump

    folder = Path(opts.cache_dir) if opts.cache_dir else cache_dir() / "dumps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_dump_key(side, opts)}.h5"
    if not path.exists():
        source = str(side.run_dir) if side.run_dir is not None else side.spec
        if opts.progress:
            print(f"dumping {side.label or side.kind} {source} -> {path}")
        dump(DumpConfig(source=source, out=str(path), data=opts.data, split=opts.split, split_seed=opts.split_seed,
                        tokens=opts.tokens, seq_len=opts.seq_len, hooks="resid_post,attn_z"), progress=opts.progress)
    side.store_path = path
    return path


def _side_meta(side: Side, store: Store) -> dict:
    return {"kind": side.kind, "path": str(side.run_dir or side.spec), "label": side.label or None,
            "model_fingerprint": store.attrs.get("model_fingerprint") or None,
            "adapter_fingerprint": store.attrs.get("adapter_fingerprint") or None, "store": str(store.path)}


def _versions() -> dict:
    out = {}
    for dist in ("psiloscope", "numpy", "scipy", "scikit-learn", "h5py", "altair", "mlx", "mlx-lm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _tokens_meta(store: Store) -> dict:
    dump_cfg = (store.config or {}).get("dump", {})
    return {"tokens_sha256": store.tokens_sha256, "n_tokens": int(store.n_tokens),
            "n_sequences": int(store.n_sequences), "data": dump_cfg.get("data"), "split": dump_cfg.get("split"),
            "seq_len": dump_cfg.get("seq_len")}


def compare_stores_full(store_a: Store, store_b: Store, opts: CompareOptions, notes: list[str]) -> dict:
    """Every store-level section of the results (layers, matrices, heads, pca, novelty, probes)."""
    if store_a.tokens_sha256 != store_b.tokens_sha256:
        raise StoreMismatchError(
            f"{store_a.path} and {store_b.path} hold different tokens (tokens_sha256 {store_a.tokens_sha256[:12]}… vs "
            f"{store_b.tokens_sha256[:12]}…); dump both with the same --data/--split/--tokens/--seq-len")
    resid = sorted((h for h in set(store_a.hooks) & set(store_b.hooks) if parse_hook(h)[1] == "resid_post"),
                   key=lambda h: parse_hook(h)[0])
    if not resid:
        raise ValueError(f"{store_a.path} and {store_b.path} share no blocks.*.hook_resid_post hook; "
                         "dump with --hooks resid_post")
    out: dict[str, Any] = {}
    out["layers"] = sections.layer_rows(store_a, store_b, resid, opts, notes)
    sub_a, sub_b, n_rows = sections.read_subsample(store_a, store_b, resid, opts)
    out["matrices"] = sections.matrices(sub_a, sub_b, opts)
    out["pca"], extra_rows = sections.subsample_measures(sub_a, sub_b, n_rows, opts, notes)
    out["layers"] += extra_rows
    if any(parse_hook(h)[1] == "attn_z" for h in set(store_a.hooks) & set(store_b.hooks)):
        out["heads"] = sections.heads(store_a, store_b, opts)
    else:
        notes.append("per-head CKA not computed: the stores hold no attn.hook_z")
    out["novelty"] = sections.novelty(out["layers"], opts)
    if opts.probes:
        out["probes"] = sections.probes(store_a, store_b, opts, notes)
    return out


@dataclass
class Comparison:
    """The outcome of `compare`: the results dict, with JSON and HTML writers and the Altair charts."""

    results: dict

    def to_json(self, path: str | Path | None = None) -> str:
        from psiloscope.results import to_jsonable

        text = json.dumps(to_jsonable(self.results), indent=1)
        if path is not None:
            save_results(self.results, path)
        return text

    def to_html(self, path: str | Path) -> Path:
        from psiloscope.report import render_report

        return render_report(self.results, path)

    def charts(self) -> dict:
        from psiloscope.charts import charts_for

        return charts_for(self.results)


def compare(a: str, b: str | None = None, **options: Any) -> Comparison:
    """Compare A with B (see the module docstring); keyword options are `CompareOptions` fields."""
    unknown = sorted(set(options) - set(CompareOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {sorted(CompareOptions.__dataclass_fields__)}")
    opts = CompareOptions(**options)
    side_a, side_b = resolve_sides(a, b)
    notes: list[str] = []
    with Store(ensure_store(side_a, opts)) as store_a, Store(ensure_store(side_b, opts)) as store_b:
        results: dict[str, Any] = {
            "schema": "psiloscope.results/1",
            "meta": {"a": _side_meta(side_a, store_a), "b": _side_meta(side_b, store_b),
                     "tokens": _tokens_meta(store_a), "versions": _versions(),
                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "options": {k: v for k, v in asdict(opts).items() if k not in ("progress", "cache_dir")}},
        }
        results.update(compare_stores_full(store_a, store_b, opts, notes))
    for side in (side_a, side_b):
        if side.run_dir is not None:
            results.update(sections.run_metadata(side.run_dir, notes))
    results["headline"] = sections.headline(results)
    results["notes"] = notes
    return Comparison(results)


def summary_lines(results: dict) -> list[str]:
    """The headline numbers as plain text lines (printed by the CLI and the demo)."""
    lines = []
    for h in results.get("headline", []):
        ci = f" [{h['ci_low']:.4g}, {h['ci_high']:.4g}]" if h.get("ci_low") is not None else ""
        lines.append(f"{h['label']}: {h['value']:.4g}{ci}" + (f" — {h['text']}" if h.get("text") else ""))
    return lines
