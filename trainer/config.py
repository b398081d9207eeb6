"""Every knob of a training run in one dataclass, plus config-file loading and comparison for resume."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from trainer.adapter import AdapterArgs
from trainer.base import DEFAULT_BASE
from trainer.errors import UserError

# Keys that may differ between an interrupted run and its resumption without changing what gets computed.
RESUME_FREE_KEYS = ("resume",)
ADAPTER_KEYS = ("distances", "start_layer", "tap_mix", "alpha", "alpha_mode", "init", "norm", "tap_penalty",
                "tap_penalty_weight")


def parse_distances(value) -> tuple[int, ...]:
    """'1,2,3' | [1, 2, 3] | 2 -> (1, 2, 3) sorted and de-duplicated; raises UserError on junk."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        return tuple(sorted({int(p) for p in parts}))
    except (TypeError, ValueError):
        raise UserError(f"--distances must be comma-separated integers, e.g. 3,4,5; got {value!r}") from None


@dataclass
class TrainConfig:
    """A training run. Field names are the CLI flags with '-' for '_'; `config.json` stores all of them."""

    base: str = DEFAULT_BASE
    data: str = "web"
    split_seed: int = 0
    max_train_tokens: int | None = None
    # adapter (defaults are AdapterArgs', so the two cannot drift apart)
    distances: tuple[int, ...] = AdapterArgs.distances
    start_layer: int = AdapterArgs.start_layer
    tap_mix: str = AdapterArgs.tap_mix
    alpha: float = AdapterArgs.alpha
    alpha_mode: str = AdapterArgs.alpha_mode
    init: str = AdapterArgs.init
    norm: str = AdapterArgs.norm
    tap_penalty: str = AdapterArgs.tap_penalty
    tap_penalty_weight: float = AdapterArgs.tap_penalty_weight
    # optimisation
    steps: int = 200
    batch_size: int = 4
    seq_len: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    grad_checkpoint: bool = False
    # bookkeeping
    report_every: int = 10
    eval_every: int = 100
    eval_seqs: int | None = 32
    eval_toggle: bool = True
    save_every: int = 100
    out: str = "runs/multitap"
    resume: bool = False

    @classmethod
    def from_dict(cls, params: dict) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not be silently ignored)."""
        known = set(inspect.signature(cls).parameters)
        unknown = sorted(set(params) - known)
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}")
        cfg = cls(**params)
        cfg.distances = parse_distances(cfg.distances)
        # YAML 1.1 reads "3e-4" as a string; coerce numeric fields given as text.
        casts = {"int": int, "int | None": int, "float": float}
        for f in dataclasses.fields(cls):
            value = getattr(cfg, f.name)
            if f.type in casts and isinstance(value, str):
                try:
                    setattr(cfg, f.name, casts[f.type](value))
                except ValueError:
                    raise UserError(f"{f.name} must be a number; got {value!r}") from None
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["distances"] = list(self.distances)
        return d

    def adapter_options(self) -> dict:
        return {k: getattr(self, k) for k in ADAPTER_KEYS}

    def validate(self) -> None:
        """Checks that need no model or data; the adapter and data checks happen once those are loaded."""
        positive = ["steps", "batch_size", "report_every", "save_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be > 0; got {getattr(self, name)}")
        if self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2 (inputs predict the next token); got {self.seq_len}")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise UserError(f"--alpha must be a finite number >= 0; got {self.alpha}")
        if not self.distances:
            raise UserError("--distances is empty; give at least one tap distance, e.g. 3,4,5 (0 = control)")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0; got {self.lr}")
        if not 0 <= self.warmup < self.steps:
            raise UserError(f"--warmup must be in [0, steps); got {self.warmup} with {self.steps} steps")
        if self.eval_every < 0 or (self.eval_seqs is not None and self.eval_seqs <= 0):
            raise UserError("--eval-every must be >= 0 and eval_seqs > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the fields (other than `resume`) whose values differ."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUME_FREE_KEYS and a[k] != b[k]]


def load_config_file(path: str | Path) -> dict:
    """Read a `.json` or `.yaml`/`.yml` mapping of TrainConfig fields (kebab- or snake-case keys).

    A run's own `config.json` is accepted too: its `train` section is used, so a run can be repeated from it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot parse config file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values")
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    return {k.replace("-", "_"): v for k, v in data.items()}
