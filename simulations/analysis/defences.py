"""A firm that fights back: the comparison's defence table in this report's units, and the
firm-side text of the summary (claims, then defences)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import atomic_write_text
from .pareto import claims, claims_text, front_table, round_units

__all__ = ["comparison_text", "defence_table_pts"]


_DEFENCE_COLUMNS = ["method", "alpha", "budget", "variant", "defence", "action", "flips", "flagged", "flagged_true",
                    "recall", "eqod", "gain_kept", "gain_kept_same_defence", "error_cost", "error_increase"]


def defence_table_pts(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`simulations.comparison.defence_table` with its error columns in percentage points."""
    from ..comparison import defence_table

    table = defence_table(runs)
    if table.empty:
        return table
    table = table.assign(**{f"{c}_pts": 100.0 * table[c] for c in ("error_cost", "error_increase") if c in table})
    return table.drop(columns=[c for c in ("error_cost", "error_increase") if c in table])


def comparison_text(runs: pd.DataFrame, out_dir: str | Path | None = None) -> tuple[str, str]:
    """(firm-side claims, defence table) as text; with ``out_dir`` also writes ``fronts.csv`` and
    ``defences.csv`` there."""
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "fronts.csv", front_table(runs).to_csv(index=False))
    table = defence_table_pts(runs)
    rest = ""
    if not table.empty:
        if out_dir is not None:
            atomic_write_text(Path(out_dir) / "defences.csv", table.to_csv(index=False))
        cols = [c if c in table.columns else f"{c}_pts" for c in _DEFENCE_COLUMNS]
        rest = ("Defences (means over seeds; gain_kept = share of the collective's EqOd gain left; "
                "gain_kept_same_defence = the same against the defence applied when nobody attacks; "
                "error_cost_pts = error - undefended error, error_increase_pts = error - base error, in points)\n"
                + round_units(table[cols]).to_string(index=False))
    return claims_text(claims(runs)), rest
