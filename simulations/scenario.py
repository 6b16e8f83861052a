"""Scenarios: TOML files describing one experiment, validated on load.

A scenario names the data, the collective (methods, alpha grid, budget grid,
what it knows of the majority), the firm's model, the seeds and the engine.
Every mistake is reported as one :class:`ConfigError` line naming the key
and what is allowed; the defaults are the paper's experiment on Adult.

Every way of building a scenario validates it: :func:`load_scenario`,
:meth:`Scenario.from_dict` (the canonical one), :meth:`Scenario.replace` (rebuilt
through ``from_dict``) and the dataclass constructors themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import tomllib
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from agents.errors import CollectiveFairnessError, ConfigError, DataError
from agents.scoring import METHODS
from agents.scoring import PARAMETERS as SCORER_PARAMETERS
from server.firm import FIRM_MODELS, estimator_class, make_estimator

from .backends import BACKENDS
from .datasets import DATASETS, SYNTHETIC
from .executors import EXECUTORS

__all__ = [
    "BaselinesConfig",
    "CollectiveConfig",
    "DataConfig",
    "DefenceConfig",
    "DynamicsConfig",
    "EngineConfig",
    "FirmConfig",
    "FlowerConfig",
    "Scenario",
    "load_scenario",
]

# A scenario's name is its results folder under results/: no separators, no "..".
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
PAPER_ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
PAPER_BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
# TOML's integers are 64-bit; tomllib reads longer ones, which would overflow numpy and pandas later.
INT64 = (-(2**63), 2**63 - 1)
# Worker processes: more than this is a typo (or a fork bomb), on any machine.
MAX_JOBS = 256


def _fail(where: str, message: str):
    raise ConfigError(f"{where}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    """A number that is neither NaN nor infinite (TOML allows ``nan`` and ``inf``)."""
    return _is_num(v) and math.isfinite(v)


def _check_ints(where: str, value) -> None:
    """Every int in ``value`` (recursively) fits in 64 bits, as TOML requires."""
    if _is_int(value):
        if not INT64[0] <= value <= INT64[1]:
            _fail(where, f"{value} does not fit in 64 bits; allowed: integers from -2**63 to 2**63-1 (TOML's range)")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_ints(where, v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_ints(f"{where}.{k}", v)


def check_n_jobs(where: str, value) -> int:
    """The one rule for worker counts (``[engine] n_jobs`` and ``--jobs``)."""
    if not _is_int(value) or not (value == -1 or 1 <= value <= MAX_JOBS):
        _fail(where, f"{value!r} is not allowed; allowed: an int from 1 to {MAX_JOBS}, or -1 for all cores")
    return value


def _names(where: str, value, allowed, what: str) -> None:
    """``value`` is a non-empty list of distinct names, each one of ``allowed``."""
    listed = ", ".join(allowed)
    if not isinstance(value, tuple) or not value:
        _fail(where, f"must be a non-empty list, got {_describe(value)}; allowed: a list of {listed}")
    for v in value:
        if not isinstance(v, str) or v not in allowed:
            _fail(where, f"unknown {what} {v!r}; allowed: {listed}")
    _no_repeats(where, what, value, key=lambda v: v)


def _name(where: str, value, allowed, what: str) -> None:
    """``value`` is one of the names ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        _fail(where, f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _flag(where: str, value) -> None:
    if not isinstance(value, bool):
        _fail(where, f"{_describe(value)} is not allowed; allowed: true or false")


def _describe(value) -> str:
    """``the string 'toy'``: what a wrongly typed value is, for error lines."""
    kinds = {str: "the string", bool: "the boolean", int: "the integer", float: "the number", list: "the list",
             tuple: "the list", dict: "the table"}
    return f"{kinds.get(type(value), type(value).__name__)} {value!r}"


def _check_keys(where: str, table: dict, allowed: tuple[str, ...]):
    if not isinstance(table, dict):
        _fail(where, f"must be a table, got {_describe(table)}")
    for key in table:
        if key not in allowed:
            _fail(f"{where} {key}", f"unknown key; allowed: {', '.join(allowed)}")


def _no_repeats(where: str, what: str, values, *, key):
    seen = set()
    for v in values:
        if key(v) in seen:
            _fail(where, f"lists {what} {v!r} twice; allowed: distinct values (each would repeat the same runs)")
        seen.add(key(v))


def _toml_ready(value):
    """Tuples as lists, recursively (TOML and tomli_w know lists only)."""
    if isinstance(value, (tuple, list)):
        return [_toml_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items()}
    return value


def _section(cls, name: str, table):
    """Build a section dataclass (validated on construction) from a TOML table."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    if not isinstance(table, dict):
        _fail(name, f"must be a table (a [{name}] section), got {_describe(table)}; "
                    f"allowed: a table with keys {', '.join(names)}")
    spelled = {}
    for key in table:
        canonical = str(key).replace("-", "_")
        if canonical in spelled:
            _fail(f"[{name}] {canonical}", f"is given twice (as {spelled[canonical]!r} and {key!r}); "
                                           "allowed: one spelling, with '_' or '-'")
        spelled[canonical] = key
    table = {str(k).replace("-", "_"): v for k, v in table.items()}
    _check_keys(f"[{name}]", table, names)
    return cls(**table)


class _Section:
    """Base of the sections: every instance is validated when it is built.

    So ``DataConfig(dataset="mnist")``, ``dataclasses.replace(...)`` and
    :meth:`Scenario.from_dict` all fail the same way, with one line.
    """

    SECTION = ""
    TUPLES: tuple[str, ...] = ()  # list-valued fields, stored as tuples

    def __post_init__(self):
        for name in self.TUPLES:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        where = f"[{self.SECTION}]"
        for f in dataclasses.fields(self):
            _check_ints(f"{where} {f.name}", getattr(self, f.name))
        self.validate(where)

    def validate(self, where: str):  # pragma: no cover - every section overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class DataConfig(_Section):
    SECTION = "data"

    dataset: str = "adult"
    sensitive: str | None = None
    test_size: float = 0.3
    include_sensitive: bool = False
    options: dict = field(default_factory=dict)

    def validate(self, where: str):
        _name(f"{where} dataset", self.dataset, DATASETS, "dataset")
        if self.sensitive is not None and (not isinstance(self.sensitive, str) or not self.sensitive):
            _fail(f"{where} sensitive", f"{_describe(self.sensitive)} is not allowed; allowed: a string naming the "
                                        "sensitive attribute (a csv column)")
        if not _is_num(self.test_size) or not 0 < self.test_size < 1:
            _fail(f"{where} test_size", f"{self.test_size!r} is out of range; allowed: a number in (0, 1)")
        _flag(f"{where} include_sensitive", self.include_sensitive)
        if not isinstance(self.options, dict):
            _fail(f"{where} options", f"{_describe(self.options)} is not allowed; allowed: a table [data.options] "
                                      "of dataset options")
        if self.dataset == "csv":
            missing = [k for k in ("path", "label", "favourable", "protected") if k not in self.options]
            if missing:
                _fail(f"{where} options", f"a csv dataset needs {', '.join(missing)}; allowed: a table with path, "
                                          "label, favourable, protected (and [data] sensitive)")
            if self.sensitive is None:
                _fail(f"{where} sensitive", "a csv dataset needs the name of its sensitive column; allowed: a column "
                                            "of the csv file")


@dataclass(frozen=True)
class CollectiveConfig(_Section):
    SECTION = "collective"
    TUPLES = ("methods", "alphas", "budgets")

    methods: tuple = ("rb-prob", "rb-label", "rb-dist", "random")
    alphas: tuple = PAPER_ALPHAS
    budgets: tuple = PAPER_BUDGETS
    reference: Any = "all"
    k: int = 10  # neighbours of rb-label and rb-dist, unless [collective.params] sets a method's own
    params: dict = field(default_factory=dict)  # method -> its own parameters, e.g. {"rb-dist": {"k": 5}}
    # The share of training users the collective holds out to choose its budget in a
    # pilot run (val_* columns); 0 = no pilot. Never the firm's test set.
    validation: float = 0.2

    def validate(self, where: str):
        _names(f"{where} methods", self.methods, METHODS, "method")
        for name, rule in (("alphas", "numbers in (0, 1]"), ("budgets", "int counts >= 0 or fractions in [0, 1]")):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                _fail(f"{where} {name}", f"must be a non-empty list, got {_describe(value)}; allowed: a list of {rule}")
        for a in self.alphas:
            if not _is_num(a) or not 0 < a <= 1:
                _fail(f"{where} alphas", f"{a!r} is out of range; allowed: numbers in (0, 1]")
        _no_repeats(f"{where} alphas", "alpha", self.alphas, key=float)
        for b in self.budgets:
            if _is_int(b):
                if b < 0:
                    _fail(f"{where} budgets", f"{b!r} is negative; allowed: int counts >= 0 or fractions in [0, 1]")
            elif _is_num(b):
                if not 0 <= b <= 1:
                    _fail(f"{where} budgets", f"{b!r} is out of range; allowed: int counts >= 0 or fractions in [0, 1]")
            else:
                _fail(f"{where} budgets", f"{b!r} is not a number; allowed: int counts >= 0 or fractions in [0, 1]")
        # The int 1 (one flip) and the float 1.0 (the whole pool) are different budgets.
        _no_repeats(f"{where} budgets", "budget", self.budgets, key=lambda b: (_is_int(b), b))
        if not (self.reference == "all" or (_is_int(self.reference) and self.reference >= 1)):
            _fail(f"{where} reference", f"{self.reference!r} is not allowed; allowed: \"all\" or an int n >= 1 of majority rows")
        if not _is_int(self.k) or self.k < 1:
            _fail(f"{where} k", f"{self.k!r} is not allowed; allowed: an int >= 1")
        if not isinstance(self.params, dict):
            _fail(f"{where} params", f"must be a table of method -> parameters, got {_describe(self.params)}; "
                                     f"allowed: e.g. params = {{rb-dist = {{k = 5}}}}")
        for method, values in self.params.items():
            if method not in self.methods:
                _fail(f"{where} params.{method}", f"is not in [collective] methods; allowed: {', '.join(self.methods)}")
            allowed = ", ".join(SCORER_PARAMETERS[method]) or "none"
            if not isinstance(values, dict):
                _fail(f"{where} params.{method}", f"must be a table of parameters; allowed keys: {allowed}")
            for name, value in values.items():
                if name not in SCORER_PARAMETERS[method]:
                    _fail(f"{where} params.{method}", f"unknown parameter {name!r}; allowed: {allowed}")
                if not _is_int(value) or value < 1:  # every settable parameter today is a count (k)
                    _fail(f"{where} params.{method}.{name}", f"{value!r} is not allowed; allowed: an int >= 1")
        if not _is_num(self.validation) or not 0 <= self.validation < 0.9:
            _fail(f"{where} validation", f"{self.validation!r} is not allowed; allowed: a fraction in [0, 0.9) of the "
                                         "training users held out for the pilot (0: no pilot)")

    def scorer_params(self) -> dict[str, dict]:
        """Each method's own parameters: ``k`` (the section's) unless ``params`` sets its own."""
        return {m: {name: self.params.get(m, {}).get(name, self.k) for name in SCORER_PARAMETERS[m]}
                for m in self.methods}

    def check_against(self, where: str, dataset: str):
        if "oracle" in self.methods and dataset not in SYNTHETIC:
            _fail(f"{where} methods", f"'oracle' needs a synthetic dataset, not {dataset!r}; allowed: 'oracle' with "
                                      f"[data] dataset {' or '.join(SYNTHETIC)}, else "
                                      f"{', '.join(m for m in METHODS if m != 'oracle')}")


@dataclass(frozen=True)
class FirmConfig(_Section):
    SECTION = "firm"

    model: str = "logistic-regression"
    params: dict = field(default_factory=dict)

    def validate(self, where: str):
        if not isinstance(self.model, str) or (self.model not in FIRM_MODELS and ":" not in self.model):
            _fail(f"{where} model", f"unknown model {self.model!r}; allowed: {', '.join(FIRM_MODELS)}, or 'module:Class'")
        if not isinstance(self.params, dict):
            _fail(f"{where} params", f"{_describe(self.params)} is not allowed; allowed: a table of the estimator's "
                                     "parameters")
        if self.model not in FIRM_MODELS:
            try:  # imported and inspected, never called, unless it is a scikit-learn classifier class
                estimator_class(self.model)
            except ValueError as exc:
                _fail(f"{where} model", str(exc))
        try:  # scikit-learn's own parameter validation: a bad value fails here, not at fit time
            make_estimator(self.model, self.params)
        except ValueError as exc:
            _fail(f"{where} params", str(exc))


@dataclass(frozen=True)
class EngineConfig(_Section):
    SECTION = "engine"

    backend: str = "vectorised"
    n_jobs: int = 2
    warm_start: bool = True
    executor: str = "processes"

    def validate(self, where: str):
        _name(f"{where} backend", self.backend, tuple(BACKENDS), "backend")
        _name(f"{where} executor", self.executor, tuple(EXECUTORS), "executor")
        check_n_jobs(f"{where} n_jobs", self.n_jobs)
        _flag(f"{where} warm_start", self.warm_start)


@dataclass(frozen=True)
class FlowerConfig(_Section):
    """Options of the ``flower`` backend (ignored by the vectorised one)."""

    SECTION = "flower"

    agents_per_node: int = 100
    rounds: int = 1
    num_cpus: int = 2
    ray_address: str = ""
    timeout: float = 600.0
    keep_node_files: bool = False  # true: leave each seed's nodes/ folder (users' records) after its run

    def validate(self, where: str):
        for name in ("agents_per_node", "rounds", "num_cpus"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                _fail(f"{where} {name.replace('_', '-')}", f"{v!r} is not allowed; allowed: an int >= 1")
        if not isinstance(self.ray_address, str):
            _fail(f"{where} ray-address", f"{_describe(self.ray_address)} is not allowed; allowed: a string such as "
                                          "\"auto\" or \"ray://host:10001\" (\"\": a local Ray)")
        if not _is_finite(self.timeout) or self.timeout <= 0:
            _fail(f"{where} timeout", f"{self.timeout!r} is not allowed; allowed: a finite number of seconds > 0")
        _flag(f"{where} keep-node-files", self.keep_node_files)


# Swept parameters that are probabilities or fractions (the others only need >= 0).
_UNIT_GRIDS = {"threshold-optimizer", "calibrated-eqodds", "reweighing", "massaging-minority"}


@dataclass(frozen=True)
class BaselinesConfig(_Section):
    """Optional ``[baselines]``: firm-side fairness methods run on the same splits.

    ``grids`` overrides a baseline's trade-off grid, ``params`` adds fixed
    constructor parameters (``{"calibrated-eqodds": {"cost_constraint": "fnr"}}``).
    """

    SECTION = "baselines"
    TUPLES = ("methods",)

    methods: tuple = ()
    grids: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.grids, dict):
            grids = {k: tuple(v) if isinstance(v, list) else v for k, v in self.grids.items()}
            object.__setattr__(self, "grids", grids)
        super().__post_init__()

    def validate(self, where: str):
        from server.baselines import BASELINE_PARAMS, BASELINES, COST_CONSTRAINTS  # fairlearn: import on use

        _names(f"{where} methods", self.methods, tuple(BASELINES), "baseline")
        for name, table in (("grids", self.grids), ("params", self.params)):
            if not isinstance(table, dict):
                _fail(f"{where} {name}", f"{_describe(table)} is not allowed; allowed: a table keyed by baseline name "
                                         f"({', '.join(self.methods)})")
            for key in table:
                if key not in self.methods:
                    _fail(f"{where} {name}.{key}", f"is not in [baselines] methods; allowed: "
                                                   f"{', '.join(self.methods)}")
        for key, grid in self.grids.items():
            unit = key in _UNIT_GRIDS
            rule = "numbers in [0, 1]" if unit else "numbers >= 0"
            if key == "massaging-minority":
                rule = "int counts >= 0 or fractions in [0, 1]"
            if not isinstance(grid, tuple) or not grid:
                _fail(f"{where} grids.{key}", f"must be a non-empty list, got {_describe(grid)}; allowed: a list of {rule}")
            for v in grid:
                counts_ok = key == "massaging-minority" and _is_int(v) and v >= 0
                if not counts_ok and (not _is_finite(v) or v < 0 or (unit and v > 1)):
                    _fail(f"{where} grids.{key}", f"{v!r} is not allowed; allowed: {rule}")
        from server.baselines import make_baseline

        for key, params in self.params.items():
            if not isinstance(params, dict):
                _fail(f"{where} params.{key}", f"{_describe(params)} is not allowed; allowed: a table of {key}'s "
                                               "constructor parameters")
            for reserved in ("estimator", "random_state", BASELINE_PARAMS[key]):
                if reserved in params:
                    swept = reserved == BASELINE_PARAMS[key]
                    why = "is swept; set it in [baselines.grids]" if swept else "is set by the scenario"
                    _fail(f"{where} params.{key}", f"{reserved!r} {why}; allowed: other constructor parameters")
            cost = params.get("cost_constraint", "fnr")
            if not isinstance(cost, str) or cost not in COST_CONSTRAINTS:
                _fail(f"{where} params.{key}", f"cost_constraint {params['cost_constraint']!r} is not allowed; "
                      f"allowed: {', '.join(COST_CONSTRAINTS)}")
            try:
                make_baseline(key, **params)
            except (TypeError, ValueError) as exc:
                _fail(f"{where} params.{key}", f"cannot build {key!r} with {params}: {' '.join(str(exc).split())}; "
                                               f"allowed: parameters of {key!r} with valid values")


@dataclass(frozen=True)
class DefenceConfig(_Section):
    """Optional ``[defence]``: the firm audits the labels it receives and acts on flagged ones.

    ``methods``, ``alphas`` and ``budgets`` select the collective's cells to
    attack ("all" = every one of ``[collective]``); ``tolerance`` is the
    trusted-sample audit's margin ("auto" = two standard errors of the trusted
    minority positive rate); ``adaptive`` adds the collective that flips only
    candidates it expects the audit to find plausible.
    """

    SECTION = "defence"
    TUPLES = ("audits", "actions", "methods", "alphas", "budgets")

    audits: tuple = ("confident-learning", "trusted-sample")
    actions: tuple = ("drop", "downweight", "revert")
    methods: Any = "all"
    alphas: Any = "all"
    budgets: Any = "all"
    trusted_size: int = 2000
    tolerance: Any = "auto"
    cv: int = 5
    flag_weight: float = 0.5
    adaptive: bool = True

    def validate(self, where: str):
        # Names mirror server.defences (not imported: it pulls in fairlearn).
        for name, allowed in (("audits", ("confident-learning", "trusted-sample")),
                              ("actions", ("drop", "downweight", "revert"))):
            _names(f"{where} {name}", getattr(self, name), allowed, name[:-1])
        for name in ("methods", "alphas", "budgets"):
            value = getattr(self, name)
            if value != "all" and (not isinstance(value, tuple) or not value):
                _fail(f"{where} {name}", f"{_describe(value)} is not allowed; allowed: \"all\" or a non-empty list "
                                         f"of [collective] {name}")
            for v in value if value != "all" else ():
                if not (isinstance(v, str) if name == "methods" else _is_num(v)):
                    _fail(f"{where} {name}", f"{_describe(v)} is not allowed; allowed: \"all\" or a list of "
                                             f"[collective] {name}")
        if not _is_int(self.trusted_size) or self.trusted_size < 10:
            _fail(f"{where} trusted_size", f"{self.trusted_size!r} is not allowed; allowed: an int >= 10 (rows)")
        if self.tolerance != "auto" and (not _is_num(self.tolerance) or not 0 <= self.tolerance <= 1):
            _fail(f"{where} tolerance", f"{self.tolerance!r} is not allowed; allowed: \"auto\" or a number in [0, 1]")
        if not _is_int(self.cv) or self.cv < 2:
            _fail(f"{where} cv", f"{self.cv!r} is not allowed; allowed: an int >= 2 (folds)")
        if not _is_num(self.flag_weight) or not 0 <= self.flag_weight <= 1:
            _fail(f"{where} flag_weight", f"{self.flag_weight!r} is not allowed; allowed: a number in [0, 1]")
        _flag(f"{where} adaptive", self.adaptive)

    def check_against(self, where: str, collective: CollectiveConfig):
        """The attacked cells must be cells the collective runs."""
        key = lambda b: (_is_int(b), b)  # noqa: E731 - int 1 (a count) is not the fraction 1.0
        for name, own in (("methods", collective.methods), ("alphas", collective.alphas),
                          ("budgets", collective.budgets)):
            value = getattr(self, name)
            if value == "all":
                continue
            known = {key(v) for v in own} if name == "budgets" else set(own)
            for v in value:
                if (key(v) if name == "budgets" else v) not in known:
                    _fail(f"{where} {name}", f"{v!r} is not in [collective] {name}; allowed: \"all\" or some of "
                                             f"{', '.join(map(str, own))}")

    def selected(self, name: str, collective: CollectiveConfig) -> tuple:
        """The attacked methods, alphas or budgets, in [collective]'s order."""
        value = getattr(self, name)
        own = getattr(collective, name)
        if value == "all":
            return own
        if name == "budgets":
            keys = {(_is_int(v), v) for v in value}
            return tuple(b for b in own if (_is_int(b), b) in keys)
        return tuple(v for v in own if v in value)


