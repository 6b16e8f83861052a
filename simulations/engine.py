"""The vectorised backend: one round's step over every user at once.

:func:`step` advances a :class:`simulations.state.RunState` by one round:

* collective: candidates score themselves (once per world: scores depend only
  on a user's features and what the collective knows of the majority), then
  both halves of :mod:`agents.rule` run over every candidate at once
  (:func:`simulations.state.collective_decisions`);
* firm: :func:`server.training.train_cells` trains on every cell's reported
  labels and evaluates on the test set.

Speed comes from doing each piece of work once: encodings and scores are
shared by all cells of a seed, identical label vectors are trained once, and
along each (method, alpha) chain the firm warm-starts from the previous
budget's solution (same optimum, a few Newton steps), chains running on the
executor's workers.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

from agents.errors import ConfigError
from agents.protocol import CellGrid
from server.firm import make_estimator
from server.training import firm_design, train_cells

from .datasets import Dataset, load_configured
from .executors import Executor, make_executor
from .rows import BASE, cell_columns, config_columns, decision_rows, method_columns
from .state import Decisions, RunState, World, collective_decisions, initial_state

__all__ = ["BACKEND", "candidate_scores", "count_fits", "decisions", "load_data", "run_scenario", "run_seed", "step"]


def load_data(scenario, *, seed: int | None = None) -> Dataset:
    """The scenario's dataset (synthetic ones are drawn from the seed)."""
    return load_configured(scenario.data, seed=seed)


