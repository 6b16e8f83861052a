"""What travels between the parties: the grid of cells, message types, records.

Both Flower apps (:mod:`agents.client_app`, :mod:`server.server_app`) import
this module and never each other. It owns

* the **grid**: the (method, alpha, budget) cells a run evaluates, their one
  canonical order (method, then alpha, then budget) and how a grid travels in
  a message or a file, what a budget means (:func:`budget_count`) and what a
  flip does to a reported label (:func:`relabel`);
* the **signal** the coalition's coordinator publishes (:class:`Signal`);
* the **message types** and the names of the records inside them;
* conversions between numpy arrays and Flower records.

Flower is imported only by the record helpers, so the vectorised engine can use
the grid without loading Flower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Iterator, NamedTuple

import numpy as np

__all__ = [
    "COORDINATE",
    "Cell",
    "CellGrid",
    "EVALUATE",
    "JOIN",
    "REPORT",
    "ROLE_COORDINATOR",
    "ROLE_USERS",
    "SCORES",
    "Signal",
    "arrays_of",
    "budget_count",
    "record_of",
    "relabel",
    "token_digest",
]

# Message types. The coalition's own (query.*) are relayed unread by the ServerApp;
# the firm receives train.report only. evaluate.cells is the experimenter's (simulation
# only): a run sends either train.report (deployment: the firm) or evaluate.cells, never both.
JOIN = "query.join"  # users -> coordinator: membership tickets of minority users
COORDINATE = "query.coordinate"  # coordinator: cutoffs + shared knowledge, then thresholds
SCORES = "query.scores"  # users -> coordinator: candidates' (member ticket, tie ticket, scores)
REPORT = "train.report"  # users -> firm: (ids, x, a, the one label the deployed cell reports)
EVALUATE = "evaluate.cells"  # users -> evaluator: (ids, x, a, true labels + one reported row per cell)

# Coordinator stages inside query.coordinate.
STAGE_CUTOFFS, STAGE_THRESHOLDS, STAGE_REPEAT = "cutoffs", "thresholds", "repeat"

ROLE_USERS, ROLE_COORDINATOR = "users", "coordinator"


def token_digest(token: str) -> str:
    """The coordinator's public identity: the SHA-256 of its secret token, hex. Users'
    node files carry it; the relay accepts the coordinator role only from the node whose
    join reply presents the matching token."""
    import hashlib

    return hashlib.sha256(str(token).encode("utf-8")).hexdigest()


def budget_count(budget, pool_size: int) -> int:
    """Number of flips M for a budget: an int is a count (capped at the pool),
    a float in [0, 1] a fraction of the candidate pool (rounded down)."""
    if isinstance(budget, bool):
        raise ValueError("budget must be an int count or a float fraction, not a bool")
    if isinstance(budget, Integral):
        if budget < 0:
            raise ValueError(f"budget count must be >= 0, got {budget}")
        return min(int(budget), pool_size)
    if isinstance(budget, Real):
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"budget fraction must be in [0, 1], got {budget}")
        # The epsilon keeps 0.3 * 10 == 3, not 2, despite binary floating point.
        return min(pool_size, math.floor(budget * pool_size + 1e-9))
    raise ValueError(f"budget must be an int count or a float fraction, got {budget!r}")


def relabel(y, flips) -> np.ndarray:
    """Reported labels: the true labels with the flipped users set to 1."""
    reported = np.array(y, dtype=np.int8, copy=True)
    reported[np.asarray(flips, dtype=bool)] = 1
    return reported


class Cell(NamedTuple):
    """One cell of a grid: its position and its (method, alpha, budget)."""

    index: int
    method_index: int
    method: str
    alpha_index: int
    alpha: float
    budget: float | int  # ints are counts, floats fractions of the pool


@dataclass(frozen=True)
class CellGrid:
    """The cells a run evaluates, in the one canonical order: method, alpha, budget."""

    methods: tuple[str, ...]
    alphas: tuple[float, ...]
    budgets: tuple  # ints are counts, floats fractions

    @classmethod
    def of(cls, methods, alphas, budgets) -> "CellGrid":
        budgets = tuple(int(b) if isinstance(b, Integral) and not isinstance(b, bool) else float(b) for b in budgets)
        return cls(tuple(str(m) for m in methods), tuple(float(a) for a in alphas), budgets)

    def __iter__(self) -> Iterator[Cell]:
        c = 0
        for i, method in enumerate(self.methods):
            for j, alpha in enumerate(self.alphas):
                for budget in self.budgets:
                    yield Cell(c, i, method, j, alpha, budget)
                    c += 1

    def __len__(self) -> int:
        return len(self.methods) * len(self.alphas) * len(self.budgets)

    @property
    def n_cells(self) -> int:
        return len(self)

    @property
    def method_of(self) -> np.ndarray:
        """Method position of every cell (vectorised cell loops)."""
        return np.repeat(np.arange(len(self.methods)), len(self.alphas) * len(self.budgets))

    @property
    def alpha_of(self) -> np.ndarray:
        """Alpha position of every cell."""
        return np.tile(np.repeat(np.arange(len(self.alphas)), len(self.budgets)), len(self.methods))

    # -- how a grid travels (message config, node files): budgets keep int vs float
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "methods": np.array(list(self.methods), dtype=str),
            "alphas": np.asarray(self.alphas, dtype=np.float64),
            "budgets": np.array([float(b) for b in self.budgets], dtype=np.float64),
            "budget_is_count": np.array([isinstance(b, int) for b in self.budgets], dtype=bool),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "CellGrid":
        budgets = tuple(int(v) if c else float(v)
                        for v, c in zip(np.asarray(arrays["budgets"]), np.asarray(arrays["budget_is_count"])))
        return cls.of((str(m) for m in np.asarray(arrays["methods"])), np.asarray(arrays["alphas"]).tolist(), budgets)

    def to_config(self) -> dict:
        """The grid as a Flower ConfigRecord's contents."""
        return {"methods": list(self.methods), "alphas": [float(a) for a in self.alphas],
                "budgets": [float(b) for b in self.budgets],
                "budget_is_count": [isinstance(b, int) for b in self.budgets]}

    @classmethod
    def from_config(cls, config) -> "CellGrid":
        return cls.from_arrays({key: np.asarray(list(config[key])) for key in
                                ("methods", "alphas", "budgets", "budget_is_count")})


