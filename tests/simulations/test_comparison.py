"""simulations.comparison: firm-side baseline rows, defended and adaptive runs, on toy data."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from agents.decision import member_count, membership_cutoff, relabel
from server.baselines import BASELINES, baseline_front
from server.defences import audit
from server.firm import Firm, make_estimator
from server.metrics import fairness_metrics
from agents.protocol import CellGrid
from simulations import comparison, engine
from simulations.analysis.defences import defence_table
from simulations.executors import make_executor
from simulations.rows import decision_rows
from simulations.state import build_world, seed_streams
from agents.errors import ConfigError
from simulations.scenario import BaselinesConfig, DefenceConfig, Scenario, load_scenario

PLAIN = Scenario(name="toy-compare").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 1500},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.2, 0.5, 1.0),
    engine__n_jobs=1,
)
BASELINES_CFG = BaselinesConfig(
    methods=("threshold-optimizer", "massaging", "massaging-minority", "calibrated-eqodds", "reweighing",
             "expgrad-eqodds"),
    grids={"massaging": (0.0, 0.5, 1.0), "expgrad-eqodds": (0.02,)},
    params={"calibrated-eqodds": {"cost_constraint": "fnr"}, "expgrad-eqodds": {"max_iter": 10}},
)
DEFENCE_CFG = DefenceConfig(methods=("rb-prob", "random"), alphas=(0.6,), budgets=(0.5,), trusted_size=300)
TOY = PLAIN.replace(baselines=BASELINES_CFG, defence=DEFENCE_CFG)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    return engine.run_seed(TOY, 0, dataset=dataset)


@pytest.fixture(scope="module")
def world(dataset):
    return build_world(TOY, dataset, 0)


def grid_size(name):
    return len(BASELINES_CFG.grids.get(name, BASELINES[name]))


def defended(rows, method, *, adaptive=False, defence="confident-learning", action="revert"):
    r = rows[(rows["method"] == method) & (rows["adaptive"] == adaptive) & (rows["defence"] == defence)
             & (rows["action"] == action)]
    assert len(r) == 1
    return r.iloc[0]


def test_row_families_and_counts(rows):
    assert (rows["family"].iloc[:1] == "base").all()
    firm = rows[rows["family"] == "firm"]
    for name in BASELINES_CFG.methods:
        f = firm[firm["method"] == name]
        assert len(f) == grid_size(name)
        assert list(f["value"]) == [float(v) for v in BASELINES_CFG.grids.get(name, BASELINES[name])]
        assert f["alpha"].isna().all() and (f["defence"] == "none").all()
    assert firm.loc[firm["method"] == "massaging", "param"].eq("flip_scale").all()
    audits, actions = len(DEFENCE_CFG.audits), len(DEFENCE_CFG.actions)
    attacked = 2  # two methods x one alpha x one budget
    n_defended = audits * actions * (1 + 2 * attacked) + attacked  # base + plain + adaptive, adaptive undefended
    assert ((rows["defence"] != "none") | rows["adaptive"]).sum() == n_defended
    assert len(rows) == 1 + 2 * 2 * 3 + sum(grid_size(n) for n in BASELINES_CFG.methods) + n_defended


def test_collective_rows_are_unchanged_by_the_comparison(rows, dataset):
    plain = engine.run_seed(PLAIN, 0, dataset=dataset)
    assert "family" not in plain.columns  # a scenario without the sections writes the same table as before
    ours = rows[rows["family"].isin(["base", "collective"]) & (rows["defence"] == "none") & ~rows["adaptive"]]
    # same values; counts such as n_cf turn float because firm-side rows leave them empty
    pd.testing.assert_frame_equal(ours[plain.columns].reset_index(drop=True), plain, check_exact=True,
                                  check_dtype=False)
    assert (ours["family"].iloc[1:] == "collective").all()


def test_same_seed_same_rows_in_parallel_too(rows, dataset):
    again = engine.run_seed(TOY, 0, dataset=dataset, executor=make_executor("processes", 2))
    pd.testing.assert_frame_equal(rows, again, check_exact=True)


def test_baseline_rows_match_a_direct_call(rows, world):
    p = world.prepared
    seed = int(seed_streams(0)["baselines"].generate_state(1)[0] % 2**31)
    estimator = make_estimator(random_state=world.firm_seed)
    direct = baseline_front("massaging", p.X_train, p.y_train, p.a_train, p.X_test, p.y_test, p.a_test,
                            grid=(0.0, 0.5, 1.0), base_estimator=estimator, random_state=seed)
    ours = rows[rows["method"] == "massaging"]
    np.testing.assert_array_equal(ours["flips"], [d["n_flips"] for d in direct])
    np.testing.assert_allclose(ours["eqod"], [d["eqod"] for d in direct])
    np.testing.assert_allclose(ours["error"], [d["error"] for d in direct])


def test_defence_accounting(rows):
    d = rows[rows["defence"] != "none"]
    assert (d["flagged_true"] <= d["flips"]).all() and (d["flagged_true"] <= d["flagged"]).all()
    assert (d.loc[d["method"] == "base", "flagged_true"] == 0).all()
    plain = rows[(rows["family"] == "collective") & (rows["defence"] == "none") & ~rows["adaptive"]]
    for method in ("rb-prob", "random"):
        cell = plain[(plain["method"] == method) & (plain["alpha"] == 0.6) & (plain["budget"] == 0.5)].iloc[0]
        mine = d[(d["method"] == method) & ~d["adaptive"]]
        assert len(mine) == len(DEFENCE_CFG.audits) * len(DEFENCE_CFG.actions)  # no vacuous pass on no rows
        assert (mine["flips"] == cell["flips"]).all() and (mine["m"] == cell["m"]).all()
        # the three actions act on the same audit's flags
        for _, g in mine.groupby("defence"):
            assert g["flagged"].nunique() == 1 and g["flagged_true"].nunique() == 1


def test_a_defended_row_matches_an_independent_recomputation(rows, world):
    """Relabel, audit with server.defences, revert, refit from scratch: same metrics as the row."""
    p = world.prepared
    flips = engine.decisions(world, CellGrid.of(["random"], (0.6,), (0.5,))).mask(0)
    received = relabel(p.y_train, flips).astype(np.int64)
    seed = int(seed_streams(0)["defence"].generate_state(1)[0] % 2**31)
    estimator = make_estimator(random_state=world.firm_seed)
    flags = audit("confident-learning", p.X_train, received, p.a_train, random_state=seed, estimator=estimator,
                  cv=DEFENCE_CFG.cv)
    firm = Firm(estimator).fit(p.X_train, np.where(flags, 0, received))
    expected = fairness_metrics(p.y_test, firm.predict(p.X_test), sensitive_features=p.a_test)
    row = defended(rows, "random")
    assert row["flagged"] == flags.sum() and row["flagged_true"] == (flags & flips).sum()
    assert row["eqod"] == pytest.approx(expected["eqod"]) and row["error"] == pytest.approx(expected["error"])


def test_actions_on_the_labels():
    y_true = np.array([0, 0, 1, 1, 0, 1])
    flips = np.array([True, False, False, False, True, False])
    received = relabel(y_true, flips)
    keep, y, w = comparison.defended_training("revert", received, flips)
    np.testing.assert_array_equal(y, y_true)  # reverting exactly the flips restores the true labels
    assert keep.all() and w is None
    flags = np.array([True, False, True, False, False, False])
    keep, y, w = comparison.defended_training("drop", received, flags)
    np.testing.assert_array_equal(keep, ~flags)
    np.testing.assert_array_equal(y, received[~flags])
    keep, y, w = comparison.defended_training("downweight", received, flags, flag_weight=0.25)
    np.testing.assert_array_equal(w, np.where(flags, 0.25, 1.0))
    np.testing.assert_array_equal(y, received)


def test_adaptive_collective_is_flagged_less(rows, world):
    for method in ("rb-prob", "random"):
        plain, adaptive = defended(rows, method), defended(rows, method, adaptive=True)
        assert adaptive["m"] <= plain["m"]
        assert adaptive["flagged_true"] < max(plain["flagged_true"], 1)
    # random flips are easy to catch; the adaptive ones (same budget) much less so
    plain, adaptive = defended(rows, "random"), defended(rows, "random", adaptive=True)
    assert plain["flagged_true"] / plain["flips"] > 0.3
    assert adaptive["flagged_true"] / max(adaptive["flips"], 1) < plain["flagged_true"] / plain["flips"] / 2


def test_adaptive_cells_flip_only_plausible_member_negatives(world):
    p = world.prepared
    estimator = make_estimator(random_state=world.firm_seed)
    streams = seed_streams(0)
    minority = world.minority
    cutoff = membership_cutoff(world.member_tickets[minority], member_count(0.6, int(minority.sum())))
    members = minority & (world.member_tickets < cutoff)
    implausible = comparison.implausible_candidates(world, members, estimator, cv=5, seq=streams["adaptive"])
    assert implausible.any() and not (implausible & ~(members & (p.y_train == 0))).any()
    grid = CellGrid.of(["rb-prob"], (0.6,), (0.2,))
    candidates, cand_scores = engine.candidate_scores(world, grid)
    d = comparison.adaptive_decisions(world, grid, cand_scores, candidates, lambda a, m: implausible)
    flips, cell = d.mask(0), decision_rows(d)[0]
    scores = np.full(world.n_users, np.nan)
    scores[candidates] = cand_scores[0]
    assert flips.sum() == cell["m"] > 0 and not (flips & implausible).any()
    assert (p.y_train[flips] == 0).all() and (members[flips]).all()
    eligible = members & (p.y_train == 0) & ~implausible
    assert cell["m"] == min(int(0.2 * (members & (p.y_train == 0)).sum() + 1e-9), eligible.sum())
    assert scores[flips].min() >= np.sort(scores[eligible])[-cell["m"]]  # the top m of the plausible ones


def test_trusted_sample_and_tolerance(world):
    seq = seed_streams(0)["trusted"]
    idx = comparison.trusted_sample(world, 300, seq)
    np.testing.assert_array_equal(idx, comparison.trusted_sample(world, 300, seed_streams(0)["trusted"]))
    assert idx.size == 300 and np.unique(idx).size == 300
    y = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert comparison.auto_tolerance(y, a) == pytest.approx(2 * np.sqrt(0.25 * 0.75 / 4))


def test_existing_streams_do_not_move():
    names = list(seed_streams(7))
    assert names[:5] == ["split", "membership", "ties", "reference", "firm"]
    old = np.random.SeedSequence(7).spawn(5)
    for name, seq in zip(names, old):
        np.testing.assert_array_equal(seed_streams(7)[name].generate_state(4), seq.generate_state(4))


def write(tmp_path, raw) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"baselines": {"methods": ["massage"]}},
         "[baselines] methods: unknown baseline 'massage'; allowed: threshold-optimizer"),
        ({"baselines": {}}, "[baselines] methods: must be a non-empty list"),
        ({"baselines": {"methods": ["massaging"], "grids": {"reweighing": [1.0]}}},
         "[baselines] grids.reweighing: is not in [baselines] methods"),
        ({"baselines": {"methods": ["reweighing"], "grids": {"reweighing": [1.5]}}},
         "grids.reweighing: 1.5 is not allowed; allowed: numbers in [0, 1]"),
        ({"baselines": {"methods": ["calibrated-eqodds"], "params": {"calibrated-eqodds": {"cost_constraint": "x"}}}},
         "cost_constraint 'x' is not allowed; allowed: fnr, fpr, weighted"),
        ({"baselines": {"methods": ["calibrated-eqodds"], "params": {"calibrated-eqodds": {"mix_scale": 0.5}}}},
         "'mix_scale' is swept; set it in [baselines.grids]"),
        ({"baselines": {"methods": ["massaging"], "params": {"massaging": {"bogus": 1}}}}, "cannot build 'massaging'"),
        ({"defence": {"audits": ["oracle"]}},
         "[defence] audits: unknown audit 'oracle'; allowed: confident-learning, trusted-sample"),
        ({"defence": {"actions": ["delete"]}}, "unknown action 'delete'; allowed: drop, downweight, revert"),
        ({"defence": {"alphas": [0.33]}}, "[defence] alphas: 0.33 is not in [collective] alphas"),
        ({"defence": {"budgets": [1]}}, "[defence] budgets: 1 is not in [collective] budgets"),
        ({"defence": {"methods": ["rb-dist"]}, "collective": {"methods": ["rb-prob"]}}, "[defence] methods: 'rb-dist' is not in"),
        ({"defence": {"tolerance": "big"}}, "tolerance: 'big' is not allowed; allowed: \"auto\" or a number in [0, 1]"),
        ({"defence": {"trusted_size": 5}}, "trusted_size: 5 is not allowed; allowed: an int >= 10"),
        ({"defence": {"cv": 1}}, "cv: 1 is not allowed"),
        ({"defence": {"adaptive": "yes"}}, "adaptive: the string 'yes' is not allowed; allowed: true or false"),
        ({"defence": {"audit": ["x"]}}, "[defence] audit: unknown key; allowed: audits, actions"),
        ({"defence": {}, "engine": {"backend": "flower"}}, "'flower' cannot run [baselines] or [defence]; allowed: 'vectorised'"),
    ],
)
def test_bad_sections_name_the_key_and_what_is_allowed(tmp_path, raw, message):
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, raw))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_sections_round_trip_and_absent_sections_stay_absent(tmp_path):
    assert "baselines" not in Scenario().to_dict() and not Scenario().compares
    assert load_scenario(write(tmp_path, TOY.to_dict())) == TOY


def test_run_and_report_write_claims_fronts_and_defences(tmp_path, dataset):
    from simulations.cli import main

    small = TOY.replace(baselines=BaselinesConfig(methods=("threshold-optimizer", "reweighing")),
                        defence=DefenceConfig(methods=("random",), alphas=(0.6,), budgets=(0.5,),
                                              audits=("confident-learning",), actions=("revert",), trusted_size=300),
                        seeds=(0, 1))
    config = write(tmp_path, small.to_dict())
    out = tmp_path / "res"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    text = (out / "summary.txt").read_text()
    assert "(a) firm-side methods reach a lower EqOd" in text and "(b) the collective" in text
    for name in ("pareto_eqod.png", "pareto_sp_diff.png", "pareto_eopp_diff.png", "fronts.csv", "defences.csv"):
        assert (out / name).exists(), name
    page = (out / "report.html").read_text()
    assert "Claims, computed from the data" in page and "A firm that fights back" in page
    assert "pareto_eqod" in page
    defences = pd.read_csv(out / "defences.csv")
    assert set(defences["variant"]) == {"plain", "adaptive"}
    os.remove(out / "report.html")
    assert main(["report", str(out)]) == 0
    assert "Claims, computed from the data" in (out / "report.html").read_text()


def test_defence_table_by_hand(rows):
    t = defence_table(rows)
    assert set(t["variant"]) == {"plain", "adaptive"}
    assert len(t) == ((rows["defence"] != "none") | rows["adaptive"]).sum()  # one seed: one row each
    base = rows[(rows["family"] == "base") & (rows["defence"] == "none")].iloc[0]
    plain = rows[(rows["method"] == "random") & (rows["alpha"] == 0.6) & (rows["budget"] == 0.5)
                 & (rows["defence"] == "none") & ~rows["adaptive"]].iloc[0]
    row = defended(rows, "random")
    on_base = rows[(rows["method"] == "base") & (rows["defence"] == "confident-learning")
                   & (rows["action"] == "revert")].iloc[0]
    got = t[(t["method"] == "random") & (t["variant"] == "plain") & (t["defence"] == "confident-learning")
            & (t["action"] == "revert")].iloc[0]
    gain = base["eqod"] - plain["eqod"]
    assert got["recall"] == pytest.approx(row["flagged_true"] / row["flips"])
    assert got["error_cost"] == pytest.approx(row["error"] - plain["error"])
    assert got["error_increase"] == pytest.approx(row["error"] - base["error"])
    assert got["eqod_defended_base"] == pytest.approx(on_base["eqod"])
    assert gain > 0.01  # the undefended collective helps here, so the gain ratios are defined
    assert got["gain_kept"] == pytest.approx((base["eqod"] - row["eqod"]) / gain)
    assert got["gain_kept_same_defence"] == pytest.approx((on_base["eqod"] - row["eqod"]) / gain)
    assert defence_table(engine.run_seed(PLAIN, 0)).empty
