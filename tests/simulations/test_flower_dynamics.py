"""Many rounds on Flower: nodes of K users decide locally and give the vectorised model's
per-round table (simulations.dynamics) for the same seed, exactly."""

import numpy as np
import pandas as pd
import pytest

from agents.errors import ConfigError
from simulations import dynamics, engine
from simulations.flower.files import prepare_run, results_frame, rounds_frame
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario

# 115 toy rows -> 80 training users; three rounds.
BASE = {
    "name": "toy-flower-dynamics",
    "seeds": [0],
    "data": {"dataset": "toy", "options": {"n": 115}},
    "collective": {"methods": ["rb-prob", "random"], "alphas": [0.5, 1.0], "budgets": [0.2, 0.5, 3],
                   "validation": 0.0},
    "engine": {"n_jobs": 1, "warm_start": False},
}
# What Flower does not know (the per-member model probabilities, the fit's seconds) or says
# differently (the backend's name); every other column must be equal.
NOT_COMPARED = {"backend", "retrain_seconds", "benefit_participants", "benefit_free_riders", "benefit_minority"}

FIXED = {"rounds": 3, "participation": "fixed", "compliance": 0.7, "dropout": 0.2}
# A cascade: a few act unprompted or organise in round 1, more join as they see them.
THRESHOLD = {"rounds": 3, "participation": "threshold", "threshold_mean": 0.15, "threshold_sd": 0.15,
             "organisers": 0.1, "score_noise": 0.05, "dropout": 0.15}


def scenario(keys: dict, backend: str = "vectorised") -> Scenario:
    return Scenario.from_dict({**BASE, "engine": {**BASE["engine"], "backend": backend}, "dynamics": keys})


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(scenario(FIXED), seed=0)


def flower_rounds(keys, k, dataset, tmp_path):
    s = scenario(keys, "flower")
    files = prepare_run(s, 0, tmp_path, dataset=dataset, agents_per_node=k)
    results = run_in_process(files, rounds=s.dynamics.rounds)
    return s, results, rounds_frame(s, dataset, 0, results)


def assert_same_rounds(flower: pd.DataFrame, vectorised: pd.DataFrame):
    assert list(flower.columns) == list(vectorised.columns)
    cols = [c for c in vectorised.columns if c not in NOT_COMPARED]
    pd.testing.assert_frame_equal(flower[cols], vectorised[cols], check_exact=True, check_dtype=False)
    assert (flower["backend"] == "flower").all()


@pytest.mark.parametrize("keys", [FIXED, THRESHOLD], ids=["fixed", "threshold"])
@pytest.mark.parametrize("k", [7, 1])
def test_flower_nodes_give_the_vectorised_rounds(keys, k, dataset, tmp_path):
    _, expected = dynamics.run_seed(scenario(keys), 0, dataset=dataset)
    s, results, got = flower_rounds(keys, k, dataset, tmp_path)
    assert_same_rounds(got, expected)
    cells = got[got["method"] != "base"]
    # The run is not trivial: people drop out, flips differ from M, participation changes.
    assert (cells["dropouts"] > 0).any() and (cells["flips"] > 0).any()
    if keys is FIXED:
        assert (cells["flips"] < cells["intended_flips"]).any()  # compliance 0.7
    else:
        assert cells.groupby("round")["participants"].sum().diff().abs().sum() > 0
        assert (cells["organisers"] > 0).all()
    # runs.csv's rows: the last round, as the vectorised path writes them.
    last = results_frame(s, dataset, 0, results)
    assert list(last["flips"].iloc[1:]) == list(cells[cells["round"] == 3]["flips"])


def test_rounds_csv_through_the_runner_equals_the_vectorised_one(dataset, tmp_path, monkeypatch):
    """The runner writes the Flower backend's per-round table to rounds.csv, as for the vectorised path."""
    from simulations import runner
    from simulations.flower import backend

    def in_process(s, seed, *, dataset=None, executor=None, on_fit=None, progress=False):
        files = prepare_run(s, seed, tmp_path / f"run-{seed}", dataset=dataset, agents_per_node=7)
        results = run_in_process(files, rounds=s.dynamics.rounds)
        return results_frame(s, dataset, seed, results), rounds_frame(s, dataset, seed, results)

    monkeypatch.setattr(backend.BACKEND, "run_dynamics_seed", in_process, raising=False)
    runner.run_into(scenario(FIXED, "flower"), tmp_path / "flower", progress=False, plots=False)
    runner.run_into(scenario(FIXED), tmp_path / "vectorised", progress=False, plots=False)
    got, expected = (pd.read_csv(tmp_path / name / "rounds.csv") for name in ("flower", "vectorised"))
    assert_same_rounds(got, expected)


