"""Sweeps: a ``[dynamics]`` scenario run over a grid of two parameters, for phase diagrams.

A scenario's own grid is methods x alphas x budgets; participation dynamics have other
parameters (threshold spread, the graph's degree, compliance, staleness ...). A sweep file is a
scenario file with a ``[sweep]`` table naming two of them by their dotted key and the values
to try::

    [sweep]
    x = { key = "dynamics.threshold_sd", values = [0.05, 0.1, 0.2] }
    y = { key = "dynamics.graph.mean_degree", values = [4, 10, 30] }
    show = ["participant_share", "eqod"]   # the phase diagram's panels (default)

Every combination is the scenario with those two values set, validated as a scenario file
is (a bad value is one line naming the combination), and run by :func:`simulations.runner.run_into`
into its own folder ``<out>/x<i>-y<j>`` (resumable: a finished seed is not run again). The
sweep folder then holds:

``sweep.toml``        the sweep file as run;
``sweep_rounds.csv``  every combination's ``rounds.csv``, the two parameters as the first columns
                      (named by their dotted key: :func:`simulations.analysis.rounds.sweep_columns`);
``phase.csv``         each trajectory's last round per combination, mean and 95% t interval over seeds;
``phase_*.png``       the phase diagrams (:func:`plot_phase`), one per coordination mode and cell;
``report.html``       the diagrams and the last-round table, self-contained.

Each combination is a complete run with the same seeds, so its paired structure (the same
split, members and draws for every cell of a seed) holds within a combination; across
combinations the seeds are the same too, but a parameter that changes what is drawn (a graph's
kind or degree) changes the draws.
"""

from __future__ import annotations

import base64
import copy
import html
import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

from agents.errors import ConfigError, DataError

from .analysis.intervals import interval_note
from .analysis.rounds import ROUND_QUANTITIES, last_round, read_rounds, rounds_section, rounds_summary
from .results import atomic_write_text
from .rows import BASE
from .scenario import Scenario

__all__ = ["Sweep", "load_sweep", "plot_phase", "run_sweep"]

DEFAULT_SHOW = ("participant_share", "eqod")
_ALLOWED = "allowed: a [sweep] table with x and y = { key = \"dynamics.<key>\", values = [...] } (see docs/dynamics.md)"


class Sweep:
    """A base scenario (as TOML tables) and two parameters with their values."""

    def __init__(self, raw: dict, x: tuple[str, list], y: tuple[str, list], show: tuple[str, ...], source: str):
        self.raw, self.x, self.y, self.show, self.source = raw, x, y, show, source

    @property
    def name(self) -> str:
        return str(self.raw.get("name", "sweep"))

    def points(self) -> list[tuple[int, int, object, object]]:
        """(i, j, x value, y value) for every combination, x varying slowest."""
        return [(i, j, xv, yv) for (i, xv), (j, yv) in itertools.product(enumerate(self.x[1]), enumerate(self.y[1]))]

    def scenario(self, xv, yv, *, seeds=None) -> Scenario:
        """The base scenario with the two parameters set (validated; errors name the combination)."""
        raw = copy.deepcopy(self.raw)
        for key, value in ((self.x[0], xv), (self.y[0], yv)):
            *path, last = key.split(".")
            table = raw
            for part in path:
                table = table.setdefault(part, {})
            table[last] = value
        if seeds is not None:
            raw["seeds"] = list(seeds)
        source = f"{self.source} [sweep] {self.x[0]} = {xv!r}, {self.y[0]} = {yv!r}"
        return Scenario.from_dict(raw, source=source)


