"""Scenarios: TOML files describing one experiment, validated on load.

A scenario names the data, the collective (methods, alpha grid, budget grid,
what it knows of the majority), the firm's model, the seeds and the engine.
Every mistake is reported as one :class:`ConfigError` line naming the key
and what is allowed; the defaults are the paper's experiment on Adult.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from agents.scoring import METHODS
from server.firm import FIRM_MODELS

from .errors import ConfigError

__all__ = [
    "CollectiveConfig",
    "DataConfig",
    "EngineConfig",
    "FirmConfig",
    "FlowerConfig",
    "Scenario",
    "load_scenario",
]

DATASETS = ("adult", "compas", "german", "synthetic", "toy", "csv")
SYNTHETIC = ("synthetic", "toy")
BACKENDS = ("vectorised", "flower")
PAPER_ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
PAPER_BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)


def _fail(where: str, message: str):
    raise ConfigError(f"{where}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _check_keys(where: str, table: dict, allowed: tuple[str, ...]):
    if not isinstance(table, dict):
        _fail(where, f"must be a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            _fail(f"{where} {key}", f"unknown key; allowed: {', '.join(allowed)}")


def _section(cls, where: str, table: dict):
    """Build a frozen section dataclass from a TOML table, rejecting unknown keys."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    table = {k.replace("-", "_"): v for k, v in (table or {}).items()}
    _check_keys(where, table, names)
    obj = cls(**table)
    obj.validate(where)
    return obj


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "adult"
    sensitive: str | None = None
    test_size: float = 0.3
    include_sensitive: bool = False
    options: dict = field(default_factory=dict)

    def validate(self, where: str):
        if self.dataset not in DATASETS:
            _fail(f"{where} dataset", f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        if self.sensitive is not None and not isinstance(self.sensitive, str):
            _fail(f"{where} sensitive", "must be a string naming the sensitive attribute")
        if not _is_num(self.test_size) or not 0 < self.test_size < 1:
            _fail(f"{where} test_size", f"{self.test_size!r} is out of range; allowed: a number in (0, 1)")
        if not isinstance(self.include_sensitive, bool):
            _fail(f"{where} include_sensitive", "must be true or false")
        if not isinstance(self.options, dict):
            _fail(f"{where} options", "must be a table of dataset options")
        if self.dataset == "csv":
            missing = [k for k in ("path", "label", "favourable", "protected") if k not in self.options]
            if missing:
                _fail(f"{where} options", f"a csv dataset needs {', '.join(missing)} (and [data] sensitive)")
            if self.sensitive is None:
                _fail(f"{where} sensitive", "a csv dataset needs the name of its sensitive column")


@dataclass(frozen=True)
class CollectiveConfig:
    methods: tuple = ("rb-prob", "rb-label", "rb-dist", "random")
    alphas: tuple = PAPER_ALPHAS
    budgets: tuple = PAPER_BUDGETS
    reference: Any = "all"
    k: int = 10

    def __post_init__(self):
        for name in ("methods", "alphas", "budgets"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def validate(self, where: str):
        for name in ("methods", "alphas", "budgets"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                _fail(f"{where} {name}", "must be a non-empty list")
        for m in self.methods:
            if m not in METHODS:
                _fail(f"{where} methods", f"unknown method {m!r}; allowed: {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            _fail(f"{where} methods", "lists a method twice")
        for a in self.alphas:
            if not _is_num(a) or not 0 < a <= 1:
                _fail(f"{where} alphas", f"{a!r} is out of range; allowed: numbers in (0, 1]")
        for b in self.budgets:
            if _is_int(b):
                if b < 0:
                    _fail(f"{where} budgets", f"{b!r} is negative; allowed: int counts >= 0 or fractions in [0, 1]")
            elif _is_num(b):
                if not 0 <= b <= 1:
                    _fail(f"{where} budgets", f"{b!r} is out of range; allowed: int counts >= 0 or fractions in [0, 1]")
            else:
                _fail(f"{where} budgets", f"{b!r} is not a number; allowed: int counts >= 0 or fractions in [0, 1]")
        if not (self.reference == "all" or (_is_int(self.reference) and self.reference >= 1)):
            _fail(f"{where} reference", f"{self.reference!r} is not allowed; allowed: \"all\" or an int n >= 1 of majority rows")
        if not _is_int(self.k) or self.k < 1:
            _fail(f"{where} k", f"{self.k!r} is not allowed; allowed: an int >= 1")


@dataclass(frozen=True)
class FirmConfig:
    model: str = "logistic-regression"
    params: dict = field(default_factory=dict)

    def validate(self, where: str):
        if not isinstance(self.model, str) or (self.model not in FIRM_MODELS and ":" not in self.model):
            _fail(f"{where} model", f"unknown model {self.model!r}; allowed: {', '.join(FIRM_MODELS)}, or 'module:Class'")
        if not isinstance(self.params, dict):
            _fail(f"{where} params", "must be a table of estimator parameters")
        from server.firm import make_estimator

        try:
            make_estimator(self.model, self.params)
        except (TypeError, ValueError) as exc:
            _fail(f"{where} model", f"cannot build {self.model!r} with params {self.params}: {exc}")


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "vectorised"
    n_jobs: int = 2
    warm_start: bool = True

    def validate(self, where: str):
        if self.backend not in BACKENDS:
            _fail(f"{where} backend", f"unknown backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if not _is_int(self.n_jobs) or self.n_jobs == 0 or self.n_jobs < -1:
            _fail(f"{where} n_jobs", f"{self.n_jobs!r} is not allowed; allowed: an int >= 1, or -1 for all cores")
        if not isinstance(self.warm_start, bool):
            _fail(f"{where} warm_start", "must be true or false")


@dataclass(frozen=True)
class FlowerConfig:
    """Options of the ``flower`` backend (ignored by the vectorised one)."""

    agents_per_node: int = 100
    rounds: int = 1
    num_cpus: int = 2
    ray_address: str = ""
    timeout: float = 600.0

    def validate(self, where: str):
        for name in ("agents_per_node", "rounds", "num_cpus"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                _fail(f"{where} {name.replace('_', '-')}", f"{v!r} is not allowed; allowed: an int >= 1")
        if not isinstance(self.ray_address, str):
            _fail(f"{where} ray-address", "must be a string such as \"auto\" or \"ray://host:10001\"")
        if not _is_num(self.timeout) or self.timeout <= 0:
            _fail(f"{where} timeout", f"{self.timeout!r} is not allowed; allowed: seconds > 0")


@dataclass(frozen=True)
class Scenario:
    """One experiment: a grid of (seed, method, alpha, budget) runs."""

    name: str = "paper-adult"
    description: str = ""
    seeds: tuple = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    collective: CollectiveConfig = field(default_factory=CollectiveConfig)
    firm: FirmConfig = field(default_factory=FirmConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    flower: FlowerConfig = field(default_factory=FlowerConfig)

    SECTIONS = {
        "data": DataConfig,
        "collective": CollectiveConfig,
        "firm": FirmConfig,
        "engine": EngineConfig,
        "flower": FlowerConfig,
    }

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "scenario") -> "Scenario":
        top = ("name", "description", "seeds", *cls.SECTIONS)
        _check_keys(source, raw, top)
        kwargs: dict[str, Any] = {}
        for key in ("name", "description"):
            if key in raw:
                if not isinstance(raw[key], str) or (key == "name" and not raw[key].strip()):
                    _fail(f"{source}: {key}", "must be a non-empty string")
                kwargs[key] = raw[key]
        if "seeds" in raw:
            seeds = raw["seeds"]
            if _is_int(seeds):
                seeds = [seeds]
            if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
                _fail(f"{source}: seeds", f"{raw['seeds']!r} is not allowed; allowed: a non-empty list of ints >= 0")
            if len(set(seeds)) != len(seeds):
                _fail(f"{source}: seeds", "lists a seed twice")
            kwargs["seeds"] = tuple(seeds)
        for name, section_cls in cls.SECTIONS.items():
            try:
                kwargs[name] = _section(section_cls, f"{source}: [{name}]", raw.get(name, {}))
            except TypeError as exc:  # a wrongly typed table
                _fail(f"{source}: [{name}]", str(exc))
        scenario = cls(**kwargs)
        if "oracle" in scenario.collective.methods and scenario.data.dataset not in SYNTHETIC:
            _fail(f"{source}: [collective] methods", f"'oracle' needs a synthetic dataset ({', '.join(SYNTHETIC)})")
        return scenario

    def to_dict(self) -> dict:
        """A TOML-ready dict that :meth:`from_dict` reads back to an equal scenario."""
        out = dataclasses.asdict(self)
        for section in out.values():
            if isinstance(section, dict):
                for k, v in section.items():
                    if isinstance(v, tuple):
                        section[k] = list(v)
        out["seeds"] = list(self.seeds)
        if out["data"]["sensitive"] is None:
            del out["data"]["sensitive"]
        return out

    def replace(self, **changes) -> "Scenario":
        """A copy with top-level fields or ``section__key`` entries changed."""
        top = {k: v for k, v in changes.items() if "__" not in k}
        for key, value in changes.items():
            if "__" in key:
                section, _, name = key.partition("__")
                top[section] = dataclasses.replace(top.get(section, getattr(self, section)), **{name: value})
        return dataclasses.replace(self, **top)


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario TOML file (``None``: the paper's Adult default)."""
    if path is None:
        return Scenario()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("options"), dict):
        file = data["options"].get("path")
        if isinstance(file, str) and not Path(file).is_absolute():
            # A data file named in a scenario is found next to the scenario.
            data["options"]["path"] = str((path.parent / file).resolve())
    return Scenario.from_dict(raw, source=str(path))
