"""The vectorised engine: invariants of the coalition rule and reproducibility."""

import re

import numpy as np
import pandas as pd
import pytest

from agents.decision import relabel
from agents.protocol import CellGrid
from server.firm import Firm
from server.metrics import fairness_metrics
from simulations import engine
from simulations.rows import decision_rows
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy").replace(
    seeds=(0, 1),
    data__dataset="toy",
    collective__methods=("rb-prob", "rb-label", "rb-dist", "random", "oracle"),
    collective__alphas=(0.1, 0.3, 0.6),
    collective__budgets=(0.0, 0.2, 0.5, 1.0, 7, 10_000),
    engine__n_jobs=1,
)


@pytest.fixture(scope="module")
def toy_runs():
    return engine.run_scenario(TOY)


@pytest.fixture(scope="module")
def world():
    ds = engine.load_data(TOY, seed=0)
    return build_world(TOY, ds, 0)


def _cells(world, method, alphas, budgets):
    """(columns, flips mask, scores over all users) of each cell of a one-method grid."""
    grid = CellGrid.of([method], alphas, budgets)
    params = TOY.collective.scorer_params()
    d = engine.decisions(world, grid, params)
    scores = np.full(world.n_users, np.nan)
    candidates, s = engine.candidate_scores(world, grid, params)
    scores[candidates] = s[0]
    return [(columns, d.mask(cell.index), scores) for cell, columns in zip(grid, decision_rows(d))]


def test_one_row_per_cell_plus_base(toy_runs):
    c = TOY.collective
    per_seed = 1 + len(c.methods) * len(c.alphas) * len(c.budgets)
    assert len(toy_runs) == per_seed * len(TOY.seeds)
    assert not toy_runs.duplicated(["seed", "method", "alpha", "budget", "budget_kind"]).any()
    for col in ("error", "eqod", "eqod_max", "sp_diff", "eopp_diff", "tpr_0", "fpr_1", "flips", "success", "cf_gap"):
        assert col in toy_runs.columns


def test_exactly_min_m_pool_flip(toy_runs):
    cells = toy_runs[toy_runs["method"] != "base"]
    assert (cells["flips"] == cells["m"]).all()
    assert (cells["m"] <= cells["pool_size"]).all()
    fraction = cells[cells["budget_kind"] == "fraction"]
    np.testing.assert_array_equal(fraction["m"], np.floor(fraction["budget"] * fraction["pool_size"] + 1e-9))
    counts = cells[cells["budget_kind"] == "count"]
    np.testing.assert_array_equal(counts["m"], np.minimum(counts["budget"], counts["pool_size"]))


def test_flips_only_members_negative_minority(world):
    p = world.prepared
    previous_members = None
    for cell, flips, _ in _cells(world, "rb-prob", (0.1, 0.3, 0.6), (0.5,)):
        assert flips.any()
        assert (p.a_train[flips] == 1).all()
        assert (p.y_train[flips] == 0).all()
        n_members = cell["n_members"]
        members = world.minority & (world.member_tickets <= np.sort(world.member_tickets[world.minority])[n_members - 1])
        assert flips[~members].sum() == 0
        assert n_members == round(cell["alpha"] * world.minority.sum() + 1e-9)
        if previous_members is not None:  # nested collectives
            assert (members | ~previous_members).all()
        previous_members = members


@pytest.mark.parametrize("method", ["rb-dist", "random"])
def test_flipped_users_are_the_top_ranked_candidates(world, method):
    """Every flipped candidate outranks every kept one: by score, then by tie ticket."""
    for cell, flips, scores in _cells(world, method, (0.6,), (0.2,)):
        pool = world.minority & (world.prepared.y_train == 0) & ~np.isnan(scores)
        kept = pool & ~flips
        assert flips.sum() == cell["m"] > 0 and kept.any()
        assert scores[flips].min() >= scores[kept].max()
        boundary = scores[flips].min()  # ties at the boundary fall to the tickets
        tie = world.tie_tickets
        at_boundary_kept = kept & (scores == boundary)
        if at_boundary_kept.any():
            assert tie[flips & (scores == boundary)].min() > tie[at_boundary_kept].max()


