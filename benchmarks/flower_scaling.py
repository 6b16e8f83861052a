"""Speed and memory of the flower backend (a benchmark script, not a timed test).

Cases (synthetic data, the grid of configs/synthetic.toml, one seed):

* ``big``: 10,000 users, ``agents-per-node`` K = 100 (100 user nodes + the coordinator), 3 rounds.
  Targets on 2 cores: steady round <= 5 s; whole run <= 20x the vectorised engine.
* ``k1``:  1,000 users, K = 1 (1,000 user nodes + the coordinator), 3 rounds.
  Target: steady round <= 10 s.
* Peak memory (PSS, and RSS) of this process and every process it started, sampled
  every 0.2 s: target <= 2 GB.
* What sealing the coalition's payloads costs (agents/sealing.py): each case runs
  the federation ``--pairs`` times sealed (as always) and as often plain (node
  files written without keys, ``prepare_run(_sealed=False)``, which only this
  script does) in one Flower session, alternating which goes first, and prints
  the ratios of each mode's best first round (sign-up: every sealed message is
  sent then), coalition waves and steady round. It also
  times the sealing functions alone on the run's own payloads, in this process
  (no Flower, no noise from other jobs): members sealing join and scores, the
  coordinator opening them, the collective key's one seal of its answers and
  every node opening it, against sealing those answers to each node's own
  public key instead.

A steady round is any round after the first (the first also starts the Ray
actors and lets users sign up). Both backends must give the same table, which is
checked too (sealed and plain). Each run's node files are removed afterwards.
Usage::

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

import numpy as np
import pandas as pd

from agents import sealing
from agents.knowledge import knowledge_from_reference
from agents.node import load_node_file
from agents.rule import membership_cutoffs
from simulations import engine
from simulations.flower.files import node_files_removed, prepare_run, results_frame
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


COALITION = ("query.join", "query.coordinate", "query.scores")


def _federation(session, scenario, dataset, reference, run_dir: Path, rounds: int, *, sealed: bool) -> dict:
    """One Flower run on fresh node files (removed afterwards); its table must be the engine's."""
    t0 = time.perf_counter()
    files = prepare_run(scenario, 0, run_dir, dataset=dataset, _sealed=sealed)
    t1 = time.perf_counter()
    with node_files_removed(files):
        results = session.run(files, rounds=rounds, timeout=scenario.flower.timeout)
        t2 = time.perf_counter()
        costs = sealing_costs(files, scenario) if sealed else None
    assert not files.node_data_dir.exists()
    frame = results_frame(scenario, dataset, 0, results)
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)
    first = results["rounds"][0]
    waves = first.get("wave_seconds", {})
    steady = [r["seconds"]["round"] for r in results["rounds"][1:]]
    dropped = first["coalition"].get("dropped", {})
    assert not dropped, f"an honest run dropped payloads: {dropped}"
    return {"files": files, "results": results, "prepare_s": t1 - t0, "flower_run_s": t2 - t1,
            "first_round_s": first["seconds"]["round"], "steady_round_s": max(steady) if steady else None,
            "coalition_s": first["seconds"].get("coalition", float("nan")),
            "coalition_waves_s": sum(waves.get(t, 0.0) for t in COALITION),
            "waves_s": {t: round(v, 3) for t, v in waves.items()}, "sealing_functions": costs}


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def sealing_costs(files, scenario) -> dict:
    """The sealing functions alone, on this run's own payloads (in this process, one core).

    Members seal their join (minority ids, membership tickets) and scores payloads
    (every minority user with y = 0: each is a candidate at alpha = 1), padded to
    their node's users; the coordinator opens them; it seals its answers (cutoffs,
    majority knowledge) once with the collective key, and every user node opens
    them; the alternative, sealing those answers to each node's own X25519 key, is
    timed too. Associated data as in agents/client_app.py.
    """
    users = [load_node_file(f) for f in files.node_files[:-1]]
    coord = load_node_file(files.node_files[-1])
    public, private, collective = users[0].coordinator_key, coord.private_key, coord.collective_key
    n_methods = len(coord.grid.methods)
    ctx = lambda kind, i: sealing.context(kind, run=users[0].coordinator_digest, role="users", round_=1, node=i)  # noqa: E731
    payloads = []
    for i, node in enumerate(users):
        m, c = node.a == 1, (node.a == 1) & (node.y == 0)
        join = dict(user_ids=node.user_ids[m], member_tickets=node.member_tickets[m])
        scores = dict(user_ids=node.user_ids[c], member_tickets=node.member_tickets[c], tie_tickets=node.tie_tickets[c],
                      scores=np.random.default_rng(i).random((n_methods, int(c.sum()))))
        payloads += [("query.join", i, join, node.user_ids.size), ("query.scores", i, scores, node.user_ids.size)]

    def seal_all():
        return [sealing.seal_to(public, sealing.pack(sealing.padded(a, n)), ctx(kind, i)) for kind, i, a, n in payloads]

    def open_all(blobs):
        return [sealing.unpadded(sealing.unpack(sealing.open_from(private, b, ctx(kind, i))))
                for b, (kind, i, _, _) in zip(blobs, payloads)]

    def pack_only():  # what a plain run does instead: arrays as they are
        return [sum(np.asarray(v).nbytes for v in a.values()) for _, _, a, _ in payloads]

    blobs, seal_s = _timed(seal_all)
    opened, open_s = _timed(open_all, blobs)
    assert all(np.array_equal(o["user_ids"], a["user_ids"]) for o, (_, _, a, _) in zip(opened, payloads))
    plain_bytes = sum(pack_only())
    tickets = np.concatenate([u.member_tickets[u.a == 1] for u in users])
    cutoffs, _ = membership_cutoffs(tickets, coord.grid.alphas)
    answer = sealing.pack(dict(cutoffs=cutoffs, **knowledge_from_reference(coord.grid.methods, coord.X_ref, coord.y_ref,
                                                                           params=coord.params)))
    actx = sealing.context("query.coordinate/cutoffs", run=users[0].coordinator_digest, role="coordinator")
    key = sealing.CollectiveKey(collective)
    blob, collective_seal_s = _timed(key.seal, answer, actx)
    _, collective_open_s = _timed(lambda: [sealing.CollectiveKey(u.collective_key).open(blob, actx) for u in users])
    node_keys = [sealing.new_key_pair() for _ in users]
    per_node, per_node_seal_s = _timed(lambda: [sealing.seal_to(pub, answer, actx) for _, pub in node_keys])
    _, per_node_open_s = _timed(lambda: [sealing.open_from(priv, b, actx) for (priv, _), b in zip(node_keys, per_node)])
    n = len(payloads)
    return {
        "member_payloads": n, "seal_s": round(seal_s, 3), "open_s": round(open_s, 3),
        "per_payload_us": round(1e6 * (seal_s + open_s) / n, 1),
        "member_bytes_plain": plain_bytes, "member_bytes_sealed": sum(map(len, blobs)),
        "answer_bytes": len(answer), "collective_seal_s": round(collective_seal_s, 4),
        "collective_open_all_s": round(collective_open_s, 3), "collective_answer_bytes": len(blob),
        "per_node_seal_s": round(per_node_seal_s, 3), "per_node_open_all_s": round(per_node_open_s, 3),
        "per_node_answer_bytes": sum(map(len, per_node)),  # the coordinator's one answer message, to the relay
    }