# Benefit-cost (issue 9): after each round the evaluator publishes what `public` allows (each cell's
# logistic model, each cell's favourable rate per group, and round 1's base model's); members compute
# their gain locally (agents.participation.published_gain, the vectorised model's own call) and decide
# per cell, since each cell's model gives them a different gain.
BENEFIT_BOTH = {"rounds": 3, "participation": "benefit-cost", "cost_mean": 0.002, "cost_sd": 0.004,
                "organisers": 0.1, "dropout": 0.1, "memory": 2, "free_ride": True}
BENEFIT_OWN = {"rounds": 3, "participation": "benefit-cost", "public": ["own-outcome"], "cost_mean": 0.0,
               "cost_sd": 0.01, "organisers": 2, "compliance": 0.9, "score_noise": 0.05}
BENEFIT_RATES = {"rounds": 3, "participation": "benefit-cost", "public": ["group-rates"], "cost_mean": 0.001,
                 "cost_sd": 0.002, "organisers": 0.1, "memory": 3, "free_ride": True, "dropout": 0.1}

# Per-cell participation under the coordinator's graph modes: reach (with stale signals) and gossip.
BENEFIT_REACH = {**BENEFIT_BOTH, "coordination": "reach", "hops": 1, "organisers": 3, "staleness": 1,
                 "graph": {"kind": "erdos-renyi", "mean_degree": 3}}
BENEFIT_GOSSIP = {**BENEFIT_BOTH, "coordination": "gossip", "gossip_steps": 12, "gossip_bins": 16,
                  "graph": {"kind": "watts-strogatz", "k": 4, "p": 0.2}}


@pytest.mark.parametrize("keys", [BENEFIT_BOTH, BENEFIT_OWN, BENEFIT_RATES, BENEFIT_REACH, BENEFIT_GOSSIP],
                         ids=["both", "own-outcome", "group-rates", "reach-stale", "gossip"])
@pytest.mark.parametrize("k", [7, 1])
def test_flower_benefit_cost_gives_the_vectorised_rounds(keys, k, dataset, tmp_path):
    _, expected = dynamics.run_seed(scenario(keys), 0, dataset=dataset)
    _, _, got = flower_rounds(keys, k, dataset, tmp_path)
    assert_same_rounds(got, expected)
    cells = got[got["method"] != "base"]
    assert (cells["flips"] > 0).any()
    # Participation is per cell: in a later round, cells of one alpha have different participants.
    later = cells[cells["round"] > 1]
    assert (later.groupby(["round", "alpha"])["participants"].nunique() > 1).any()
    if keys.get("free_ride"):
        assert (cells["free_riders"] > 0).any()
    # What members see matters: the same run with another `public` gives another table.
    other = {**keys, "public": ["group-rates"] if keys.get("public") != ["group-rates"] else ["own-outcome"]}
    _, changed = dynamics.run_seed(scenario(other), 0, dataset=dataset)
    assert (changed["participants"].to_numpy() != got["participants"].to_numpy()).any()


def test_flower_benefit_cost_own_outcome_needs_a_logistic_firm():
    """Members compute their own outcome from the published coefficients: another model is one line."""
    with pytest.raises(ConfigError) as err:
        Scenario.from_dict({**BASE, "engine": {**BASE["engine"], "backend": "flower"}, "dynamics": BENEFIT_OWN,
                            "firm": {"model": "random-forest"}})
    assert "[firm] model" in str(err.value) and "'logistic-regression'" in str(err.value)
    Scenario.from_dict({**BASE, "engine": {**BASE["engine"], "backend": "flower"}, "dynamics": BENEFIT_RATES,
                        "firm": {"model": "random-forest"}})  # group rates alone: any model


