"""The collective's pilot: budgets judged on held-out training users, never on the test set."""

import dataclasses

import numpy as np
import pytest

from server.firm import Firm, make_estimator
from server.metrics import fairness_metrics
from simulations import engine
from simulations.scenario import Scenario
from simulations.state import initial_state

TOY = Scenario(name="pilot").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 3000},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.2, 1.0),
    collective__validation=0.25, engine__n_jobs=1,
)


@pytest.fixture(scope="module")
def state():
    return initial_state(TOY, engine.load_data(TOY, seed=0), 0)


def test_the_pilot_holds_out_a_stratified_share_of_training_users(state):
    world, pilot = state.world, state.world.pilot(0.25)
    p, q = world.prepared, pilot.prepared
    assert q.y_test.size == round(0.25 * world.n_users)
    assert np.intersect1d(q.train_index, q.test_index).size == 0
    np.testing.assert_array_equal(np.sort(np.r_[q.train_index, q.test_index]), np.sort(p.train_index))
    assert not np.intersect1d(q.test_index, p.test_index).size  # the firm's test set is not in it
    for a in (0, 1):  # stratified by group: the held-out group shares match the training set's
        assert abs((q.a_test == a).mean() - (p.a_train == a).mean()) < 0.01
    # the collective's majority rows that remain, at their new positions
    np.testing.assert_array_equal(np.sort(q.train_index[pilot.reference]),
                                  np.intersect1d(p.train_index[world.reference], q.train_index))
    assert (q.a_train[pilot.reference] == 0).all() and pilot.reference.size < world.reference.size
    again = world.pilot(0.25)  # seeded by the run's own stream
    np.testing.assert_array_equal(again.prepared.test_index, q.test_index)


def test_pilot_base_metrics_equal_an_independent_fit(state):
    pilot = state.world.pilot(0.25)
    q = pilot.prepared
    estimator = make_estimator(random_state=state.world.firm_seed)
    columns = engine.pilot_columns(state, 0.25, estimator=estimator)
    firm = Firm(estimator).fit(q.X_train, q.y_train)
    expected = fairness_metrics(q.y_test, firm.predict(q.X_test), sensitive_features=q.a_test)
    assert len(columns) == 1 + len(state.grid)
    assert columns[0]["val_eqod"] == pytest.approx(expected["eqod"], abs=1e-12)
    assert columns[0]["val_error"] == pytest.approx(expected["error"], abs=1e-12)


def test_poisoned_test_labels_change_test_metrics_but_not_the_pilot(monkeypatch):
    runs = engine.run_seed(TOY, 0)
    real_initial_state = engine.initial_state

    def poisoned(scenario, dataset, seed):
        s = real_initial_state(scenario, dataset, seed)
        p = s.world.prepared
        bad = dataclasses.replace(p, y_test=(1 - p.y_test).astype(np.int8))
        return s.replace(world=dataclasses.replace(s.world, prepared=bad))

    monkeypatch.setattr(engine, "initial_state", poisoned)
    other = engine.run_seed(TOY, 0)
    val = [c for c in runs.columns if c.startswith("val_")]
    assert val and runs[val].notna().all().all()
    np.testing.assert_array_equal(runs[val].to_numpy(), other[val].to_numpy())
    assert not np.allclose(runs["error"], other["error"])  # the test metrics did see the poison


def test_no_pilot_no_columns():
    runs = engine.run_seed(TOY.replace(collective__validation=0.0), 0)
    assert not [c for c in runs.columns if c.startswith("val_")]


def test_the_pilot_keeps_what_the_collective_knows_of_the_majority(state):
    """Held-out users leave the pilot firm's data, not the collective's knowledge: a reference of
    one majority row that lands in the held-out part still scores (it used to be an error)."""
    world = state.world
    pilot = world.pilot(0.25)
    for got, want in zip(pilot.majority_knowledge(), world.majority_knowledge()):
        np.testing.assert_array_equal(got, want)
    held = pilot.prepared.test_index
    one = dataclasses.replace(world, reference=np.flatnonzero(np.isin(world.prepared.train_index, held)
                                                              & (world.prepared.a_train == 0))[:1])
    lonely = one.pilot(0.25)
    assert lonely.reference.size == 0 and lonely.majority_knowledge()[0].shape[0] == 1
    users = lonely.candidates(0.6)
    assert np.isfinite(lonely.scores("rb-prob", users)).all()
    # a member scores the same in the pilot as in the full world
    ids = np.intersect1d(world.user_ids[world.candidates(0.6)], pilot.user_ids[pilot.candidates(0.6)])[:20]
    full = world.scores("rb-label", np.flatnonzero(np.isin(world.user_ids, ids)), {"k": 10})
    part = pilot.scores("rb-label", np.flatnonzero(np.isin(pilot.user_ids, ids)), {"k": 10})
    np.testing.assert_array_equal(np.sort(full), np.sort(part))