def run_case(name: str, users: int, k: int, rounds: int, workdir: Path, pairs: int = 2) -> dict:
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
            # The same federation sealed and plain, in the same session, alternating which goes
            # first (sealed, plain, plain, sealed, ...): each mode's best run is compared.
            runs = {True: [], False: []}
            for i in range(pairs):
                for mode in ((True, False) if i % 2 == 0 else (False, True)):
                    label = "sealed" if mode else "plain"
                    runs[mode].append(_federation(session, scenario, dataset, reference,
                                                  session.workdir / "runs" / f"{name}-{label}-{i}", rounds, sealed=mode))
            t_plain = time.perf_counter()
        t4 = time.perf_counter()
    sealed = runs[True][0]  # the first run of the session, as before sealing existed
    files, results = sealed["files"], sealed["results"]
    frame = results_frame(scenario, dataset, 0, results)
    rounds_s = [r["seconds"] for r in results["rounds"]]
    steady = [r["round"] for r in rounds_s[1:]]
    # start SuperLink/Ray, write node files, the R-round Flower run (the sealed one)
    whole = (t1 - t0) + sealed["prepare_s"] + sealed["flower_run_s"]
    best = {mode: _best(runs[mode]) for mode in runs}
    ratio = lambda key: round(best[True][key] / best[False][key], 2) if best[False][key] else None  # noqa: E731
    return {
        "case": name, "users": int(frame["n_train"].iloc[0]), "k": k,
        "nodes": files.n_nodes, "cells": len(frame) - 1, "rounds": rounds,
        "vectorised_s": round(vectorised, 2), "vectorised_warm_s": round(vectorised_warm, 2),
        "session_start_s": round(t1 - t0, 2), "prepare_s": round(sealed["prepare_s"], 2),
        "flower_run_s": round(sealed["flower_run_s"], 2), "shutdown_s": round(t4 - t_plain, 2),
        "whole_flower_s": round(whole, 2),
        "ratio_vs_vectorised": round(whole / vectorised, 1), "ratio_vs_vectorised_warm": round(whole / vectorised_warm, 1),
        "first_round_s": round(rounds_s[0]["round"], 2), "steady_round_s": round(max(steady), 2) if steady else None,
        "round_breakdown": [{k2: round(v, 2) for k2, v in r.items()} for r in rounds_s],
        "peak_pss_gb": round(mem.peak_pss / 2**30, 2), "peak_rss_gb": round(mem.peak_rss / 2**30, 2),
        "same_table_as_vectorised": True,
        "sealing": {
            "runs_per_mode": pairs,
            "sealed": best[True], "plain": best[False],
            "ratio_sealed_to_plain": {k2: ratio(k2) for k2 in _COMPARED if k2 != "waves_s"},
            "every_run": {("sealed" if mode else "plain"): [{k2: _rounded(r[k2]) for k2 in _COMPARED} for r in rs]
                          for mode, rs in runs.items()},
            "functions": sealed["sealing_functions"], "all_runs_s": round(t_plain - t1, 2),
        },
    }


