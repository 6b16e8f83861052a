"""Fairness metrics for a binary classifier and a binary sensitive attribute.

Group 1 is the protected minority, group 0 the majority. Signed differences are
always ``group 1 - group 0``. Everything follows from the 8 confusion cells
(a, y, pred), counted with a few vectorised ``np.count_nonzero`` calls, so a call on
~15k rows costs ~0.1 ms (the engine calls it ~1000 times per sweep; fairlearn's
MetricFrame takes hundreds of ms on the same input).

Undefined rates (a group without positives, negatives or members) are ``nan``;
no RuntimeWarning is emitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agents.validation import as_binary

__all__ = ["fairness_metrics", "counterfactual_metrics", "group_table"]


def _as_binary(values, name: str) -> np.ndarray:
    """A 1-D uint8 array of 0/1 (bool-viewable), or a ValueError naming ``name``."""
    return as_binary(values, name).astype(np.uint8)


def _check_lengths(**arrays: np.ndarray) -> int:
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"input lengths must match, got {listed}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"inputs are empty; need at least one row ({', '.join(lengths)})")
    return n


def _counts(y_true, y_pred, sensitive_features) -> list[list[list[int]]]:
    """Validated confusion counts as nested Python ints indexed ``[a][y][pred]``.

    Eight boolean count_nonzero calls (totals and group 1) are cheaper than building
    a cell code for np.bincount; group 0 and the remaining cells follow by subtraction.
    """
    y = _as_binary(y_true, "y_true").view(bool)
    p = _as_binary(y_pred, "y_pred").view(bool)
    a = _as_binary(sensitive_features, "sensitive_features").view(bool)
    n = _check_lengths(y_true=y, y_pred=p, sensitive_features=a)
    nnz = np.count_nonzero
    yp, ya = y & p, y & a
    # rows, positives, selected, true positives; int() so results are plain Python numbers
    total = (n, int(nnz(y)), int(nnz(p)), int(nnz(yp)))
    group1 = (int(nnz(a)), int(nnz(ya)), int(nnz(p & a)), int(nnz(yp & a)))
    group0 = tuple(t - g for t, g in zip(total, group1))
    cells = []
    for rows, pos, sel, tp in (group0, group1):
        fp, fn = sel - tp, pos - tp
        cells.append([[rows - pos - fp, fp], [fn, tp]])
    return cells


def _ratio(num: int, den: int) -> float:
    return num / den if den else np.nan


def _rates(c: list[list[int]]) -> dict[str, float]:
    """Rates of one group from its counts ``c[y][pred]`` (plain floats: 8 numbers
    do not need numpy, and scalar arithmetic keeps the call cheap)."""
    (tn, fp), (fn, tp) = c
    count = tn + fp + fn + tp
    return {
        "count": count,
        "selection_rate": _ratio(tp + fp, count),
        "tpr": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "error": _ratio(fp + fn, count),
        "base_rate": _ratio(tp + fn, count),
    }


def _abs_mean(x: float, y: float) -> float:
    return (abs(x) + abs(y)) / 2.0  # nan if either is nan


def _abs_max(x: float, y: float) -> float:
    # Python's max() would silently drop a nan depending on argument order.
    return np.nan if np.isnan(x) or np.isnan(y) else max(abs(x), abs(y))


def fairness_metrics(y_true, y_pred, *, sensitive_features) -> dict[str, float]:
    """Accuracy and group-fairness metrics of binary predictions.

    ``sensitive_features`` is 0/1 with 1 = protected minority. Keys: ``error``,
    ``accuracy``, ``n``; ``sp_diff`` = |sel_1 - sel_0|; ``eqod`` = mean(|dTPR|, |dFPR|)
    (the paper's EqOd); ``eqod_max`` = max(|dTPR|, |dFPR|) (fairlearn's
    ``equalized_odds_difference``); ``eopp_diff`` = |dTPR|; signed ``sp_signed``,
    ``tpr_signed``, ``fpr_signed`` (group 1 - group 0); per-group ``tpr_g``,
    ``fpr_g``, ``sel_g``, ``error_g``, ``base_rate_g`` for g in {0, 1}.
    """
    c = _counts(y_true, y_pred, sensitive_features)
    g0, g1 = _rates(c[0]), _rates(c[1])
    n = g0["count"] + g1["count"]
    errors = c[0][0][1] + c[0][1][0] + c[1][0][1] + c[1][1][0]
    d_tpr = g1["tpr"] - g0["tpr"]
    d_fpr = g1["fpr"] - g0["fpr"]
    d_sel = g1["selection_rate"] - g0["selection_rate"]
    return {
        "error": errors / n,
        "accuracy": (n - errors) / n,
        "n": n,
        "sp_diff": abs(d_sel),
        "eqod": _abs_mean(d_tpr, d_fpr),
        "eqod_max": _abs_max(d_tpr, d_fpr),
        "eopp_diff": abs(d_tpr),
        "sp_signed": d_sel,
        "tpr_signed": d_tpr,
        "fpr_signed": d_fpr,
        "tpr_0": g0["tpr"],
        "tpr_1": g1["tpr"],
        "fpr_0": g0["fpr"],
        "fpr_1": g1["fpr"],
        "sel_0": g0["selection_rate"],
        "sel_1": g1["selection_rate"],
        "error_0": g0["error"],
        "error_1": g1["error"],
        "base_rate_0": g0["base_rate"],
        "base_rate_1": g1["base_rate"],
    }


def _as_proba(values, name: str) -> np.ndarray:
    """1-D positive-class probabilities; an (n, 2) predict_proba output is accepted."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] in (1, 2):
        arr = arr[:, -1]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D or (n, 2) predict_proba output, got shape {arr.shape}")
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also rejects nan
        raise ValueError(f"{name} must contain probabilities in [0, 1]")
    return arr