def candidate_scores(world: World, grid: CellGrid, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of the grid's largest collective and their scores, one row per method
    (``params``: method -> its own parameters). Collectives are nested, so these are every
    candidate of every cell."""
    candidates = world.candidates(max(grid.alphas))
    if not candidates.size:  # nobody to score (and nothing to fit a scorer for)
        return candidates, np.empty((len(grid.methods), 0))
    params = params or {}
    return candidates, np.vstack([world.scores(m, candidates, params.get(m)) for m in grid.methods])


def decisions(world: World, grid: CellGrid, params: dict | None = None) -> Decisions:
    """Who flips in every cell of ``grid``: scoring and both halves of the rule, over everyone."""
    candidates, scores = candidate_scores(world, grid, params)
    return collective_decisions(world, grid, scores, candidates)


def step(state: RunState, *, estimator=None, warm_start: bool = True, executor: Executor | None = None,
         on_fit: Callable[[int], None] | None = None) -> RunState:
    """One round: the collective decides, the firm trains on what it receives."""
    world, grid = state.world, state.grid
    p = world.prepared
    if state.scores is None:
        candidates, scores = candidate_scores(world, grid, state.params)
    else:
        candidates, scores = world.candidates(max(grid.alphas)), state.scores
    decided = collective_decisions(world, grid, scores, candidates)
    estimator = estimator if estimator is not None else make_estimator(random_state=world.firm_seed)
    cells = [((cell.method, cell.alpha), decided.mask(cell.index)) for cell in grid]
    base, per_cell = train_cells(estimator, firm_design(estimator, p.X_train), p.y_train, cells, world.test,
                                 warm=warm_start, executor=executor, on_fit=on_fit)
    return state.replace(round=state.round + 1, scores=scores, decisions=decided, metrics=(base, *per_cell))


VALIDATION_METRICS = ("error", "eqod", "sp_diff", "eopp_diff")


def pilot_columns(state: RunState, fraction: float, *, estimator, warm_start: bool = True,
                  executor: Executor | None = None, on_fit=None) -> list[dict]:
    """The collective's pilot: the same grid in :meth:`World.pilot` (a ``fraction`` of the
    training users held out). Returns ``val_<metric>`` columns for the base row and each
    cell, in row order: what the collective can see of each budget without the test set."""
    pilot = RunState(round=0, world=state.world.pilot(fraction), grid=state.grid, params=state.params)
    pilot = step(pilot, estimator=estimator, warm_start=warm_start, executor=executor, on_fit=on_fit)
    return [{f"val_{m}": metrics[m] for m in VALIDATION_METRICS} for metrics in pilot.metrics]


def state_rows(state: RunState, common: dict) -> list[dict]:
    """The tidy rows of a state: the base row, then one per cell."""
    base, *per_cell = state.metrics
    rows = [{**common, **cell_columns(BASE, 0.0, 0.0), **base}]
    rows += [{**common, **columns, **method_columns(state.params, columns["method"]), **metrics}
             for columns, metrics in zip(decision_rows(state.decisions), per_cell)]
    return rows


def run_seed(
    scenario,
    seed: int,
    *,
    dataset: Dataset | None = None,
    executor: Executor | None = None,
    on_fit: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """All cells of one seed: one row per (method, alpha, budget) plus the base row;
    with ``[collective] validation`` the pilot's ``val_*`` columns; when the scenario
    compares, firm-side baselines and defences."""
    _one_shot_only(scenario)
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    executor = executor or make_executor(scenario.engine.executor, scenario.engine.n_jobs)
    state = initial_state(scenario, dataset, seed)
    estimator = make_estimator(scenario.firm.model, scenario.firm.params, random_state=state.world.firm_seed)
    state = step(state, estimator=estimator, warm_start=scenario.engine.warm_start, executor=executor, on_fit=on_fit)
    common = {**config_columns(scenario, dataset, backend="vectorised"), "seed": seed,
              "n_train": state.world.n_users, "n_minority": int(state.world.minority.sum())}
    rows = state_rows(state, common)
    if scenario.collective.validation:
        validation = pilot_columns(state, scenario.collective.validation, estimator=estimator,
                                   warm_start=scenario.engine.warm_start, executor=executor, on_fit=on_fit)
        rows = [{**row, **val} for row, val in zip(rows, validation)]
    if scenario.compares:  # firm-side baselines, defences, adaptive collective: same world
        from .comparison import comparison_rows

        rows = comparison_rows(scenario, state, rows, common=common, estimator=estimator, executor=executor,
                               on_fit=on_fit)
    return pd.DataFrame(rows)


def _one_shot_only(scenario) -> None:
    """This module runs the paper's one-shot experiment; a ``[dynamics]`` scenario run here
    would silently lose its rounds, so it is refused (one line)."""
    if getattr(scenario, "dynamics", None) is not None:
        raise ConfigError(f"scenario {scenario.name!r} has [dynamics], which simulations.engine does not run (it runs "
                          "the one-shot experiment); allowed: simulations.dynamics.run_seed / run_scenario (what "
                          "'collective-fairness run' uses), or drop [dynamics]")


def count_fits(scenario) -> int:
    """An upper bound on firm fits per seed (for progress bars)."""
    c = scenario.collective
    extra = 0
    if scenario.compares:
        from .comparison import count_extra_fits

        extra = count_extra_fits(scenario)
    grid = 1 + len(c.methods) * len(c.alphas) * len(c.budgets)
    return grid * (2 if c.validation else 1) + extra


class _Vectorised:
    name = "vectorised"
    supports_comparison = True

    def run_seed(self, scenario, seed, *, dataset=None, executor=None, on_fit=None, progress=False) -> pd.DataFrame:
        return run_seed(scenario, seed, dataset=dataset, executor=executor, on_fit=on_fit)


BACKEND = _Vectorised()


def run_scenario(scenario, *, n_jobs: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Run every seed of a scenario in memory and return the tidy results table."""
    from tqdm.auto import tqdm

    _one_shot_only(scenario)
    executor = make_executor(scenario.engine.executor, scenario.engine.n_jobs if n_jobs is None else n_jobs)
    frames = []
    with tqdm(total=count_fits(scenario) * len(scenario.seeds), disable=not progress, unit="fit") as bar:
        for seed in scenario.seeds:
            start = time.perf_counter()
            frames.append(run_seed(scenario, seed, executor=executor, on_fit=bar.update))
            frames[-1]["seconds"] = time.perf_counter() - start
    return pd.concat(frames, ignore_index=True)
