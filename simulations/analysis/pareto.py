"""Pareto fronts of error vs unfairness: the collective against firm-side methods.

A *point* is one configuration averaged over seeds: a collective cell
(method, alpha, budget), a baseline's grid value, or the base model. Its
error is taken relative to the base model of the same seed (a paired
difference: the seeds' splits move the error by more than most methods do),
in percentage points. Every mean over seeds carries its 95% t interval.
A method's *front* is the lower-left envelope of its mean points: those that
no other point of the method beats on both error and unfairness.

:func:`claims` checks the paper's two claims on a results table, from the
data: (a) firm-side methods reach a lower EqOd than the collective (paired per
seed: the best firm-side point minus the collective's best point); (b) the
collective reaches its best EqOd at a smaller error increase than any
firm-side method at that EqOd. The best points are picked on the seed means
of the test metrics (like the paper), then judged with intervals.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from ..rows import BASE
from .claims import HOLDS, verdict
from .figures import save_figure
from .intervals import interval_note, interval_text, paired, t_interval

__all__ = [
    "METRICS",
    "claims",
    "claims_html",
    "claims_text",
    "curve_points",
    "error_at",
    "front_table",
    "has_comparison",
    "lower_left_front",
    "plot_fronts",
    "round_units",
    "seed_points",
    "undefended",
    "with_family",
]

METRICS = {"eqod": "EqOd", "sp_diff": "SP difference", "eopp_diff": "EOpp difference"}
# Disjoint palettes, so that no firm-side front shares a colour with a collective one.
_COLLECTIVE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "navy")
_FIRM_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "darkgoldenrod", "black")


def with_family(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the comparison columns filled in for tables written without them."""
    out = runs
    if "family" not in out.columns:
        out = out.assign(family=np.where(out["method"] == BASE, "base", "collective"))
    defaults = {"defence": "none", "action": "none", "adaptive": False, "param": "", "value": np.nan}
    missing = {k: v for k, v in defaults.items() if k not in out.columns}
    return out.assign(**missing) if missing else out


def has_comparison(runs: pd.DataFrame) -> bool:
    """Whether the table holds firm-side baseline or defence rows."""
    if "family" not in runs.columns:
        return False
    return bool((runs["family"] == "firm").any() or (runs["defence"].astype(str) != "none").any()
                or runs["adaptive"].astype(bool).any())


