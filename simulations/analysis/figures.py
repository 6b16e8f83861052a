"""The standard figures, each saying what its bands are (95% t intervals over seeds).

Files (names stable across versions):

``best_eqod_vs_alpha.png``
    one row per budget selection: EqOd at the chosen M vs alpha per method
    (left), minus the base model's (middle) and minus random's (right), paired
    per seed.
``eqod_vs_flips_alpha<a>.png``
    at one alpha, EqOd vs the number of flips along the budget grid (left) and
    the paired difference method − random at the same budget (right).
``error_vs_eqod.png``
    one panel per (selection, method): seed means of the error increase (pts)
    and of the EqOd change at the chosen M, both paired with the same seed's
    base model, with interval bars, through alpha.
``pareto_<metric>.png``
    with firm-side rows: the fronts (:func:`.pareto.plot_fronts`).

PNG files are written atomically, so a killed run never leaves half a picture.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import atomic_write_bytes
from ..rows import BASE
from .budgets import TITLES, available_selections, methods_in_order, plain_runs, select_budgets
from .intervals import paired, summarise, t_interval

__all__ = ["caption", "save_figure", "standard_figures"]


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _bands(n: int) -> str:
    return f"bands: 95% CI (t) over {n} seeds" if n > 1 else "1 seed: no intervals"


def caption(path: Path, n_seeds: int) -> str:
    """What a figure shows and what its bands are, for the report page."""
    name = Path(path).stem
    bands = _bands(n_seeds)
    if name == "best_eqod_vs_alpha":
        return ("EqOd at the chosen budget M vs collective size α, one row per budget selection (left); the same "
                "minus the same seed's base model (middle) and minus random's on the same seed and α (right; below "
                f"0 = lower EqOd than random); {bands}. The raw EqOd bands are wide because the splits move EqOd; "
                "the paired panels remove that shared swing.")
    if name.startswith("eqod_vs_flips_alpha"):
        return (f"At α={name.removeprefix('eqod_vs_flips_alpha')}: EqOd vs labels flipped along the budget grid "
                f"(left) and method − random at the same budget, paired per seed (right); {bands}.")
    if name == "error_vs_eqod":
        bars = f"bars: 95% CI (t) over {n_seeds} seeds" if n_seeds > 1 else "1 seed: no intervals"
        return ("Error increase (pts) vs EqOd change at the chosen budget, both paired with the same seed's base "
                "model (★ at 0, 0): seed means, one panel per selection and method, a line through α from the "
                f"smallest to the largest (labelled); {bars}.")
    if name.startswith(("trajectories_budget", "trajectories_M")):
        bands = (f"bands: 95% Student-t interval of the seed mean ({n_seeds} seeds)" if n_seeds > 1
                 else "1 seed: no intervals")
        budget = (f"{name.removeprefix('trajectories_budget')} of the pool" if name.startswith("trajectories_budget")
                  else f"M = {name.removeprefix('trajectories_M')} (a count)")
        return (f"Trajectories over rounds at budget {budget}: per α (columns), the participants' share of the minority, flips − M, the threshold error "
                "in ranks, EqOd, EqOd minus the same seed's base model's in that round (paired per seed) and error "
                "(rows); one line per method (colour) and coordination mode (line style), "
                f"the base model dashed black; lines: the mean over seeds, {bands}.")
    if name.startswith("phase_"):
        return ("Phase diagram over the two swept parameters: the last round's participation (share of the "
                "minority) and EqOd, each cell the mean over seeds with its 95% Student-t interval's half-width "
                f"(±); {n_seeds} seed{'s' if n_seeds != 1 else ''}.")
    if name.startswith("pareto_"):
        return (f"Error increase (pts) vs {name.removeprefix('pareto_')} for the collective and firm-side methods; "
                f"lines: each method's front of seed means; {bands}.")
    return name


def _colours(methods) -> dict:
    return {m: f"C{i}" for i, m in enumerate(methods)}


def _line(ax, x, s: pd.DataFrame, colour, label, *, marker="o"):
    ax.plot(x, s["mean"], marker=marker, ms=4, label=label, color=colour)
    if s["lo"].notna().any():
        ax.fill_between(x, s["lo"], s["hi"], alpha=0.18, color=colour, lw=0)


def _base_band(ax, base: pd.DataFrame, metric: str):
    i = t_interval(base[metric].to_numpy(dtype=float))
    ax.axhline(i.mean, ls="--", color="black", lw=1, label="base model")
    if np.isfinite(i.lo):
        ax.axhspan(i.lo, i.hi, color="black", alpha=0.07, lw=0)


def standard_figures(runs: pd.DataFrame, out_dir: str | Path, *, focus_alpha: float = 0.3,
                     metric: str = "eqod") -> list[Path]:
    """The three standard figures as PNG files in ``out_dir``; returns their paths."""
    runs = plain_runs(runs)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    base = runs[runs["method"] == BASE]
    methods = methods_in_order(runs)
    colours = _colours(methods)
    n = int(runs["seed"].nunique())
    selections = available_selections(runs, metric)
    chosen = {s: select_budgets(runs, s, metric) for s in selections}
    others = [m for m in methods if m != "random"]
    dataset = f"{runs['dataset'].iloc[0]}: " if "dataset" in runs.columns and len(runs) else ""

    # 1. EqOd at the chosen budget vs alpha; paired differences to the base model and to random.
    fig, axes = plt.subplots(len(selections), 3, figsize=(15, 3.4 * len(selections)), squeeze=False,
                             sharex=True, sharey="col")
    for row, selection in zip(axes, selections):
        sel = chosen[selection]
        for m in methods:
            s = summarise(sel[sel["method"] == m], ["alpha"], metric)
            _line(row[0], s["alpha"], s, colours[m], m)
            s = summarise(sel[sel["method"] == m], ["alpha"], "vs_base")
            _line(row[1], s["alpha"], s, colours[m], m)
        _base_band(row[0], base, metric)
        row[0].set(ylabel=f"{TITLES[selection]}\n\nEqOd at the chosen M")
        row[1].axhline(0, color="black", ls="--", lw=1, label="base model")
        row[1].set(ylabel="EqOd − the base model's (paired)")
        if "random" in methods and others:
            d = paired(sel[sel["method"] != "random"], sel[sel["method"] == "random"], ["seed", "alpha"], metric)
            for m in others:
                s = summarise(d[d["method"] == m], ["alpha"], "diff")
                _line(row[2], s["alpha"], s, colours[m], m)
            row[2].axhline(0, color=colours["random"], lw=1, label="random")
            row[2].set(ylabel="EqOd − random's (paired)")
        else:
            row[2].set_axis_off()
    for ax in axes[-1]:
        ax.set(xlabel="collective size α (fraction of the minority)")
    for ax in axes[0]:
        if ax.has_data():
            ax.legend(fontsize=7)
    axes[0][0].set_title("EqOd (band of the base model: grey)", fontsize=10)
    axes[0][1].set_title("paired with the same seed's base model", fontsize=10)
    axes[0][2].set_title("paired with random (same seed and α); < 0: lower than random", fontsize=10)
    fig.suptitle(f"{dataset}EqOd at the chosen budget M, one row per budget selection ({_bands(n)})")
    fig.tight_layout()
    written.append(out_dir / "best_eqod_vs_alpha.png")
    save_figure(fig, written[-1])
    plt.close(fig)

    # 2. EqOd vs number of flips at the alpha closest to focus_alpha, and method - random at the same budget.
    cells = runs[runs["method"] != BASE]
    alphas = np.array(sorted(cells["alpha"].unique()))
    if alphas.size:
        alpha = float(alphas[np.argmin(np.abs(alphas - focus_alpha))])
        at = cells[np.isclose(cells["alpha"], alpha)]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        flips = at.groupby(["method", "budget_kind", "budget"])["flips"].mean().rename("flips_mean").reset_index()
        for m in methods:
            s = summarise(at[at["method"] == m], ["budget_kind", "budget"], metric)
            s = s.merge(flips[flips["method"] == m], on=["budget_kind", "budget"]).sort_values("flips_mean")
            _line(axes[0], s["flips_mean"], s, colours[m], m)
        _base_band(axes[0], base, metric)
        axes[0].set(xlabel="labels flipped (mean over seeds)", ylabel="EqOd")
        axes[0].legend(fontsize=7)
        if "random" in methods and others:
            keys = ["seed", "budget_kind", "budget"]
            d = paired(at[at["method"] != "random"], at[at["method"] == "random"], keys, metric)
            for m in others:
                s = summarise(d[d["method"] == m], ["budget_kind", "budget"], "diff")
                s = s.merge(flips[flips["method"] == m], on=["budget_kind", "budget"]).sort_values("flips_mean")
                _line(axes[1], s["flips_mean"], s, colours[m], m)
            axes[1].axhline(0, color="grey", lw=0.8)
            axes[1].set(xlabel="labels flipped (mean over seeds)", ylabel="EqOd − random's at the same M (paired)")
            axes[1].legend(fontsize=7)
        else:
            axes[1].set_axis_off()
        fig.suptitle(f"{dataset}EqOd along the budget grid at α={alpha:g} ({_bands(n)})")
        fig.tight_layout()
        written.append(out_dir / f"eqod_vs_flips_alpha{alpha:g}.png")
        save_figure(fig, written[-1])
        plt.close(fig)

    # 3. Error increase vs EqOd change at the chosen budget, both paired with the same seed's base model:
    #    seed means with interval bars, one panel per (selection, method), alpha written at each point.
    fig, axes = plt.subplots(len(selections), len(methods), figsize=(3.6 * len(methods) + 0.6,
                             3.3 * len(selections)), squeeze=False, sharex=True, sharey=True)
    for row, selection in zip(axes, selections):
        sel = chosen[selection]
        for ax, m in zip(row, methods):
            x = summarise(sel[sel["method"] == m], ["alpha"], "vs_base")
            y = summarise(sel[sel["method"] == m], ["alpha"], "error_increase_pts")
            xerr = np.vstack([x["mean"] - x["lo"], x["hi"] - x["mean"]]) if x["lo"].notna().all() else None
            yerr = np.vstack([y["mean"] - y["lo"], y["hi"] - y["mean"]]) if y["lo"].notna().all() else None
            ax.errorbar(x["mean"], y["mean"], xerr=xerr, yerr=yerr, color=colours[m], lw=1, elinewidth=0.7,
                        capsize=2, marker="o", ms=4)
            for i in sorted({0, len(x) - 1}) if len(x) else ():  # the line's ends: smallest and largest alpha
                ax.annotate(f"α={x['alpha'].iat[i]:g}", (x["mean"].iat[i], y["mean"].iat[i]), fontsize=7,
                            xytext=(-4, -11) if i == 0 else (4, 4), ha="right" if i == 0 else "left",
                            textcoords="offset points")
            ax.plot([0], [0], marker="*", ms=11, color="black", ls="none")
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.set_title(f"{m}", fontsize=10)
        row[0].set(ylabel=f"{TITLES[selection]}\n\nerror increase (pts)")
    for ax in axes[-1]:
        ax.set(xlabel="EqOd − the base model's")
    bars = f"bars: 95% CI (t) over {n} seeds" if n > 1 else "1 seed: no intervals"
    fig.suptitle(f"{dataset}error cost vs EqOd change at the chosen budget, both paired with the same seed's base "
                 f"model (★), a line through α; {bars}")
    fig.tight_layout()
    written.append(out_dir / "error_vs_eqod.png")
    save_figure(fig, written[-1])
    plt.close(fig)
    return written
