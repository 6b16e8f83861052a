"""Which budget M a number is reported at: three selections, each named and described.

A collective cell is (method, alpha, budget M); the firm's metrics depend on M,
so any "EqOd of a method at alpha" first picks M. Three rules:

``paper``
    The paper's convention: per seed, the M with the lowest *test* EqOd, then
    the mean over seeds. Optimistic: the choice sees the test set, per seed.
``fixed``
    The best fixed budget: per (method, alpha), the one M whose seed-mean test
    EqOd is lowest; every seed is reported at that M. Still chosen on the test
    set, but once for all seeds, not per seed.
``validation``
    Per seed, the M with the lowest *validation* EqOd (``val_eqod``), then the
    test metrics at that M. The validation columns come from a pilot firm
    trained without a held-out part of the training users and scored on that
    part's true labels, so this choice never reads the test set. Available when
    runs.csv has ``val_eqod`` values (the column contract:
    :data:`VALIDATION_COLUMNS` on every base and cell row, NaN when absent).

Ties go to the smaller budget (fewer flips).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..rows import BASE

__all__ = [
    "DESCRIPTIONS",
    "SELECTIONS",
    "TITLES",
    "VALIDATION_COLUMNS",
    "available_selections",
    "budget_label",
    "edge_table",
    "edge_warnings",
    "has_validation",
    "methods_in_order",
    "plain_runs",
    "select_budgets",
]

SELECTIONS = ("validation", "fixed", "paper")  # the order of every table: the honest choice first
VALIDATION_COLUMNS = ("val_error", "val_eqod", "val_sp_diff", "val_eopp_diff")
TITLES = {
    "validation": "Budget chosen on validation",
    "fixed": "Best fixed budget",
    "paper": "Best M per seed (the paper's convention)",
}
DESCRIPTIONS = {
    "validation": "per seed, method and α, the M with the lowest validation {name} (a pilot firm trained without a "
                  "held-out part of the training users, scored on that part's true labels), then the test metrics "
                  "at that M; the test set is not read.",
    "fixed": "per method and α, the one M whose seed-mean test {name} is lowest, every seed reported at that M; "
             "chosen on the test set, but once for all seeds, not per seed.",
    "paper": "per seed, method and α, the M with the lowest test {name}; optimistic: selected on the test set, "
             "per seed.",
}
_KEYS = ["seed", "method", "alpha"]


def plain_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The base and undefended collective rows (drops firm-side, defended and adaptive rows, if any)."""
    if "family" not in runs.columns:
        return runs
    keep = (runs["family"].isin(["base", "collective"]) & (runs["defence"].astype(str) == "none")
            & ~runs["adaptive"].astype(bool))
    return runs[keep]


def methods_in_order(runs: pd.DataFrame) -> list[str]:
    """Collective methods in the order they first appear (the scenario's order)."""
    return [m for m in pd.unique(plain_runs(runs)["method"]) if m != BASE]


def has_validation(runs: pd.DataFrame, metric: str = "eqod") -> bool:
    """Whether the collective rows carry validation values of ``metric`` (``val_<metric>``)."""
    col = f"val_{metric}"
    if col not in runs.columns:
        return False
    cells = plain_runs(runs)
    return bool(pd.to_numeric(cells.loc[cells["method"] != BASE, col], errors="coerce").notna().any())


def available_selections(runs: pd.DataFrame, metric: str = "eqod") -> list[str]:
    """The selections this table supports, in report order (``validation`` only with validation values)."""
    return [s for s in SELECTIONS if s != "validation" or has_validation(runs, metric)]


def budget_label(kind: str, budget: float, *, pool: bool = True) -> str:
    """``"0.2·pool"`` for a fraction of the candidate pool, ``"50"`` for a count (``pool=False``: ``"0.2"``)."""
    if kind == "count":
        return f"{int(budget)}"
    if kind == "fraction":
        return f"{budget:g}·pool" if pool else f"{budget:g}"
    return ""


