"""The paper's comparison, per seed: firm-side baselines, a firm that fights back,
and a collective that adapts to it.

:func:`comparison_rows` runs after the vectorised step when a scenario has
``[baselines]`` or ``[defence]``: it adds to one seed's rows, on the same split
and world,

* ``family="firm"`` rows: each baseline of ``server.baselines`` over its
  trade-off grid (``param``, ``value``), trained on the *true* labels;
* defended rows (``defence`` = audit, ``action``): the labels the firm
  receives from an attacked cell are audited (``server.defences``), flagged
  rows dropped, downweighted or reverted, then the firm trains as usual.
  ``flagged`` counts flagged rows, ``flagged_true`` those that were flipped.
  The same audits on the unattacked labels (``method="base"``) price the
  defence when nobody attacks;
* the adaptive collective (``adaptive=True``): before flipping, the
  collective runs the confident-learning audit on what it can see itself --
  the majority reference rows and its own members, with their true labels,
  out-of-fold -- and drops from its pool every candidate that the audit's rule
  would call a confident negative if it claimed y=1. It then flips the top M
  of the remaining candidates by its usual score (M as in the plain cell,
  capped by what is left). Its rows are run undefended and under every
  defence.

Randomness comes from new named ``SeedSequence`` streams of the seed
(:func:`simulations.state.seed_streams`), never from the engine's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from agents.decision import relabel
from agents.protocol import CellGrid
from agents.validation import stream_int
from server.defences import confident_negatives
from server.firm import Firm
from server.training import evaluate, firm_design

from .rows import decision_rows
from .state import collective_decisions, seed_streams

__all__ = [
    "COMPARISON_COLUMNS",
    "adaptive_decisions",
    "auto_tolerance",
    "comparison_rows",
    "count_extra_fits",
    "defended_training",
    "implausible_candidates",
    "trusted_sample",
]

# Columns every row gets when a scenario compares (defaults = the plain collective).
COMPARISON_COLUMNS = {"family": "collective", "param": "", "value": np.nan, "defence": "none", "action": "none",
                      "adaptive": False, "flagged": 0, "flagged_true": 0}

# Baselines whose swept parameter acts only at predict time: one task for the whole front.
_ONE_FIT_FRONTS = {"threshold-optimizer", "calibrated-eqodds"}


def count_extra_fits(scenario) -> int:
    """An upper bound on the extra fits per seed (for progress bars)."""
    from server.baselines import BASELINES

    n = 0
    if scenario.baselines is not None:
        b = scenario.baselines
        n += sum(len(b.grids.get(m, BASELINES[m])) for m in b.methods)
    if scenario.defence is not None:
        d, c = scenario.defence, scenario.collective
        cells = len(d.selected("methods", c)) * len(d.selected("alphas", c)) * len(d.selected("budgets", c))
        per_labels = len(d.audits) * len(d.actions)
        n += per_labels * (1 + cells * (2 if d.adaptive else 1)) + (cells if d.adaptive else 0)
    return n


# ----------------------------------------------------------------------------- baselines


def _front_task(name, grid, params, X_train, y_train, a_train, X_test, y_test, a_test, estimator, random_state):
    from server.baselines import baseline_front

    with threadpool_limits(1):
        rows = baseline_front(name, X_train, y_train, a_train, X_test, y_test, a_test, grid=grid,
                              base_estimator=estimator, random_state=random_state, params=params)
    for row in rows:
        row.pop("y_pred")
    return rows


def baseline_rows(scenario, world, estimator, *, random_state: int, executor, on_fit=None) -> list[dict]:
    """Every ``[baselines]`` front on the seed's split (true labels), in config order."""
    from server.baselines import BASELINES

    cfg = scenario.baselines
    p = world.prepared
    data = (p.X_train, p.y_train, p.a_train, p.X_test, p.y_test, p.a_test)
    tasks = []  # one per grid point, except fronts that one fit serves
    for name in cfg.methods:
        grid = tuple(cfg.grids.get(name, BASELINES[name]))
        params = dict(cfg.params.get(name, {}))
        chunks = [grid] if name in _ONE_FIT_FRONTS else [(v,) for v in grid]
        tasks += [(name, chunk, params) for chunk in chunks]
    out = executor.map(_front_task, [(name, chunk, params, *data, estimator, random_state)
                                     for name, chunk, params in tasks])
    rows = []
    for (name, chunk, _), front in zip(tasks, out):
        for row in front:
            rows.append({"family": "firm", "method": name, "param": row.pop("param"), "value": float(row.pop("value")),
                         "flips": int(row.pop("n_flips", 0)), **{k: v for k, v in row.items() if k != "baseline"}})
        if on_fit:
            on_fit(len(chunk))
    return rows


