"""The experimenter's evaluator: every cell of the grid, from users' counterfactual rows.

Not the firm. A real firm receives one label per user and cannot tell a
flipped label from a true one; the experiment wants more: for every cell of
the grid (methods x alphas x budgets), what the firm *would* train and who
flipped. In simulation (run config ``mode = "evaluate"``) the ServerApp plays
this role instead of the firm: an ``evaluate.cells`` wave asks each user node
for its counterfactual rows -- row 0 the true labels, then the reported labels
of every cell -- validates them with the firm's own intake
(:mod:`server.reports`), and trains every cell with
:func:`server.training.train_cells`, the vectorised engine's own code (same
design matrix, same warm-start chains in the same order), so the metrics equal
the engine's bit for bit. Flips are counted per cell against row 0, in both
directions.

Many rounds with ``[dynamics] reports = "accumulate"`` (``reports_window``): the
evaluator keeps each round's validated rows and trains every cell on the last
``window`` rounds' rows stacked, oldest first (each round one more copy of every
training row, as :class:`simulations.dynamics.CollectiveDynamics` stacks them);
flips are still this round's.

Many rounds with ``[dynamics] participation = "benefit-cost"`` (``public``): after each
round the evaluator publishes what the firm makes public for next round
(:meth:`Evaluator.published`): for ``own-outcome`` each cell's logistic model
(``coef``, ``intercept``: members compute their own favourable probability locally)
and round 1's base model's; for ``group-rates`` each cell's favourable rate per
group (``rates``: ``sel_0``, ``sel_1``) and round 1's base model's. Nothing else.

A deployment (``mode = "deploy"``) never runs it: there the firm's
``train.report`` wave carries one reported label per user and nothing else.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse

from agents.protocol import EVALUATE, CellGrid

from .reports import Intake, assemble
from .training import TestSet, firm_design, train_cells

__all__ = ["Evaluator", "cell_metrics", "flip_counts", "stacked"]


class _Workers:
    """The evaluator's own worker processes for its grid of fits (results in task order)."""

    def __init__(self, n_jobs: int):
        self.n_jobs = n_jobs

    def map(self, fn, tasks):
        return Parallel(n_jobs=self.n_jobs, return_as="generator")(delayed(fn)(*task) for task in tasks)


def cell_metrics(table: dict, cells: CellGrid, *, estimator, test: TestSet, warm: bool = True,
                 n_jobs: int = 1) -> list[dict]:
    """Train on row 0 (nobody relabels) and on every cell's reported labels; evaluate each.

    Row ``r > 0`` is cell ``r - 1``'s reported labels, trained exactly as given
    (a 1 -> 0 change is trained as 0), along warm-start chains exactly as the
    vectorised engine does: one chain per (method, alpha). Returns the base
    metrics followed by one dict per cell.
    """
    return _train(cells, firm_design(estimator, table["X"]), table["labels"], estimator=estimator, test=test,
                  warm=warm, n_jobs=n_jobs)


def _train(cells: CellGrid, X, labels, *, estimator, test: TestSet, warm: bool, n_jobs: int,
           models: list | None = None) -> list[dict]:
    """Base and per-cell metrics; the fitted firms (base first) appended to ``models`` when given
    (only then do the workers send the fitted models back)."""
    chained = [((cell.method, cell.alpha), labels[cell.index + 1]) for cell in cells]
    out = train_cells(estimator, X, labels[0], chained, test, warm=warm, as_labels=True,
                      executor=_Workers(n_jobs) if n_jobs != 1 else None, return_models=models is not None)
    if models is not None:
        base_firm, firms = out[2]
        models.extend([base_firm, *firms])
    return [out[0], *out[1]]


def linear_model(firm) -> tuple[np.ndarray, np.ndarray]:
    """A binary logistic firm's (coef, intercept) for label 1, what ``own-outcome`` publishes;
    ``ValueError`` for any other model (members could not compute their outcome from it)."""
    model = getattr(firm, "model_", None)
    coef, intercept = getattr(model, "coef_", None), getattr(model, "intercept_", None)
    if coef is None or intercept is None or np.shape(coef)[0] != 1 or list(model.classes_) != [0, 1]:
        raise ValueError(f"the firm's model {type(model).__name__} publishes no binary logistic coefficients; "
                         "allowed: public own-outcome with firm model 'logistic-regression'")
    return np.asarray(coef[0], dtype=np.float64), np.asarray(intercept, dtype=np.float64).ravel()


