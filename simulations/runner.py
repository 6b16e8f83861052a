"""Run a scenario into a results folder: backends, checkpoints, progress."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import engine
from .analysis import comparison_sections, plot_all, write_html, write_summary
from .analysis.rounds import SUMMARY_FILE, read_rounds, report_rounds, write_rounds_summary
from .backends import get_backend
from .datasets import SYNTHETIC
from .executors import make_executor
from .results import ResultsFolder
from .scenario import Scenario

__all__ = ["backend_run_seed", "run_into"]


def backend_run_seed(scenario: Scenario):
    """The ``run_seed(scenario, seed, *, dataset, executor, on_fit)`` of the scenario's backend."""
    return get_backend(scenario.engine.backend).run_seed


def run_into(
    scenario: Scenario,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    n_jobs: int | None = None,
    progress: bool = True,
    plots: bool = True,
) -> tuple[pd.DataFrame, str]:
    """Run every unfinished seed, checkpointing each, then write table, summary and plots.

    The folder is locked for the whole run (a second run into it fails with one line).
    If it already holds the same scenario with other seeds, its seeds become the union
    and the table covers all of them; only unfinished seeds run.
    """
    folder = ResultsFolder(out_dir)
    with folder.lock():
        scenario, finished = folder.start(scenario, fresh=fresh)
        done = set(finished)
        run_seed = backend_run_seed(scenario)
        executor = make_executor(scenario.engine.executor, scenario.engine.n_jobs if n_jobs is None else n_jobs)
        todo = [s for s in scenario.seeds if s not in done]
        per_seed = engine.count_fits(scenario)
        if scenario.dynamics is not None:  # many rounds: a per-round table beside runs.csv
            from . import dynamics

            # The backend's own many-rounds step when it has one (flower), else the vectorised model.
            backend = get_backend(scenario.engine.backend)
            run_seed = getattr(backend, "run_dynamics_seed", dynamics.run_seed)
            per_seed = dynamics.count_fits(scenario)
        timings = {}
        dataset = None
        with tqdm(total=per_seed * len(scenario.seeds), initial=per_seed * len(done), disable=not progress,
                  unit="run", desc=scenario.name) as bar:
            for seed in todo:
                start = time.perf_counter()
                if dataset is None or scenario.data.dataset in SYNTHETIC:
                    dataset = engine.load_data(scenario, seed=seed)
                frame = run_seed(scenario, seed, dataset=dataset, executor=executor, on_fit=bar.update,
                                 progress=progress)
                if scenario.dynamics is not None:
                    frame, rounds = frame
                    folder.save_rounds(seed, rounds)
                timings[seed] = round(time.perf_counter() - start, 3)
                folder.save_seed(seed, frame)  # unwritable: rows go to a temporary file, one-line error
        runs = pd.concat([folder.load_seed(s) for s in scenario.seeds], ignore_index=True)
        try:
            if scenario.dynamics is not None:
                folder.finish_rounds(pd.concat([folder.load_rounds(s) for s in scenario.seeds], ignore_index=True))
            else:  # a --fresh run of a one-shot scenario over a dynamics folder
                folder.rounds_csv.unlink(missing_ok=True)
                (folder.path / SUMMARY_FILE).unlink(missing_ok=True)
            folder.finish(scenario, runs, extra={"seconds_per_seed": timings, "resumed_seeds": sorted(done)})
            text = write_summary(runs, folder.path)
            if plots:
                figures, sections = report_rounds(folder)  # with rounds.csv: rounds_summary.csv, trajectories
                write_html(folder, runs, plot_all(runs, folder.path) + figures,
                           sections=[*sections, *comparison_sections(runs)])
            elif folder.rounds_csv.exists():
                write_rounds_summary(read_rounds(folder.rounds_csv), folder.path)
        except OSError as exc:
            raise folder.unwritable(exc) from None
    return runs, text
