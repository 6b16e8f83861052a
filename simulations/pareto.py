"""Pareto fronts of error vs unfairness: the collective against firm-side methods.

A *point* is one configuration averaged over seeds: a collective cell
(method, alpha, budget), a baseline's grid value, or the base model. Its
error is taken relative to the base model of the same seed (a paired
difference: the seeds' splits move the error by more than most methods do).
A method's *front* is the lower-left envelope of its points: those that no
other point of the method beats on both error and unfairness.

:func:`claims` checks the paper's two claims on a results table, from the
data: (a) firm-side methods reach a lower EqOd than the collective; (b) the
collective reaches its best EqOd at a smaller error increase than any
firm-side method at that EqOd.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import save_figure
from .rows import BASE

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


def curve_points(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """One row per (family, method, point): means and stds over seeds of ``metric`` (``x``),
    the error, and the paired error increase over the same seed's base model."""
    r = undefended(runs)
    base_error = r[r["family"] == "base"].groupby("seed")["error"].mean()
    r = r.assign(error_increase=r["error"] - r["seed"].map(base_error), point=_point_labels(r))
    g = r.groupby(["family", "method", "point"], sort=False)
    out = g.agg(alpha=("alpha", "first"), budget=("budget", "first"), value=("value", "first"),
                x=(metric, "mean"), x_std=(metric, "std"), error=("error", "mean"), error_std=("error", "std"),
                error_increase=("error_increase", "mean"), error_increase_std=("error_increase", "std"),
                seeds=("seed", "nunique")).reset_index()
    return out.assign(metric=metric)


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
    """The paper's two claims, computed on means over seeds (None without both families).

    (a) ``holds_a``: some firm-side point has a lower mean ``metric`` than every
    collective point. (b) ``holds_b``: at the collective's best point (lowest
    mean ``metric`` over methods, alpha and budget), its mean error increase is
    smaller than that of every firm-side method that reaches that ``metric``,
    each method allowed to mix two of its classifiers or the base model
    (:func:`error_at`); methods that never reach it are listed as such.
    """
    pts = curve_points(runs, metric)
    coll, firm, base = (pts[pts["family"] == f] for f in ("collective", "firm", "base"))
    if coll.empty or firm.empty or base.empty:
        return None
    base_pt = base.iloc[0]
    best_c = coll.sort_values(["x", "error_increase"]).iloc[0]
    best_f = firm.sort_values(["x", "error_increase"]).iloc[0]
    x0 = float(best_c["x"])
    per_firm = []
    for method, g in firm.groupby("method", sort=False):
        xs = np.append(g["x"].to_numpy(), base_pt["x"])  # every firm can also keep its base model
        ys = np.append(g["error_increase"].to_numpy(), 0.0)
        best = g.sort_values(["x", "error_increase"]).iloc[0]
        per_firm.append({
            "method": method, "best_x": float(best["x"]), "best_point": best["point"],
            "best_error_increase": float(best["error_increase"]),
            "error_increase_at": error_at(xs, ys, x0, mix=True),
            "error_increase_at_no_mix": error_at(xs, ys, x0, mix=False),
        })
    per_coll = []
    for method, g in coll.groupby("method", sort=False):
        best = g.sort_values(["x", "error_increase"]).iloc[0]
        per_coll.append({"method": method, "best_x": float(best["x"]), "best_x_std": float(best["x_std"]),
                         "best_point": best["point"], "error_increase": float(best["error_increase"]),
                         "error_increase_std": float(best["error_increase_std"])})
    reaching = [f for f in per_firm if np.isfinite(f["error_increase_at"])]
    firm_cost = min((f["error_increase_at"] for f in reaching), default=float("nan"))
    return {
        "metric": metric,
        "seeds": int(pts["seeds"].max()),
        "base": {"x": float(base_pt["x"]), "error": float(base_pt["error"])},
        "best_collective": {"method": best_c["method"], "point": best_c["point"], "x": x0,
                            "x_std": float(best_c["x_std"]), "error_increase": float(best_c["error_increase"]),
                            "error_increase_std": float(best_c["error_increase_std"])},
        "best_firm": {"method": best_f["method"], "point": best_f["point"], "x": float(best_f["x"]),
                      "error_increase": float(best_f["error_increase"])},
        "holds_a": bool(best_f["x"] < x0),
        "holds_b": bool(not reaching or best_c["error_increase"] < firm_cost),
        "firm_reaching": [f["method"] for f in reaching],
        "firm_error_increase_at_best": firm_cost,
        "per_firm": per_firm,
        "per_collective": per_coll,
    }