def undefended(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of what the firm does unattacked or undefended: base, plain collective, baselines."""
    r = with_family(runs)
    return r[(r["defence"].astype(str) == "none") & ~r["adaptive"].astype(bool)]


def _point_labels(r: pd.DataFrame) -> pd.Series:
    labels = []
    kinds = r["budget_kind"] if "budget_kind" in r.columns else pd.Series("fraction", index=r.index)
    for fam, a, b, kind, param, value in zip(r["family"], r["alpha"], r["budget"], kinds, r["param"], r["value"]):
        if fam == "collective":
            labels.append(f"α={a:g}, M={int(b)}" if kind == "count" else f"α={a:g}, M={b:g}·pool")
        elif fam == "firm":
            labels.append(f"{param}={value:g}")
        else:
            labels.append("base model")
    return pd.Series(labels, index=r.index)


def seed_points(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """The undefended rows with their ``point`` label, ``x`` (= ``metric``) and the paired
    ``error_increase_pts`` over the same seed's base model (one row per seed and point)."""
    r = undefended(runs)
    base_error = r[r["family"] == "base"].groupby("seed")["error"].mean()
    return r.assign(error_increase_pts=100.0 * (r["error"] - r["seed"].map(base_error)), point=_point_labels(r),
                    x=r[metric])


def curve_points(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """One row per (family, method, point): means over seeds of ``metric`` (``x``), the error and the
    paired error increase over the same seed's base model (``error_increase_pts``, percentage points),
    each with its 95% t interval over seeds (``_lo``/``_hi``, NaN with one seed)."""
    r = seed_points(runs, metric)
    rows = []
    for (family, method, point), g in r.groupby(["family", "method", "point"], sort=False):
        row = {"family": family, "method": method, "point": point, "alpha": g["alpha"].iloc[0],
               "budget": g["budget"].iloc[0], "value": g["value"].iloc[0]}
        for column, name in (("x", "x"), ("error", "error"), ("error_increase_pts", "error_increase_pts")):
            i = t_interval(g[column].to_numpy(dtype=float))
            row.update({name: i.mean, f"{name}_lo": i.lo, f"{name}_hi": i.hi})
        row["seeds"] = int(g["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows).assign(metric=metric)


def lower_left_front(x, y) -> np.ndarray:
    """Indices of the non-dominated points (lower x and lower y are better), by increasing x.

    A point is kept when no other point has x and y both at most its own,
    one of them strictly less; of identical points the first is kept.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.lexsort((y[ok], x[ok]))]  # by x, then y
    keep, best = [], np.inf
    for i in order:
        if y[i] < best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=np.int64)


def error_at(x, y, x0: float, *, mix: bool = True) -> float:
    """The least error ``y`` a method reaches at unfairness ``x`` <= ``x0`` (nan if never).

    With ``mix``, also a random mixture of two of its classifiers: a mixture's
    error is the mixture of the errors, and each group's TPR/FPR/selection
    rate mixes linearly, so the absolute differences (EqOd, SP, EOpp) are at
    most the mixture of the two; mixing a point below ``x0`` with one above
    it at the weight that puts that bound on ``x0`` is therefore reachable.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    below = x <= x0
    if not below.any():
        return float("nan")
    best = y[below].min()
    if mix:
        for xi, yi in zip(x[below], y[below]):
            for xj, yj in zip(x[~below], y[~below]):
                w = (xj - x0) / (xj - xi)  # weight on the point below
                best = min(best, w * yi + (1.0 - w) * yj)
    return float(best)


# ----------------------------------------------------------------------------------- claims


def claims(runs: pd.DataFrame, metric: str = "eqod") -> dict | None:
    """The paper's two firm-side claims, with intervals over seeds (None without both families).

    The best points are picked on seed means: the collective's (lowest mean
    ``metric`` over methods, alpha and budget) and the firm side's. (a) "firm-side
    methods reach a lower ``metric`` than the collective": the paired per-seed
    difference best firm-side point minus best collective point, judged by its t
    interval (``verdict_a``; ``holds_a`` is the same on the means). (b) "the
    collective reaches its best ``metric`` at a smaller error increase than any
    firm-side method at that ``metric``": each firm-side method's least mean error
    increase reaching it (mixing two of its classifiers or the base model allowed,
    :func:`error_at`) is the bound; the collective's error increase interval lies
    below it (holds), above it (does not hold) or covers it (not resolved).
    Error increases are in percentage points.
    """
    pts = curve_points(runs, metric)
    coll, firm, base = (pts[pts["family"] == f] for f in ("collective", "firm", "base"))
    if coll.empty or firm.empty or base.empty:
        return None
    base_pt = base.iloc[0]
    best_c = coll.sort_values(["x", "error_increase_pts"]).iloc[0]
    best_f = firm.sort_values(["x", "error_increase_pts"]).iloc[0]
    x0 = float(best_c["x"])
    per_firm = []
    for method, g in firm.groupby("method", sort=False):
        xs = np.append(g["x"].to_numpy(), base_pt["x"])  # every firm can also keep its base model
        ys = np.append(g["error_increase_pts"].to_numpy(), 0.0)
        best = g.sort_values(["x", "error_increase_pts"]).iloc[0]
        per_firm.append({
            "method": method, "best_x": float(best["x"]), "best_x_lo": float(best["x_lo"]),
            "best_x_hi": float(best["x_hi"]), "best_point": best["point"],
            "best_error_increase_pts": float(best["error_increase_pts"]),
            "error_increase_pts_at": error_at(xs, ys, x0, mix=True),
            "error_increase_pts_at_no_mix": error_at(xs, ys, x0, mix=False),
        })
    per_coll = []
    for method, g in coll.groupby("method", sort=False):
        best = g.sort_values(["x", "error_increase_pts"]).iloc[0]
        per_coll.append({"method": method, "best_point": best["point"], "best_x": float(best["x"]),
                         "best_x_lo": float(best["x_lo"]), "best_x_hi": float(best["x_hi"]),
                         "error_increase_pts": float(best["error_increase_pts"]),
                         "error_increase_pts_lo": float(best["error_increase_pts_lo"]),
                         "error_increase_pts_hi": float(best["error_increase_pts_hi"]), "seeds": int(best["seeds"])})
    # (a) paired per seed: the best firm-side point's metric minus the best collective point's.
    rows = seed_points(runs, metric)

    def at(p) -> pd.DataFrame:  # one point's per-seed values
        return rows[(rows["family"] == p["family"]) & (rows["method"] == p["method"])
                    & (rows["point"] == p["point"])][["seed", "x"]]

    diff = paired(at(best_f), at(best_c), ["seed"], "x")["diff"]
    a = t_interval(diff.to_numpy(dtype=float))
    reaching = [f for f in per_firm if np.isfinite(f["error_increase_pts_at"])]
    firm_cost = min((f["error_increase_pts_at"] for f in reaching), default=float("nan"))
    c_lo, c_hi, c_n = (float(best_c["error_increase_pts_lo"]), float(best_c["error_increase_pts_hi"]),
                       int(best_c["seeds"]))
    return {
        "metric": metric,
        "seeds": int(pts["seeds"].max()),
        "base": {"x": float(base_pt["x"]), "x_lo": float(base_pt["x_lo"]), "x_hi": float(base_pt["x_hi"]),
                 "error": float(base_pt["error"]), "error_lo": float(base_pt["error_lo"]),
                 "error_hi": float(base_pt["error_hi"])},
        "best_collective": {"method": best_c["method"], "point": best_c["point"], "x": x0,
                            "x_lo": float(best_c["x_lo"]), "x_hi": float(best_c["x_hi"]),
                            "error_increase_pts": float(best_c["error_increase_pts"]),
                            "error_increase_pts_lo": c_lo, "error_increase_pts_hi": c_hi, "seeds": c_n},
        "best_firm": {"method": best_f["method"], "point": best_f["point"], "x": float(best_f["x"]),
                      "x_lo": float(best_f["x_lo"]), "x_hi": float(best_f["x_hi"]),
                      "error_increase_pts": float(best_f["error_increase_pts"])},
        "difference_a": {"mean": a.mean, "lo": a.lo, "hi": a.hi, "n": a.n},
        "holds_a": bool(best_f["x"] < x0),
        "verdict_a": verdict(a.lo, a.hi, a.n),
        "holds_b": bool(not reaching or best_c["error_increase_pts"] < firm_cost),
        "verdict_b": HOLDS if not reaching else verdict(c_lo, c_hi, c_n, bound=firm_cost),
        "firm_reaching": [f["method"] for f in reaching],
        "firm_error_increase_pts_at_best": firm_cost,
        "per_firm": per_firm,
        "per_collective": per_coll,
    }


def _pts(v: float, lo: float = np.nan, hi: float = np.nan) -> str:
    text = f"{v:+.2f}"
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:+.2f}, {hi:+.2f}]"
    return text + " pts"


def _x(v: float, lo: float = np.nan, hi: float = np.nan) -> str:
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def claims_text(c: dict | None) -> str:
    """Plain-text statement of :func:`claims` (what the data says), with 95% t intervals over seeds."""
    if c is None:
        return "Firm-side claims: need both collective and firm-side rows"
    name = METRICS.get(c["metric"], c["metric"])
    bc, bf, b, d = c["best_collective"], c["best_firm"], c["base"], c["difference_a"]
    lines = [
        f"Firm-side claims ({interval_note(c['seeds'])}; best points picked on seed means of the test metrics; "
        f"base model {name} {_x(b['x'], b['x_lo'], b['x_hi'])}, error "
        f"{interval_text(b['error'], b['error_lo'], b['error_hi'], '.2f', scale=100.0)} %)",
        f"(a) firm-side methods reach a lower {name} than the collective: {c['verdict_a']} "
        f"- best firm-side {name} {_x(bf['x'], bf['x_lo'], bf['x_hi'])} ({bf['method']}, {bf['point']}, error "
        f"{_pts(bf['error_increase_pts'])}) vs best collective {_x(bc['x'], bc['x_lo'], bc['x_hi'])} "
        f"({bc['method']}, {bc['point']}); paired difference {_x(d['mean'], d['lo'], d['hi'])} over {d['n']} seeds.",
    ]
    if c["firm_reaching"]:
        reached = [f for f in c["per_firm"] if np.isfinite(f["error_increase_pts_at"])]
        detail = ", ".join(f"{f['method']} {_pts(f['error_increase_pts_at'])}" for f in reached)
        lines.append(
            f"(b) the collective reaches its best {name} at a smaller error increase than any firm-side method "
            f"at that {name}: {c['verdict_b']} - collective "
            f"{_pts(bc['error_increase_pts'], bc['error_increase_pts_lo'], bc['error_increase_pts_hi'])} at {name} "
            f"{bc['x']:.3f}; least mean error increase of each firm-side method reaching it (mixing allowed): "
            f"{detail}."
        )
    else:
        lines.append(f"(b) no firm-side method reaches the collective's best {name} {bc['x']:.3f}: holds (vacuously).")
    never = [f["method"] for f in c["per_firm"] if not np.isfinite(f["error_increase_pts_at"])]
    if never:
        lines.append(f"    not reaching {name} {bc['x']:.3f}: {', '.join(never)}")
    return "\n".join(lines)


def claims_html(c: dict | None) -> str:
    """The firm-side claims block of the report page: verdicts and the numbers behind them."""
    if c is None:
        return "<p>Needs both the collective's and firm-side rows.</p>"
    text = "".join(f"<p>{html.escape(line)}</p>" for line in claims_text(c).splitlines())
    firm = pd.DataFrame(c["per_firm"])
    coll = pd.DataFrame(c["per_collective"])
    return (
        text
        + "<p>Per firm-side method: its lowest mean metric [95% CI] and the error increase (pts) it needs to "
          "reach the collective's best (with and without mixing two of its classifiers; NaN = never reaches "
          "it).</p>"
        + round_units(firm).to_html(index=False)
        + "<p>Per collective method: its best point and the error increase there (pts, paired with the same "
          "seed's base model), 95% t intervals over seeds.</p>"
        + round_units(coll).to_html(index=False)
    )


def round_units(t: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: metrics to 3 decimals, columns in percentage points (``*_pts``) to 2."""
    return t.round({c: (2 if "pts" in c else 3) for c in t.columns if t[c].dtype.kind == "f"})


# ---------------------------------------------------------------------------------- figures


def plot_fronts(runs: pd.DataFrame, out_dir: str | Path, *, metrics=tuple(METRICS)) -> list[Path]:
    """One figure per metric: every method's front of error increase (pts) vs the metric, seed means,
    bands = 95% t interval over seeds of the error increase along the front."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    dataset = str(runs["dataset"].iloc[0]) if "dataset" in runs.columns and len(runs) else ""
    for metric in metrics:
        if metric not in runs.columns:
            continue
        pts = curve_points(runs, metric)
        fig, ax = plt.subplots(figsize=(7.5, 5))
        curves = [(f, m) for f, m in pts[["family", "method"]].drop_duplicates().itertuples(index=False) if f != "base"]
        seen = {"collective": 0, "firm": 0}
        for fam, method in curves:
            g = pts[(pts["family"] == fam) & (pts["method"] == method)]
            palette = _COLLECTIVE_COLOURS if fam == "collective" else _FIRM_COLOURS
            colour = palette[seen[fam] % len(palette)]
            seen[fam] += 1
            ls, marker = ("-", "o") if fam == "collective" else ("--", "s")
            ax.scatter(g["x"], g["error_increase_pts"], s=8, alpha=0.25, color=colour)
            f = g.iloc[lower_left_front(g["x"], g["error_increase_pts"])]
            label = f"{method} ({'collective' if fam == 'collective' else 'firm'})"
            ax.plot(f["x"], f["error_increase_pts"], ls=ls, marker=marker, ms=4, color=colour, label=label)
            if f["error_increase_pts_lo"].notna().any():
                ax.fill_between(f["x"], f["error_increase_pts_lo"], f["error_increase_pts_hi"], alpha=0.15,
                                color=colour)
        base = pts[pts["family"] == "base"]
        ax.scatter(base["x"], base["error_increase_pts"], marker="*", s=200, color="black", zorder=5,
                   label="base model")
        name = METRICS.get(metric, metric)
        seeds = int(pts["seeds"].max()) if len(pts) else 0
        bands = f"bands: 95% CI over {seeds} seeds" if seeds > 1 else "1 seed: no bands"
        ax.set(xlabel=f"{name} (mean over seeds)", ylabel="error increase over the same seed's base model (pts)",
               title=f"{dataset}: error vs {name} fronts\n(points: seed means; {bands})")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7, ncol=2)
        written.append(out_dir / f"pareto_{metric}.png")
        save_figure(fig, written[-1])
        plt.close(fig)
    return written


def front_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every point of every method for every metric, with an ``on_front`` flag (for CSV)."""
    tables = []
    for metric in METRICS:
        if metric not in runs.columns:
            continue
        pts = curve_points(runs, metric)
        on = np.zeros(len(pts), dtype=bool)
        for _, g in pts.groupby(["family", "method"], sort=False):
            on[g.index[lower_left_front(g["x"], g["error_increase_pts"])]] = True
        tables.append(pts.assign(on_front=on))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
