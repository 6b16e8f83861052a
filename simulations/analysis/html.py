"""The self-contained report page: claims first, then warnings, tables, figures and provenance."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from ..results import atomic_write_text
from .budgets import DESCRIPTIONS, TITLES, available_selections, edge_warnings
from .claims import DOES_NOT_HOLD, HOLDS, IDENTICAL, NAMES, NO_VALIDATION, claim_lines, collective_claims
from .figures import caption
from .intervals import interval_note, interval_text
from .tables import quantities, base_summary, budget_grid, grid, summary_table

__all__ = ["comparison_sections", "write_html"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse;font-size:88%;margin:0.3em 0 1em}"
    "td,th{border:1px solid #ccc;padding:2px 7px;text-align:right;white-space:nowrap}"
    "td{font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
    ".holds{background:#dff3df}.fails{background:#f8dcdc}.same{background:#e8e8e8}.open{color:#555}"
    ".verdict-holds{color:#17692a;font-weight:600}.verdict-fails{color:#a11;font-weight:600}"
    ".verdict-open{color:#555}"
    ".warn{background:#fff6d6;border-left:4px solid #e0b000;padding:0.5em 1em}"
    ".edge{background:#fff0b3}.note{color:#444;font-size:92%}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto}figure{margin:1em 0}"
    "figcaption{color:#444;font-size:92%;max-width:1000px}img{max-width:100%}"
    "h3{margin-bottom:0.2em}ul{margin-top:0.2em}"
)
_CLASS = {HOLDS: "holds", DOES_NOT_HOLD: "fails", IDENTICAL: "same"}


def _verdict_html(text: str) -> str:
    """A claim line with its verdict words coloured."""
    out = html.escape(text)
    out = out.replace(DOES_NOT_HOLD, f"<span class='verdict-fails'>{DOES_NOT_HOLD}</span>")
    out = out.replace(f"{HOLDS} at", f"<span class='verdict-holds'>{HOLDS}</span> at")
    return out.replace("not resolved at", "<span class='verdict-open'>not resolved</span> at")


def _grid_html(strings: pd.DataFrame, classes: pd.DataFrame | None = None) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in strings.columns) + "</tr>"
    body = []
    for i, (index, row) in enumerate(strings.iterrows()):
        cells = []
        for j, value in enumerate(row):
            cls = classes.iat[i, j] if classes is not None else ""
            attr = f" class='{cls}'" if cls else ""
            cells.append(f"<td{attr}>{html.escape(str(value))}</td>")
        body.append(f"<tr><th>{html.escape(str(index))}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _classes(claims: pd.DataFrame, selection: str, claim: str, like: pd.DataFrame) -> pd.DataFrame:
    c = claims[(claims["selection"] == selection) & (claims["claim"] == claim)]
    cls = c.assign(cls=[_CLASS.get(v, "open") for v in c["verdict"]])
    out = cls.pivot(index="alpha", columns="method", values="cls")
    out.index = [f"α={a:g}" for a in out.index]
    return out.reindex(index=like.index, columns=like.columns).fillna("")


def claims_section(runs: pd.DataFrame, metric: str = "eqod") -> str:
    """The opening block: the collective's claims per selection (and the firm-side claims, if any)."""
    from .pareto import claims as firm_claims
    from .pareto import claims_html, has_comparison

    claims = collective_claims(runs, metric)
    n = int(claims["n"].max()) if len(claims) else 0
    parts = [
        f"<p class='note'>Each claim rests on {n} seed{'s' if n != 1 else ''} (fewer where stated): a per-seed "
        "paired difference summarised by its 95% t interval over seeds: <span class='verdict-holds'>holds</span> "
        "= the interval lies entirely on "
        "the claimed side, <span class='verdict-fails'>does not hold</span> = entirely on the other side, "
        "<span class='verdict-open'>not resolved at N seeds</span> = it covers the bound, no difference = the same "
        "value at every seed (e.g. both methods flip the whole pool). Add seeds to this "
        "folder (<code>collective-fairness run … --seeds …</code>) and re-run <code>collective-fairness report"
        "</code> to resolve more. The grids with every interval are in the tables below.</p>"
    ]
    if "validation" not in set(claims["selection"]):
        parts.append(f"<p><b>{TITLES['validation']}</b>: not reported — {html.escape(NO_VALIDATION)}.</p>")
    lines = claim_lines(claims, metric)
    items = []
    for line in lines:
        if not line.startswith(" "):
            if items:
                parts.append("<ul>" + "".join(items) + "</ul>")
                items = []
            title, _, rest = line.partition(": ")
            parts.append(f"<h3>{html.escape(title)}</h3><p class='note'>{html.escape(rest)}</p>")
        elif line.startswith("  ("):
            if items:
                parts.append("<ul>" + "".join(items) + "</ul>")
                items = []
            parts.append(f"<p><b>{html.escape(line.strip())}</b></p>")
        else:
            method, _, rest = line.strip().partition("  ")
            items.append(f"<li><b>{html.escape(method)}</b>: {_verdict_html(rest.strip())}</li>")
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    if has_comparison(runs):
        parts += ["<h3>Firm-side methods against the collective</h3>", claims_html(firm_claims(runs))]
    return "\n".join(parts)