def counterfactual_metrics(pred, pred_cf, *, proba=None, proba_cf=None) -> dict[str, float]:
    """Counterfactual consistency of predictions under flipping the sensitive attribute.

    ``pred`` = h(x) and ``pred_cf`` = h(x with A <- 0) on the same (minority) rows.
    ``success`` = mean(pred == pred_cf), the paper's S; ``cf_gap`` = mean |proba -
    proba_cf| when both probabilities are given, else 1 - success; ``n_cf`` = rows
    compared (not ``n``, so the dict can be merged into fairness_metrics' output).
    """
    p = _as_binary(pred, "pred")
    p_cf = _as_binary(pred_cf, "pred_cf")
    if (proba is None) != (proba_cf is None):
        raise ValueError("give both proba and proba_cf, or neither")
    arrays = {"pred": p, "pred_cf": p_cf}
    if proba is not None:
        arrays["proba"] = _as_proba(proba, "proba")
        arrays["proba_cf"] = _as_proba(proba_cf, "proba_cf")
    n = _check_lengths(**arrays)
    success = float(np.count_nonzero(p == p_cf)) / n
    if proba is not None:
        cf_gap = float(np.abs(arrays["proba"] - arrays["proba_cf"]).mean())
    else:
        cf_gap = 1.0 - success
    return {"success": success, "cf_gap": cf_gap, "n_cf": n}


def group_table(y_true, y_pred, *, sensitive_features) -> pd.DataFrame:
    """Per-group table, like fairlearn ``MetricFrame.by_group`` plus an overall row.

    Index ``group`` = [0, 1, "overall"]; columns count, selection_rate, tpr, fpr, error.
    """
    c = _counts(y_true, y_pred, sensitive_features)
    overall = [[c[0][y][p] + c[1][y][p] for p in (0, 1)] for y in (0, 1)]
    rows = [_rates(c[0]), _rates(c[1]), _rates(overall)]
    columns = ["count", "selection_rate", "tpr", "fpr", "error"]
    table = pd.DataFrame([{k: r[k] for k in columns} for r in rows], columns=columns)
    table.index = pd.Index([0, 1, "overall"], dtype=object, name="group")
    return table.astype({"count": np.int64, **{k: np.float64 for k in columns[1:]}})
