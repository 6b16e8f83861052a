"""Tables a reader can scan: alpha x method grids of "mean [95% CI]" per budget selection.

:func:`summary_table` is the tidy form (``summary.csv``): one row per
(selection, method, alpha) with the mean and t interval of every quantity.
:func:`format_summary` is the text (``summary.txt`` and the terminal): the
claims first, then warnings about budgets on the edge of the grid, then one
block of grids per selection. Precision: EqOd to 3 decimals, error increase
in percentage points to 2 decimals, flips as integers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..results import atomic_write_text
from ..rows import BASE
from .budgets import (DESCRIPTIONS, TITLES, available_selections, edge_warnings, methods_in_order, plain_runs,
                      select_budgets)
from .claims import DOES_NOT_HOLD, HOLDS, IDENTICAL, NAMES, claims_text, collective_claims
from .intervals import interval_note, interval_text, paired, summarise, t_interval

__all__ = ["base_summary", "budget_grid", "format_summary", "grid", "quantities", "summary_table", "write_summary"]

MARKS = {HOLDS: "✓", DOES_NOT_HOLD: "✗", IDENTICAL: "="}  # no mark: not resolved


def quantities(metric: str) -> dict[str, tuple[str, str, str | None]]:
    """Summary column -> (heading, number format, claim judged on it)."""
    name = NAMES.get(metric, metric)
    return {
        metric: (f"{name} at the chosen M", ".3f", None),
        f"{metric}_vs_random": (f"{name} − random's (paired per seed; ✓ lower than random, ✗ higher, "
                                "= identical at every seed, no mark: not resolved)", "+.3f", "beats_random"),
        f"{metric}_vs_base": (f"{name} − the base model's (paired per seed; ✓ lower, ✗ higher, no mark: not "
                              "resolved)", "+.3f", "lowers_eqod"),
        "error_increase_pts": ("error increase over the same seed's base model (pts; ✓ under the 1 pt bound, "
                               "✗ over it, no mark: not resolved)", "+.2f", "error_cost"),
        "flips": ("labels flipped (interval clipped at 0)", ".0f", None),
    }


def summary_table(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """One row per (selection, method, alpha): ``seeds``; the chosen ``budgets`` (a value, or the range
    over seeds); per quantity its mean and ``_lo``/``_hi`` 95% t interval over seeds (NaN with one seed):
    ``metric``, ``<metric>_vs_random`` and ``<metric>_vs_base`` (paired per seed), ``error_increase_pts``
    (percentage points), ``flips``; and how many seeds chose a budget on the grid's edge."""
    tables = []
    methods = methods_in_order(runs)
    for selection in available_selections(runs, metric):
        sel = select_budgets(runs, selection, metric)
        keys = ["method", "alpha"]
        table = sel.groupby(keys, sort=True).apply(_choice, include_groups=False).reset_index()
        stats = {metric: sel, f"{metric}_vs_base": sel.assign(**{f"{metric}_vs_base": sel["vs_base"]}),
                 "error_increase_pts": sel, "flips": sel}
        if "random" in methods:
            diff = paired(sel[sel["method"] != "random"], sel[sel["method"] == "random"], ["seed", "alpha"], metric)
            stats[f"{metric}_vs_random"] = diff.rename(columns={"diff": f"{metric}_vs_random"})
        for column in quantities(metric):
            if column not in stats:
                continue
            s = summarise(stats[column], keys, column).drop(columns="n")
            if column == "flips":  # a count: its mean is >= 0, so is the interval
                s["lo"] = s["lo"].clip(lower=0.0)
            s.columns = [*keys, column, f"{column}_lo", f"{column}_hi"]
            table = table.merge(s, on=keys, how="left")
        tables.append(table.assign(selection=selection))
    if not tables:
        return pd.DataFrame(columns=["selection", "method", "alpha", "seeds"])
    out = pd.concat(tables, ignore_index=True)
    out = out.assign(_s=out["selection"].map({s: i for i, s in enumerate(TITLES)}),
                     _m=out["method"].map({m: i for i, m in enumerate(methods)}))
    out = out.sort_values(["_s", "_m", "alpha"]).drop(columns=["_s", "_m"]).reset_index(drop=True)
    return out[["selection", *[c for c in out.columns if c != "selection"]]]


def _choice(g: pd.DataFrame) -> pd.Series:
    """The budget(s) a selection chose for one (method, alpha) and how often they are on the grid's edge."""
    g = g.sort_values(["flips", "budget"] if "flips" in g.columns else ["budget"])
    labels = list(dict.fromkeys(g["budget_label"]))
    return pd.Series({
        "seeds": int(g["seed"].nunique()),
        "budgets": labels[0] if len(labels) == 1 else f"{labels[0]}–{labels[-1]}",
        "seeds_whole_pool": int(g["whole_pool"].sum()),
        "seeds_at_largest": int(g["at_top"].sum()),
        "seeds_at_smallest": int(g["at_bottom"].sum()),
    })


def grid(table: pd.DataFrame, column: str, fmt: str, *, marks: dict | None = None) -> pd.DataFrame:
    """Rows alpha, columns method: ``"mean [lo, hi]"`` strings of ``column`` (one selection's rows)."""
    nan = pd.Series(np.nan, index=table.index)
    text = [interval_text(m, lo, hi, fmt) if np.isfinite(m) else None for m, lo, hi in
            zip(table[column], table.get(f"{column}_lo", nan), table.get(f"{column}_hi", nan))]
    if marks is not None:
        text = [t if t is None else f"{t} {marks.get((m, a), '')}".rstrip()
                for t, m, a in zip(text, table["method"], table["alpha"])]
    return _pivot(table.assign(_text=text), "_text")


