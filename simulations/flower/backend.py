"""The ``flower`` backend: one seed = one ``flwr run`` on a simulation SuperLink with Ray.

The user half of the collective's rule runs inside each node's ClientApp for
its own K users (``[flower] agents-per-node``), the coordinator half on the
coordinator node, the firm in the ServerApp; this module prepares the files,
runs the federation and returns the engine's rows for the final round. A
``[dynamics]`` scenario (:func:`run_dynamics_seed`) runs ``[dynamics] rounds``
rounds and also returns the per-round table (``rounds.csv``), as
:func:`simulations.dynamics.run_seed` does.
"""

from __future__ import annotations

import sys
import uuid

import pandas as pd

from server.firm import make_estimator

from ..dynamics import count_fits as dynamics_fits
from ..engine import count_fits, load_data, pilot_columns
from ..executors import make_executor
from ..state import initial_state
from .files import node_files_removed, prepare_run, results_frame, rounds_frame
from .session import close_sessions, session_for

__all__ = ["BACKEND", "close_sessions", "run_dynamics_seed", "run_seed"]


def run_seed(scenario, seed: int, *, dataset=None, on_fit=None, workdir=None, session=None,
             progress: bool = False) -> pd.DataFrame:
    """One seed of a scenario on the Flower backend: the engine's rows (final round). With
    ``progress`` a line per round goes to stderr as the federation finishes it."""
    frame, _ = _run(scenario, seed, dataset=dataset, on_fit=on_fit, workdir=workdir, session=session,
                    progress=progress)
    return frame


def run_dynamics_seed(scenario, seed: int, *, dataset=None, executor=None, on_fit=None, workdir=None, session=None,
                      progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One seed of a ``[dynamics]`` scenario on Flower: (the last round's engine rows, the
    per-round table). The firm's fits run in the ServerApp, not in ``executor``."""
    return _run(scenario, seed, dataset=dataset, on_fit=on_fit, workdir=workdir, session=session, progress=progress)


def _run(scenario, seed, *, dataset, on_fit, workdir, session, progress):
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    session = session or session_for(scenario.flower, workdir)
    run_dir = session.workdir / "runs" / f"{_safe(scenario.name)}-seed{seed}-{uuid.uuid4().hex[:8]}"
    files = prepare_run(scenario, seed, run_dir, dataset=dataset)
    on_round = (lambda line: _say(f"flower seed {seed} {line}")) if progress else None
    # The node files (users' records, the coordinator's token) go when the run ends, also when it
    # fails, unless [flower] keep-node-files.
    with node_files_removed(files, keep=scenario.flower.keep_node_files):
        rounds = scenario.flower.rounds if scenario.dynamics is None else scenario.dynamics.rounds
        results = session.run(files, rounds=rounds, timeout=scenario.flower.timeout, on_round=on_round)
    frame = results_frame(scenario, dataset, seed, results)
    table = rounds_frame(scenario, dataset, seed, results) if scenario.dynamics is not None else None
    if scenario.collective.validation:
        # The collective's pilot is its own offline study, not part of the federation:
        # the same in-process run as on the vectorised backend, so the columns agree.
        state = initial_state(scenario, dataset, seed)
        estimator = make_estimator(scenario.firm.model, scenario.firm.params, random_state=state.world.firm_seed)
        columns = pilot_columns(state, scenario.collective.validation, estimator=estimator,
                                warm_start=scenario.engine.warm_start,
                                executor=make_executor(scenario.engine.executor, scenario.engine.n_jobs))
        frame = frame.join(pd.DataFrame(columns))
    if on_fit:
        on_fit(count_fits(scenario) if scenario.dynamics is None else dynamics_fits(scenario))
    return frame, table


def _say(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)  # above a progress bar, if one is drawn


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:60] or "scenario"


class _Flower:
    name = "flower"
    supports_comparison = False

    def run_dynamics_seed(self, scenario, seed, *, dataset=None, executor=None, on_fit=None, progress=False):
        return run_dynamics_seed(scenario, seed, dataset=dataset, on_fit=on_fit, progress=progress)

    def run_seed(self, scenario, seed, *, dataset=None, executor=None, on_fit=None, progress=False) -> pd.DataFrame:
        # The firm's fits run in the ServerApp's own workers ([engine] n_jobs), not the executor's.
        return run_seed(scenario, seed, dataset=dataset, on_fit=on_fit, progress=progress)


BACKEND = _Flower()
