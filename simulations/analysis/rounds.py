"""Many rounds (``rounds.csv``): per-round summaries over seeds, trajectories and their report.

``rounds.csv`` (:mod:`simulations.dynamics`) has one row per seed x coordination mode x cell x
round. A *trajectory* is everything but the seed and the round: the coordination mode, the cell
(method, alpha, budget) and, in a sweep (:mod:`simulations.sweeps`), the swept parameters
(columns named by their dotted key, e.g. ``dynamics.compliance``). Seeds are the replications,
so every number here is a mean over seeds with its Student-t 95% interval
(:func:`.intervals.t_interval`), per trajectory and round.

Files (names stable across versions):

``rounds_summary.csv``
    per trajectory and round: ``seeds`` and, for every quantity of :data:`ROUND_QUANTITIES`
    present, ``<q>`` (mean over seeds), ``<q>_lo`` and ``<q>_hi`` (the interval; NaN with one seed).
``trajectories_budget<b>.png`` (``trajectories_M<b>.png`` for a count)
    one figure per budget: columns alpha, rows participation, flips - M, threshold error (ranks),
    EqOd, EqOd minus the same seed's base model's (paired) and error; one line per method and coordination mode, bands the 95% interval of the seed mean.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agents.errors import DataError

from ..results import atomic_write_text
from ..rows import BASE
from .intervals import interval_note, interval_text, t_interval

__all__ = ["ROUND_QUANTITIES", "SUMMARY_FILE", "last_round", "plot_trajectories", "read_rounds", "report_rounds",
           "rounds_section", "rounds_summary", "sweep_columns", "trajectory_keys", "with_paired",
           "write_rounds_summary"]

SUMMARY_FILE = "rounds_summary.csv"
# What a researcher reads per round (issue 9), with a heading and a format for the report.
ROUND_QUANTITIES = {
    "participants": ("participants", ".0f"),
    "participant_share": ("participants / minority", ".3f"),
    "members_reached": ("members reached", ".0f"),
    "free_riders": ("free riders", ".0f"),
    "m": ("M", ".0f"),
    "intended_flips": ("intended flips", ".0f"),
    "flips": ("flips", ".0f"),
    "flips_minus_m": ("flips − M", "+.1f"),
    "threshold_error": ("threshold error (score)", ".4f"),
    "threshold_error_rank": ("threshold error (ranks)", ".1f"),
    "error": ("error", ".4f"),
    "sp_diff": ("SP", ".3f"),
    "eqod": ("EqOd", ".3f"),
    "eqod_vs_base": ("EqOd − base", "+.3f"),
    "eopp_diff": ("EOpp", ".3f"),
    "success": ("S", ".3f"),
    "benefit_participants": ("benefit of acting", "+.4f"),
    "benefit_free_riders": ("benefit of free riding", "+.4f"),
    "retrain_seconds": ("retrain s", ".3f"),
}
CELL_KEYS = ("coordination", "method", "alpha", "budget_kind", "budget")
REQUIRED = ("seed", "round", *CELL_KEYS, "eqod")
# The figure's rows: (column, axis label).
PANELS = (("participant_share", "participants / minority"), ("flips_minus_m", "flips − M"),
          ("threshold_error_rank", "threshold error (ranks)"), ("eqod", "EqOd"),
          ("eqod_vs_base", "EqOd − base (paired)"), ("error", "error"))


def sweep_columns(rounds: pd.DataFrame) -> list[str]:
    """The swept parameters' columns (dotted keys, e.g. ``dynamics.compliance``), in table order."""
    return [c for c in rounds.columns if "." in c]


def trajectory_keys(rounds: pd.DataFrame) -> list[str]:
    """What tells trajectories apart: the swept parameters, the coordination mode and the cell."""
    return [*sweep_columns(rounds), *CELL_KEYS]