@pytest.mark.parametrize("change, named", [
    ({"participation": "benefit-cost", "coordination": ["coordinator", "reach"], "organisers": 1}, "coordination"),
    ({"coordination": ["coordinator", "gossip"], "graph": {"kind": "erdos-renyi", "mean_degree": 3}}, "coordination"),
    ({"reference_per_member": 5}, "reference_per_member"),
])
def test_what_flower_cannot_run_is_one_line_naming_what_it_can(change, named):
    with pytest.raises(ConfigError) as err:
        scenario({**FIXED, **change}, "flower")
    line = str(err.value)
    assert "\n" not in line and named in line and "allowed: on flower, participation 'fixed'" in line
    assert "'neighbours'" in line and "'gossip'" in line


def test_flower_dynamics_needs_warm_start_off():
    with pytest.raises(ConfigError, match=r"\[engine\] warm_start.*allowed: on flower"):
        Scenario.from_dict({**BASE, "engine": {"n_jobs": 1, "backend": "flower"}, "dynamics": FIXED})


def test_node_files_carry_the_dynamics_settings_privately(dataset, tmp_path):
    from agents.node import load_node_file

    files = prepare_run(scenario(FIXED, "flower"), 0, tmp_path, dataset=dataset, agents_per_node=7)
    keys = dynamics.draw_keys(0)
    for path in files.node_files:
        node = load_node_file(path)
        assert node.dynamics.compliance == 0.7 and node.dynamics.dropout_key == keys.dropout
        assert path.stat().st_mode & 0o777 == 0o600
        with np.load(path, allow_pickle=False) as f:  # plain arrays, no pickle
            assert f["dynamics"].dtype.kind == "U"


# Reach, stale signals, accumulated reports (issue 9): the coordinator gives each member its own threshold,
# sealed for its node (reach: only the participants within hops of a participating organiser,
# with their pool's threshold; staleness: the one it held k rounds ago, none yet in round 1);
# with reports = "accumulate" the evaluator trains each cell on the last window rounds' rows.
REACH = {"rounds": 3, "participation": "fixed", "organisers": 3, "coordination": "reach", "hops": 1,
         "score_noise": 0.05, "dropout": 0.2, "compliance": 0.8, "graph": {"kind": "erdos-renyi", "mean_degree": 3}}
STALE = {**FIXED, "staleness": 1, "score_noise": 0.05}
ACCUMULATE = {**THRESHOLD, "rounds": 4, "reports": "accumulate", "window": 2, "compliance": 0.9}
ACCUMULATE_ALL = {**FIXED, "reports": "accumulate"}
STALE_GOSSIP = {"rounds": 3, "participation": "fixed", "coordination": "gossip", "gossip_steps": 12, "gossip_bins": 16,
                "staleness": 1, "dropout": 0.2, "score_noise": 0.05, "graph": {"kind": "watts-strogatz", "k": 4, "p": 0.2}}


@pytest.mark.parametrize("keys", [REACH, STALE, STALE_GOSSIP, ACCUMULATE, ACCUMULATE_ALL],
                         ids=["reach", "staleness", "stale-gossip", "accumulate-2", "accumulate-all"])
@pytest.mark.parametrize("k", [7, 1])
def test_flower_reach_stale_signals_and_accumulated_reports_give_the_vectorised_rounds(keys, k, dataset, tmp_path):
    _, expected = dynamics.run_seed(scenario(keys), 0, dataset=dataset)
    _, _, got = flower_rounds(keys, k, dataset, tmp_path)
    assert_same_rounds(got, expected)
    cells = got[got["method"] != "base"]
    assert (cells["flips"] > 0).any() and (cells["dropouts"] > 0).any()
    if keys is REACH:  # the organisers' neighbourhoods, not every participant, hear the threshold
        assert (cells["members_reached"] < cells["participants"]).all()
        assert (cells["threshold_error_rank"] > 0).any()
    elif keys in (ACCUMULATE, ACCUMULATE_ALL):  # the firm trains on several rounds' reports, not the last one's
        keys = {**keys, "reports": "replace"}
        keys.pop("window", None)
        _, replaced = dynamics.run_seed(scenario(keys), 0, dataset=dataset)
        later = got["round"] > 1
        assert (got.loc[later, "error"].to_numpy() != replaced.loc[later, "error"].to_numpy()).any()
        assert (got.loc[~later, "error"].to_numpy() == replaced.loc[~later, "error"].to_numpy()).all()
    else:  # round 1: nothing published a round ago, nobody acts; later: last round's thresholds miss
        assert (cells[cells["round"] == 1]["intended_flips"] == 0).all()
        assert (cells[cells["round"] > 1]["threshold_error_rank"] > 0).any()


