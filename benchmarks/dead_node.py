"""Round time with one dead SuperNode among 10: a real SuperLink + 10 SuperNodes on loopback,
as deployed (TLS, SuperNode authentication, the firm on the one cell the collective deploys).

After round 1 (sign-up) the SuperNode of partition 3 and its processes get SIGKILL
(``term``: SIGTERM, a clean shutdown; ``none``: nobody dies, the baseline). Prints each
round's time and message counts. Takes about 2.5 minutes, so it is not part of the tests. Usage::

    python benchmarks/dead_node.py [kill|term|none] [rounds, default 4]
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simulations import engine
from simulations.flower.deploy import Deployment
from simulations.flower.files import prepare_run
from simulations.flower.processes import process_tree
from simulations.scenario import Scenario

TOY = Scenario(name="toy-deploy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob",), collective__alphas=(0.6,),  # a deployment runs one cell
    collective__budgets=(0.5,), engine__n_jobs=1, collective__validation=0.0,
)
mode = (sys.argv[1:] or ["kill"])[0]
sig = signal.SIGTERM if mode == "term" else signal.SIGKILL
rounds = int((sys.argv[2:] or ["4"])[0])
work = f"/tmp/dead-node-{mode}-{int(time.time())}"
dataset = engine.load_data(TOY, seed=0)
files = prepare_run(TOY, 0, work + "/seed-0", dataset=dataset, agents_per_node=7)
assert files.n_nodes == 10, files.n_nodes
with Deployment(files, work) as dep:
    for p in dep.processes:
        print(p.pid, " ".join(map(str, p.args))[:150], flush=True)
    victim = [p for p in dep.processes if "flower-supernode" in str(p.args[0]) and "partition-id=3 " in " ".join(map(str, p.args))][0]  # SuperNode of partition 3 (a user node; the coordinator is last)
    killed = []
    def on_round(line):
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
        if not killed and mode == "none":
            killed.append(0)
        if not killed:
            pids = [victim.pid] + process_tree(victim.pid)
            for pid in pids:
                try:
                    print(pid, open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:200], flush=True)
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            killed.append(time.monotonic())
            print(f"{time.strftime('%H:%M:%S')} sent {sig.name} to SuperNode 3 (pids {pids})", flush=True)
    t0 = time.monotonic()
    results = dep.run(rounds=rounds, timeout=600, on_round=on_round)
    print("total", round(time.monotonic() - t0, 1))
for r in results["rounds"]:
    print(r["round"], "round s=%.1f" % r["seconds"]["round"], {k: round(v, 1) for k, v in r["wave_seconds"].items()},
          json.dumps(r["messages"]), "n_train", r["n_train"])