def _axis(where: str, value) -> tuple[str, list]:
    if not isinstance(value, dict) or set(value) != {"key", "values"}:
        raise ConfigError(f"{where}: must be a table with key and values; {_ALLOWED}")
    key, values = value["key"], value["values"]
    if not isinstance(key, str) or not key.startswith(("dynamics.", "collective.", "data.", "firm.")) or "" in (
            key.split(".")):
        raise ConfigError(f"{where} key: {key!r} is not allowed; allowed: a dotted key of the scenario, e.g. "
                          "\"dynamics.compliance\" or \"dynamics.graph.p\"")
    ok = (isinstance(values, list) and values and all(isinstance(v, (int, float, str, bool)) for v in values)
          and len({repr(v) for v in values}) == len(values))
    if not ok:
        raise ConfigError(f"{where} values: {values!r} is not allowed; allowed: a non-empty list of distinct numbers "
                          "or strings")
    return key, values


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file (a scenario file with a ``[sweep]`` table); paths inside resolve next to it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file; allowed: a scenario TOML file with a [sweep] table") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())}); allowed: a UTF-8 TOML sweep "
                          "file") from None
    sweep = raw.pop("sweep", None)
    if not isinstance(sweep, dict):
        raise ConfigError(f"{path}: no [sweep] table; {_ALLOWED}")
    unknown = set(sweep) - {"x", "y", "show"}
    if unknown or not {"x", "y"} <= set(sweep):
        raise ConfigError(f"{path}: [sweep] has {sorted(sweep)}; {_ALLOWED}, and optionally show = [...]")
    if not isinstance(raw.get("dynamics"), dict):
        raise ConfigError(f"{path}: [sweep] needs a [dynamics] section (the sweep's tables are rounds.csv's); "
                          "allowed: a [dynamics] scenario with a [sweep] table")
    x, y = _axis(f"{path}: [sweep] x", sweep["x"]), _axis(f"{path}: [sweep] y", sweep["y"])
    if x[0] == y[0]:
        raise ConfigError(f"{path}: [sweep] x and y are both {x[0]!r}; allowed: two different keys")
    show = sweep.get("show", list(DEFAULT_SHOW))
    if not isinstance(show, list) or not show or any(s not in ROUND_QUANTITIES for s in show):
        raise ConfigError(f"{path}: [sweep] show: {show!r} is not allowed; allowed: a list of "
                          f"{', '.join(ROUND_QUANTITIES)}")
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("options"), dict):  # as load_scenario resolves them
        file = data["options"].get("path")
        if isinstance(file, str) and not Path(file).is_absolute():
            data["options"]["path"] = str((path.parent / file).resolve())
    graph = raw.get("dynamics", {}).get("graph") if isinstance(raw.get("dynamics"), dict) else None
    if isinstance(graph, dict) and isinstance(graph.get("path"), str) and not Path(graph["path"]).is_absolute():
        graph["path"] = str((path.parent / graph["path"]).resolve())
    out = Sweep(raw, x, y, tuple(show), str(path))
    for _, _, xv, yv in out.points():  # every combination is a valid scenario before anything runs
        out.scenario(xv, yv)
    return out


def run_sweep(sweep: Sweep, out: str | Path, *, seeds=None, fresh: bool = False, n_jobs: int | None = None,
              progress: bool = True, check_data: bool = True) -> pd.DataFrame:
    """Run every combination into ``out/x<i>-y<j>`` and write the sweep's tables, figures and page;
    returns the concatenated per-round table."""
    from .runner import run_into

    out = Path(out)
    scenarios = [(i, j, xv, yv, sweep.scenario(xv, yv, seeds=seeds)) for i, j, xv, yv in sweep.points()]
    if check_data:
        scenarios[0][4].check_data(sweep.source)
    frames = []
    for i, j, xv, yv, scenario in scenarios:
        folder = out / f"x{i}-y{j}"
        run_into(scenario, folder, fresh=fresh, n_jobs=n_jobs, progress=progress, plots=False)
        rounds = read_rounds(folder / "rounds.csv")
        rounds.insert(0, sweep.y[0], yv)
        rounds.insert(0, sweep.x[0], xv)
        frames.append(rounds)
    table = pd.concat(frames, ignore_index=True)
    try:
        raw = {**sweep.raw, "sweep": {"x": {"key": sweep.x[0], "values": sweep.x[1]},
                                      "y": {"key": sweep.y[0], "values": sweep.y[1]}, "show": list(sweep.show)}}
        if seeds is not None:
            raw["seeds"] = list(seeds)
        atomic_write_text(out / "sweep.toml", tomli_w.dumps(raw))
        atomic_write_text(out / "sweep_rounds.csv", table.to_csv(index=False))
        phase = last_round(rounds_summary(table))
        atomic_write_text(out / "phase.csv", phase.to_csv(index=False))
        figures = plot_phase(table, out, sweep.x[0], sweep.y[0], show=sweep.show)
        _write_page(out, sweep, table, figures)
    except OSError as exc:
        raise DataError(f"{out}: cannot write the sweep folder ({exc.strerror}); allowed: a writable folder") from None
    return table