# Small graphs (issue 9): the coordinator holds the members' graph, computes each member's
# neighbours' share and the most-connected organisers, and simulates gossip with the
# vectorised model's own code; the per-round table is the vectorised one, exactly.
NEIGHBOURS = {"rounds": 3, "participation": "threshold", "seen": "neighbours", "threshold_mean": 0.15,
              "threshold_sd": 0.15, "organisers": 0.1, "organisers_by": "most-connected", "score_noise": 0.05,
              "dropout": 0.15, "graph": {"kind": "erdos-renyi", "mean_degree": 4}}
GOSSIP = {"rounds": 3, "participation": "fixed", "coordination": "gossip", "gossip_steps": 12, "gossip_bins": 16,
          "compliance": 0.8, "dropout": 0.2, "score_noise": 0.05,
          "graph": {"kind": "watts-strogatz", "k": 4, "p": 0.2}}


@pytest.mark.parametrize("keys", [NEIGHBOURS, GOSSIP], ids=["neighbours", "gossip"])
@pytest.mark.parametrize("k", [7, 1])
def test_flower_on_a_graph_gives_the_vectorised_rounds(keys, k, dataset, tmp_path):
    _, expected = dynamics.run_seed(scenario(keys), 0, dataset=dataset)
    _, _, got = flower_rounds(keys, k, dataset, tmp_path)
    assert_same_rounds(got, expected)
    cells = got[got["method"] != "base"]
    assert (cells["flips"] > 0).any() and (cells["dropouts"] > 0).any()
    if keys is NEIGHBOURS:  # participation spreads along the graph, not in lockstep with everyone's share
        assert cells.groupby("round")["participants"].sum().diff().abs().sum() > 0
        assert (cells["organisers"] > 0).all()
    else:  # gossip's estimates are not the exact threshold: errors, members without an estimate
        assert cells["threshold"].isna().all()
        assert (cells["threshold_error_rank"] > 0).any()
        assert (cells["flips"] != cells["m"]).any()


# End to end (issue 9): `collective-fairness run --backend flower` on a real simulation SuperLink
# with Ray actors, 8 nodes of 10 users + the coordinator, against `--backend vectorised`.
RAY = {"rounds": 3, "participation": "threshold", "seen": "neighbours", "threshold_mean": 0.15,
       "threshold_sd": 0.15, "organisers": 0.1, "compliance": 0.8, "score_noise": 0.05, "dropout": 0.1,
       "graph": {"kind": "erdos-renyi", "mean_degree": 4}}


@pytest.mark.slow
def test_the_cli_on_ray_writes_the_vectorised_rounds_csv(tmp_path):
    import os
    import subprocess
    import sys

    import tomli_w

    path = tmp_path / "ray.toml"
    path.write_text(tomli_w.dumps({**BASE, "name": "toy-flower-dynamics-ray", "dynamics": RAY,
                                   "flower": {"agents-per-node": 10, "num-cpus": 2, "timeout": 120.0}}))
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    for backend in ("flower", "vectorised"):
        proc = subprocess.run([sys.executable, "-m", "simulations.cli", "run", str(path), "--backend", backend,
                               "--out", str(tmp_path / backend), "--no-plots", "--quiet"],
                              capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    got, expected = (pd.read_csv(tmp_path / name / "rounds.csv") for name in ("flower", "vectorised"))
    assert_same_rounds(got, expected)
    cells = got[got["method"] != "base"]
    assert sorted(got["round"].unique()) == [1, 2, 3]
    assert (cells["flips"] < cells["intended_flips"]).any()  # compliance 0.8
    assert cells.groupby("round")["participants"].sum().diff().abs().sum() > 0
    assert (cells["organisers"] > 0).all() and (cells["dropouts"] > 0).any()
    # The federation's last round is also runs.csv's, as on the vectorised backend.
    runs = [pd.read_csv(tmp_path / name / "runs.csv") for name in ("flower", "vectorised")]
    assert list(runs[0]["flips"]) == list(runs[1]["flips"])
