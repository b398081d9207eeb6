"""A grid of runs over alpha x distance sets x seeds, all scored on the same held-out tokens.

Every run is an ordinary run directory under the sweep directory, so a sweep resumes by skipping runs that
have an eval.json and resuming runs that have only a checkpoint. The distance set `0` is the control arm:
same parameter count as a one-tap skip arm, but it attends to the block's own input.

The summary pools seeds per configuration: the adapted loss of a configuration is the token-weighted mean of
the seed-averaged per-sequence loss sums, and every interval resamples the same whole sequences for all
configurations, so differences (vs the base, vs the control arm) are paired.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.adapter import AdapterArgs
from trainer.checkpoint import EVAL_FILE, atomic_write_json
from trainer.config import TrainConfig, parse_distances
from trainer.errors import UserError
from trainer.evaluate import bootstrap_indices, paired_difference, summarise

SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.json"
# Fields a sweep varies per run; everything else in the template is shared by all runs.
GRID_KEYS = ("alpha", "distances", "seed", "out", "resume")


@dataclass
class SweepGrid:
    alphas: tuple[float, ...] = (0.65,)
    distance_sets: tuple[tuple[int, ...], ...] = ((3, 4, 5), (0,))
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def parse(cls, alphas: str, distance_sets: str, seeds: str) -> SweepGrid:
        """From CLI text: alphas '0.3,0.65', distance sets '1,2,3;0' (semicolon-separated), seeds '0,1'."""
        try:
            a = tuple(float(x) for x in alphas.split(",") if x.strip())
            s = tuple(int(x) for x in seeds.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--alphas and --seeds take comma-separated numbers; got {alphas!r}, {seeds!r}") from None
        d = tuple(parse_distances(part) for part in distance_sets.split(";") if part.strip())
        return cls(a, d, s)

    def validate(self) -> None:
        if not (self.alphas and self.distance_sets and self.seeds):
            raise UserError("a sweep needs at least one alpha, one distance set and one seed")
        if any(not d for d in self.distance_sets):
            raise UserError("empty distance set in --distance-sets")
        if len({tuple(d) for d in self.distance_sets}) != len(self.distance_sets):
            raise UserError("--distance-sets lists the same set twice")

    def configurations(self) -> list[tuple[float, tuple[int, ...]]]:
        return [(a, tuple(d)) for a in self.alphas for d in self.distance_sets]

    def to_dict(self) -> dict:
        return {"alphas": list(self.alphas), "distance_sets": [list(d) for d in self.distance_sets],
                "seeds": list(self.seeds)}


def run_name(alpha: float, distances: tuple[int, ...], seed: int) -> str:
    return f"alpha{alpha:g}_d{'-'.join(map(str, distances))}_seed{seed}"


def _shared_settings(template: TrainConfig) -> dict:
    return {k: v for k, v in template.to_dict().items() if k not in GRID_KEYS}


def _check_sweep_dir(out: Path, template: TrainConfig, grid: SweepGrid) -> dict | None:
    """A sweep directory holds one template and one grid; rerunning with the same ones resumes it.

    Returns the sweep.json content still to be written for a new sweep (None when resuming).
    """
    spec = {"template": _shared_settings(template), "grid": grid.to_dict()}
    path = out / SWEEP_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        differing = [f"{section}.{k}" for section in ("template", "grid")
                     for k in sorted(set(spec[section]) | set(recorded[section]))
                     if spec[section].get(k) != recorded[section].get(k)]
        if differing:
            raise UserError(f"sweep directory {out} was started with other settings ({', '.join(differing)}); "
                            "rerun with the original settings or choose another --out")
        return None
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a sweep directory; choose another --out")
    return spec


def sweep(template: TrainConfig, grid: SweepGrid, out: str | Path, *, base=None, data=None,
          callback: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Train and evaluate every (alpha, distance set, seed) run not yet finished; returns the summary.

    `template` holds the shared settings (its alpha, distances, seed and out are replaced per run);
    `base` and `data` are loaded once from the template when not given.
    """
    out = Path(out)
    grid.validate()
    for alpha, distances in grid.configurations():
        dataclasses.replace(template, alpha=alpha, distances=distances).validate()
    new_spec = _check_sweep_dir(out, template, grid)
    from trainer.train import held_out_tokens, train, training_tokens

    if base is None:
        from trainer.base import load_base

        base = load_base(template.base)
    for distances in grid.distance_sets:  # impossible distance sets fail before any training
        AdapterArgs.for_base(base.model, **dataclasses.replace(template, distances=distances).adapter_options())
    if data is None:
        data = (training_tokens(base, template), held_out_tokens(base, template))
    if new_spec is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SWEEP_FILE, new_spec)
    for alpha, distances in grid.configurations():
        for seed in grid.seeds:
            run_dir = out / run_name(alpha, distances, seed)
            if (run_dir / EVAL_FILE).is_file():
                continue
            cfg = dataclasses.replace(template, alpha=alpha, distances=distances, seed=seed, out=str(run_dir),
                                      resume=run_dir.exists() and any(run_dir.iterdir()))
            train(cfg, base=base, data=data, callback=callback, progress=progress)
    summary = summarise_sweep(out, grid, n_boot=2000, seed=template.seed)
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def summarise_sweep(out: Path, grid: SweepGrid, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean held-out loss change per configuration, pooled over seeds, with paired sequence-bootstrap CIs."""
    evals = {}
    for alpha, distances in grid.configurations():
        for s in grid.seeds:
            path = out / run_name(alpha, distances, s) / EVAL_FILE
            if not path.is_file():
                raise UserError(f"{path} is missing; rerun the sweep to finish it")
            evals[alpha, distances, s] = json.loads(path.read_text())
    first = next(iter(evals.values()))
    fingerprint = first["tokens"]["fingerprint"]
    if any(e["tokens"]["fingerprint"] != fingerprint for e in evals.values()):
        raise UserError(f"runs under {out} were evaluated on different held-out tokens; they cannot be paired")
    counts = np.array(first["per_sequence"]["n_tokens"])
    base = np.array(first["per_sequence"]["base"])
    idx = bootstrap_indices(len(counts), n_boot, seed)
    pooled = {cfg: np.mean([evals[(*cfg, s)]["per_sequence"]["adapted"] for s in grid.seeds], axis=0)
              for cfg in grid.configurations()}
    rows = []
    for (alpha, distances), adapted in pooled.items():
        row = {
            "alpha": alpha, "distances": list(distances), "control": distances == (0,), "seeds": list(grid.seeds),
            "base_loss": float(base.sum() / counts.sum()),
            "adapted": summarise(adapted, counts, idx),
            "delta_base_minus_adapted": paired_difference(base, adapted, counts, idx),
            "delta_per_seed": [evals[alpha, distances, s]["delta_base_minus_adapted"]["mean"] for s in grid.seeds],
        }
        control = pooled.get((alpha, (0,)))
        if control is not None and distances != (0,):
            row["delta_control_minus_adapted"] = paired_difference(control, adapted, counts, idx)
        rows.append(row)
    return {"tokens": first["tokens"], "n_predicted_tokens": int(counts.sum()),
            "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "sequence", "level": 0.95}, "rows": rows}


def format_summary(summary: dict) -> str:
    """A plain-text table: one line per configuration; positive deltas mean the adapter lowers the loss."""
    lines = [f"held-out: {summary['n_predicted_tokens']} predicted tokens ({summary['tokens']['corpus']}, "
             f"{summary['tokens']['split']}); 95% CIs resample whole sequences",
             f"{'alpha':>6} {'distances':<12} {'seeds':>5} {'adapted loss':>12} {'base-adapted':>13} "
             f"{'95% CI':>21} {'control-adapted':>16} {'95% CI':>21}"]
    for r in summary["rows"]:
        d, c = r["delta_base_minus_adapted"], r.get("delta_control_minus_adapted")
        name = ",".join(map(str, r["distances"])) + (" (control)" if r["control"] else "")
        ctrl = f"{c['mean']:>16.4f} [{c['ci'][0]:>+8.4f}, {c['ci'][1]:>+8.4f}]" if c else f"{'-':>16}"
        lines.append(f"{r['alpha']:>6g} {name:<12} {len(r['seeds']):>5} {r['adapted']['loss']:>12.4f} "
                     f"{d['mean']:>13.4f} [{d['ci'][0]:>+8.4f}, {d['ci'][1]:>+8.4f}] {ctrl}")
    return "\n".join(lines)