def _cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Collective rows with the edge flags of their budget within (seed, method, alpha)."""
    runs = plain_runs(runs)
    cells = runs[runs["method"] != BASE]
    size = cells["flips"] if "flips" in cells.columns else cells["budget"]
    g = size.groupby([cells[k] for k in _KEYS])
    top, bottom = g.transform("max"), g.transform("min")
    spread = top > bottom
    at_top = (size == top) & spread
    if "pool_size" in cells.columns and "flips" in cells.columns:
        whole = at_top & (cells["pool_size"] > 0) & (cells["flips"] >= cells["pool_size"])
    else:
        whole = at_top & (cells["budget_kind"] == "fraction") & (cells["budget"] >= 1.0)
    return cells.assign(_size=size, at_top=at_top, at_bottom=(size == bottom) & spread, whole_pool=whole)


def _first(frame: pd.DataFrame, keys: list[str], by: str) -> pd.DataFrame:
    """Per group of ``keys``, the row with the lowest ``by`` (ties: fewest flips, then smallest budget)."""
    frame = frame[np.isfinite(pd.to_numeric(frame[by], errors="coerce"))]
    ordered = frame.sort_values(keys + [by, "_size", "budget"], kind="mergesort")
    return ordered.groupby(keys, sort=True).head(1)


def select_budgets(runs: pd.DataFrame, selection: str = "paper", metric: str = "eqod") -> pd.DataFrame:
    """One row per (seed, method, alpha): the cell at the budget ``selection`` picks.

    The row keeps every column of the chosen cell and adds ``selection``,
    ``budget_label``, ``base_<metric>`` / ``base_error`` (the same seed's base
    model), ``vs_base`` (metric minus the base model's), ``error_increase_pts``
    (error minus the base model's, in percentage points) and the edge flags
    ``at_top`` (largest budget of the grid), ``whole_pool`` (it flips every
    candidate) and ``at_bottom`` (smallest budget). ``validation`` reads only
    ``val_<metric>`` to choose; it is empty when the table has no validation values.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown budget selection {selection!r}; allowed: {', '.join(SELECTIONS)}")
    cells = _cells(runs)
    if selection == "paper":
        chosen = _first(cells, _KEYS, metric)
    elif selection == "validation":
        col = f"val_{metric}"
        chosen = _first(cells, _KEYS, col) if has_validation(runs, metric) else cells.iloc[:0]
    else:
        budget = ["method", "alpha", "budget_kind", "budget"]
        curve = cells.groupby(budget, sort=True).agg(curve=(metric, "mean"), _size=("_size", "mean")).reset_index()
        best = _first(curve, ["method", "alpha"], "curve")
        chosen = cells.merge(best[budget], on=budget, how="inner").sort_values(_KEYS, kind="mergesort")
    chosen = chosen.drop(columns="_size").reset_index(drop=True)
    runs = plain_runs(runs)
    base = runs[runs["method"] == BASE].groupby("seed")[[metric, "error"]].mean()
    base_metric, base_error = chosen["seed"].map(base[metric]), chosen["seed"].map(base["error"])
    labels = [budget_label(k, b) for k, b in zip(chosen["budget_kind"], chosen["budget"])]
    return chosen.assign(selection=selection, budget_label=labels, **{f"base_{metric}": base_metric},
                         base_error=base_error, vs_base=chosen[metric] - base_metric,
                         error_increase_pts=100.0 * (chosen["error"] - base_error))


def edge_table(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """Per selection, method and alpha whose chosen budget is on the edge of the grid for some seed:
    ``edge`` ("whole pool", "largest", "smallest"), ``at_edge`` seeds out of ``seeds``."""
    rows = []
    order = {m: i for i, m in enumerate(methods_in_order(runs))}
    for selection in available_selections(runs, metric):
        chosen = select_budgets(runs, selection, metric)
        chosen = chosen.assign(_m=chosen["method"].map(order)).sort_values(["_m", "alpha"], kind="mergesort")
        for (method, alpha), g in chosen.groupby(["method", "alpha"], sort=False):
            n = int(g["seed"].nunique())
            for edge, flag in (("whole pool", g["whole_pool"]), ("largest", g["at_top"] & ~g["whole_pool"]),
                               ("smallest", g["at_bottom"])):
                if flag.any():
                    rows.append({"selection": selection, "method": method, "alpha": alpha, "edge": edge,
                                 "at_edge": int(g.loc[flag, "seed"].nunique()), "seeds": n})
    return pd.DataFrame(rows, columns=["selection", "method", "alpha", "edge", "at_edge", "seeds"])


_EDGE_MEANING = {
    "whole pool": "the largest budget, the whole candidate pool: every method flips the same people there, so "
                  "the comparison with random is empty",
    "largest": "the largest budget of the grid: the best M may lie beyond the grid",
    "smallest": "the smallest budget of the grid: the best M may lie below the grid",
}


def edge_warnings(runs: pd.DataFrame, metric: str = "eqod") -> list[tuple[str, list[str]]]:
    """Per (selection, edge) with cases: a heading and one line per method listing the alphas whose
    chosen budget is on that edge, with how many seeds chose it."""
    table = edge_table(runs, metric)
    out = []
    for selection in SELECTIONS:
        for edge, meaning in _EDGE_MEANING.items():
            g = table[(table["selection"] == selection) & (table["edge"] == edge)]
            if g.empty:
                continue
            items = []
            for method, h in g.groupby("method", sort=False):
                at = [f"{a:g} ({k}/{n}{' seeds' if i == 0 else ''})"
                      for i, (a, k, n) in enumerate(zip(h["alpha"], h["at_edge"], h["seeds"]))]
                items.append(f"{method} at α={', '.join(at)}")
            out.append((f"{TITLES[selection]}: {meaning}", items))
    return out