# ------------------------------------------------------------------------------ defences


def trusted_sample(world, size: int, seq: np.random.SeedSequence) -> np.ndarray:
    """Training rows whose true labels the firm verified (sorted positions)."""
    n = world.prepared.y_train.size
    rng = np.random.default_rng(seq)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def auto_tolerance(y_trusted, a_trusted, group: int = 1) -> float:
    """Two standard errors of the trusted sample's positive rate in ``group``.

    The trusted-sample audit flags the excess of received positives over the
    trusted rate; with a small sample that rate's noise alone would flag rows.
    """
    y = np.asarray(y_trusted)[np.asarray(a_trusted) == group]
    if y.size == 0:
        return 0.0
    rate = y.mean()
    return float(2.0 * math.sqrt(rate * (1.0 - rate) / y.size))


def defended_training(action: str, received, flags, *, flag_weight: float = 0.5):
    """(keep mask, labels, sample_weight) the firm trains on after ``action`` on flagged rows.

    Delegates to ``server.defences.apply_action`` on the labels; ``keep`` is
    the row mask to apply to the firm's (possibly sparse) design matrix.
    """
    from server.defences import apply_action

    flags = np.asarray(flags, dtype=bool)
    received = np.asarray(received)
    _, y, weight = apply_action(action, np.zeros((received.size, 0)), received, flags, flag_weight=flag_weight)
    keep = ~flags if action == "drop" else np.ones(received.size, dtype=bool)
    return keep, y, weight


@dataclass(frozen=True)
class _DefenceSetup:
    audits: tuple
    actions: tuple
    cv: int
    flag_weight: float
    tolerance: float
    trusted: tuple  # (X, y, a) with true labels
    random_state: int


def _defend_task(flips, run_undefended, X_dense, X_fit, y_true, a, estimator, test, setup: _DefenceSetup):
    """Audit the labels received from ``flips`` with every audit, act, train, evaluate."""
    from server.defences import audit

    received = relabel(y_true, flips).astype(np.int64)
    out = []
    with threadpool_limits(1):
        if run_undefended:
            firm = Firm(estimator).fit(X_fit, received)
            out.append({"defence": "none", "action": "none", "flagged": 0, "flagged_true": 0, **evaluate(firm, test)})
        for name in setup.audits:
            params = {"estimator": estimator}
            if name == "confident-learning":
                params["cv"] = setup.cv
            else:
                params["tolerance"] = setup.tolerance
            flags = audit(name, X_dense, received, a, random_state=setup.random_state,
                          trusted=setup.trusted if name == "trusted-sample" else None, **params)
            for action in setup.actions:
                keep, y, weight = defended_training(action, received, flags, flag_weight=setup.flag_weight)
                firm = Firm(estimator).fit(X_fit[keep] if action == "drop" else X_fit, y, sample_weight=weight)
                out.append({"defence": name, "action": action, "flagged": int(flags.sum()),
                            "flagged_true": int((flags & flips).sum()), **evaluate(firm, test)})
    return out


# ------------------------------------------------------------------- adaptive collective


def implausible_candidates(world, members, estimator, *, cv: int, seq: np.random.SeedSequence) -> np.ndarray:
    """Candidates (members with y=0) a confident-learning audit would flag as positives.

    The collective sees only the majority reference rows and its own members,
    with their true labels; it computes out-of-fold P(y=1) on them and applies
    the audit's own rule (:func:`server.defences.confident_negatives`): a
    claimed positive is implausible if the rule calls it a confident negative.
    """
    p = world.prepared
    rows = np.union1d(world.reference, np.flatnonzero(members))
    X, y = p.X_train[rows], p.y_train[rows].astype(np.int64)
    out = np.zeros(p.y_train.size, dtype=bool)
    if rows.size == 0 or np.bincount(y, minlength=2).min() < cv:
        return out  # too little data to imitate the audit: nothing looks implausible
    folds = StratifiedKFold(cv, shuffle=True, random_state=stream_int(seq))
    with threadpool_limits(1):
        p1 = cross_val_predict(clone(estimator), X, y, cv=folds, method="predict_proba")[:, 1]
    flagged, _ = confident_negatives(p1, y)
    candidates = members[rows] & (y == 0)
    out[rows[candidates & flagged]] = True
    return out


