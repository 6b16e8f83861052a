"""Speed and memory of the flower backend (a benchmark script, not a timed test).

Cases (synthetic data, the grid of configs/synthetic.toml, one seed):

* ``big``: 10,000 users, ``agents-per-node`` K = 100 (100 user nodes + the coordinator), 3 rounds.
  Targets on 2 cores: steady round <= 5 s; whole run <= 20x the vectorised engine.
* ``k1``:  1,000 users, K = 1 (1,000 user nodes + the coordinator), 3 rounds.
  Target: steady round <= 10 s.
* Peak memory (PSS, and RSS) of this process and every process it started, sampled
  every 0.2 s: target <= 2 GB.

A steady round is any round after the first (the first also starts the Ray
actors and lets users sign up). Both backends must give the same table, which is
checked too. Usage::

    python benchmarks/flower_scaling.py                 # both cases
    python benchmarks/flower_scaling.py --case big --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from simulations import engine
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.processes import process_tree
from simulations.flower.session import FlowerSession
from simulations.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def scenario_for(users: int, k: int, rounds: int):
    base = load_scenario(ROOT / "configs" / "synthetic.toml")
    opts = dict(base.data.options)
    opts["n"] = round(users / (1 - base.data.test_size))  # the split keeps `users` training rows
    # The federation itself: no validation pilot (an in-process study on both backends).
    return base.replace(name=f"bench-{users}-k{k}", seeds=(0,), data__options=opts,
                        flower__agents_per_node=k, flower__rounds=rounds, collective__validation=0.0)


class TreeMemory:
    """Peak memory of this process and its descendants (PSS avoids counting shared pages twice)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_pss, self.peak_rss = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read(pid: int) -> tuple[int, int]:
        pss = rss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss = int(line.split()[1]) * 1024
        except OSError:
            pass
        return pss, rss

    def sample(self) -> tuple[int, int]:
        pids = [os.getpid(), *process_tree(os.getpid())]
        values = [self._read(p) for p in pids]
        return sum(v[0] for v in values), sum(v[1] for v in values)

    def _run(self):
        while not self._stop.is_set():
            pss, rss = self.sample()
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_case(name: str, users: int, k: int, rounds: int, workdir: Path) -> dict:
    scenario = scenario_for(users, k, rounds)
    dataset = engine.load_data(scenario, seed=0)
    t = time.perf_counter()
    reference = engine.run_seed(scenario, 0, dataset=dataset)
    vectorised = time.perf_counter() - t
    t = time.perf_counter()
    engine.run_seed(scenario, 0, dataset=dataset)
    vectorised_warm = time.perf_counter() - t

    with TreeMemory() as mem:
        t0 = time.perf_counter()
        with FlowerSession(scenario.flower, workdir / name) as session:
            t1 = time.perf_counter()
            files = prepare_run(scenario, 0, session.workdir / "runs" / name, dataset=dataset)
            t2 = time.perf_counter()
            results = session.run(files, rounds=rounds, timeout=scenario.flower.timeout)
            t3 = time.perf_counter()
        t4 = time.perf_counter()
    frame = results_frame(scenario, dataset, 0, results)
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)
    rounds_s = [r["seconds"] for r in results["rounds"]]
    steady = [r["round"] for r in rounds_s[1:]]
    whole = t3 - t0  # start SuperLink/Ray, write node files, the R-round Flower run
    return {
        "case": name, "users": int(frame["n_train"].iloc[0]), "k": k,
        "nodes": files.n_nodes, "cells": len(frame) - 1, "rounds": rounds,
        "vectorised_s": round(vectorised, 2), "vectorised_warm_s": round(vectorised_warm, 2),
        "session_start_s": round(t1 - t0, 2), "prepare_s": round(t2 - t1, 2), "flower_run_s": round(t3 - t2, 2),
        "shutdown_s": round(t4 - t3, 2), "whole_flower_s": round(whole, 2),
        "ratio_vs_vectorised": round(whole / vectorised, 1), "ratio_vs_vectorised_warm": round(whole / vectorised_warm, 1),
        "first_round_s": round(rounds_s[0]["round"], 2), "steady_round_s": round(max(steady), 2) if steady else None,
        "round_breakdown": [{k2: round(v, 2) for k2, v in r.items()} for r in rounds_s],
        "peak_pss_gb": round(mem.peak_pss / 2**30, 2), "peak_rss_gb": round(mem.peak_rss / 2**30, 2),
        "same_table_as_vectorised": True,
    }


CASES = {"big": (10_000, 100), "k1": (1_000, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=[*CASES, "all"], default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, help="Flower state and node files (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    names = list(CASES) if args.case == "all" else [args.case]
    out = []
    with tempfile.TemporaryDirectory(prefix="flower-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        for name in names:
            users, k = CASES[name]
            res = run_case(name, users, k, args.rounds, workdir)
            out.append(res)
            print(json.dumps(res), flush=True)
            print(f"{name}: {res['users']} users, K={k}: steady round {res['steady_round_s']} s, "
                  f"first round {res['first_round_s']} s, whole {res['whole_flower_s']} s = "
                  f"{res['ratio_vs_vectorised']}x the vectorised engine ({res['vectorised_s']} s; "
                  f"{res['ratio_vs_vectorised_warm']}x its warm {res['vectorised_warm_s']} s), "
                  f"peak memory {res['peak_pss_gb']} GB PSS / {res['peak_rss_gb']} GB RSS", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
