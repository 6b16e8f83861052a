"""What TLS + SuperNode authentication cost a loopback deployment (a benchmark script, not a timed test).

The toy deployment of tests/simulations/test_deploy.py (a SuperLink and 3 SuperNodes,
2 rounds), run alternately ``--insecure`` and with TLS + node auth, so both see the
same machine load. Per phase: start (certificates, keys, SuperLink up, keys
registered, nodes spawned), run (``flwr run`` until the ServerApp's results),
close (every process stopped); then the TLS/insecure ratios of the medians. Usage::

    python benchmarks/deploy_tls.py [repeats, default 2] [nodes' users, default 30]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simulations import engine  # noqa: E402
from simulations.flower.deploy import Deployment  # noqa: E402
from simulations.flower.files import prepare_run  # noqa: E402
from simulations.scenario import Scenario  # noqa: E402

TOY = Scenario(name="toy-deploy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-dist", "random"), collective__alphas=(0.3, 0.6),
    collective__budgets=(0.2, 1.0, 7), engine__n_jobs=1, collective__validation=0.0,
)


def once(insecure: bool, agents_per_node: int) -> dict:
    dataset = engine.load_data(TOY, seed=0)
    with tempfile.TemporaryDirectory(prefix="deploy-tls-") as tmp:
        files = prepare_run(TOY, 0, Path(tmp) / "seed-0", dataset=dataset, agents_per_node=agents_per_node)
        dep = Deployment(files, tmp, insecure=insecure)
        t0 = time.monotonic()
        dep.start()
        try:
            t1 = time.monotonic()
            results = dep.run(rounds=2, timeout=180, mode="evaluate")  # every cell, as the test
            t2 = time.monotonic()
        finally:
            dep.close()
        t3 = time.monotonic()
    assert results["connected_nodes"] == files.n_nodes
    return {"start": t1 - t0, "run": t2 - t1, "close": t3 - t2, "total": t3 - t0}


def main() -> None:
    repeats = int((sys.argv[1:] or ["2"])[0])
    agents_per_node = int((sys.argv[2:] or ["30"])[0])
    times: dict[str, list[dict]] = {"insecure": [], "tls": []}
    for i in range(repeats):
        for mode in ("insecure", "tls"):
            t = once(mode == "insecure", agents_per_node)
            times[mode].append(t)
            print(f"{i + 1}/{repeats} {mode:8s} " + "  ".join(f"{k} {v:5.1f} s" for k, v in t.items()), flush=True)
    print(f"\nmedian over {repeats}   insecure      tls   tls/insecure")
    for phase in ("start", "run", "close", "total"):
        a = statistics.median(t[phase] for t in times["insecure"])
        b = statistics.median(t[phase] for t in times["tls"])
        print(f"{phase:18s} {a:7.1f} s {b:7.1f} s   {b / a:5.2f}")


if __name__ == "__main__":
    main()