def read_rounds(path: str | Path) -> pd.DataFrame:
    """A ``rounds.csv``, checked to hold what the summaries need (one :class:`DataError` line if not)."""
    allowed = "allowed: a rounds.csv written by 'collective-fairness run' of a [dynamics] scenario"
    try:
        rounds = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable per-round table ({' '.join(str(exc).split())}); {allowed}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); {allowed}") from None
    missing = [c for c in REQUIRED if c not in rounds.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; {allowed} (columns {', '.join(REQUIRED)}, "
                        "...)")
    return rounds


def with_paired(rounds: pd.DataFrame) -> pd.DataFrame:
    """``rounds`` with ``eqod_vs_base``: EqOd minus the same seed's base model's in the same round (and
    sweep point), paired per seed: the seed-to-seed swing of EqOd that both share drops out."""
    on = [*sweep_columns(rounds), "seed", "round"]
    base = rounds.loc[rounds["method"] == BASE, [*on, "eqod"]].drop_duplicates(on).rename(columns={"eqod": "_base"})
    out = rounds.merge(base, on=on, how="left", validate="many_to_one")
    return out.assign(eqod_vs_base=out["eqod"] - out["_base"]).drop(columns="_base")


def rounds_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per trajectory and round: ``seeds`` and mean, ``_lo``, ``_hi`` over seeds of every quantity present
    (``eqod_vs_base`` paired per seed: :func:`with_paired`)."""
    rounds = with_paired(rounds)
    keys = [*trajectory_keys(rounds), "round"]
    quantities = [q for q in ROUND_QUANTITIES if q in rounds.columns]
    rows = []
    for key, g in rounds.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key))
        row["seeds"] = int(g["seed"].nunique())
        for q in quantities:
            i = t_interval(g[q].to_numpy(dtype=float))
            row.update({q: i.mean, f"{q}_lo": i.lo, f"{q}_hi": i.hi})
        rows.append(row)
    columns = [*keys, "seeds", *(f"{q}{s}" for q in quantities for s in ("", "_lo", "_hi"))]
    return pd.DataFrame(rows, columns=columns)


def write_rounds_summary(rounds: pd.DataFrame, out_dir: str | Path) -> Path:
    path = Path(out_dir) / SUMMARY_FILE
    atomic_write_text(path, rounds_summary(rounds).to_csv(index=False))
    return path


def last_round(summary: pd.DataFrame) -> pd.DataFrame:
    """Each trajectory's last round of a :func:`rounds_summary` table."""
    last = summary.groupby(trajectory_keys(summary), dropna=False)["round"].transform("max")
    return summary[summary["round"] == last].reset_index(drop=True)


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    """Base first, then the cells as the table lists them."""
    return frame.assign(_b=frame["method"] != BASE).sort_values(["_b", *trajectory_keys(frame)]).drop(columns="_b")


def plot_trajectories(rounds: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``trajectories_budget<b>.png`` per fraction budget, ``trajectories_M<b>.png`` per count budget
    (none for a sweep: see :mod:`simulations.sweeps`)."""
    if sweep_columns(rounds):
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .figures import save_figure

    summary = rounds_summary(rounds)
    n = int(rounds["seed"].nunique())
    cells = summary[summary["method"] != BASE]
    base = summary[summary["method"] == BASE]
    base = base[base["coordination"] == base["coordination"].iloc[0]] if len(base) else base
    methods = list(dict.fromkeys(cells["method"]))
    modes = list(dict.fromkeys(cells["coordination"]))
    alphas = sorted(cells["alpha"].unique())
    panels = [(c, label) for c, label in PANELS if c in summary.columns and summary[c].notna().any()]
    dataset = f"{rounds['dataset'].iloc[0]}: " if "dataset" in rounds.columns and len(rounds) else ""
    bands = f"bands: 95% t interval of the mean over {n} seeds" if n > 1 else "1 seed: no intervals"
    written = []
    for (kind, budget), at in cells.groupby(["budget_kind", "budget"], sort=True):
        fig, axes = plt.subplots(len(panels), len(alphas), figsize=(4.2 * len(alphas) + 1, 2.3 * len(panels)),
                                 squeeze=False, sharex=True, sharey="row")
        for j, alpha in enumerate(alphas):
            for i, (column, label) in enumerate(panels):
                ax = axes[i][j]
                for mi, method in enumerate(methods):
                    for li, mode in enumerate(modes):
                        s = at[(at["alpha"] == alpha) & (at["method"] == method) & (at["coordination"] == mode)]
                        if s.empty:
                            continue
                        ax.plot(s["round"], s[column], color=f"C{mi}", ls=("-", "--", ":", "-.")[li % 4], marker="o",
                                ms=3, label=f"{method}, {mode}")
                        if s[f"{column}_lo"].notna().any():
                            ax.fill_between(s["round"], s[f"{column}_lo"], s[f"{column}_hi"], color=f"C{mi}",
                                            alpha=0.15, lw=0)
                if column in ("eqod", "error") and len(base):
                    ax.plot(base["round"], base[column], color="black", lw=1, ls="--", label="base model")
                    if base[f"{column}_lo"].notna().any():
                        ax.fill_between(base["round"], base[f"{column}_lo"], base[f"{column}_hi"], color="black",
                                        alpha=0.07, lw=0)
                if column in ("flips_minus_m", "eqod_vs_base"):
                    ax.axhline(0, color="grey", lw=0.6)
                if j == 0:
                    ax.set_ylabel(label)
            axes[0][j].set_title(f"α={alpha:g}", fontsize=10)
            axes[-1][j].set_xlabel("round")
        axes[0][0].legend(fontsize=7)
        shown = f"{budget:g}·pool" if kind == "fraction" else f"M={budget:g}"
        fig.suptitle(f"{dataset}trajectories over rounds at budget {shown}; lines: mean over seeds, {bands}")
        fig.tight_layout()
        # A fraction of the pool and a count of the same number are two figures (budget1 vs M1).
        name = f"trajectories_budget{budget:g}.png" if kind == "fraction" else f"trajectories_M{budget:g}.png"
        written.append(Path(out_dir) / name)
        save_figure(fig, written[-1])
        plt.close(fig)
    return written


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _cell_label(row) -> str:
    if row["method"] == BASE:
        return "base model"
    budget = f"{row['budget']:g}·pool" if row["budget_kind"] == "fraction" else f"M={row['budget']:g}"
    params = ", ".join(f"{c.rsplit('.', 1)[-1]}={_value(row[c])}" for c in sweep_columns(pd.DataFrame([row])))
    return ", ".join(x for x in (params, row["coordination"], row["method"], f"α={row['alpha']:g}", budget) if x)


def rounds_section(rounds: pd.DataFrame) -> str:
    """The report's block: each trajectory's last round, "mean [95% CI]" over seeds."""
    summary = rounds_summary(rounds)
    last = _order(last_round(summary))
    n = int(summary["seeds"].max()) if len(summary) else 0
    shown = [q for q in ROUND_QUANTITIES if q in last.columns and last[q].notna().any()]
    table = pd.DataFrame({
        "trajectory": [_cell_label(r) for _, r in last.iterrows()],
        "round": last["round"].to_numpy(),
        **{ROUND_QUANTITIES[q][0]: [interval_text(m, lo, hi, ROUND_QUANTITIES[q][1])
                                    for m, lo, hi in zip(last[q], last[f"{q}_lo"], last[f"{q}_hi"])] for q in shown},
    })
    return (f"<p class='note'>Each trajectory's last round, {interval_note(n)} (seeds are the replications; the "
            "same seed's trajectories share every random draw). Every round of every trajectory, with its interval, "
            f"is in <code>{SUMMARY_FILE}</code>; every seed's rows in <code>rounds.csv</code>. threshold error = mean "
            "|own threshold − the exact M-th best| over the candidates holding a signal; in ranks: how many more or "
            "fewer candidates it lets flip than M.</p>" + table.to_html(index=False))


def report_rounds(folder) -> tuple[list[Path], list[tuple[str, str]]]:
    """For a results folder with a ``rounds.csv``: write ``rounds_summary.csv`` and the trajectory
    figures; returns (figures, report sections). Nothing (``[], []``) without one."""
    path = Path(folder.path) / "rounds.csv"
    if not path.exists():
        return [], []
    rounds = read_rounds(path)
    write_rounds_summary(rounds, folder.path)
    figures = plot_trajectories(rounds, folder.path)
    return figures, [("Many rounds: each trajectory's last round", rounds_section(rounds))]