# [dynamics]: what each mode reads, the keys of [dynamics.graph] per kind, and their rules.
DYNAMICS_MODES = {
    "reports": ("replace", "accumulate"),
    "participation": ("fixed", "threshold", "benefit-cost"),
    "coordination": ("coordinator", "reach", "gossip"),
}
# key -> (mode setting, the value that uses it): a key set away from its default
# while its mode is not chosen is a mistake (a typo in the mode, or a forgotten key).
DYNAMICS_MODE_KEYS = {
    "window": ("reports", "accumulate"),
    "threshold_mean": ("participation", "threshold"),
    "threshold_sd": ("participation", "threshold"),
    "leave": ("participation", "threshold"),
    "seen": ("participation", "threshold"),
    "public": ("participation", "benefit-cost"),
    "cost_mean": ("participation", "benefit-cost"),
    "cost_sd": ("participation", "benefit-cost"),
    "free_ride": ("participation", "benefit-cost"),
    "memory": ("participation", "benefit-cost"),
    "hops": ("coordination", "reach"),
    "gossip_steps": ("coordination", "gossip"),
    "gossip_bins": ("coordination", "gossip"),
}
PUBLIC = ("own-outcome", "group-rates")
# [dynamics.graph]: kind -> its parameters (rule, description); parameters left out take
# simulations.graphs' defaults.
_PROBABILITY = (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]")
_GRAPH_PARAMETERS = {
    "mean_degree": (lambda v: _is_finite(v) and v >= 0, "a number >= 0"),
    "m": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "k": (lambda v: _is_int(v) and v >= 2 and v % 2 == 0, "an even int >= 2"),
    "p": _PROBABILITY,
    "p_in": _PROBABILITY,
    "p_out": _PROBABILITY,
    "blocks": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "path": (lambda v: isinstance(v, str) and bool(v.strip()), "a path to a file of 'i j' lines"),
}
GRAPH_KINDS = {
    "complete": (),
    "erdos-renyi": ("mean_degree",),
    "barabasi-albert": ("m",),
    "watts-strogatz": ("k", "p"),
    "sbm": ("blocks", "p_in", "p_out"),
    "edge-list": ("path",),
}


