"""From a results table to what a reader can trust: selections, intervals, claims, tables, figures.

``budgets``    which budget M a number is reported at: ``validation`` (chosen on a validation split,
               never the test set), ``fixed`` (one M per method and alpha, the seed-mean optimum) and
               ``paper`` (per-seed minimum of the test EqOd: optimistic); grid-edge warnings
``intervals``  Student-t 95% intervals of means over seeds, paired differences
``claims``     the paper's claims about the collective, judged holds / does not hold / not resolved
``tables``     alpha x method grids of "mean [95% CI]", ``summary.txt``/``summary.csv``/``claims.csv``
``figures``    the standard figures, each saying what its bands are
``pareto``     firm-side methods against the collective: fronts and their claims
``defences``   a firm that fights back: the defence table in points, the firm-side summary text
``html``       the self-contained ``report.html``, claims first

Adding seeds to a results folder and re-running ``collective-fairness report`` recomputes everything.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .budgets import SELECTIONS, available_selections, edge_warnings, has_validation, plain_runs, select_budgets
from .claims import collective_claims
from .figures import standard_figures
from .html import comparison_sections, write_html
from .intervals import t_interval
from .tables import format_summary, summary_table, write_summary

__all__ = [
    "SELECTIONS",
    "available_selections",
    "collective_claims",
    "comparison_sections",
    "edge_warnings",
    "format_summary",
    "has_validation",
    "plain_runs",
    "plot_all",
    "select_budgets",
    "summary_table",
    "t_interval",
    "write_html",
    "write_summary",
]


def plot_all(runs: pd.DataFrame, out_dir: str | Path, *, focus_alpha: float = 0.3) -> list[Path]:
    """Every figure as a PNG in ``out_dir``: the standard three, plus the Pareto fronts when the
    table has firm-side or defence rows. Returns their paths."""
    from .pareto import has_comparison, plot_fronts

    written = standard_figures(runs, out_dir, focus_alpha=focus_alpha)
    if has_comparison(runs):
        written += plot_fronts(runs, out_dir)
    return written