def _slug(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def plot_phase(rounds: pd.DataFrame, out_dir: str | Path, x: str, y: str, *,
               show: tuple[str, ...] = DEFAULT_SHOW) -> list[Path]:
    """Phase diagrams: per coordination mode and cell, one heat map per quantity of ``show``
    over (x, y), each cell the last round's mean over seeds, annotated with mean ± the half-width
    of its 95% t interval. Files ``phase_<mode>_<method>_a<alpha>_b<budget>.png``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .analysis.figures import save_figure

    last = last_round(rounds_summary(rounds))
    cells = last[last["method"] != BASE]
    n = int(rounds["seed"].nunique())
    xs, ys = list(dict.fromkeys(rounds[x])), list(dict.fromkeys(rounds[y]))
    written = []
    for (mode, method, alpha, kind, budget), at in cells.groupby(
            ["coordination", "method", "alpha", "budget_kind", "budget"], sort=True):
        fig, axes = plt.subplots(1, len(show), figsize=(4.4 * len(show) + 0.6, 0.5 * len(ys) + 2.6), squeeze=False)
        for ax, q in zip(axes[0], show):
            grid = np.full((len(ys), len(xs)), np.nan)
            text = [["" for _ in xs] for _ in ys]
            for _, r in at.iterrows():
                i, j = ys.index(r[y]), xs.index(r[x])
                grid[i, j] = r[q]
                half = (r[f"{q}_hi"] - r[f"{q}_lo"]) / 2 if np.isfinite(r[f"{q}_lo"]) else math.nan
                fmt = ROUND_QUANTITIES[q][1].lstrip("+")
                text[i][j] = format(r[q], fmt) + (f"\n±{format(half, fmt)}" if np.isfinite(half) else "")
            image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            fig.colorbar(image, ax=ax, shrink=0.85)
            for i in range(len(ys)):
                for j in range(len(xs)):
                    if text[i][j]:
                        value = grid[i, j]
                        light = np.isfinite(value) and value < np.nanmean(grid)
                        ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                                color="white" if light else "black")
            ax.set_xticks(range(len(xs)), [_slug(v) for v in xs])
            ax.set_yticks(range(len(ys)), [_slug(v) for v in ys])
            ax.set(xlabel=x, ylabel=y, title=f"last round: {ROUND_QUANTITIES[q][0]}")
        shown = f"{budget:g}·pool" if kind == "fraction" else f"M={budget:g}"
        bands = f"mean ± 95% t half-width over {n} seeds" if n > 1 else "1 seed: no intervals"
        fig.suptitle(f"{mode}, {method}, α={alpha:g}, budget {shown} ({bands})", fontsize=10)
        fig.tight_layout()
        written.append(Path(out_dir) / f"phase_{mode}_{method}_a{alpha:g}_b{budget:g}.png")
        save_figure(fig, written[-1])
        plt.close(fig)
    return written


def _write_page(out: Path, sweep: Sweep, table: pd.DataFrame, figures: list[Path]) -> Path:
    from .analysis.figures import caption

    n = int(table["seed"].nunique())
    figs = []
    for path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        figs.append(f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" '
                    f'style="max-width:100%"><figcaption><b>{html.escape(path.name)}</b>: '
                    f"{html.escape(caption(path, n))}</figcaption></figure>")
    text = (out / "sweep.toml").read_text(encoding="utf-8")
    page = "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(sweep.name)}: sweep</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right;white-space:nowrap}.note{color:#444}pre{background:#f6f6f6;padding:1em}</style>",
        "</head><body>",
        f"<h1>{html.escape(sweep.name)}: {html.escape(sweep.x[0])} × {html.escape(sweep.y[0])}</h1>",
        f"<p class='note'>{len(sweep.points())} combinations, seeds {sorted(table['seed'].unique().tolist())}; "
        f"cells: {interval_note(n)}. Every combination's run is in its own folder x&lt;i&gt;-y&lt;j&gt;; "
        "every row in sweep_rounds.csv, the last rounds in phase.csv.</p>",
        "<h2>Phase diagrams</h2>", *figs,
        "<h2>Each trajectory's last round</h2>", rounds_section(table),
        "<h2>Sweep file</h2>", f"<pre>{html.escape(text)}</pre>",
        "</body></html>",
    ])
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