def tables_section(runs: pd.DataFrame, metric: str = "eqod") -> str:
    """Per selection, alpha x method grids of "mean [95% CI]" (claim cells coloured by verdict)."""
    table = summary_table(runs, metric)
    claims = collective_claims(runs, metric)
    n = int(table["seeds"].max()) if len(table) else 0
    name = NAMES.get(metric, metric)
    parts = [f"<p class='note'>Cells: {interval_note(n)}; rows α (collective size), columns method. "
             "Differences are paired per seed. Green: the claim holds; red: it does not; grey: no difference "
             "(the same value at every seed); uncoloured: not resolved.</p>"]
    for selection in available_selections(runs, metric):
        t = table[table["selection"] == selection]
        parts.append(f"<h3>{html.escape(TITLES[selection])}</h3>"
                     f"<p class='note'>{html.escape(DESCRIPTIONS[selection].format(name=name))}</p>")
        for column, (heading, fmt, claim) in quantities(metric).items():
            if column not in t.columns:
                continue
            strings = grid(t, column, fmt)
            classes = _classes(claims, selection, claim, strings) if claim else None
            heading = heading.split(" (paired")[0].split(" (pts;")[0]
            unit = " (pts)" if column == "error_increase_pts" else ""
            parts.append(f"<p><b>{html.escape(heading + unit)}</b></p>" + _grid_html(strings, classes))
        budgets = budget_grid(t)
        edge = budgets.apply(lambda col: col.map(lambda v: "edge" if str(v).endswith("!") else ""))
        kinds = "fraction of the candidate pool" if t["budgets"].str.contains("·pool").all() else "count or ·pool"
        parts.append(f"<p><b>Chosen M</b> ({kinds}; a range = different M per seed; ! = on the edge of the grid "
                     "for some seed)</p>" + _grid_html(budgets, edge))
    return "\n".join(parts)


def _img(path: Path, n_seeds: int) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(path.name)}</b>: {html.escape(caption(path, n_seeds))}</figcaption></figure>")


