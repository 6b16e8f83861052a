"""simulations.analysis.rounds: the per-round summary over seeds, its figures and its place in the report.

The summary is checked against numbers worked here (means, scipy's t quantile, per-seed pairing
with the base model); the figures and the report section through a real [dynamics] run of the toy data.
"""

import math

import numpy as np
import pandas as pd
import pytest
import tomli_w
from scipy import stats

from simulations.analysis.rounds import (SUMMARY_FILE, last_round, read_rounds, rounds_section, rounds_summary,
                                         trajectory_keys)
from simulations.cli import main
from agents.errors import DataError

SEEDS = (0, 1, 2)
# EqOd per (mode, seed, round) of the one cell; the base model's per (seed, round).
EQOD = {"coordinator": {0: (0.05, 0.04), 1: (0.085, 0.05), 2: (0.04, 0.03)},
        "gossip": {0: (0.06, 0.05), 1: (0.08, 0.07), 2: (0.07, 0.04)}}
BASE = {0: (0.10, 0.10), 1: (0.14, 0.12), 2: (0.09, 0.08)}
FLIPS_MINUS_M = {"coordinator": (0, 0, 0), "gossip": (3, -1, 4)}


def table(seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for r in (1, 2):
            rows.append({"seed": s, "round": r, "coordination": "gossip", "method": "base", "alpha": 0.0,
                         "budget": 0.0, "budget_kind": "none", "participants": 0, "flips_minus_m": 0,
                         "eqod": BASE[s][r - 1], "error": 0.2})
            for mode in EQOD:
                rows.append({"seed": s, "round": r, "coordination": mode, "method": "rb-prob", "alpha": 0.2,
                             "budget": 0.5, "budget_kind": "fraction", "participants": 10 + s + r,
                             "flips_minus_m": FLIPS_MINUS_M[mode][s], "eqod": EQOD[mode][s][r - 1], "error": 0.21})
    return pd.DataFrame(rows)


def t95(values):
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def row(summary, **where):
    mask = np.ones(len(summary), dtype=bool)
    for k, v in where.items():
        mask &= (summary[k] == v).to_numpy()
    assert mask.sum() == 1, where
    return summary[mask].iloc[0]


def test_summary_is_the_t_interval_of_the_seed_mean_per_trajectory_and_round():
    summary = rounds_summary(table())
    # one row per trajectory (base, coordinator, gossip) and round
    assert len(summary) == 3 * 2 and set(summary["seeds"]) == {3}
    r = row(summary, coordination="gossip", method="rb-prob", round=2)
    mean, lo, hi = t95([EQOD["gossip"][s][1] for s in SEEDS])
    assert r["eqod"] == pytest.approx(mean) and r["eqod_lo"] == pytest.approx(lo) and r["eqod_hi"] == pytest.approx(hi)
    mean, lo, hi = t95(FLIPS_MINUS_M["gossip"])
    assert (r["flips_minus_m"], r["flips_minus_m_lo"], r["flips_minus_m_hi"]) == pytest.approx((mean, lo, hi))
    # the coordinator's flips - M is 0 at every seed: a zero-width interval, not NaN
    c = row(summary, coordination="coordinator", method="rb-prob", round=1)
    assert (c["flips_minus_m"], c["flips_minus_m_lo"], c["flips_minus_m_hi"]) == (0, 0, 0)
    assert c["participants"] == pytest.approx(np.mean([11, 12, 13]))


def test_eqod_vs_base_is_paired_with_the_same_seed_and_round():
    summary = rounds_summary(table())
    r = row(summary, coordination="coordinator", method="rb-prob", round=1)
    diffs = [EQOD["coordinator"][s][0] - BASE[s][0] for s in SEEDS]
    mean, lo, hi = t95(diffs)
    assert (r["eqod_vs_base"], r["eqod_vs_base_lo"], r["eqod_vs_base_hi"]) == pytest.approx((mean, lo, hi))
    # pairing removes the shared swing: the paired interval is narrower than the raw one here
    assert r["eqod_vs_base_hi"] - r["eqod_vs_base_lo"] < r["eqod_hi"] - r["eqod_lo"]
    assert row(summary, method="base", round=2)["eqod_vs_base"] == 0


def test_one_seed_has_no_interval_and_sweep_columns_are_trajectory_keys():
    one = rounds_summary(table(seeds=(1,)))
    assert one["eqod_lo"].isna().all() and one["seeds"].eq(1).all()
    swept = pd.concat([table().assign(**{"dynamics.compliance": c}) for c in (0.5, 1.0)], ignore_index=True)
    assert trajectory_keys(swept)[0] == "dynamics.compliance"
    summary = rounds_summary(swept)
    assert len(summary) == 2 * 6
    last = last_round(summary)
    assert set(last["round"]) == {2} and len(last) == 2 * 3
    # pairing with the base model stays within the sweep point
    assert last["eqod_vs_base"].notna().all()


def test_section_shows_each_trajectory_last_round_with_intervals():
    html = rounds_section(table())
    mean, lo, hi = t95([EQOD["gossip"][s][1] for s in SEEDS])
    assert f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" in html
    assert "gossip, rb-prob, α=0.2, 0.5·pool" in html and "base model" in html and SUMMARY_FILE in html


def test_bad_rounds_table_is_one_data_error(tmp_path):
    path = tmp_path / "rounds.csv"
    table().drop(columns="round").to_csv(path, index=False)
    with pytest.raises(DataError, match="missing column.*round.*allowed"):
        read_rounds(path)


TOY = {
    "name": "toy-rounds",
    "seeds": [0, 1],
    "data": {"dataset": "toy", "options": {"n": 1500}},
    "collective": {"methods": ["rb-prob"], "alphas": [0.2, 0.4], "budgets": [0.5, 1.0]},
    "engine": {"n_jobs": 1},
    "dynamics": {"rounds": 3, "coordination": ["gossip", "coordinator"], "gossip_steps": 5, "dropout": 0.1,
                 "graph": {"kind": "erdos-renyi", "mean_degree": 8}},
}


def test_run_and_report_write_the_summary_figures_and_section(tmp_path, capsys):
    config = tmp_path / "toy.toml"
    config.write_text(tomli_w.dumps(TOY))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    summary = pd.read_csv(out / SUMMARY_FILE)
    # the file is the summary of the table beside it (2 modes x 2 alphas x 2 budgets + base, 3 rounds)
    assert len(summary) == (2 * 2 * 2 + 1) * 3
    expected = rounds_summary(rounds)
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False)
    figures = sorted(p.name for p in out.glob("trajectories_*.png"))
    assert figures == ["trajectories_budget0.5.png", "trajectories_budget1.png"]
    page = (out / "report.html").read_text()
    assert "trajectories_budget0.5.png" in page and "95% Student-t interval of the seed mean" in page
    assert "each trajectory&#x27;s last round" in page.lower() or "each trajectory's last round" in page.lower()
    for p in out.glob("trajectories_*.png"):
        p.unlink()
    (out / SUMMARY_FILE).unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per-round summary" in printed and "trajectories_budget1.png" in printed
    assert (out / SUMMARY_FILE).exists()


