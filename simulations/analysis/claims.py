"""The paper's claims about the collective, checked on the data with paired t intervals.

For every budget selection (:mod:`.budgets`), method and alpha:

``beats_random``
    the method reaches a lower EqOd than ``random`` (paired: the method's EqOd
    minus random's on the same seed and alpha, each at the budget the selection
    picks for it);
``lowers_eqod``
    the collective lowers EqOd below the base model's (paired with the same seed's
    base model);
``error_cost``
    the error increase over the same seed's base model, in percentage points,
    is under ``cost_bound_pts`` (1 pt by default).

Each claim is a per-seed difference summarised by its 95% t interval and judged
against its bound: *holds* when the whole interval lies on the claimed side,
*does not hold* when it lies entirely on the other side, and *not resolved at
N seeds* when it covers the bound (or there is one seed, hence no interval).
Adding seeds to a results folder and re-running ``report`` re-judges them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .budgets import DESCRIPTIONS, TITLES, available_selections, methods_in_order, select_budgets
from .intervals import paired, summarise

__all__ = ["CLAIMS", "DOES_NOT_HOLD", "HOLDS", "IDENTICAL", "NO_VALIDATION", "claim_lines", "claims_text",
           "collective_claims",
           "methods_in_order", "unresolved", "verdict"]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
IDENTICAL = "no difference"  # every seed's difference is exactly the bound: an empty comparison
NAMES = {"eqod": "EqOd", "sp_diff": "SP difference", "eopp_diff": "EOpp difference"}
CLAIMS = {
    "beats_random": "lower {name} than random at the chosen M (method − random, paired per seed and α)",
    "lowers_eqod": "lower {name} than the base model (cell − base model, paired per seed)",
    "error_cost": "error cost under {bound:g} pt (error − the same seed's base model's, in points)",
}


def unresolved(n: int) -> str:
    return f"not resolved at {n} seed{'s' if n != 1 else ''}"


def verdict(lo: float, hi: float, n: int, *, bound: float = 0.0) -> str:
    """The verdict on the claim "the quantity is below ``bound``" from its interval [lo, hi] over n seeds.

    ``"no difference"`` when every seed's value is exactly the bound (e.g. both methods flip the whole
    pool: the same labels, the same firm), which more seeds cannot change."""
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return unresolved(n)
    if lo == hi == bound:
        return IDENTICAL
    if hi < bound:
        return HOLDS
    if lo > bound:
        return DOES_NOT_HOLD
    return unresolved(n)


def collective_claims(runs: pd.DataFrame, metric: str = "eqod", *, reference: str = "random",
                      cost_bound_pts: float = 1.0) -> pd.DataFrame:
    """One row per (selection, claim, method, alpha): ``mean``, ``lo``, ``hi`` (95% t interval of the
    paired per-seed difference), ``n`` seeds, the ``bound`` it is judged against and the ``verdict``.

    ``beats_random`` and ``lowers_eqod`` are in units of ``metric``; ``error_cost`` in percentage points.
    """
    frames = []
    methods = methods_in_order(runs)
    for selection in available_selections(runs, metric):
        sel = select_budgets(runs, selection, metric)
        parts = []
        if reference in methods:
            ref = sel[sel["method"] == reference]
            diff = paired(sel[sel["method"] != reference], ref, ["seed", "alpha"], metric)
            parts.append(summarise(diff, ["method", "alpha"], "diff").assign(claim="beats_random", bound=0.0))
        parts.append(summarise(sel, ["method", "alpha"], "vs_base").assign(claim="lowers_eqod", bound=0.0))
        parts.append(summarise(sel, ["method", "alpha"], "error_increase_pts")
                     .assign(claim="error_cost", bound=cost_bound_pts))
        frames.append(pd.concat(parts, ignore_index=True).assign(selection=selection))
    columns = ["selection", "claim", "method", "alpha", "mean", "lo", "hi", "n", "bound", "verdict"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["verdict"] = [verdict(lo, hi, int(n), bound=b)
                      for lo, hi, n, b in zip(out["lo"], out["hi"], out["n"], out["bound"])]
    order = {m: i for i, m in enumerate(methods)}
    out = out.assign(_s=out["selection"].map({s: i for i, s in enumerate(("validation", "fixed", "paper"))}),
                     _c=out["claim"].map({c: i for i, c in enumerate(CLAIMS)}), _m=out["method"].map(order))
    return out.sort_values(["_s", "_c", "_m", "alpha"]).drop(columns=["_s", "_c", "_m"])[columns].reset_index(drop=True)


def _verdict_order(v: str) -> tuple:
    """holds, does not hold, not resolved, no difference."""
    return (v != HOLDS, v != DOES_NOT_HOLD, v == IDENTICAL, v)


def _alphas(alphas) -> str:
    return ", ".join(f"{a:g}" for a in alphas)


def claim_lines(table: pd.DataFrame, metric: str = "eqod") -> list[str]:
    """Per selection and claim, one line per method: at which alphas the claim holds, does not hold
    or is not resolved (with the number of seeds)."""
    name = NAMES.get(metric, metric)
    n_max = int(table["n"].max()) if len(table) else 0
    lines = []
    for selection in dict.fromkeys(table["selection"]):
        t = table[table["selection"] == selection]
        lines.append(f"{TITLES[selection]}: {DESCRIPTIONS[selection].format(name=name)}")
        for number, claim in enumerate(CLAIMS, start=1):
            c = t[t["claim"] == claim]
            if c.empty:
                if claim == "beats_random":
                    lines.append(f"  ({number}) {CLAIMS[claim].format(name=name)}: no random baseline in this run")
                continue
            lines.append(f"  ({number}) {CLAIMS[claim].format(name=name, bound=float(c['bound'].iloc[0]))}")
            width = max(len(m) for m in c["method"])
            for method, g in c.groupby("method", sort=False):
                parts = []
                for v in sorted(dict.fromkeys(g["verdict"]), key=_verdict_order):
                    h = g[g["verdict"] == v]
                    at = f"α={_alphas(h['alpha'])}" if len(h) < len(g) else "every α"
                    fewer = sorted({int(k) for k in h["n"] if k != n_max})  # rests on fewer seeds than the block
                    seeds = f" ({', '.join(map(str, fewer))} seeds)" if fewer and v != unresolved(fewer[0]) else ""
                    parts.append(f"{v} at {at}{seeds}")
                lines.append(f"      {method:<{width}}  " + "; ".join(parts))
    return lines


NO_VALIDATION = "no validation split in this run (runs.csv has no val_eqod values)"


def claims_text(table: pd.DataFrame, metric: str = "eqod") -> str:
    """The claims block: what each claim rests on, then its verdicts per method and alpha."""
    n = int(table["n"].max()) if len(table) else 0
    rests = (f"each rests on {n} seed{'s' if n != 1 else ''}" if table["n"].nunique() <= 1
             else f"each rests on {n} seeds unless a smaller number is given")
    lines = [
        f"Claims, computed from the data ({rests}; 95% t intervals over seeds of per-seed paired differences)",
        "  holds = the interval lies entirely on the claimed side; does not hold = entirely on the other side; "
        "not resolved at N seeds = it covers the bound (add seeds to the folder and re-run `report`); "
        "no difference = the same value at every seed (e.g. both flip the whole pool).",
    ]
    if "validation" not in set(table["selection"]):
        lines.append(f"{TITLES['validation']}: not reported — {NO_VALIDATION}.")
    lines += claim_lines(table, metric)
    return "\n".join(lines)

