"""The multi-round model at scale: 10^6 users x 100 rounds, seconds per phase and peak memory.

Runs ``configs/dynamics-million.toml`` (synthetic data, 3 features; one cell): each round,
threshold participation on the members' graph, gossip on a sparse Erdos-Renyi graph among the
participants, the members' local decisions, relabelling, and the firm's warm-started refit on
every training user, evaluated on the test set. Target: <= 10 minutes and <= 4 GB peak RSS
on 2 cores. Not a test.

    python benchmarks/dynamics_scale.py                          # 10^6 users x 100 rounds
    python benchmarks/dynamics_scale.py --users 100000 --rounds 20

``--users`` is the number of training users (the data set is drawn with the config's test
share on top); the minority, the members (alpha) and the graph follow the config. Prints the
sizes, seconds per phase (setup: data, split, world, graph, scores; then per-round phases summed
over rounds, the base model's fit being part of round 1's retrain), rounds per second and peak
RSS (this process and its children).

Measured (2026-12-02, 2 shared cores, load average ~4-5, after the per-user draws became
tickets of (key, user id) and round 1 began fitting through ``train_cells``), ``--users 100000
--rounds 20``: 14_971 members, 150_160 edges; setup 1.6 s (split + world 0.2, graph + scores
1.4); rounds 2.6 s (0.13 s/round: coordination/gossip 1.7 s, retrain 0.7 s, draws 0.03 s);
total 4.2 s; peak RSS 0.27 GB. The full run, same day and load (no flags): 10^6 training users,
299_787 minority, 149_894 members, 1_497_198 edges; setup 5.7 s (data 1.2, split + world 2.0,
graph + scores 2.5); 100 rounds 277 s (2.77 s/round: coordination/gossip 2.28 s, retrain
0.26 s, draws 0.06 s); total 283 s (4.7 min, the process getting 48% of a core on average);
peak RSS 0.65 GB. Target met (<= 10 min, <= 4 GB). Before the tickets: 6.3 min, 0.64 GB.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

from simulations import engine
from simulations.dynamics import CollectiveDynamics
from simulations.executors import make_executor
from simulations.scenario import load_scenario
from simulations.state import RunState, build_world

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dynamics-million.toml"


def peak_rss_gb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="training users (default 10^6)")
    parser.add_argument("--rounds", type=int, default=100, help="rounds (default 100)")
    parser.add_argument("--config", default=str(CONFIG), help="scenario with [dynamics] (default: dynamics-million)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scenario = load_scenario(args.config)
    test = scenario.data.test_size
    n = math.ceil(args.users / (1 - test))
    scenario = scenario.replace(seeds=(args.seed,), data__options={**scenario.data.options, "n": n},
                                dynamics__rounds=args.rounds)
    began = time.perf_counter()
    setup = {}
    clock = time.perf_counter()
    dataset = engine.load_data(scenario, seed=args.seed)
    setup["data"] = time.perf_counter() - clock
    clock = time.perf_counter()
    world = build_world(scenario, dataset, args.seed)
    setup["split + world"] = time.perf_counter() - clock
    c = scenario.collective
    from agents.protocol import CellGrid

    state = RunState(round=0, world=world, grid=CellGrid.of(c.methods, c.alphas, c.budgets), params=c.scorer_params())
    clock = time.perf_counter()
    model = CollectiveDynamics(scenario, state, executor=make_executor("serial"))
    setup["graph + scores"] = time.perf_counter() - clock
    members = model.members[0]
    graph = model.graph
    print(f"users {world.n_users:_} (test {world.test.y_test.size:_}), minority {model.minority.size:_}, "
          f"members {members.n:_}, graph {'complete' if graph is None else f'{graph.nnz // 2:_} edges'}, "
          f"features {world.prepared.X_train.shape[1]}, rounds {args.rounds}")
    for name, seconds in setup.items():
        print(f"  setup   {name:<28} {seconds:8.1f} s")
    clock = time.perf_counter()
    for t in range(args.rounds):
        model.step()
        if (t + 1) % max(1, args.rounds // 10) == 0:
            row = model.rows[-1]
            print(f"  round {t + 1:>4}: participants {row['participants']:_}, reached {row['members_reached']:_}, "
                  f"M {row['m']:_}, flips {row['flips']:_}, eqod {row['eqod']:.4f} "
                  f"({time.perf_counter() - clock:.0f} s so far)", flush=True)
    rounds = time.perf_counter() - clock
    for name, seconds in sorted(model.timings.items(), key=lambda kv: -kv[1]):
        print(f"  rounds  {name:<28} {seconds:8.1f} s  ({seconds / args.rounds:.3f} s/round, "
              f"{seconds / rounds:5.1%})")
    total = time.perf_counter() - began
    rss = peak_rss_gb()
    print(f"rounds: {rounds:.1f} s ({rounds / args.rounds:.2f} s/round); total {total:.1f} s ({total / 60:.1f} min); "
          f"peak RSS {rss:.2f} GB; target <= 10 min and <= 4 GB: "
          f"{'met' if total <= 600 and rss <= 4 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