def comparison_sections(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Report blocks for the firm-side fronts and defences (none for a plain collective table); the
    firm-side claims are part of the opening claims block."""
    from .defences import defence_table_pts
    from .pareto import front_table, has_comparison, round_units

    if not has_comparison(runs):
        return []
    fronts = front_table(runs)
    on = fronts[(fronts["metric"] == "eqod") & fronts["on_front"]]
    n = int(fronts["seeds"].max()) if len(fronts) else 0
    text = {c: [interval_text(m, lo, hi, fmt) for m, lo, hi in zip(on[c], on[f"{c}_lo"], on[f"{c}_hi"])]
            for c, fmt in (("x", ".3f"), ("error_increase_pts", "+.2f"))}
    shown = on[["family", "method", "point"]].assign(
        EqOd=text["x"], **{"error increase (pts)": text["error_increase_pts"]}, seeds=on["seeds"])
    sections = [(
        "Error vs EqOd fronts (points on each method's lower-left envelope)",
        f"<p class='note'>{interval_note(n)}; error increase = test error minus the same seed's base model's, in "
        "percentage points. All points of all metrics are in fronts.csv.</p>" + shown.to_html(index=False),
    )]
    table = defence_table_pts(runs)
    if not table.empty:
        rounded = round_units(table)
        sections.append((
            "A firm that fights back: defences and the adaptive collective",
            "<p class='note'>Per attacked cell, variant (plain or adaptive collective), audit and action, means over "
            "seeds. flagged_true = flagged rows that were flipped; recall = flagged_true / flips; gain_kept = (base "
            "EqOd - EqOd) / (base EqOd - the plain undefended cell's EqOd): 1 = the defence changed nothing, 0 = the "
            "collective's gain is gone; gain_kept_same_defence compares with the same defence applied when nobody "
            "attacks (eqod_defended_base), which separates undoing the collective from the audit's own effect on "
            "EqOd; error_cost_pts = error - the undefended cell's error and error_increase_pts = error - the base "
            "model's error, in percentage points; method 'base' = the defence applied when nobody attacks.</p>"
            + rounded.to_html(index=False),
        ))
    return sections


def write_html(folder, runs: pd.DataFrame, figures: list[Path], *, sections=(), metric: str = "eqod") -> Path:
    """One self-contained HTML page (figures embedded as base64): the claims first, then warnings about
    budgets on the grid's edge, the base model, the tables per budget selection, the figures with what
    their bands are, ``sections`` (title, html) and the scenario, versions and seeds."""
    path = Path(folder.path)
    scenario_text = folder.scenario_toml.read_text(encoding="utf-8") if folder.scenario_toml.exists() else ""
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    seeds = sorted(runs["seed"].unique().tolist())
    name = html.escape(str(manifest.get("scenario", path.name)))
    env = manifest.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    base = base_summary(runs)
    base_html = pd.DataFrame({
        "metric": [f"{m} (%)" if m == "error" else m for m in base["metric"]],
        interval_note(int(base["n"].max()) if len(base) else 0): [
            interval_text(m, lo, hi, ".2f", scale=100.0) if name == "error" else interval_text(m, lo, hi, ".3f")
            for name, m, lo, hi in zip(base["metric"], base["mean"], base["lo"], base["hi"])],
    }).to_html(index=False)
    warnings = edge_warnings(runs, metric)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{name}: collective action results</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{name}</h1>",
        "<p>Minority algorithmic collective action (arXiv 2508.15374): a fraction α of the protected "
        "minority relabels its members' negative labels ranked by a score; the firm trains as usual. "
        "EqOd = mean of |ΔTPR| and |ΔFPR| between the groups on the test set; error increases are in "
        "percentage points (pts) over the same seed's base model.</p>",
        f"<p><b>Seeds ({len(seeds)}):</b> {html.escape(str(seeds))} &middot; <b>runs:</b> {len(runs)} &middot; "
        f"<b>Python</b> {html.escape(str(env.get('python', '?')))} &middot; {html.escape(versions)}</p>",
        "<h2>Claims, computed from the data</h2>", claims_section(runs, metric),
    ]
    if warnings:
        items = "".join(f"<li>{html.escape(heading)}<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in cases)
                        + "</ul></li>" for heading, cases in warnings)
        parts += ["<h2>Warning: chosen budgets on the edge of the grid</h2>",
                  f"<div class='warn'><ul>{items}</ul><p class='note'>Marked ! (yellow) in the chosen-M grids below."
                  "</p></div>"]
    parts += [
        "<h2>Base model (nobody relabels)</h2>", base_html,
        "<h2>Tables: EqOd, paired differences, error and flips at the chosen budget</h2>", tables_section(runs, metric),
        "<h2>Figures</h2>", *(_img(Path(f), len(seeds)) for f in figures),
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
