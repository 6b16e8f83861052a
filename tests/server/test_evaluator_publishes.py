"""server.evaluator.Evaluator.published (benefit-cost on Flower): after each round the firm
publishes exactly what ``public`` allows -- each cell's logistic model and group rates, with
round 1's base model's -- and members' outcomes computed from it equal the model's own."""

import numpy as np
import pytest

from agents.participation import linear_favourable
from agents.protocol import CellGrid
from server.evaluator import Evaluator
from server.firm import Firm, make_estimator
from server.reports import Intake
from server.training import TestSet as Held, evaluate


def table(n=200, seed=0, flip=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0.3).astype(np.int8)
    a = (X[:, 1] > 0).astype(np.int8)
    labels = np.stack([y, y.copy()])
    labels[1, np.flatnonzero((y == 0) & (a == 1))[:flip]] = 1  # the one cell's flips
    ids = np.arange(n, dtype=np.int64)
    return {"user_ids": ids, "X": X, "a": a, "labels": labels}, Held(X, y, a)


def evaluator(public):
    rows, test = table()
    grid = CellGrid.of(["random"], [1.0], [0.5])
    return Evaluator(grid, make_estimator(random_state=0), test, rows["user_ids"], warm=False, public=public), test


@pytest.mark.parametrize("public, keys", [
    ((), None),
    (("own-outcome",), {"coef", "intercept", "base_coef", "base_intercept"}),
    (("group-rates",), {"rates", "base_rates"}),
    (("own-outcome", "group-rates"), {"coef", "intercept", "base_coef", "base_intercept", "rates", "base_rates"}),
])
def test_the_evaluator_publishes_only_what_public_allows(public, keys):
    ev, test = evaluator(public)
    round1, _ = table(flip=10)
    ev.assess(Intake(accepted=[(1, round1)]), 1)
    assert (ev.published is None) if keys is None else set(ev.published) == keys
    if keys is None:
        return
    base = Firm(make_estimator(random_state=0)).fit(round1["X"], round1["labels"][0])
    cell = Firm(make_estimator(random_state=0)).fit(round1["X"], round1["labels"][1])
    if "rates" in keys:
        m, b = evaluate(cell, test), evaluate(base, test)
        np.testing.assert_array_equal(ev.published["rates"], [[m["sel_0"], m["sel_1"]]])
        np.testing.assert_array_equal(ev.published["base_rates"], [b["sel_0"], b["sel_1"]])
    if "coef" in keys:  # a member's outcome from the published numbers is the model's probability
        own = linear_favourable(round1["X"], ev.published["coef"][0], ev.published["intercept"][0])
        np.testing.assert_allclose(own, cell.predict_proba(round1["X"])[:, 1], rtol=0, atol=1e-12)
        assert not np.array_equal(ev.published["coef"], ev.published["base_coef"][None, :])
    # Round 2 (more flips): the cell's model changes, the base stays round 1's.
    first = {k: v.copy() for k, v in ev.published.items()}
    ev.assess(Intake(accepted=[(1, table(flip=25)[0])]), 1)
    for key in ("base_coef", "base_intercept", "base_rates"):
        if key in keys:
            np.testing.assert_array_equal(ev.published[key], first[key])
    changed = [k for k in ("coef", "rates") if k in keys and not np.array_equal(ev.published[k], first[k])]
    assert changed