def test_metrics_match_an_independent_refit(world, toy_runs):
    """Re-derive one cell by hand: relabel, fresh fit, metrics."""
    cell, flips, _ = _cells(world, "rb-label", (0.6,), (0.5,))[0]
    p = world.prepared
    firm = Firm().fit(p.X_train, relabel(p.y_train, flips))
    expected = fairness_metrics(p.y_test, firm.predict(p.X_test), sensitive_features=p.a_test)
    row = toy_runs[(toy_runs["seed"] == 0) & (toy_runs["method"] == "rb-label") & (toy_runs["alpha"] == 0.6)
                   & (toy_runs["budget"] == 0.5) & (toy_runs["budget_kind"] == "fraction")].iloc[0]
    assert row["flips"] == cell["m"] == flips.sum()
    for key in ("error", "eqod", "sp_diff", "eopp_diff"):
        assert row[key] == pytest.approx(expected[key], abs=0.005)


def test_same_seed_same_results_and_seeds_differ(toy_runs):
    again = engine.run_scenario(TOY.replace(seeds=(1,)))
    left = toy_runs[toy_runs["seed"] == 1].reset_index(drop=True).drop(columns="seconds")
    pd.testing.assert_frame_equal(left, again.drop(columns="seconds"))
    s0 = toy_runs[toy_runs["seed"] == 0]["eqod"].to_numpy()
    s1 = toy_runs[toy_runs["seed"] == 1]["eqod"].to_numpy()
    assert not np.allclose(s0, s1)


def test_parallel_and_warm_start_do_not_change_results(toy_runs):
    small = TOY.replace(seeds=(0,), collective__methods=("rb-prob", "random"))
    serial = engine.run_scenario(small).drop(columns="seconds")
    parallel = engine.run_scenario(small, n_jobs=2).drop(columns="seconds")
    pd.testing.assert_frame_equal(serial, parallel)
    cold = engine.run_scenario(small.replace(engine__warm_start=False)).drop(columns="seconds")
    same = ["method", "alpha", "budget", "m", "flips"]
    pd.testing.assert_frame_equal(serial[same], cold[same])
    np.testing.assert_allclose(serial["eqod"], cold["eqod"], atol=0.005)
    np.testing.assert_allclose(serial["error"], cold["error"], atol=0.005)


def test_zero_budget_equals_base(toy_runs):
    base = toy_runs[toy_runs["method"] == "base"].set_index("seed")
    zero = toy_runs[(toy_runs["budget"] == 0) & (toy_runs["method"] != "base")]
    assert (zero["flips"] == 0).all()
    np.testing.assert_allclose(zero["eqod"], base.loc[zero["seed"], "eqod"])


def test_relabelling_the_whole_pool_improves_counterfactual_success(toy_runs):
    """Paired with each seed's base model: flipping every candidate of the largest collective
    raises S = P[h(x) = h(x_{A<-0})] and narrows the counterfactual gap, whatever the ranking."""
    for seed, runs in toy_runs.groupby("seed"):
        base = runs[runs["method"] == "base"].iloc[0]
        full = runs[(runs["alpha"] == 0.6) & (runs["flips"] == runs["pool_size"]) & (runs["method"] != "base")]
        assert len(full) == 2 * len(TOY.collective.methods)  # budget 1.0 and the count 10 000
        for key in ("success", "cf_gap"):  # the same flips, whatever the method: the same firm
            assert full[key].nunique() == 1
        assert full["success"].iloc[0] > base["success"] + 0.03
        assert full["cf_gap"].iloc[0] < base["cf_gap"] - 0.03


