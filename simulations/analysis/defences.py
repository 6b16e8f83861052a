"""A firm that fights back: the comparison's defence table in this report's units, and the
firm-side text of the summary (claims, then defences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..results import atomic_write_text
from .pareto import claims, claims_text, front_table, round_units, with_family

__all__ = ["comparison_text", "defence_table", "defence_table_pts"]


_DEFENCE_COLUMNS = ["method", "alpha", "budget", "variant", "defence", "action", "flips", "flagged", "flagged_true",
                    "recall", "eqod", "gain_kept", "gain_kept_same_defence", "error_cost", "error_increase"]


def defence_table_pts(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`defence_table` with its error columns in percentage points."""

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


def defence_table(runs):
    """How much of the collective's EqOd gain survives each (defence, action), and at what cost.

    One row per attacked cell (method, alpha, budget), variant (``plain`` or
    ``adaptive``), defence and action, means over seeds: ``flips``,
    ``flagged``, ``flagged_true`` and ``recall`` (= flagged_true / flips);
    ``eqod``; ``gain_kept`` = (base EqOd - EqOd) / (base EqOd - EqOd of the
    plain, undefended cell) -- 1 = the defence changed nothing, 0 = the
    collective's gain is gone, < 0 = worse than no collective;
    ``error_cost`` = error - the undefended cell's error (the firm's price for
    defending); ``error_increase`` = error - the base model's error. Rows
    with method "base" are the defences applied when nobody attacks; their
    EqOd is ``eqod_defended_base`` on the other rows, and
    ``gain_kept_same_defence`` = (eqod_defended_base - EqOd) / (base EqOd -
    undefended EqOd) measures the collective's effect when both worlds run
    the defence (an audit that flags genuine minority positives changes EqOd
    even when nobody attacks). Empty without defence or adaptive rows.
    """
    r = with_family(runs)
    r = r.assign(adaptive=r["adaptive"].astype(bool), defence=r["defence"].astype(str))
    defended = r[(r["defence"] != "none") | r["adaptive"]]
    if defended.empty:
        return pd.DataFrame()
    keys = ["method", "alpha", "budget", "budget_kind"]
    base = r[(r["family"] == "base") & (r["defence"] == "none")].set_index("seed")
    plain = r[(r["family"] == "collective") & (r["defence"] == "none") & ~r["adaptive"]]
    ref = plain.set_index(["seed", *keys])[["eqod", "error"]]
    ref.columns = ["eqod_undefended", "error_undefended"]
    d = defended.join(ref, on=["seed", *keys])
    is_base = d["family"] == "base"
    d.loc[is_base, "eqod_undefended"] = d.loc[is_base, "seed"].map(base["eqod"]).to_numpy()
    d.loc[is_base, "error_undefended"] = d.loc[is_base, "seed"].map(base["error"]).to_numpy()
    d = d.assign(variant=np.where(d["adaptive"], "adaptive", "plain"),
                 base_eqod=d["seed"].map(base["eqod"]).to_numpy(),
                 error_cost=d["error"] - d["error_undefended"],
                 error_increase=d["error"] - d["seed"].map(base["error"]).to_numpy())
    group = [*keys, "variant", "defence", "action"]
    t = d.groupby(group, sort=False, dropna=False).agg(
        seeds=("seed", "nunique"), flips=("flips", "mean"), flagged=("flagged", "mean"),
        flagged_true=("flagged_true", "mean"), eqod=("eqod", "mean"), eqod_std=("eqod", "std"),
        eqod_undefended=("eqod_undefended", "mean"), base_eqod=("base_eqod", "mean"),
        error_cost=("error_cost", "mean"), error_increase=("error_increase", "mean"),
    ).reset_index()
    gain = t["base_eqod"] - t["eqod_undefended"]
    on_base = t[t["method"] == "base"].set_index(["defence", "action"])["eqod"]
    t["eqod_defended_base"] = [on_base.get((dfc, act), np.nan) if dfc != "none" else b
                               for dfc, act, b in zip(t["defence"], t["action"], t["base_eqod"])]
    t["recall"] = np.where(t["flips"] > 0, t["flagged_true"] / t["flips"].where(t["flips"] > 0), np.nan)
    t["gain_kept"] = np.where(gain > 0, (t["base_eqod"] - t["eqod"]) / gain.where(gain > 0), np.nan)
    t["gain_kept_same_defence"] = np.where(gain > 0, (t["eqod_defended_base"] - t["eqod"]) / gain.where(gain > 0),
                                           np.nan)
    t.loc[t["method"] == "base", ["gain_kept", "gain_kept_same_defence"]] = np.nan
    order = ["method", "alpha", "budget", "budget_kind", "variant", "defence", "action", "seeds", "flips",
             "flagged", "flagged_true", "recall", "base_eqod", "eqod_undefended", "eqod_defended_base", "eqod",
             "eqod_std", "gain_kept", "gain_kept_same_defence", "error_cost", "error_increase"]
    return t[order]
