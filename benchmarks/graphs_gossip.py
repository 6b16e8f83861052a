"""Social graphs and gossip at scale: build time and peak memory, side by side.

1. Erdos-Renyi graphs (mean degree 10) with networkx's fast_gnp_random_graph and
   with the vectorised sampler of simulations/graphs.py, at each size: seconds,
   peak RSS of a fresh process (imports included), and the ratio.
2. Members' gossip estimates of the coalition's threshold (agents/gossip.py) on
   such a graph: seconds and peak RSS for the given bins and steps, and how far
   the flips land from the coordinator's exact count M.

Each measurement runs in its own process so that peak RSS is its own.

    python benchmarks/graphs_gossip.py                         # 3e5 and 1e6 users; gossip 3e5 x 50 steps x 128/256 bins
    python benchmarks/graphs_gossip.py --sizes 1e5 --gossip-n 1e5 --bins 64

Timings depend on the load of the machine; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

GRAPH = """
import json, resource, time
from simulations.graphs import build_graph
t = time.perf_counter()
a = build_graph("erdos-renyi", {n}, rng_or_seed=1, mean_degree=10, sampler="{sampler}")
print(json.dumps(dict(seconds=time.perf_counter() - t, edges=a.nnz // 2,
                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""

GOSSIP = """
import json, resource, time
import numpy as np
from agents.gossip import exact_threshold, flip_mask, gossip_thresholds
from simulations.graphs import build_graph
n = {n}
a = build_graph("erdos-renyi", n, rng_or_seed=1, mean_degree=10)
rng = np.random.default_rng(0)
cand = rng.random(n) < 0.5
keys = np.where(cand, rng.beta(2, 5, n), np.nan)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
est = gossip_thresholds(a, keys, cand, 0.3, steps={steps}, bins={bins}, block={block})
seconds = time.perf_counter() - t
m = int(flip_mask(exact_threshold(keys, cand, 0.3), keys, cand).sum())
print(json.dumps(dict(seconds=seconds, m=m, off=int(flip_mask(est, keys, cand).sum()) - m, rss_before_mb=before,
                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[3e5, 1e6], help="graph sizes (users)")
    parser.add_argument("--gossip-n", type=float, default=3e5, help="members in the gossip run (0: skip)")
    parser.add_argument("--bins", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--block", type=int, default=32, help="bins pushed at once")
    parser.add_argument("--skip-networkx", action="store_true", help="only the vectorised sampler")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for n in map(int, args.sizes):
        fast = run(GRAPH.format(n=n, sampler="numpy"))
        line = f"erdos-renyi n={n:.0e} mean degree 10: numpy {fast['seconds']:.1f} s {fast['rss_mb']:.0f} MB"
        if not args.skip_networkx:
            slow = run(GRAPH.format(n=n, sampler="networkx"))
            line += (f" | networkx {slow['seconds']:.1f} s {slow['rss_mb']:.0f} MB"
                     f" | ratio {slow['seconds'] / fast['seconds']:.0f}x time, {slow['rss_mb'] / fast['rss_mb']:.1f}x memory")
        print(line, flush=True)
    if args.gossip_n:
        n = int(args.gossip_n)
        for bins in args.bins:
            g = run(GOSSIP.format(n=n, steps=args.steps, bins=bins, block=args.block))
            print(f"gossip n={n:.0e} steps={args.steps} bins={bins} block={args.block}: {g['seconds']:.1f} s, "
                  f"peak RSS {g['rss_mb']:.0f} MB ({g['rss_before_mb']:.0f} MB before), "
                  f"flips - M = {g['off']} (M = {g['m']})", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
