"""The results table's columns: one description for every backend and the comparison.

A results table is tidy: one row per (seed, cell), plus one ``base`` row per
seed where nobody relabels. Each row has the scenario's configuration, the
cell that produced it (:func:`cell_columns`) and the firm's metrics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BASE", "cell_columns", "config_columns", "decision_rows", "method_columns"]

BASE = "base"  # method name of the row where nobody relabels


def cell_columns(method: str, alpha: float, budget, *, n_members: int = 0, pool_size: int = 0, m: int = 0,
                 flips: int = 0, threshold: float = np.nan) -> dict:
    """The columns that describe one cell."""
    kind = "none" if method == BASE else "count" if isinstance(budget, int) else "fraction"
    return {"method": method, "alpha": alpha, "budget": float(budget), "budget_kind": kind, "n_members": n_members,
            "pool_size": pool_size, "m": m, "flips": flips, "threshold": threshold}


def config_columns(scenario, dataset, *, backend: str) -> dict:
    """The configuration columns every row of a scenario shares."""
    d, c, f = scenario.data, scenario.collective, scenario.firm
    return {
        "scenario": scenario.name,
        "dataset": d.dataset,
        "sensitive": dataset.sensitive,
        "include_sensitive": d.include_sensitive,
        "test_size": d.test_size,
        "reference": str(c.reference),
        "k": c.k,
        "firm": f.model,
        "backend": backend,
    }


def method_columns(params: dict, method: str) -> dict:
    """A cell's method's own parameters: its ``k`` where it has one (rb-label, rb-dist)."""
    return {name: value for name, value in params.get(method, {}).items() if name == "k"}


def decision_rows(decisions) -> list[dict]:
    """The cell columns of every cell of a :class:`simulations.state.Decisions`, in grid order."""
    s, flips = decisions.signal, decisions.n_flips
    return [cell_columns(cell.method, cell.alpha, cell.budget, n_members=int(s.n_members[cell.alpha_index]),
                         pool_size=int(s.pool_size[cell.index]), m=int(s.m[cell.index]), flips=int(flips[cell.index]),
                         threshold=float(s.score[cell.index]))
            for cell in decisions.grid]
