"""``collective-fairness paper``: the paper's findings on every available dataset, in one report.

Runs each scenario of ``configs/paper/`` (Adult, COMPAS, German, ACS-Income: the
collective's grid with its validation pilot, plus firm-side baselines) into
``<out>/<dataset>/`` -- each an ordinary results folder, resumable, with its own
report -- and writes ``<out>/report.html``: per dataset the claims with their
intervals, the paper's figures (EqOd vs flips, best EqOd vs alpha, error vs EqOd,
the Pareto front against firm-side methods) and a link to the full report;
``<out>/claims.csv`` stacks every dataset's claims. A dataset whose files are not
available here (ACS-Income needs a PUMS file) is skipped and the report says why.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import pandas as pd

from agents.errors import CollectiveFairnessError, DataError

from .analysis import collective_claims
from .analysis.figures import caption
from .analysis.html import claims_section
from .results import atomic_write_text, environment
from .runner import run_into
from .scenario import load_scenario

__all__ = ["PAPER_CONFIGS", "paper_configs", "run_paper"]

PAPER_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "paper"
# The paper's figures, in the order the report shows them.
FIGURES = ("best_eqod_vs_alpha.png", "eqod_vs_flips_alpha0.3.png", "error_vs_eqod.png", "pareto_eqod.png")


def paper_configs(folder: Path = PAPER_CONFIGS, datasets=None) -> list[Path]:
    """The scenario files of the paper's datasets (``<folder>/<dataset>.toml``), in name order."""
    files = sorted(Path(folder).glob("*.toml"))
    if not files:
        raise DataError(f"{folder}: no scenario files (*.toml); allowed: a folder like configs/paper/")
    if datasets:
        known = {f.stem: f for f in files}
        unknown = [d for d in datasets if d not in known]
        if unknown:
            raise DataError(f"--datasets {','.join(unknown)}: no such scenario in {folder}; "
                            f"allowed: {', '.join(known)}")
        files = [known[d] for d in datasets]
    return files


def run_paper(out, *, seeds=None, datasets=None, configs: Path = PAPER_CONFIGS, fresh: bool = False,
              progress: bool = True) -> Path:
    """Run every available paper dataset into ``out`` and write the combined report; returns its path."""
    out = Path(out)
    done, skipped = [], []
    for path in paper_configs(configs, datasets):
        scenario = load_scenario(path)
        source = str(path)
        if seeds is not None:
            source = f"{path} with --seeds {','.join(map(str, seeds))}"
            scenario = scenario.replace(source, seeds=tuple(seeds))
        try:
            scenario.check_data(source)
        except DataError as exc:  # e.g. the ACS PUMS file is not here: say so, run the others
            skipped.append((path.stem, str(exc)))
            print(f"{path.stem}: skipped: {exc}", flush=True)
            continue
        start = time.perf_counter()
        runs, _ = run_into(scenario, out / path.stem, fresh=fresh, progress=progress, plots=True)
        done.append((path.stem, runs, time.perf_counter() - start))
        print(f"{path.stem}: {len(scenario.seeds)} seeds in {time.perf_counter() - start:.0f} s -> "
              f"{out / path.stem}/report.html", flush=True)
    if not done:
        raise CollectiveFairnessError(f"{out}: no dataset could be run; " + "; ".join(f"{n}: {w}" for n, w in skipped))
    claims = pd.concat([collective_claims(runs).assign(dataset=name) for name, runs, _ in done], ignore_index=True)
    atomic_write_text(out / "claims.csv", claims[["dataset", *claims.columns[:-1]]].to_csv(index=False))
    manifest = {"datasets": {name: {"seeds": sorted(runs["seed"].unique().tolist()), "seconds": round(sec, 1)}
                             for name, runs, sec in done},
                "skipped": dict(skipped), "environment": environment()}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    return _write_report(out, done, skipped)


def _figure(path: Path, n_seeds: int) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption(path, n_seeds))}</figcaption></figure>")


def _write_report(out: Path, done, skipped) -> Path:
    rows = "".join(
        f"<tr><td><a href='#{name}'>{html.escape(name)}</a></td><td>{runs['seed'].nunique()}</td>"
        f"<td>{int(runs.get('n_train', pd.Series([0])).iloc[0])}</td><td>{sec:.0f}</td>"
        f"<td><a href='{name}/report.html'>{name}/report.html</a></td></tr>"
        for name, runs, sec in done)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>The paper's findings</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;"
        "line-height:1.4}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 7px}"
        "img{max-width:100%}.note{color:#444;font-size:92%}.verdict-holds{color:#17692a;font-weight:600}"
        ".verdict-fails{color:#a11;font-weight:600}.verdict-open{color:#555}</style></head><body>",
        "<h1>Minority collective action: the paper's findings, recomputed</h1>",
        "<p>Ben-Dov, Samadi, Sanyal, Ţifrea, <i>Fairness for the People, by the People: Minority Collective "
        "Action</i> (arXiv 2508.15374). Every dataset below is an ordinary results folder of "
        "<code>collective-fairness run</code>; each claim is a per-seed paired difference with its 95% t "
        "interval over seeds, judged holds / does not hold / not resolved. Budgets are reported three ways: "
        "chosen on the collective's validation pilot (the test set is never read), the best fixed budget, and "
        "the paper's per-seed best (optimistic: chosen on the test set).</p>",
        f"<table><tr><th>dataset</th><th>seeds</th><th>training users</th><th>seconds</th><th>full report</th></tr>"
        f"{rows}</table>",
    ]
    if skipped:
        parts.append("<p><b>Not run here:</b></p><ul>" + "".join(
            f"<li>{html.escape(name)}: {html.escape(why)}</li>" for name, why in skipped) + "</ul>")
    for name, runs, _ in done:
        n_seeds = runs["seed"].nunique()
        parts += [f"<h2 id='{name}'>{html.escape(name)}</h2>", claims_section(runs),
                  *(_figure(out / name / f, n_seeds) for f in FIGURES if (out / name / f).exists()),
                  f"<p><a href='{name}/report.html'>All tables, figures and the scenario</a></p>"]
    parts.append("</body></html>")
    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
