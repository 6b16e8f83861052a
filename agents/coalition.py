"""The coalition's coordinator and the shared signal, as pure numpy functions.

The coordinator is the collective's organiser, not the firm. Members send it
only what the rule needs: first the membership tickets of minority users who
join (so it can size the collective for each alpha), then, for members with a
negative label, their (score, tie ticket) per method. It answers with the
membership cutoffs and the threshold of every (method, alpha, budget) cell.
The same functions of :mod:`agents.decision` as in the vectorised engine do
the work, so a Flower run decides exactly like the engine.

The shared signal is what the collective knows of the majority: for
``rb-prob`` the fitted classifier's parameters (a few numbers), for the
neighbour methods the majority reference rows themselves. Users rebuild the
fitted scorers from it and score themselves locally.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .decision import (
    budget_count,
    coalition_threshold,
    member_count,
    membership_cutoff,
)

# scikit-learn is imported only where a scorer is built: on a device every
# message is a fresh process, and the join and report steps need no scorer.

__all__ = [
    "CellPlan",
    "Thresholds",
    "budgets_from_arrays",
    "budgets_to_arrays",
    "cell_plan",
    "coalition_thresholds",
    "membership_cutoffs",
    "scorers_from_signal",
    "signal_digest",
    "signal_from_reference",
]


@dataclass(frozen=True)
class CellPlan:
    """The grid of cells in the engine's row order: for method, for alpha, for budget."""

    methods: tuple[str, ...]
    alphas: tuple[float, ...]
    budgets: tuple  # ints are counts, floats fractions

    def __iter__(self):
        for i, method in enumerate(self.methods):
            for j, alpha in enumerate(self.alphas):
                for budget in self.budgets:
                    yield i, method, j, alpha, budget

    @property
    def n_cells(self) -> int:
        return len(self.methods) * len(self.alphas) * len(self.budgets)


def cell_plan(methods, alphas, budgets) -> CellPlan:
    return CellPlan(tuple(str(m) for m in methods), tuple(float(a) for a in alphas), tuple(budgets))


def budgets_to_arrays(budgets) -> tuple[np.ndarray, np.ndarray]:
    """Budgets as (values, is_count) arrays: int counts and float fractions survive a file."""
    values = np.array([float(b) for b in budgets], dtype=np.float64)
    is_count = np.array([isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in budgets])
    return values, is_count


def budgets_from_arrays(values, is_count) -> tuple:
    return tuple(int(v) if c else float(v) for v, c in zip(np.asarray(values), np.asarray(is_count)))


# ------------------------------------------------------------------ coordinator


