"""Training and evaluating the firm on label vectors: once, or along a whole grid.

The firm trains as usual on whatever labels it holds. An experiment asks it to
train on many label vectors that differ in a few rows (one per cell of a
grid), so :func:`train_cells` trains each distinct vector once, warm-starts
along chains of growing flips, and hands independent chains to an executor.
The vectorised engine and the Flower ServerApp both train through here, so
their metrics agree bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from agents.protocol import relabel

from .firm import Firm
from .metrics import counterfactual_metrics, fairness_metrics

__all__ = ["TestSet", "evaluate", "firm_design", "train_cells"]


@dataclass(frozen=True)
class TestSet:
    """What the firm is evaluated on (true labels; counterfactual features on synthetic data)."""

    X_test: np.ndarray
    y_test: np.ndarray
    a_test: np.ndarray
    X_test_cf: np.ndarray | None = None

    @property
    def has_counterfactual(self) -> bool:
        return self.X_test_cf is not None


def evaluate(firm: Firm, test: TestSet) -> dict[str, float]:
    """The firm's test metrics; on synthetic data also counterfactual success."""
    pred = firm.predict(test.X_test)
    out = fairness_metrics(test.y_test, pred, sensitive_features=test.a_test)
    if test.has_counterfactual:
        minority = test.a_test == 1
        pred_cf = firm.predict(test.X_test_cf[minority])
        proba = proba_cf = None
        if hasattr(firm.model_, "predict_proba"):
            proba = firm.predict_proba(test.X_test[minority])[:, 1]
            proba_cf = firm.predict_proba(test.X_test_cf[minority])[:, 1]
        out.update(counterfactual_metrics(pred[minority], pred_cf, proba=proba, proba_cf=proba_cf))
    return out


def firm_design(estimator, X: np.ndarray):
    """The training matrix handed to the firm: CSR when the one-hot data is sparse
    and the estimator accepts it (same model, ~2x faster Newton steps on Adult)."""
    try:
        accepts_sparse = estimator.__sklearn_tags__().input_tags.sparse
    except AttributeError:
        accepts_sparse = False
    if accepts_sparse and X.size and np.count_nonzero(X) / X.size < 0.3:
        return sparse.csr_matrix(X)
    return X


def _fit_chain(base: Firm, X, y_list: list[np.ndarray], test: TestSet, warm: bool,
               keep: bool = False) -> list:
    """Fit the firm on each label vector in turn, warm-starting along the chain; each
    fit's metrics, or (metrics, fitted firm) with ``keep``."""
    # One BLAS thread per process: two busy OpenBLAS pools on two cores spin
    # against each other and run several times slower than one.
    with threadpool_limits(1):
        out, previous = [], base
        for y in y_list:
            firm = previous.refit(X, y) if warm else Firm(base.estimator).fit(X, y)
            metrics = evaluate(firm, test)
            out.append((metrics, firm) if keep else metrics)
            previous = firm
        return out


def train_cells(
    estimator,
    X,
    y: np.ndarray,
    cells: list[tuple[object, np.ndarray]],
    test: TestSet,
    *,
    warm: bool = True,
    executor=None,
    on_fit: Callable[[int], None] | None = None,
    as_labels: bool = False,
    return_models: bool = False,
) -> tuple[dict, list[dict]] | tuple[dict, list[dict], tuple[Firm, list[Firm]]]:
    """The firm trained on the labels ``y`` and on each cell's reported labels.

    ``cells`` are ``(chain, flips)`` pairs: the reported labels are ``y`` with
    the flipped users set to 1 (the engine). With ``as_labels`` they are
    ``(chain, labels)`` pairs: the labels are trained exactly as given, changes
    from ``y`` in either direction (the firm, which trains on what was
    reported). Each distinct label vector is trained once;
    cells of the same ``chain`` (the engine uses (method, alpha)) are trained
    in increasing order of flips, each warm-started from the previous one.
    Independent chains go to ``executor.map(fn, tasks)`` (any object whose
    ``map`` yields results in task order, e.g. :mod:`simulations.executors`;
    default: one after the other in this process). Returns the base metrics
    and one dict per cell; with ``return_models`` also the fitted firms, as a
    third item ``(base firm, [firm per cell])`` (cells with the same labels
    share one fitted firm; a cell that relabels nobody gets the base firm), so
    a caller that goes on from these fits (many rounds) need not fit them again.
    """
    with threadpool_limits(1):
        base = Firm(estimator).fit(X, y)
    base_metrics = evaluate(base, test)
    if on_fit:
        on_fit(1)
    zero = _labels_key(np.zeros(len(y), dtype=bool))
    keys, chains, seen = [], {}, {zero}
    for group, change in cells:
        # The label vector and what differs from y (its key and its place in the chain).
        if as_labels:
            reported = np.asarray(change).astype(np.int8)
            changed = reported != np.asarray(y)
        else:
            reported, changed = None, np.asarray(change, dtype=bool)
        key = _labels_key(changed)
        keys.append(key)
        if key not in seen:
            seen.add(key)
            chains.setdefault(group, []).append((int(np.count_nonzero(changed)), key, change if reported is None
                                                 else reported))
    chain_list = [sorted(chain, key=lambda t: t[0]) for chain in chains.values()]
    as_vector = (lambda v: v) if as_labels else (lambda flips: relabel(y, flips))
    tasks = [(base, X, [as_vector(v) for _, _, v in chain], test, warm, return_models) for chain in chain_list]
    outputs = executor.map(_fit_chain, tasks) if executor is not None else (_fit_chain(*t) for t in tasks)
    results, firms = {zero: base_metrics}, {zero: base}
    for chain, metrics_list in zip(chain_list, outputs):
        for (_, key, _), metrics in zip(chain, metrics_list):
            if return_models:
                metrics, firms[key] = metrics
            results[key] = metrics
        if on_fit:
            on_fit(len(chain))
    if on_fit:  # cells whose label vector was already trained count as done too
        on_fit(len(cells) - sum(len(chain) for chain in chain_list))
    if return_models:
        return base_metrics, [results[key] for key in keys], (base, [firms[key] for key in keys])
    return base_metrics, [results[key] for key in keys]


def _labels_key(flips: np.ndarray) -> str:
    return hashlib.blake2b(np.packbits(flips).tobytes(), digest_size=16).hexdigest()