def _check_graph(where: str, graph) -> dict:
    """``[dynamics.graph]``: a kind and that kind's parameters; returns it with '-' spelled '_'."""
    if not isinstance(graph, dict):
        _fail(where, f"must be a table, got {_describe(graph)}; allowed: a [dynamics.graph] table with kind = "
                     f"{', '.join(GRAPH_KINDS)}")
    graph = {str(k).replace("-", "_"): v for k, v in graph.items()}
    kind = graph.get("kind", "complete")
    _name(f"{where} kind", kind, tuple(GRAPH_KINDS), "graph kind")
    allowed = GRAPH_KINDS[kind]
    for key, value in graph.items():
        if key == "kind":
            continue
        if key not in allowed:
            _fail(f"{where} {key}", f"is not a parameter of kind {kind!r}; allowed: "
                                    f"{', '.join(allowed) or 'no parameters'}")
        ok, rule = _GRAPH_PARAMETERS[key]
        if not ok(value):
            _fail(f"{where} {key}", f"{_describe(value)} is not allowed; allowed: {rule}")
    return {"kind": kind, **{k: v for k, v in graph.items() if k != "kind"}}


@dataclass(frozen=True)
class DynamicsConfig(_Section):
    """Optional ``[dynamics]``: many rounds, a retraining firm, partial participation and
    imperfect coordination (:mod:`simulations.dynamics` documents every key). Absent: the
    paper's one-shot experiment, unchanged."""

    SECTION = "dynamics"
    TUPLES = ("public", "coordination")

    rounds: int = 10
    reports: str = "replace"  # what the firm trains on: this round's reports, or the last `window` rounds'
    window: Any = "all"
    public: tuple = PUBLIC  # what members observe (benefit-cost)
    participation: str = "fixed"
    threshold_mean: float = 0.25
    threshold_sd: float = 0.1
    leave: bool = False
    seen: str = "everyone"
    cost_mean: float = 0.02
    cost_sd: float = 0.01
    free_ride: bool = False
    memory: int = 1
    organisers: Any = 0  # an int count, or a fraction of the members
    organisers_by: str = "random"
    graph: dict = field(default_factory=lambda: {"kind": "complete"})
    coordination: tuple = ("coordinator",)  # the first is the run's; others are paired reference trajectories
    hops: int = 1
    gossip_steps: int = 30
    gossip_bins: int = 256
    compliance: float = 1.0
    dropout: float = 0.0
    score_noise: float = 0.0
    staleness: int = 0
    reference_per_member: Any = "all"  # majority reference rows each member knows (its knowledge group's)
    knowledge_groups: int = 1  # groups of members, each knowing its own reference_per_member rows

    def __post_init__(self):
        if isinstance(self.coordination, str):
            object.__setattr__(self, "coordination", (self.coordination,))
        object.__setattr__(self, "graph", _check_graph("[dynamics.graph]", self.graph))
        super().__post_init__()

    def validate(self, where: str):
        if not _is_int(self.rounds) or not 1 <= self.rounds <= 100_000:
            _fail(f"{where} rounds", f"{self.rounds!r} is not allowed; allowed: an int from 1 to 100000")
        for name in ("reports", "participation"):
            _name(f"{where} {name}", getattr(self, name), DYNAMICS_MODES[name], name.rstrip("s") + " mode")
        _names(f"{where} coordination", self.coordination, DYNAMICS_MODES["coordination"], "coordination")
        if self.window != "all" and (not _is_int(self.window) or self.window < 1):
            _fail(f"{where} window", f"{self.window!r} is not allowed; allowed: an int >= 1 (rounds of reports "
                                     "kept), or \"all\"")
        if not isinstance(self.public, tuple) or any(v not in PUBLIC for v in self.public):
            shown = list(self.public) if isinstance(self.public, tuple) else self.public
            _fail(f"{where} public", f"{shown!r} is not allowed; allowed: a list of {', '.join(PUBLIC)} (or [])")
        _no_repeats(f"{where} public", "observation", self.public, key=lambda v: v)
        for name in ("threshold_mean", "cost_mean"):
            if not _is_finite(getattr(self, name)):
                _fail(f"{where} {name}", f"{getattr(self, name)!r} is not allowed; allowed: a finite number")
        for name in ("threshold_sd", "cost_sd", "score_noise"):
            value = getattr(self, name)
            if not _is_finite(value) or value < 0:
                _fail(f"{where} {name}", f"{value!r} is not allowed; allowed: a finite number >= 0 (a standard "
                                         "deviation)")
        for name in ("compliance", "dropout"):
            value = getattr(self, name)
            if not _is_num(value) or not 0 <= value <= 1:
                _fail(f"{where} {name}", f"{value!r} is not allowed; allowed: a probability in [0, 1]")
        for name in ("leave", "free_ride"):
            _flag(f"{where} {name}", getattr(self, name))
        _name(f"{where} seen", self.seen, ("everyone", "neighbours"), "audience")
        _name(f"{where} organisers_by", self.organisers_by, ("random", "most-connected"), "way to choose organisers")
        for name, low in (("memory", 1), ("hops", 0), ("gossip_steps", 1), ("gossip_bins", 2), ("staleness", 0),
                          ("knowledge_groups", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                _fail(f"{where} {name}", f"{value!r} is not allowed; allowed: an int >= {low}")
        if self.reference_per_member != "all" and (not _is_int(self.reference_per_member)
                                                   or self.reference_per_member < 1):
            _fail(f"{where} reference_per_member", f"{self.reference_per_member!r} is not allowed; allowed: an int "
                                                   ">= 1 (majority reference rows each member knows), or \"all\"")
        if self.reference_per_member == "all" and self.knowledge_groups != 1:
            _fail(f"{where} knowledge_groups", "is only read when reference_per_member is an int (here \"all\": "
                                               "every member knows the whole reference); allowed: drop "
                                               "knowledge_groups, or set reference_per_member")
        organisers = self.organisers
        if not ((_is_int(organisers) and organisers >= 0) or (_is_num(organisers) and not _is_int(organisers)
                                                                and 0 <= organisers <= 1)):
            _fail(f"{where} organisers", f"{organisers!r} is not allowed; allowed: an int count >= 0 or a fraction "
                                         "in [0, 1] of the members")
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        for key, (mode, value) in DYNAMICS_MODE_KEYS.items():
            chosen = getattr(self, mode)
            used = value in chosen if mode == "coordination" else value == chosen
            if not used and getattr(self, key) != defaults[key]:
                _fail(f"{where} {key}", f"is only read when {mode} = {value!r} (here {mode} = "
                                        f"{chosen if isinstance(chosen, str) else list(chosen)!r}); allowed: drop "
                                        f"{key}, or set {mode} = {value!r}")
        if "gossip" in self.coordination and self.graph["kind"] == "complete":
            _fail("[dynamics.graph] kind", "'complete' leaves coordination 'gossip' nothing to gossip over (everyone "
                                           "hearing everyone is a coordinator); allowed: erdos-renyi, "
                                           "barabasi-albert, watts-strogatz, sbm or edge-list")
        if "reach" in self.coordination and organisers == 0:
            _fail(f"{where} organisers", "is 0, so coordination 'reach' reaches nobody (the coordinator speaks "
                                         "through the organisers); allowed: an int >= 1 or a fraction > 0 of the "
                                         "members, or another coordination")

    @property
    def uses_graph(self) -> bool:
        """Whether anything reads the members' graph."""
        return ((self.participation == "threshold" and self.seen == "neighbours")
                or self.organisers_by == "most-connected"
                or any(mode in self.coordination for mode in ("reach", "gossip")))

    def flower_unsupported(self, scenario: "Scenario") -> str | None:
        """What of this ``[dynamics]`` the Flower backend cannot run yet (None: it can)."""
        checks = (
            ("participation", self.participation in ("fixed", "threshold", "benefit-cost")),
            # own-outcome: members compute their outcome from the published logistic model
            ("[firm] model", not (self.participation == "benefit-cost" and "own-outcome" in self.public)
             or scenario.firm.model == "logistic-regression"),
            ("coordination", len(self.coordination) == 1),
            ("reference_per_member", self.reference_per_member == "all"),
            ("[engine] warm_start", not scenario.engine.warm_start),
            ("[flower] rounds", scenario.flower.rounds == FlowerConfig.rounds),  # [dynamics] rounds counts them
        )
        bad = [name for name, ok in checks if not ok]
        return ", ".join(bad) or None

    def check_against(self, where: str, scenario: "Scenario"):
        if scenario.engine.backend == "flower":
            bad = self.flower_unsupported(scenario)
            if bad:
                _fail(where, f"the flower backend cannot run {bad} as set; allowed: on flower, participation 'fixed', "
                             "'threshold' (seen = 'everyone' or 'neighbours') or 'benefit-cost' (public own-outcome "
                             "with [firm] model 'logistic-regression'), organisers_by = 'random' or "
                             "'most-connected', one coordination, 'coordinator', 'reach' (hops) or 'gossip', "
                             "reports ('replace' or 'accumulate' with window), staleness, reference_per_member = \"all\", compliance, dropout, "
                             "score_noise, "
                             "with [engine] warm_start = false (the evaluator retrains every cell from scratch) and "
                             "[dynamics] rounds (not [flower] rounds); or backend = 'vectorised' (docs/federated.md, "
                             "'Dynamics on Flower')")
        elif scenario.engine.backend != "vectorised":
            _fail("[engine] backend", f"{scenario.engine.backend!r} cannot run [dynamics]; allowed: 'vectorised' or "
                                      "'flower'")
        if scenario.compares:
            _fail(where, "cannot run with [baselines] or [defence] (they compare one-shot fits); allowed: drop "
                         "[baselines] and [defence], or drop [dynamics]")
        if self.graph["kind"] != "complete" and not self.uses_graph:
            _fail("[dynamics.graph] kind", f"{self.graph['kind']!r} is drawn but nothing reads it; allowed: "
                                               "'complete', or a graph with seen = 'neighbours', organisers_by = "
                                               "'most-connected', or coordination 'reach' or 'gossip'")


@dataclass(frozen=True)
class Scenario:
    """One experiment: a grid of (seed, method, alpha, budget) runs.

    Validated whenever it is built (directly, by :meth:`from_dict`, :meth:`replace`
    or ``dataclasses.replace``); sections may be given as tables (dicts).
    """

    name: str = "paper-adult"
    description: str = ""
    seeds: tuple = (0, 1, 2)
    data: DataConfig = field(default_factory=DataConfig)
    collective: CollectiveConfig = field(default_factory=CollectiveConfig)
    firm: FirmConfig = field(default_factory=FirmConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    flower: FlowerConfig = field(default_factory=FlowerConfig)
    baselines: BaselinesConfig | None = None  # optional sections: absent = not run
    defence: DefenceConfig | None = None
    dynamics: DynamicsConfig | None = None  # absent: the paper's one-shot experiment

    SECTIONS = {
        "data": DataConfig,
        "collective": CollectiveConfig,
        "firm": FirmConfig,
        "engine": EngineConfig,
        "flower": FlowerConfig,
    }
    OPTIONAL = {"baselines": BaselinesConfig, "defence": DefenceConfig, "dynamics": DynamicsConfig}

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or ".." in self.name:
            _fail("name", f"{self.name!r} is not allowed (it names the results folder); allowed: letters, digits, "
                          "'.', '_' and '-', not starting with '.' and without '..'")
        if not isinstance(self.description, str):
            _fail("description", f"{_describe(self.description)} is not allowed; allowed: a string")
        seeds = (self.seeds,) if _is_int(self.seeds) else self.seeds
        if (not isinstance(seeds, (list, tuple)) or not seeds
                or not all(_is_int(s) and 0 <= s <= INT64[1] for s in seeds)):
            shown = list(self.seeds) if isinstance(self.seeds, tuple) else self.seeds
            _fail("seeds", f"{shown!r} is not allowed; allowed: a non-empty list of ints from 0 to 2**63-1")
        _no_repeats("seeds", "seed", seeds, key=int)
        set_("seeds", tuple(int(s) for s in seeds))
        for name, cls in {**self.SECTIONS, **self.OPTIONAL}.items():
            value = getattr(self, name)
            if value is None and name in self.OPTIONAL:
                continue
            if not isinstance(value, cls):
                set_(name, _section(cls, name, value))
        self.collective.check_against("[collective]", self.data.dataset)
        if self.defence is not None:
            self.defence.check_against("[defence]", self.collective)
        # The one place this rule lives: `--backend flower` reaches it through replace().
        if self.compares and self.engine.backend != "vectorised":
            _fail("[engine] backend", f"{self.engine.backend!r} cannot run [baselines] or [defence]; "
                                      "allowed: 'vectorised' (or drop [baselines] and [defence])")
        if self.dynamics is not None:
            self.dynamics.check_against("[dynamics]", self)

    @property
    def compares(self) -> bool:
        """Whether the scenario runs firm-side baselines or defences."""
        return self.baselines is not None or self.defence is not None

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "scenario") -> "Scenario":
        """Build and validate a scenario from TOML tables; errors start with ``source``."""
        top = tuple(f.name for f in dataclasses.fields(cls))
        if not isinstance(raw, dict):
            _fail(source, f"must be a table of settings, got {_describe(raw)}; allowed: a TOML scenario")
        for key in raw:
            if key not in top:
                _fail(f"{source}: {key}", f"unknown key; allowed: {', '.join(top)}")
        try:
            return cls(**raw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict:
        """A TOML-ready dict that :meth:`from_dict` reads back to an equal scenario."""
        out = _toml_ready(dataclasses.asdict(self))
        for name in self.OPTIONAL:  # absent optional sections stay absent
            if out[name] is None:
                del out[name]
        if out["data"]["sensitive"] is None:
            del out["data"]["sensitive"]
        return out

    def replace(self, source: str = "scenario", /, **changes) -> "Scenario":
        """A validated copy with top-level fields or ``section__key`` entries changed.

        ``replace(seeds=(5,), collective__alphas=(0.3,))``; an absent optional section
        starts from its defaults, ``baselines=None`` drops it. The copy is rebuilt
        through :meth:`from_dict`, so a bad value is a :class:`ConfigError` whose
        line starts with ``source``.
        """
        raw = self.to_dict()
        nested = [(k, v) for k, v in changes.items() if "__" in k]
        for key, value in changes.items():
            if "__" in key:
                continue
            if value is None and key in self.OPTIONAL:
                raw.pop(key, None)
            else:
                raw[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        for key, value in nested:
            section, _, name = key.partition("__")
            table = raw.setdefault(section, {})
            if table is None:
                table = raw[section] = {}
            if isinstance(table, dict):  # else from_dict names the non-table
                table[name] = value
        return Scenario.from_dict(raw, source=source)

    def check_data(self, source: str = "scenario") -> None:
        """Load and split the data as a run does, and fit the firm's model once on a sample of it.

        Everything a run would only find out after it has written to its folder: the file is
        there, columns and values occur, every seed's split keeps both groups with both labels
        in the training and test rows, the firm's model trains on these features, the defence
        has rows enough for its folds. Synthetic data are drawn per seed, so every seed is
        checked; a file's data once, with the first seed. A :class:`DataError` or
        :class:`ConfigError` line starting with ``source``.
        """
        from server.firm import check_trainable

        from .datasets import load_configured
        from .state import build_world

        name = self.data.dataset
        for seed in self.seeds if name in SYNTHETIC else self.seeds[:1]:
            try:
                dataset = load_configured(self.data, seed=seed)
            except CollectiveFairnessError as exc:  # names the option or the file
                raise type(exc)(f"{source}: [data] {name}: {exc}") from None
            except OSError as exc:
                raise DataError(f"{source}: [data] {name}: cannot read {exc.filename or 'its file'} "
                                f"({exc.strerror}); allowed: a readable data file") from None
            try:
                world = build_world(self, dataset, seed)
            except CollectiveFairnessError as exc:  # starts with the data set's name
                raise type(exc)(f"{source}: [data] {exc}") from None
            if self.dynamics is not None:  # each seed's members' graph and organisers, as round 1 builds them
                from .dynamics import check_world

                check_world(self, world, source)
        X, y = world.prepared.X_train, world.prepared.y_train
        try:
            check_trainable(make_estimator(self.firm.model, self.firm.params, random_state=0), X, y)
        except ValueError as exc:
            key = "params" if self.firm.params else "model"
            raise ConfigError(f"{source}: [firm] {key}: {self.firm.model!r}: {exc}") from None
        if self.defence is not None:
            fewest = int(np.bincount(y, minlength=2).min())
            if self.defence.cv > fewest:
                raise ConfigError(f"{source}: [defence] cv: {self.defence.cv} folds, but the training rows have only "
                                  f"{fewest} of one label; allowed: an int from 2 to {fewest}")


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario TOML file (``None``: the paper's Adult default)."""
    if path is None:
        return Scenario()
    path = Path(path)
    allowed = "allowed: a UTF-8 TOML scenario file (see configs/)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such scenario file; {allowed}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a scenario file; {allowed}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          f"{allowed}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scenario file ({exc.strerror}); {allowed}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())}); {allowed}") from None
    if not raw:
        # An empty file is a mistake, not a request for the default experiment.
        raise ConfigError(f"{path}: the file is empty (no settings); {allowed}, or no CONFIG to run the "
                          "default experiment")
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("options"), dict):
        file = data["options"].get("path")
        if isinstance(file, str) and not Path(file).is_absolute():
            # A data file named in a scenario is found next to the scenario.
            data["options"]["path"] = str((path.parent / file).resolve())
    graph = raw.get("dynamics", {}).get("graph") if isinstance(raw.get("dynamics"), dict) else None
    if isinstance(graph, dict) and isinstance(graph.get("path"), str) and not Path(graph["path"]).is_absolute():
        graph["path"] = str((path.parent / graph["path"]).resolve())  # an edge list is found next to the scenario
    return Scenario.from_dict(raw, source=str(path))