def membership_cutoffs(member_tickets, alphas) -> np.ndarray:
    """One ticket cutoff per alpha from the tickets of every minority user who joined."""
    tickets = np.asarray(member_tickets, dtype=np.float64).ravel()
    n_minority = tickets.size
    return np.array(
        [membership_cutoff(tickets, member_count(float(a), n_minority)) for a in alphas],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class Thresholds:
    """The coordinator's answer: one threshold per cell, plus the public summary."""

    cutoffs: np.ndarray  # per alpha
    score: np.ndarray  # per cell
    ticket: np.ndarray  # per cell
    n_members: np.ndarray  # per alpha
    pool_size: np.ndarray  # per cell
    m: np.ndarray  # per cell


def coalition_thresholds(
    plan: CellPlan,
    cutoffs,
    n_members,
    member_tickets,
    tie_tickets,
    scores,
) -> Thresholds:
    """Thresholds of every cell from the candidates' (member ticket, tie ticket, scores).

    ``scores`` has one row per method of ``plan`` and one column per candidate
    (a member at the largest alpha whose label is 0). The pool of a cell is the
    candidates whose member ticket is below that alpha's cutoff.
    """
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    member_tickets = np.asarray(member_tickets, dtype=np.float64).ravel()
    tie_tickets = np.asarray(tie_tickets, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).reshape(len(plan.methods), member_tickets.size)
    n = plan.n_cells
    out_score, out_ticket = np.empty(n), np.empty(n)
    pool_size, m_out = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for c, (i, _, j, _, budget) in enumerate(plan):
        pool = np.flatnonzero(member_tickets < cutoffs[j])
        m = budget_count(budget, pool.size)
        t = coalition_threshold(scores[i, pool], tie_tickets[pool], m)
        out_score[c], out_ticket[c], pool_size[c], m_out[c] = t.score, t.ticket, pool.size, m
    return Thresholds(cutoffs, out_score, out_ticket, np.asarray(n_members, dtype=np.int64), pool_size, m_out)


# ------------------------------------------------------------------ shared signal


def signal_from_reference(methods, X_ref, y_ref, *, k: int = 10) -> dict[str, np.ndarray]:
    """The collective's shared signal for ``methods`` from its majority reference rows.

    Keys are ``<method>/<part>``; every value is a plain array, so the signal
    travels as one Flower ``ArrayRecord``.
    """
    from sklearn.linear_model import LogisticRegression

    from .scoring import RBProb

    X_ref = np.asarray(X_ref, dtype=np.float64)
    y_ref = np.asarray(y_ref).astype(np.int8)
    out: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "rb-prob":
            scorer = RBProb().fit(X_ref, y_ref)
            est = scorer.estimator_
            if est is None:  # one class only: a constant score
                out["rb-prob/constant"] = scorer.classes_seen_.astype(np.float64)
            elif isinstance(est, LogisticRegression):
                out["rb-prob/coef"] = est.coef_
                out["rb-prob/intercept"] = est.intercept_
                out["rb-prob/classes"] = est.classes_
            else:  # a classifier we cannot rebuild from parameters: ship the rows
                out["rb-prob/X"], out["rb-prob/y"] = X_ref, y_ref
        elif method == "rb-label":
            out["rb-label/X"], out["rb-label/y"] = X_ref, y_ref
        elif method == "rb-dist":
            positives = y_ref == 1
            out["rb-dist/X"], out["rb-dist/y"] = X_ref[positives], y_ref[positives]
        # random and oracle need nothing from the majority
    out["k"] = np.array([int(k)], dtype=np.int64)
    return out


def signal_digest(signal: dict[str, np.ndarray]) -> str:
    """A content hash, so users can cache the scorers rebuilt from a signal."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(signal):
        arr = np.ascontiguousarray(signal[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def scorers_from_signal(methods, signal: dict[str, np.ndarray]) -> dict:
    """Fitted scorers, one per method, rebuilt from the shared signal."""
    from sklearn.linear_model import LogisticRegression

    from .scoring import RBProb, make_scorer

    k = int(np.asarray(signal["k"]).ravel()[0])
    dummy_X, dummy_y = np.zeros((1, 1)), np.zeros(1, dtype=np.int8)
    out = {}
    for method in methods:
        if method == "rb-prob" and "rb-prob/coef" in signal:
            est = LogisticRegression(solver="newton-cholesky", max_iter=1000)
            est.coef_ = np.asarray(signal["rb-prob/coef"], dtype=np.float64)
            est.intercept_ = np.asarray(signal["rb-prob/intercept"], dtype=np.float64)
            est.classes_ = np.asarray(signal["rb-prob/classes"])
            est.n_features_in_ = est.coef_.shape[1]
            scorer = RBProb()
            scorer.classes_seen_, scorer.estimator_ = est.classes_, est
        elif method == "rb-prob" and "rb-prob/constant" in signal:
            scorer = RBProb()
            scorer.classes_seen_ = np.asarray(signal["rb-prob/constant"]).astype(np.int8)
            scorer.estimator_ = None
        elif f"{method}/X" in signal:
            scorer = make_scorer(method, k=k).fit(signal[f"{method}/X"], signal[f"{method}/y"])
        else:  # random, oracle: fit only checks its input
            scorer = make_scorer(method, k=k).fit(dummy_X, dummy_y)
        out[method] = scorer
    return out
