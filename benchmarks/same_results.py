"""Same results, bit for bit: run the reference scenarios and compare their runs.csv.

A refactoring must not change a number. Before it, save the tables; after it,
compare (byte for byte, and on a mismatch the first differing cells):

    python benchmarks/same_results.py --out /tmp/before          # on the old code
    python benchmarks/same_results.py --out /tmp/after --compare /tmp/before

The scenarios: the default run (paper-adult, 3 seeds), configs/compas.toml,
configs/compare-adult.toml with seed 0, and configs/synthetic.toml on the
flower backend with seed 0. About 4 minutes on 2 cores (set
COLLECTIVE_FAIRNESS_MIRROR for COMPAS when offline).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "paper-adult": [],
    "compas": ["configs/compas.toml"],
    "compare-adult": ["configs/compare-adult.toml", "--seeds", "0"],
    "synthetic-flower": ["configs/synthetic.toml", "--backend", "flower", "--seeds", "0"],
}


def run(out: Path, names) -> dict[str, float]:
    seconds = {}
    for name in names:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "simulations.cli", "run", *CASES[name], "--out", str(out / name),
               "--fresh", "--quiet", "--no-plots"]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s", flush=True)
    return seconds


def compare(new: Path, old: Path, names) -> bool:
    same = True
    for name in names:
        a, b = new / name / "runs.csv", old / name / "runs.csv"
        if a.read_bytes() == b.read_bytes():
            print(f"{name}: identical ({len(pd.read_csv(a))} rows, {a.stat().st_size} bytes)")
            continue
        same = False
        fa, fb = pd.read_csv(a), pd.read_csv(b)
        print(f"{name}: DIFFERENT")
        if list(fa.columns) != list(fb.columns) or fa.shape != fb.shape:
            print(f"  columns/shape: {fa.shape} {list(fa.columns)}\n  vs {fb.shape} {list(fb.columns)}")
            continue
        diff = (fa != fb) & ~(fa.isna() & fb.isna())
        for col in diff.columns[diff.any()]:
            rows = diff.index[diff[col]][:3].tolist()
            print(f"  {col}: {int(diff[col].sum())} rows differ, e.g. rows {rows}: "
                  f"{fa.loc[rows, col].tolist()} vs {fb.loc[rows, col].tolist()}")
    return same


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for this run's results")
    p.add_argument("--compare", type=Path, help="a folder written by an earlier run of this script")
    p.add_argument("--only", help="comma-separated case names (default: all)")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    run(args.out, names)
    if args.compare is None:
        return 0
    return 0 if compare(args.out, args.compare, names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
