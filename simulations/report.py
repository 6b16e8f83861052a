"""Summaries and figures from a tidy results table.

The headline of the paper is the *best EqOd over the budget M* for each
collective size alpha: the collective picks the budget that helps most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import save_figure
from .results import atomic_write_text
from .rows import BASE

__all__ = ["best_over_budget", "comparison_sections", "format_summary", "plain_runs", "plot_all", "summary_table"]



def plain_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The base and undefended collective rows (drops firm-side, defended and adaptive rows, if any)."""
    if "family" not in runs.columns:
        return runs
    keep = (runs["family"].isin(["base", "collective"]) & (runs["defence"].astype(str) == "none")
            & ~runs["adaptive"].astype(bool))
    return runs[keep]


def best_over_budget(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """Per (method, alpha, seed): the run with the lowest ``metric`` over budgets."""
    runs = plain_runs(runs)
    cells = runs[runs["method"] != BASE]
    idx = cells.groupby(["method", "alpha", "seed"], sort=True)[metric].idxmin()
    return cells.loc[idx.dropna().astype(int)].reset_index(drop=True)


def summary_table(runs: pd.DataFrame, metric: str = "eqod") -> pd.DataFrame:
    """Tidy summary: mean and std over seeds of the best ``metric`` and its error."""
    runs = plain_runs(runs)
    best = best_over_budget(runs, metric)
    base = runs[runs["method"] == BASE].set_index("seed")
    best = best.assign(error_increase=best["error"].to_numpy() - base.loc[best["seed"], "error"].to_numpy())
    agg = best.groupby(["method", "alpha"]).agg(
        **{f"best_{metric}": (metric, "mean"), f"best_{metric}_std": (metric, "std"),
           "error": ("error", "mean"), "error_increase": ("error_increase", "mean"),
           "flips": ("flips", "mean"), "seeds": ("seed", "nunique")}
    )
    return agg.reset_index()


def format_summary(runs: pd.DataFrame, metric: str = "eqod") -> str:
    """The terminal summary: best ``metric`` over M, method x alpha, mean ± std over seeds."""
    runs = plain_runs(runs)
    table = summary_table(runs, metric)
    base = runs[runs["method"] == BASE]
    cell = table.assign(
        text=[f"{m:.3f}±{s:.3f}" if np.isfinite(s) else f"{m:.3f}"
              for m, s in zip(table[f"best_{metric}"], table[f"best_{metric}_std"])]
    )
    pivot = cell.pivot(index="method", columns="alpha", values="text")
    pivot.columns = [f"α={a:g}" for a in pivot.columns]
    lines = [
        f"Best {metric} over the budget M (mean ± std over {base['seed'].nunique()} seed(s))",
        f"base model: {metric} {base[metric].mean():.3f}, error {base['error'].mean():.3f}",
        pivot.to_string(),
    ]
    err = table.pivot(index="method", columns="alpha", values="error_increase")
    err.columns = [f"α={a:g}" for a in err.columns]
    lines += ["", "error increase at that budget (points)", (100 * err).round(2).to_string()]
    return "\n".join(lines)


def plot_all(runs: pd.DataFrame, out_dir: str | Path, *, focus_alpha: float = 0.3) -> list[Path]:
    """The three standard figures, as PNG files in ``out_dir`` (plus the Pareto fronts
    when the table has firm-side or defence rows)."""
    from .pareto import has_comparison, plot_fronts

    extra = plot_fronts if has_comparison(runs) else None
    full, runs = runs, plain_runs(runs)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    base = runs[runs["method"] == BASE]
    methods = [m for m in runs["method"].unique() if m != BASE]
    colours = {m: f"C{i}" for i, m in enumerate(methods)}

    # 1. best EqOd over M vs alpha, one line per method, band = ±1 std over seeds.
    table = summary_table(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        t = table[table["method"] == m]
        std = t["best_eqod_std"].fillna(0)
        ax.plot(t["alpha"], t["best_eqod"], marker="o", label=m, color=colours[m])
        ax.fill_between(t["alpha"], t["best_eqod"] - std, t["best_eqod"] + std, alpha=0.2, color=colours[m])
    ax.axhline(base["eqod"].mean(), ls="--", color="black", label="base model")
    ax.set(xlabel="collective size α (fraction of the minority)", ylabel="best EqOd over M",
           title="Best EqOd reached by the collective")
    ax.legend()
    written.append(out_dir / "best_eqod_vs_alpha.png")
    save_figure(fig, written[-1])
    plt.close(fig)

    # 2. EqOd vs number of flips at the alpha closest to focus_alpha.
    alphas = np.array(sorted(runs.loc[runs["method"] != BASE, "alpha"].unique()))
    if alphas.size:
        alpha = float(alphas[np.argmin(np.abs(alphas - focus_alpha))])
        at = runs[(runs["method"] != BASE) & np.isclose(runs["alpha"], alpha)]
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            # One point per budget of the grid: mean flips and EqOd over seeds.
            g = (at[at["method"] == m].groupby(["budget_kind", "budget"])
                 .agg(flips=("flips", "mean"), eqod=("eqod", "mean"), sd=("eqod", "std"))
                 .sort_values("flips"))
            ax.plot(g["flips"], g["eqod"], marker="o", label=m, color=colours[m])
            ax.fill_between(g["flips"], g["eqod"] - g["sd"].fillna(0), g["eqod"] + g["sd"].fillna(0),
                            alpha=0.2, color=colours[m])
        ax.axhline(base["eqod"].mean(), ls="--", color="black", label="base model")
        ax.set(xlabel="labels flipped (M)", ylabel="EqOd", title=f"EqOd vs flips at α={alpha:g}")
        ax.legend()
        written.append(out_dir / f"eqod_vs_flips_alpha{alpha:g}.png")
        save_figure(fig, written[-1])
        plt.close(fig)

    # 3. error vs EqOd, every run.
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        r = runs[runs["method"] == m]
        ax.scatter(r["eqod"], r["error"], s=10, alpha=0.5, label=m, color=colours[m])
    ax.scatter(base["eqod"], base["error"], marker="*", s=150, color="black", label="base model", zorder=5)
    ax.set(xlabel="EqOd", ylabel="test error", title="Error vs EqOd (every run)")
    ax.legend()
    written.append(out_dir / "error_vs_eqod.png")
    save_figure(fig, written[-1])
    plt.close(fig)
    if extra is not None:
        written += extra(full, out_dir)
    return written


def write_summary(runs: pd.DataFrame, out_dir: str | Path) -> str:
    """Write ``summary.csv`` and ``summary.txt``; return the text summary."""
    from .pareto import has_comparison

    out_dir = Path(out_dir)
    text = format_summary(runs)
    atomic_write_text(out_dir / "summary.csv", summary_table(runs).to_csv(index=False))
    if has_comparison(runs):
        text += "\n\n" + _comparison_text(runs, out_dir)
    atomic_write_text(out_dir / "summary.txt", text + "\n")
    return text


_DEFENCE_COLUMNS = ["method", "alpha", "budget", "variant", "defence", "action", "flips", "flagged", "flagged_true",
                    "recall", "eqod", "gain_kept", "gain_kept_same_defence", "error_cost", "error_increase"]


def _comparison_text(runs: pd.DataFrame, out_dir: Path) -> str:
    """Claims and defence table as text; fronts.csv and defences.csv beside the summary."""
    from .comparison import defence_table
    from .pareto import claims, claims_text, front_table

    atomic_write_text(out_dir / "fronts.csv", front_table(runs).to_csv(index=False))
    lines = [claims_text(claims(runs))]
    table = defence_table(runs)
    if not table.empty:
        atomic_write_text(out_dir / "defences.csv", table.to_csv(index=False))
        lines += ["", "Defences (means over seeds; gain_kept = share of the collective's EqOd gain left; "
                  "gain_kept_same_defence = the same against the defence applied when nobody attacks; "
                  "error_cost = error - undefended error)", table[_DEFENCE_COLUMNS].round(4).to_string(index=False)]
    return "\n".join(lines)


def comparison_sections(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Report blocks for firm-side baselines and defences (none for a plain collective table)."""
    from .comparison import defence_table
    from .pareto import claims, claims_html, front_table, has_comparison

    if not has_comparison(runs):
        return []
    sections = [("Claims, computed from the data", claims_html(claims(runs)))]
    fronts = front_table(runs)
    on = fronts[(fronts["metric"] == "eqod") & fronts["on_front"]]
    cols = ["family", "method", "point", "x", "x_std", "error", "error_increase", "error_increase_std", "seeds"]
    sections.append((
        "Error vs EqOd fronts (points on each method's lower-left envelope)",
        "<p>x = EqOd, mean over seeds; error_increase = test error minus the same seed's base model's. "
        "All points of all metrics are in fronts.csv.</p>" + on[cols].round(4).to_html(index=False),
    ))
    table = defence_table(runs)
    if not table.empty:
        sections.append((
            "A firm that fights back: defences and the adaptive collective",
            "<p>Per attacked cell, variant (plain or adaptive collective), audit and action, means over seeds. "
            "flagged_true = flagged rows that were flipped; recall = flagged_true / flips; gain_kept = (base EqOd "
            "- EqOd) / (base EqOd - the plain undefended cell's EqOd): 1 = the defence changed nothing, 0 = the "
            "collective's gain is gone; gain_kept_same_defence compares with the same defence applied when "
            "nobody attacks (eqod_defended_base), which separates undoing the collective from the audit's own "
            "effect on EqOd; error_cost = error - the undefended cell's error; method 'base' = the defence "
            "applied when nobody attacks.</p>" + table.round(4).to_html(index=False),
        ))
    return sections


def _img(path: Path) -> str:
    import base64

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{path.stem}" src="data:image/png;base64,{data}"><figcaption>{path.stem}</figcaption></figure>'


def write_html(folder, runs: pd.DataFrame, figures: list[Path], *, sections: list[tuple[str, str]] = ()) -> Path:
    """One self-contained HTML page: scenario, tables, figures, versions and seeds.

    Figures are embedded (base64), so the page can be mailed or archived alone.
    ``sections`` adds (title, html) blocks, e.g. baseline and defence tables.
    """
    import html
    import json

    path = Path(folder.path)
    scenario_text = folder.scenario_toml.read_text(encoding="utf-8") if folder.scenario_toml.exists() else ""
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    base = plain_runs(runs)
    base = base[base["method"] == BASE]
    base_cols = [c for c in ("error", "eqod", "eqod_max", "sp_diff", "eopp_diff", "tpr_0", "tpr_1", "fpr_0", "fpr_1")
                 if c in base.columns]
    base_table = base[base_cols].agg(["mean", "std"]).T.round(4)
    summary = summary_table(runs).round(4)
    name = html.escape(str(manifest.get("scenario", path.name)))
    env = manifest.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{name}: collective action results</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}figure{display:inline-block;margin:0.5em}"
        "img{max-width:520px}</style></head><body>",
        f"<h1>{name}</h1>",
        "<p>Minority algorithmic collective action (arXiv 2508.15374): a fraction α of the protected "
        "minority relabels its members' negative labels ranked by a score; the firm trains as usual.</p>",
        f"<p><b>Seeds:</b> {html.escape(str(sorted(runs['seed'].unique().tolist())))} &middot; "
        f"<b>runs:</b> {len(runs)} &middot; <b>Python</b> {html.escape(str(env.get('python', '?')))} &middot; "
        f"{html.escape(versions)}</p>",
        "<h2>Base model (nobody relabels)</h2>", base_table.to_html(),
        "<h2>Best EqOd over the budget M</h2>",
        "<p>Per method and α: the budget with the lowest EqOd, mean over seeds; error increase in "
        "absolute error vs the base model of the same seed.</p>",
        summary.to_html(index=False),
        "<h2>Figures</h2>", *(_img(f) for f in figures),
    ]
    for title, block in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", block]
    parts += [
        "<h2>Re-run</h2>",
        f"<pre>collective-fairness run {html.escape(str(path / 'scenario.toml'))} --out NEW_FOLDER</pre>",
        "<h3>Scenario</h3>", f"<pre>{html.escape(scenario_text)}</pre>",
        "<h3>Manifest</h3>", f"<pre>{html.escape(json.dumps(manifest, indent=2))}</pre>",
        "</body></html>",
    ]
    out = path / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
