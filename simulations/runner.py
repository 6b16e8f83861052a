"""Run a scenario into a results folder: backends, checkpoints, progress."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import engine
from agents.errors import ConfigError
from .report import comparison_sections, plot_all, write_html, write_summary
from .results import ResultsFolder
from .scenario import Scenario

__all__ = ["backend_run_seed", "run_into"]


def backend_run_seed(scenario: Scenario):
    """The ``run_seed(scenario, seed, *, dataset, on_fit)`` function of the scenario's backend."""
    if scenario.engine.backend == "flower":
        from .flower_backend import run_seed

        return run_seed
    return engine.run_seed


def run_into(
    scenario: Scenario,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    n_jobs: int | None = None,
    progress: bool = True,
    plots: bool = True,
) -> tuple[pd.DataFrame, str]:
    """Run every unfinished seed, checkpointing each, then write table, summary and plots."""
    if scenario.compares and scenario.engine.backend != "vectorised":
        raise ConfigError("[baselines] and [defence] run on the 'vectorised' backend only; drop --backend flower")
    folder = ResultsFolder(out_dir)
    done = set(folder.start(scenario, fresh=fresh))
    run_seed = backend_run_seed(scenario)
    todo = [s for s in scenario.seeds if s not in done]
    per_seed = engine.count_fits(scenario)
    timings = {}
    dataset = None
    with tqdm(total=per_seed * len(scenario.seeds), initial=per_seed * len(done), disable=not progress,
              unit="run", desc=scenario.name) as bar:
        for seed in todo:
            start = time.perf_counter()
            if dataset is None or scenario.data.dataset in ("synthetic", "toy"):
                dataset = engine.load_data(scenario, seed=seed)
            kwargs = {"n_jobs": n_jobs} if run_seed is engine.run_seed else {}
            frame = run_seed(scenario, seed, dataset=dataset, on_fit=bar.update, **kwargs)
            timings[seed] = round(time.perf_counter() - start, 3)
            folder.save_seed(seed, frame)
    runs = pd.concat([folder.load_seed(s) for s in scenario.seeds], ignore_index=True)
    folder.finish(scenario, runs, extra={"seconds_per_seed": timings, "resumed_seeds": sorted(done)})
    text = write_summary(runs, folder.path)
    if plots:
        write_html(folder, runs, plot_all(runs, folder.path), sections=comparison_sections(runs))
    return runs, text