def budget_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Rows alpha, columns method: the budget chosen (or its range over seeds), ``!`` on the grid's edge."""
    fractions = table["budgets"].str.endswith("·pool") | table["budgets"].str.contains("·pool–")
    strip = bool(fractions.all())
    text = []
    for b, whole, top, bottom in zip(table["budgets"], table["seeds_whole_pool"], table["seeds_at_largest"],
                                     table["seeds_at_smallest"]):
        b = b.replace("·pool", "") if strip else b
        text.append(b + (" !" if (top or bottom) else ""))
    return _pivot(table.assign(_text=text), "_text")


def _pivot(table: pd.DataFrame, column: str) -> pd.DataFrame:
    methods = list(dict.fromkeys(table["method"]))
    out = table.pivot(index="alpha", columns="method", values=column).reindex(columns=methods)
    out = out.dropna(axis=1, how="all").fillna("–")  # e.g. random in the "minus random" grid
    out.index = [f"α={a:g}" for a in out.index]
    out.columns.name = None
    return out


def base_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """The base model (nobody relabels): mean and 95% t interval over seeds of its metrics."""
    runs = plain_runs(runs)
    base = runs[runs["method"] == BASE]
    cols = [c for c in ("error", "eqod", "eqod_max", "sp_diff", "eopp_diff", "tpr_0", "tpr_1", "fpr_0", "fpr_1")
            if c in base.columns]
    rows = [{"metric": c, **t_interval(base[c].to_numpy(dtype=float))._asdict()} for c in cols]
    return pd.DataFrame(rows, columns=["metric", "mean", "lo", "hi", "n"])


def _marks(claims: pd.DataFrame, selection: str, claim: str) -> dict:
    c = claims[(claims["selection"] == selection) & (claims["claim"] == claim)]
    return {(m, a): MARKS.get(v, "") for m, a, v in zip(c["method"], c["alpha"], c["verdict"])}


def _base_line(runs: pd.DataFrame, metric: str) -> str:
    b = base_summary(runs).set_index("metric")
    n = int(b["n"].max()) if len(b) else 0
    parts = []
    if metric in b.index:
        parts.append(f"{NAMES.get(metric, metric)} {interval_text(*b.loc[metric, ['mean', 'lo', 'hi']], '.3f')}")
    if "error" in b.index:
        parts.append(f"error {interval_text(*b.loc['error', ['mean', 'lo', 'hi']], '.2f', scale=100.0)} %")
    return f"Base model (nobody relabels), {interval_note(n)}: " + ", ".join(parts)


def format_summary(runs: pd.DataFrame, metric: str = "eqod", *, firm_claims: str = "") -> str:
    """The text summary: claims (then ``firm_claims``, if any), edge warnings, the base model, then per
    selection alpha x method grids."""
    claims = collective_claims(runs, metric)
    table = summary_table(runs, metric)
    n = int(table["seeds"].max()) if len(table) else 0
    name = NAMES.get(metric, metric)
    lines = [claims_text(claims, metric), ""] + ([firm_claims, ""] if firm_claims else [])
    warnings = edge_warnings(runs, metric)
    if warnings:
        lines.append("Warning: a chosen budget lies on the edge of the grid (marked ! in the chosen-M grids)")
        for heading, items in warnings:
            lines += [f"  {heading}:", *(f"      {item}" for item in items)]
        lines.append("")
    lines += [_base_line(runs, metric), ""]
    for selection in available_selections(runs, metric):
        t = table[table["selection"] == selection]
        title = (f"Best {metric} over the budget M, per seed: the paper's convention" if selection == "paper"
                 else TITLES[selection])
        lines += [f"== {title} ==", DESCRIPTIONS[selection].format(name=name),
                  f"Cells: {interval_note(n)}; rows α (collective size), columns method.", ""]
        for column, (heading, fmt, claim) in quantities(metric).items():
            if column not in t.columns:
                continue
            marks = _marks(claims, selection, claim) if claim else None
            lines += [heading, grid(t, column, fmt, marks=marks).to_string(), ""]
        kinds = "fraction of the candidate pool" if t["budgets"].str.contains("·pool").all() else "count or ·pool"
        lines += [f"chosen M ({kinds}; a range = different M per seed; ! = on the edge of the grid for some seed)",
                  budget_grid(t).to_string(), ""]
    return "\n".join(lines).rstrip()


def write_summary(runs: pd.DataFrame, out_dir: str | Path) -> str:
    """Write ``summary.csv``, ``claims.csv`` and ``summary.txt`` (plus the firm-side comparison's
    ``fronts.csv``/``defences.csv`` when the table has one); return the text summary."""
    from .defences import comparison_text
    from .pareto import has_comparison

    out_dir = Path(out_dir)
    firm_claims, defences = comparison_text(runs, out_dir) if has_comparison(runs) else ("", "")
    text = format_summary(runs, firm_claims=firm_claims)
    if defences:
        text += "\n\n" + defences
    atomic_write_text(out_dir / "summary.csv", summary_table(runs).to_csv(index=False))
    atomic_write_text(out_dir / "claims.csv", collective_claims(runs).to_csv(index=False))
    atomic_write_text(out_dir / "summary.txt", text + "\n")
    return text
