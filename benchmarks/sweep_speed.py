"""Paper sweep on Adult: the engine vs a naive loop, side by side in one run.

The naive loop is what one writes first: for every configuration, split and
one-hot encode the data, fit the scorer, score the collective, and fit a
fresh scikit-learn LogisticRegression on the relabelled data: once with
scikit-learn's default solver (lbfgs, the loop the issue timed) and once
with the firm's own solver (newton-cholesky), whose metrics must match.
The engine shares encodings and scores across a seed's cells, trains each
distinct label vector once, warm-starts the firm along each budget chain
and runs chains in parallel. Both use the same coalition rule, so their
flips are identical; the metrics must agree within 0.005.

    python benchmarks/sweep_speed.py            # full grid (768 runs) vs 16 naive runs per solver
    python benchmarks/sweep_speed.py --naive 48 --jobs 2

The naive loop is timed on a random sample of the grid (its per-run cost
hardly varies) and the ratio is per run. The collective's validation pilot is
off here (the naive loop has none); it costs about one more grid on 80% of
the training users. Prints one line per measurement and
the ratio; exits 1 if the metrics disagree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from agents.decision import relabel
from agents.protocol import CellGrid
from server.metrics import fairness_metrics
from simulations import engine
from simulations.scenario import load_scenario
from simulations.state import build_world


def naive_run(scenario, dataset, seed, method, alpha, budget, solver):
    """One configuration from scratch, as a straightforward loop would do it."""
    world = build_world(scenario, dataset, seed)  # split + encode again
    decided = engine.decisions(world, CellGrid.of([method], [alpha], [budget]), scenario.collective.scorer_params())
    p = world.prepared
    model = LogisticRegression(solver=solver, max_iter=1000).fit(p.X_train, relabel(p.y_train, decided.mask(0)))
    return int(decided.signal.m[0]), fairness_metrics(p.y_test, model.predict(p.X_test), sensitive_features=p.a_test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive", type=int, default=16, help="naive runs to time (a random sample of the grid)")
    parser.add_argument("--jobs", type=int, default=2, help="engine worker processes")
    parser.add_argument("--config", help="scenario (default: the paper's Adult sweep)")
    args = parser.parse_args()

    # The sweep itself: the collective's validation pilot (a second grid on 80% of the users,
    # [collective] validation) is left out, as the naive loop has none.
    scenario = load_scenario(args.config).replace(collective__validation=0.0)
    c = scenario.collective
    grid = [(s, m, a, b) for s in scenario.seeds for m in c.methods for a in c.alphas for b in c.budgets]
    dataset = engine.load_data(scenario)

    start = time.perf_counter()
    runs = engine.run_scenario(scenario, n_jobs=args.jobs)
    fast = time.perf_counter() - start
    fast_per_run = fast / len(grid)
    print(f"engine: {len(grid)} runs in {fast:.1f} s = {fast_per_run:.3f} s/run (n_jobs={args.jobs})")

    rng = np.random.default_rng(0)
    sample = [grid[i] for i in rng.choice(len(grid), size=min(args.naive, len(grid)), replace=False)]
    worst = {}
    for solver in ("lbfgs", "newton-cholesky"):
        start = time.perf_counter()
        for seed, method, alpha, budget in sample:
            m, metrics = naive_run(scenario, dataset, seed, method, alpha, budget, solver)
            row = runs[(runs["seed"] == seed) & (runs["method"] == method) & (runs["alpha"] == alpha)
                       & (runs["budget"] == float(budget))].iloc[0]
            assert row["m"] == m, "engine and naive loop flipped different users"
            worst[solver] = max(worst.get(solver, 0.0),
                                *(abs(row[k] - metrics[k]) for k in ("error", "eqod", "sp_diff", "eopp_diff")))
        naive_per_run = (time.perf_counter() - start) / len(sample)
        print(f"naive ({solver}): {len(sample)} runs, {naive_per_run:.3f} s/run; whole grid "
              f"(extrapolated) {naive_per_run * len(grid):.0f} s; speed-up {naive_per_run / fast_per_run:.1f}x; "
              f"largest metric difference {worst[solver]:.4f}")
    worst = worst["newton-cholesky"]
    print(f"largest metric difference against the same firm model: {worst:.4f} (allowed 0.005)")
    return 0 if worst <= 0.005 else 1


if __name__ == "__main__":
    raise SystemExit(main())