def _pts(v: float) -> str:
    return f"{100 * v:+.2f} pts"


def claims_text(c: dict | None) -> str:
    """Plain-text statement of :func:`claims` (what the data says)."""
    if c is None:
        return "claims: need both collective and firm-side rows"
    name = METRICS.get(c["metric"], c["metric"])
    bc, bf = c["best_collective"], c["best_firm"]
    lines = [
        f"Claims (computed from means over {c['seeds']} seed(s); base model {name} {c['base']['x']:.4f}, "
        f"error {c['base']['error']:.4f})",
        f"(a) firm-side methods reach a lower {name} than the collective: {'YES' if c['holds_a'] else 'NO'} "
        f"- best firm-side {bf['x']:.4f} ({bf['method']}, {bf['point']}, error {_pts(bf['error_increase'])}) "
        f"vs best collective {bc['x']:.4f} ({bc['method']}, {bc['point']}).",
    ]
    if c["firm_reaching"]:
        reached = [f for f in c["per_firm"] if np.isfinite(f["error_increase_at"])]
        detail = ", ".join(f"{f['method']} {_pts(f['error_increase_at'])}" for f in reached)
        verdict = "YES" if c["holds_b"] else "NO"
        lines.append(
            f"(b) the collective reaches its best {name} at a smaller error increase than any firm-side method "
            f"at that {name}: {verdict} - collective {_pts(bc['error_increase'])} "
            f"(± {100 * bc['error_increase_std']:.2f} over seeds) at {name} {bc['x']:.4f}; least error increase "
            f"of each firm-side method reaching it (mixing allowed): {detail}."
        )
    else:
        lines.append(f"(b) no firm-side method reaches the collective's best {name} {bc['x']:.4f}: YES (vacuously).")
    never = [f["method"] for f in c["per_firm"] if not np.isfinite(f["error_increase_at"])]
    if never:
        lines.append(f"    not reaching {name} {bc['x']:.4f}: {', '.join(never)}")
    return "\n".join(lines)


def claims_html(c: dict | None) -> str:
    """The claims block of the report page: verdicts and the numbers behind them."""
    if c is None:
        return "<p>Needs both the collective's and firm-side rows.</p>"
    text = "".join(f"<p>{html.escape(line)}</p>" for line in claims_text(c).splitlines())
    firm = pd.DataFrame(c["per_firm"]).round(4)
    coll = pd.DataFrame(c["per_collective"]).round(4)
    return (
        text
        + "<p>Per firm-side method: its lowest mean metric and the error increase it needs to reach the "
          "collective's best (with and without mixing two of its classifiers; NaN = never reaches it).</p>"
        + firm.to_html(index=False)
        + "<p>Per collective method: its best point and the error increase there (paired with the same "
          "seed's base model).</p>"
        + coll.to_html(index=False)
    )


# ---------------------------------------------------------------------------------- figures


def plot_fronts(runs: pd.DataFrame, out_dir: str | Path, *, metrics=tuple(METRICS)) -> list[Path]:
    """One figure per metric: every method's front of error increase vs the metric."""
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
            ax.scatter(g["x"], 100 * g["error_increase"], s=8, alpha=0.25, color=colour)
            f = g.iloc[lower_left_front(g["x"], g["error_increase"])]
            sd = 100 * f["error_increase_std"].fillna(0)
            y = 100 * f["error_increase"]
            label = f"{method} ({'collective' if fam == 'collective' else 'firm'})"
            ax.plot(f["x"], y, ls=ls, marker=marker, ms=4, color=colour, label=label)
            ax.fill_between(f["x"], y - sd, y + sd, alpha=0.15, color=colour)
        base = pts[pts["family"] == "base"]
        ax.scatter(base["x"], 100 * base["error_increase"], marker="*", s=200, color="black", zorder=5,
                   label="base model")
        name = METRICS.get(metric, metric)
        seeds = int(pts["seeds"].max()) if len(pts) else 0
        ax.set(xlabel=name, ylabel="test error − base model's (points, same seed)",
               title=f"{dataset}: error vs {name} fronts (mean over {seeds} seeds, band ±1 std)")
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
            on[g.index[lower_left_front(g["x"], g["error_increase"])]] = True
        tables.append(pts.assign(on_front=on))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