def adaptive_decisions(world, grid, scores, candidates, implausible_for):
    """The coalition rule with implausible candidates held back.

    ``implausible_for(alpha, members)`` returns the candidates to leave out at
    that collective size. M = the plain cell's ``budget_count(budget, pool)``,
    capped by the plausible candidates; the top M of them by (score, tie
    ticket) flip.
    """
    held_back = np.array([implausible_for(alpha, world.members(alpha))[candidates] for alpha in grid.alphas])
    return collective_decisions(world, grid, scores, candidates, held_back=held_back)


# ---------------------------------------------------------------------------------- hook


def comparison_rows(scenario, state, rows: list[dict], *, common: dict, estimator, executor,
                    on_fit=None) -> list[dict]:
    """The seed's rows with comparison columns, plus baseline, defended and adaptive rows.

    ``rows`` are the engine's (base first, then one per cell, in grid order)
    for ``state``, the seed's state after the collective's step; ``common``
    the columns every row of the seed shares (configuration, seed, sizes).
    """
    world, decisions = state.world, state.decisions
    streams = seed_streams(world.seed)
    rows = [{**row, **COMPARISON_COLUMNS, "family": "base" if i == 0 else "collective"} for i, row in enumerate(rows)]
    p = world.prepared

    def row_like(**values):
        return {**common, "alpha": np.nan, "budget": np.nan, "budget_kind": "none", "n_members": 0,
                "pool_size": 0, "m": 0, "flips": 0, "threshold": np.nan, **COMPARISON_COLUMNS, **values}

    if scenario.baselines is not None:
        seed = stream_int(streams["baselines"])
        for row in baseline_rows(scenario, world, estimator, random_state=seed, executor=executor, on_fit=on_fit):
            rows.append(row_like(**row))

    d = scenario.defence
    if d is not None:
        c = scenario.collective
        attacked = CellGrid.of(*(d.selected(name, c) for name in ("methods", "alphas", "budgets")))
        t_idx = trusted_sample(world, d.trusted_size, streams["trusted"])
        trusted = (p.X_train[t_idx], p.y_train[t_idx], p.a_train[t_idx])
        tolerance = auto_tolerance(trusted[1], trusted[2]) if d.tolerance == "auto" else float(d.tolerance)
        setup = _DefenceSetup(d.audits, d.actions, d.cv, float(d.flag_weight), tolerance, trusted,
                              stream_int(streams["defence"]))
        jobs = [({"family": "base", "method": "base", "alpha": 0.0, "budget": 0.0, "flips": 0},
                 np.zeros(p.y_train.size, dtype=bool), False)]
        keys = {(cell.method, cell.alpha, _budget_key(cell.budget)) for cell in attacked}
        for cell, columns in zip(state.grid, decision_rows(decisions)):
            if (cell.method, cell.alpha, _budget_key(cell.budget)) in keys:
                jobs.append(({"family": "collective", **columns}, decisions.mask(cell.index), False))
        if d.adaptive:
            cache: dict = {}

            def implausible_for(alpha, members):
                if alpha not in cache:  # one audit imitation per collective, shared by methods
                    cache[alpha] = implausible_candidates(world, members, estimator, cv=d.cv, seq=streams["adaptive"])
                return cache[alpha]

            # The attacked grid's candidates and their scores, taken from the state's.
            candidates = world.candidates(max(attacked.alphas))
            rows_of = {m: i for i, m in enumerate(state.grid.methods)}
            position = np.searchsorted(decisions.candidates, candidates)
            scores = state.scores[[rows_of[m] for m in attacked.methods]][:, position]
            adaptive = adaptive_decisions(world, attacked, scores, candidates, implausible_for)
            for cell, columns in zip(attacked, decision_rows(adaptive)):
                jobs.append(({"family": "collective", **columns, "adaptive": True}, adaptive.mask(cell.index), True))
        X_fit = firm_design(estimator, p.X_train)
        outputs = executor.map(_defend_task, [(flips, undefended, p.X_train, X_fit, p.y_train, p.a_train, estimator,
                                               world.test, setup) for _, flips, undefended in jobs])
        for (values, _, _), results in zip(jobs, outputs):
            for result in results:
                rows.append(row_like(**values, **result))
            if on_fit:
                on_fit(len(results))
    return rows


def _budget_key(budget) -> tuple:
    """Budget equality that keeps the int count 1 apart from the fraction 1.0."""
    return (isinstance(budget, int), budget)