def test_report_of_a_broken_rounds_table_is_one_line(tmp_path, capsys):
    config = tmp_path / "toy.toml"
    config.write_text(tomli_w.dumps({**TOY, "seeds": [0], "dynamics": {"rounds": 1}}))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-plots"]) == 0
    assert (out / SUMMARY_FILE).exists()  # --no-plots still writes the table
    (out / "rounds.csv").write_text("seed,method\n0,base\n")
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rounds.csv: missing column(s) round" in err[0]


def test_a_fraction_and_a_count_of_the_same_number_are_two_figures(tmp_path):
    """budgets = [1.0, 1]: the whole pool and one flip are different trajectories, so two figures
    (one used to overwrite the other)."""
    from simulations.analysis.rounds import plot_trajectories

    rounds = table()
    count = rounds[rounds["method"] != "base"].assign(budget_kind="count")
    written = plot_trajectories(pd.concat([rounds, count], ignore_index=True), tmp_path)
    names = sorted(p.name for p in written)
    assert len(names) == len(set(names)) == 2 * rounds.loc[rounds["method"] != "base", "budget"].nunique()
    assert all((tmp_path / n).exists() for n in names)
    assert any(n.startswith("trajectories_M") for n in names) and any(n.startswith("trajectories_budget") for n in names)