_COMPARED = ("first_round_s", "coalition_s", "coalition_waves_s", "steady_round_s", "flower_run_s", "waves_s")


def _rounded(v):
    return round(v, 3) if isinstance(v, float) else v


def _best(runs: list[dict]) -> dict:
    """Each compared time's minimum over a mode's runs (the least disturbed by other jobs)."""
    out = {k: _rounded(min(r[k] for r in runs)) for k in _COMPARED if k != "waves_s"}
    out["waves_s"] = {t: round(min(r["waves_s"].get(t, float("inf")) for r in runs), 3) for t in runs[0]["waves_s"]}
    return out


CASES = {"big": (10_000, 100), "k1": (1_000, 1)}


def _ratio(a, b):
    return round(a / b, 1) if b else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=[*CASES, "all"], default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, help="Flower state and node files (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--pairs", type=int, default=2,
                   help="sealed + plain runs per case, alternating which goes first (default 2)")
    args = p.parse_args(argv)
    names = list(CASES) if args.case == "all" else [args.case]
    out = []
    with tempfile.TemporaryDirectory(prefix="flower-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        for name in names:
            users, k = CASES[name]
            res = run_case(name, users, k, args.rounds, workdir, pairs=args.pairs)
            out.append(res)
            print(json.dumps(res), flush=True)
            print(f"{name}: {res['users']} users, K={k}: steady round {res['steady_round_s']} s, "
                  f"first round {res['first_round_s']} s, whole {res['whole_flower_s']} s = "
                  f"{res['ratio_vs_vectorised']}x the vectorised engine ({res['vectorised_s']} s; "
                  f"{res['ratio_vs_vectorised_warm']}x its warm {res['vectorised_warm_s']} s), "
                  f"peak memory {res['peak_pss_gb']} GB PSS / {res['peak_rss_gb']} GB RSS", flush=True)
            s, f = res["sealing"], res["sealing"]["functions"]
            print(f"{name}: sealed / plain (best of {s['runs_per_mode']} runs each): first round "
                  f"{s['sealed']['first_round_s']} / {s['plain']['first_round_s']} s "
                  f"= {s['ratio_sealed_to_plain']['first_round_s']}x, coalition waves "
                  f"{s['sealed']['coalition_waves_s']} / {s['plain']['coalition_waves_s']} s "
                  f"= {s['ratio_sealed_to_plain']['coalition_waves_s']}x, steady round {s['sealed']['steady_round_s']} / "
                  f"{s['plain']['steady_round_s']} s = {s['ratio_sealed_to_plain']['steady_round_s']}x", flush=True)
            print(f"{name}: sealing functions: {f['member_payloads']} member payloads sealed in {f['seal_s']} s and "
                  f"opened in {f['open_s']} s ({f['per_payload_us']} us each), {f['member_bytes_plain']} -> "
                  f"{f['member_bytes_sealed']} bytes; the coordinator's answer ({f['answer_bytes']} bytes): collective "
                  f"key seal {f['collective_seal_s']} s + every node opening {f['collective_open_all_s']} s, an answer "
                  f"of {f['collective_answer_bytes']} bytes; per-node keys instead: {f['per_node_seal_s']} s + "
                  f"{f['per_node_open_all_s']} s ({_ratio(f['per_node_seal_s'], f['collective_seal_s'])}x to seal), "
                  f"an answer of {f['per_node_answer_bytes']} bytes", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
