"""simulations.analysis: budget selections, t intervals, paired claims, edge warnings, tables, page.

Everything runs on a small table built here with known numbers: 3 seeds x 2
methods (rb-prob, random) x 2 alphas x 3 budgets (0.2, 0.6 and 1.0 of a pool of
100 candidates), plus one base row per seed.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from simulations.analysis import (available_selections, collective_claims, format_summary, has_validation,
                                  select_budgets, summary_table, t_interval, write_html, write_summary)
from simulations.analysis.budgets import edge_table, edge_warnings
from simulations.analysis.claims import DOES_NOT_HOLD, HOLDS, IDENTICAL, verdict
from simulations.analysis.intervals import interval_text

SEEDS = (0, 1, 2)
BUDGETS = (0.2, 0.6, 1.0)
BASE_EQOD = (0.10, 0.12, 0.08)
BASE_ERROR = (0.20, 0.21, 0.19)
# EqOd[method, alpha][seed] over the budgets. At M = 1.0 (the whole pool) both methods flip the same
# people, so their EqOd is the same.
EQOD = {
    ("rb-prob", 0.1): [(0.08, 0.05, 0.07), (0.09, 0.07, 0.06), (0.06, 0.04, 0.05)],
    ("random", 0.1): [(0.09, 0.07, 0.07), (0.10, 0.08, 0.06), (0.07, 0.06, 0.05)],
    ("rb-prob", 0.3): [(0.03, 0.05, 0.09), (0.04, 0.06, 0.10), (0.035, 0.05, 0.08)],
    ("random", 0.3): [(0.06, 0.07, 0.09), (0.07, 0.08, 0.10), (0.066, 0.07, 0.08)],
}
# Error increase over the seed's base model, per alpha and budget (fraction), plus a per-seed jitter.
ERROR_INCREASE = {0.1: (0.001, 0.003, 0.005), 0.3: (0.020, 0.025, 0.030)}
JITTER = (0.0, 0.001, -0.001)
# Validation EqOd: seeds 0 and 1 prefer M = 0.6, seed 2 prefers M = 0.2 (whatever the test set says).
VAL_EQOD = {0: (0.09, 0.05, 0.08), 1: (0.09, 0.05, 0.08), 2: (0.04, 0.05, 0.08)}


def table(seeds=SEEDS, *, validation=True) -> pd.DataFrame:
    rows = []
    for s in seeds:
        rows.append({"seed": s, "method": "base", "alpha": 0.0, "budget": 0.0, "budget_kind": "none",
                     "pool_size": 0, "flips": 0, "eqod": BASE_EQOD[s], "error": BASE_ERROR[s], "val_eqod": 0.1})
        for (method, alpha), per_seed in EQOD.items():
            for j, budget in enumerate(BUDGETS):
                rows.append({"seed": s, "method": method, "alpha": alpha, "budget": budget, "budget_kind": "fraction",
                             "pool_size": 100, "flips": int(round(100 * budget)), "eqod": per_seed[s][j],
                             "error": BASE_ERROR[s] + ERROR_INCREASE[alpha][j] + JITTER[s],
                             "val_eqod": VAL_EQOD[s][j]})
    df = pd.DataFrame(rows).assign(dataset="hand", sp_diff=lambda d: d["eqod"] * 2)
    for col in ("val_error", "val_sp_diff", "val_eopp_diff"):
        df[col] = 0.1
    if not validation:
        df = df.drop(columns=["val_eqod", "val_error", "val_sp_diff", "val_eopp_diff"])
    return df


def chosen(sel: pd.DataFrame) -> dict:
    return {(r.seed, r.method, r.alpha): r.budget for r in sel.itertuples()}


# ------------------------------------------------------------------------------------ selections


def test_paper_selection_is_the_per_seed_test_minimum_ties_to_the_smaller_budget():
    sel = select_budgets(table(), "paper")
    c = chosen(sel)
    assert [c[(s, "rb-prob", 0.1)] for s in SEEDS] == [0.6, 1.0, 0.6]
    assert [c[(s, "random", 0.1)] for s in SEEDS] == [0.6, 1.0, 1.0]  # seed 0: 0.07 at 0.6 and 1.0 -> 0.6
    assert [c[(s, "rb-prob", 0.3)] for s in SEEDS] == [0.2, 0.2, 0.2]
    row = sel.set_index(["seed", "method", "alpha"]).loc[(1, "rb-prob", 0.1)]
    assert row["eqod"] == 0.06 and row["flips"] == 100 and row["budget_label"] == "1·pool"
    assert row["vs_base"] == pytest.approx(0.06 - 0.12)
    assert row["error_increase_pts"] == pytest.approx(100 * (0.005 + 0.001))
    assert row["whole_pool"] and row["at_top"] and not row["at_bottom"]


def test_fixed_selection_is_the_minimum_of_the_seed_mean_curve():
    sel = select_budgets(table(), "fixed")
    c = chosen(sel)
    # rb-prob at 0.1: seed means 0.0767, 0.0533, 0.06 -> 0.6; random: 0.0867, 0.07, 0.06 -> 1.0
    assert {c[(s, "rb-prob", 0.1)] for s in SEEDS} == {0.6}
    assert {c[(s, "random", 0.1)] for s in SEEDS} == {1.0}
    assert {c[(s, "rb-prob", 0.3)] for s in SEEDS} == {0.2}
    assert len(sel) == 3 * 2 * 2  # every seed reported at the one budget
    got = sel[(sel["method"] == "rb-prob") & (sel["alpha"] == 0.1)].sort_values("seed")["eqod"].tolist()
    assert got == [0.05, 0.07, 0.04]


def test_validation_selection_reads_the_validation_column():
    c = chosen(select_budgets(table(), "validation"))
    for method in ("rb-prob", "random"):
        for alpha in (0.1, 0.3):
            assert [c[(s, method, alpha)] for s in SEEDS] == [0.6, 0.6, 0.2]
    sel = select_budgets(table(), "validation").set_index(["seed", "method", "alpha"])
    assert sel.loc[(2, "rb-prob", 0.1), "eqod"] == 0.06  # the TEST metric at the validation choice


def test_validation_choice_never_reads_the_test_metrics():
    clean = table()
    poisoned = clean.copy()
    rng = np.random.default_rng(0)
    for col in ("eqod", "error", "sp_diff"):  # shuffled and negated test metrics, base rows included
        poisoned[col] = -rng.permutation(poisoned[col].to_numpy())
    key = ["seed", "method", "alpha", "budget"]
    before = select_budgets(clean, "validation")[key]
    after = select_budgets(poisoned, "validation")[key]
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    # The test-set selections do move, so the poison is strong enough to be noticed.
    assert not select_budgets(clean, "paper")[key].equals(select_budgets(poisoned, "paper")[key])
    assert not select_budgets(clean, "fixed")[key].equals(select_budgets(poisoned, "fixed")[key])


def test_validation_is_not_reported_without_validation_values():
    for runs in (table(validation=False), table().assign(val_eqod=np.nan)):
        assert not has_validation(runs)
        assert available_selections(runs) == ["fixed", "paper"]
        assert select_budgets(runs, "validation").empty
        assert set(collective_claims(runs)["selection"]) == {"fixed", "paper"}
        assert "Budget chosen on validation: not reported — no validation split in this run" in format_summary(runs)
    assert available_selections(table()) == ["validation", "fixed", "paper"]
    with pytest.raises(ValueError, match="unknown budget selection"):
        select_budgets(table(), "oracle")


# ------------------------------------------------------------------------------------- intervals


def test_t_interval_matches_scipy_and_is_absent_with_one_seed():
    values = [0.05, 0.07, 0.04, 0.09]
    i = t_interval(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (i.mean, i.n) == (pytest.approx(np.mean(values)), 4)
    assert (i.lo, i.hi) == (pytest.approx(lo), pytest.approx(hi))
    one = t_interval([0.3])
    assert one.mean == 0.3 and np.isnan(one.lo) and np.isnan(one.hi) and one.n == 1
    assert interval_text(*one[:3]) == "0.300"  # one seed: the mean alone, never "[0.300, 0.300]"
    assert interval_text(-0.0001, -0.0004, 0.0002, "+.3f") == "+0.000 [+0.000, +0.000]"  # no "-0.000"
    assert t_interval([np.nan, 1.0, 3.0]).n == 2 and np.isnan(t_interval([]).mean)


def test_summary_table_means_and_intervals_by_hand():
    t = summary_table(table()).set_index(["selection", "method", "alpha"])
    row = t.loc[("fixed", "rb-prob", 0.1)]
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean([0.05, 0.07, 0.04]), scale=stats.sem([0.05, 0.07, 0.04]))
    assert row["eqod"] == pytest.approx(np.mean([0.05, 0.07, 0.04]))
    assert (row["eqod_lo"], row["eqod_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert row["budgets"] == "0.6·pool" and row["seeds"] == 3 and row["flips"] == 60
    # paired with random at ITS fixed budget (1.0): -0.02, +0.01, -0.01
    d = [-0.02, 0.01, -0.01]
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(d), scale=stats.sem(d))
    assert row["eqod_vs_random"] == pytest.approx(np.mean(d))
    assert (row["eqod_vs_random_lo"], row["eqod_vs_random_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert row["error_increase_pts"] == pytest.approx(0.3)  # 0.003 + jitter (mean 0), in points
    paper = t.loc[("paper", "rb-prob", 0.1)]
    assert paper["budgets"] == "0.6·pool–1·pool" and paper["seeds_whole_pool"] == 1
    assert paper["flips_lo"] >= 0  # a count's interval is clipped at 0
    assert np.isnan(t.loc[("paper", "random", 0.1), "eqod_vs_random"])  # random minus itself: not reported


# ---------------------------------------------------------------------------------------- claims


def test_verdicts():
    assert verdict(-0.03, -0.01, 3) == HOLDS
    assert verdict(0.01, 0.03, 3) == DOES_NOT_HOLD
    assert verdict(-0.01, 0.02, 3) == "not resolved at 3 seeds"
    assert verdict(np.nan, np.nan, 1) == "not resolved at 1 seed"
    assert verdict(0.0, 0.0, 3) == IDENTICAL  # the same value at every seed: the comparison is empty
    assert verdict(0.5, 0.9, 3, bound=1.0) == HOLDS and verdict(1.2, 2.0, 3, bound=1.0) == DOES_NOT_HOLD


def test_claims_three_verdicts_from_the_table():
    c = collective_claims(table()).set_index(["selection", "claim", "method", "alpha"])
    # paper, alpha 0.3: rb-prob at 0.2 (0.03, 0.04, 0.035) vs random at 0.2 (0.06, 0.07, 0.066) -> holds
    beats = c.loc[("paper", "beats_random", "rb-prob", 0.3)]
    d = np.array([0.03, 0.04, 0.035]) - np.array([0.06, 0.07, 0.066])
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert beats["mean"] == pytest.approx(d.mean()) and beats["hi"] == pytest.approx(hi) and beats["n"] == 3
    assert beats["verdict"] == HOLDS
    # fixed, alpha 0.1: -0.02, +0.01, -0.01 -> the interval covers 0
    assert c.loc[("fixed", "beats_random", "rb-prob", 0.1), "verdict"] == "not resolved at 3 seeds"
    # error cost at alpha 0.3 is 2 to 3 points: the "under 1 pt" claim does not hold; at 0.1 it holds
    assert c.loc[("paper", "error_cost", "rb-prob", 0.3), "verdict"] == DOES_NOT_HOLD
    assert c.loc[("paper", "error_cost", "rb-prob", 0.3), "mean"] == pytest.approx(2.0)
    assert c.loc[("fixed", "error_cost", "random", 0.1), "verdict"] == HOLDS
    # lower EqOd than the base model, paired per seed: 0.03-0.10, 0.04-0.12, 0.035-0.08
    assert c.loc[("paper", "lowers_eqod", "rb-prob", 0.3), "verdict"] == HOLDS
    assert ("paper", "beats_random", "random", 0.1) not in c.index
    text = format_summary(table())
    assert text.startswith("Claims, computed from the data (each rests on 3 seeds;")
    assert "rb-prob  holds at α=0.3; not resolved at 3 seeds at α=0.1" in text


def test_claims_rest_on_the_seeds_present_and_update_when_seeds_are_added():
    two = collective_claims(table(seeds=(0, 1)))
    three = collective_claims(table())
    assert set(two["n"]) == {2} and set(three["n"]) == {3}
    assert "(each rests on 2 seeds;" in format_summary(table(seeds=(0, 1)))
    # a cell missing on one seed: its claims rest on the two seeds it has, and say so
    partial = table().query("not (seed == 2 and method == 'rb-prob' and alpha == 0.3)")
    c = collective_claims(partial).set_index(["selection", "claim", "method", "alpha"])
    assert c.loc[("paper", "lowers_eqod", "rb-prob", 0.3), "n"] == 2
    assert c.loc[("paper", "lowers_eqod", "rb-prob", 0.1), "n"] == 3
    assert "each rests on 3 seeds unless a smaller number is given" in format_summary(partial)
    one = collective_claims(table(seeds=(0,)))
    assert set(one["verdict"]) == {"not resolved at 1 seed"} and one["lo"].isna().all()
    assert "mean of 1 seed (no interval)" in format_summary(table(seeds=(0,)))


# -------------------------------------------------------------------------------------- warnings


def test_edge_warnings_name_the_budget_and_the_seeds():
    e = edge_table(table()).set_index(["selection", "method", "alpha", "edge"])
    assert e.loc[("fixed", "random", 0.1, "whole pool"), "at_edge"] == 3
    assert e.loc[("paper", "rb-prob", 0.1, "whole pool"), "at_edge"] == 1  # seed 1 only
    assert e.loc[("paper", "rb-prob", 0.3, "smallest"), "at_edge"] == 3
    assert ("fixed", "rb-prob", 0.1, "whole pool") not in e.index
    warnings = dict(edge_warnings(table()))
    whole = [h for h in warnings if h.startswith("Best fixed budget: the largest budget, the whole candidate pool")]
    assert whole and warnings[whole[0]] == ["random at α=0.1 (3/3 seeds)"]
    text = format_summary(table())
    assert "Warning: a chosen budget lies on the edge of the grid" in text and "random at α=0.1 (3/3 seeds)" in text


# --------------------------------------------------------------------------------- text and page


def test_tables_are_grids_with_units(tmp_path):
    text = write_summary(table(), tmp_path)
    assert text.index("Claims, computed from the data") < text.index("== Budget chosen on validation ==")
    assert "Best eqod over the budget M, per seed: the paper's convention" in text
    assert "Cells: mean [95% CI, t over 3 seeds]" in text
    assert "error increase over the same seed's base model (pts" in text
    grid_line = next(line for line in text.splitlines() if line.startswith("α=0.3") and "+2.00" in line)
    assert "✗" in grid_line  # 2 points: over the 1 pt bound
    assert "= identical" in text
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert set(csv["selection"]) == {"validation", "fixed", "paper"} and set(csv["seeds"]) == {3}
    assert {"eqod", "eqod_lo", "eqod_hi", "error_increase_pts", "eqod_vs_random", "budgets"} <= set(csv.columns)
    assert len(pd.read_csv(tmp_path / "claims.csv")) == len(collective_claims(table()))
    assert (tmp_path / "summary.txt").read_text().startswith("Claims")


def test_page_opens_with_claims_and_figures_say_their_bands(tmp_path):
    from simulations.analysis import plot_all

    runs = table()
    figures = plot_all(runs, tmp_path)
    assert [f.name for f in figures] == ["best_eqod_vs_alpha.png", "eqod_vs_flips_alpha0.3.png", "error_vs_eqod.png"]
    folder = SimpleNamespace(path=tmp_path, scenario_toml=tmp_path / "scenario.toml")
    page = write_html(folder, runs, figures).read_text()
    body = page[page.index("<body>"):]
    assert body.index("Claims, computed from the data") < body.index("Warning: chosen budgets on the edge")
    assert body.index("Warning: chosen budgets on the edge") < body.index("<h2>Tables")
    assert page.count("data:image/png;base64,") == 3
    assert page.count("95% CI (t) over 3 seeds") == 3  # every figure's caption says what its bands are
    assert "class='verdict-holds'" in page and "class='fails'" in page