def stacked(tables, estimator) -> tuple:
    """The design and label rows of several rounds' tables, stacked oldest first (the
    firm's design per round, then stacked, as the vectorised model stacks its design)."""
    designs = [firm_design(estimator, t["X"]) for t in tables]
    X = sparse.vstack(designs, format="csr") if sparse.issparse(designs[0]) else np.vstack(designs)
    return X, np.concatenate([t["labels"] for t in tables], axis=1)


def flip_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the reported labels that differ from row 0: (0 -> 1, 1 -> 0)."""
    base, rows = labels[0], labels[1:]
    return ((rows == 1) & (base == 0)).sum(axis=1), ((rows == 0) & (base == 1)).sum(axis=1)


@dataclass
class Evaluator:
    """The evaluator's side of a run: its grid, the model it simulates and the test set."""

    cells: CellGrid
    estimator: object
    test: TestSet
    order: np.ndarray  # the customer list: rows of the table follow it
    warm: bool = True
    n_jobs: int = 1
    table: dict | None = field(default=None, repr=False)  # the last accepted counterfactual rows
    window: int | None = 1  # rounds of rows the cells train on (None: all; many rounds, reports = "accumulate")
    history: deque = field(default_factory=deque, repr=False)  # the last ``window`` rounds' accepted rows
    public: tuple = ()  # benefit-cost: what the firm publishes after each round ("own-outcome", "group-rates")
    published: dict | None = field(default=None, repr=False)  # arrays for next round's members (None: nothing)
    reference: dict | None = field(default=None, repr=False)  # round 1's base model and rates

    message_type = EVALUATE
    name = "evaluator"

    @property
    def n_label_rows(self) -> int:
        return len(self.cells) + 1

    def assess(self, intake: Intake, n_replies: int) -> dict:
        """Train every cell on the accepted rows; the round's record (flips and metrics per cell)."""
        table = assemble(intake.accepted, order=self.order)
        if table is None:
            zeros = np.zeros(len(self.cells), dtype=np.int64)
            return {"n_train": 0, "n_minority": 0,
                    "training": f"skipped: no report was accepted ({n_replies} replies, {intake.n_rejected} rejected)",
                    **self._flips(zeros, zeros), "metrics": None}
        self.table = table
        self.history.append(table)
        while self.window is not None and len(self.history) > self.window:
            self.history.popleft()
        models: list | None = [] if self.public else None
        if len(self.history) == 1:
            metrics = _train(self.cells, firm_design(self.estimator, table["X"]), table["labels"],
                             estimator=self.estimator, test=self.test, warm=self.warm, n_jobs=self.n_jobs,
                             models=models)
        else:
            X, labels = stacked(self.history, self.estimator)
            metrics = _train(self.cells, X, labels, estimator=self.estimator, test=self.test, warm=self.warm,
                             n_jobs=self.n_jobs, models=models)
        if self.public:
            self._publish(models, metrics)
        return {"n_train": int(table["user_ids"].size), "n_minority": int((table["a"] == 1).sum()),
                "training": "trained", **self._flips(*flip_counts(table["labels"])), "metrics": metrics}

    def _publish(self, models: list, metrics: list[dict]) -> None:
        """What members see of this round's models next round (only what ``public`` allows),
        against round 1's base model (what the firm published before any collective acted)."""
        rates = np.array([[m["sel_0"], m["sel_1"]] for m in metrics], dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        if "own-outcome" in self.public:
            linear = [linear_model(f) for f in models]
            out["coef"] = np.stack([c for c, _ in linear[1:]])
            out["intercept"] = np.concatenate([i for _, i in linear[1:]])
        if "group-rates" in self.public:
            out["rates"] = rates[1:]
        if self.reference is None:
            self.reference = {}
            if "own-outcome" in self.public:
                self.reference["base_coef"], self.reference["base_intercept"] = linear[0]
            if "group-rates" in self.public:
                self.reference["base_rates"] = rates[0]
        self.published = {**out, **self.reference}

    @staticmethod
    def _flips(up, down) -> dict:
        return {"flips": (up + down).tolist(),  # reported labels that differ from row 0, per cell
                "flips_0_to_1": up.tolist(), "flips_1_to_0": down.tolist()}