def test_oracle_flips_the_candidates_most_likely_positive_had_they_been_majority(world):
    """The oracle's ranking is the dataset's true P(y=1 | x_{A<-0}), not the engine's scores."""
    p = world.prepared
    truth = p.cf_proba_train
    for cell, flips, _ in _cells(world, "oracle", (0.3, 0.6), (0.2, 0.5)):
        n_members = cell["n_members"]
        members = world.minority & (world.member_tickets <= np.sort(world.member_tickets[world.minority])[n_members - 1])
        kept = members & (p.y_train == 0) & ~flips
        assert flips.sum() == cell["m"] > 0 and kept.any()
        assert truth[flips].min() > truth[kept].max()


def test_small_reference_sample(world):
    s = TOY.replace(collective__reference=10)
    ds = engine.load_data(s, seed=0)
    w = build_world(s, ds, 0)
    assert w.reference.size == 10 and (w.prepared.a_train[w.reference] == 0).all()
    candidates, scores = engine.candidate_scores(w, CellGrid.of(["rb-label"], [1.0], [0.5]), {"rb-label": {"k": 10}})
    assert candidates.size == ((w.prepared.a_train == 1) & (w.prepared.y_train == 0)).sum()
    # k = 10 nearest of 10 reference rows: every candidate's neighbours are the whole reference
    np.testing.assert_array_equal(scores, np.full(scores.shape, w.prepared.y_train[w.reference].sum()))


@pytest.mark.parametrize("method", ["rb-prob", "rb-label", "rb-dist", "random", "oracle"])
def test_an_empty_candidate_pool_flips_nobody(method):
    """A collective too small to have a candidate: no scorer is fitted, nobody flips, the
    cells equal the base model (it used to be a scikit-learn traceback for rb-prob)."""
    tiny = TOY.replace(seeds=(0,), collective__methods=(method,), collective__alphas=(0.001,),
                       collective__budgets=(0.5, 3))
    runs = engine.run_scenario(tiny)
    cells = runs[runs["method"] == method]
    assert len(cells) == 2 and (cells["n_members"] == 0).all()
    assert (cells["pool_size"] == 0).all() and (cells["flips"] == 0).all() and (cells["m"] == 0).all()
    np.testing.assert_array_equal(cells["eqod"], runs.loc[runs["method"] == "base", "eqod"].iloc[0])


def test_each_method_has_its_own_parameters():
    """[collective.params] sets rb-dist's k alone; rb-label keeps the section's k; rows say which."""
    own = TOY.replace(seeds=(0,), collective__methods=("rb-label", "rb-dist"), collective__alphas=(0.6,),
                      collective__budgets=(0.3,), collective__validation=0.0,
                      collective__params={"rb-dist": {"k": 1}})
    assert own.collective.scorer_params() == {"rb-label": {"k": 10}, "rb-dist": {"k": 1}}
    runs = engine.run_scenario(own)
    assert dict(zip(runs["method"], runs["k"])) == {"base": 10, "rb-label": 10, "rb-dist": 1}
    default = engine.run_scenario(own.replace(collective__params={}))
    label = lambda r: r[r["method"] == "rb-label"].drop(columns="seconds").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(label(runs), label(default))  # rb-label untouched
    assert not runs[runs["method"] == "rb-dist"]["threshold"].equals(
        default[default["method"] == "rb-dist"]["threshold"])  # k = 1 ranks differently


@pytest.mark.parametrize("params, message", [
    ({"rb-magic": {"k": 3}}, "params.rb-magic: is not in [collective] methods"),
    ({"rb-prob": {"k": 3}}, "params.rb-prob: unknown parameter 'k'; allowed: none"),
    ({"rb-dist": {"q": 3}}, "params.rb-dist: unknown parameter 'q'; allowed: k"),
    ({"rb-dist": {"k": 0}}, "params.rb-dist.k: 0 is not allowed; allowed: an int >= 1"),
    ({"rb-dist": 5}, "params.rb-dist: must be a table of parameters; allowed keys: k"),
])
def test_method_parameters_are_validated(params, message):
    from agents.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        TOY.replace(collective__methods=("rb-prob", "rb-dist"), collective__params=params)