@dataclass(frozen=True)
class Signal:
    """What the coalition's coordinator publishes: a membership cutoff per alpha, a
    threshold (score, tie ticket) per cell, and each cell's public summary
    (members, candidate pool, flips asked for)."""

    cutoffs: np.ndarray  # per alpha
    score: np.ndarray  # per cell: the M-th best candidate's score (inf: nobody flips)
    ticket: np.ndarray  # per cell: its tie ticket
    n_members: np.ndarray  # per alpha
    pool_size: np.ndarray  # per cell
    m: np.ndarray  # per cell

    @classmethod
    def none(cls, grid: CellGrid) -> "Signal":
        """What users act on when the coalition could not agree: thresholds nobody reaches."""
        n, k = len(grid), len(grid.alphas)
        return cls(np.zeros(k), np.full(n, np.inf), np.full(n, np.inf), np.zeros(k, dtype=np.int64),
                   np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    @property
    def reachable(self) -> bool:
        """Whether a candidate can reach any cell's threshold."""
        return bool(np.isfinite(self.score).any())

    # What users need to decide, and the public summary the experiment logs.
    def decision_arrays(self) -> dict[str, np.ndarray]:
        return {"cutoffs": self.cutoffs, "score": self.score, "ticket": self.ticket}

    def summary_arrays(self) -> dict[str, np.ndarray]:
        return {"n_members": self.n_members, "pool_size": self.pool_size, "m": self.m, "score": self.score}

    @classmethod
    def from_arrays(cls, decision: dict, summary: dict | None = None) -> "Signal":
        f64 = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        n = np.asarray(decision["score"]).size
        summary = summary or {"n_members": np.zeros(np.asarray(decision["cutoffs"]).size, dtype=np.int64),
                              "pool_size": np.zeros(n, dtype=np.int64), "m": np.zeros(n, dtype=np.int64)}
        return cls(f64(decision["cutoffs"]), f64(decision["score"]), f64(decision["ticket"]),
                   *(np.asarray(summary[k], dtype=np.int64) for k in ("n_members", "pool_size", "m")))


def record_of(**arrays):
    """A Flower ``ArrayRecord`` of numpy arrays."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def arrays_of(record) -> dict[str, np.ndarray]:
    """The numpy arrays of a Flower ``ArrayRecord``."""
    return {k: v.numpy() for k, v in record.items()}
