"""server.training.train_cells(return_models=True): the fitted firms behind the metrics."""

import numpy as np

from server.firm import Firm, make_estimator
from server.training import TestSet as Held, evaluate, train_cells


def data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0.3).astype(np.int8)
    a = (X[:, 1] > 0).astype(np.int8)
    return X, y, Held(X, y, a)


def flips_of(y, count):
    flips = np.zeros(len(y), dtype=bool)
    flips[np.flatnonzero(y == 0)[:count]] = True
    return flips


def test_without_the_option_the_answer_is_unchanged():
    X, y, test = data()
    est = make_estimator("logistic-regression", {}, random_state=0)
    cells = [("c", flips_of(y, 10)), ("c", flips_of(y, 30))]
    out = train_cells(est, X, y, cells, test)
    assert len(out) == 2
    base, per_cell, (base_firm, firms) = train_cells(est, X, y, cells, test, return_models=True)
    assert (base, per_cell) == out


def test_returned_firms_are_the_fits_the_metrics_came_from():
    X, y, test = data()
    est = make_estimator("logistic-regression", {}, random_state=0)
    f10, f30 = flips_of(y, 10), flips_of(y, 30)
    cells = [("c", f30), ("c", f10), ("d", np.zeros(len(y), dtype=bool)), ("e", f10.copy())]
    base, per_cell, (base_firm, firms) = train_cells(est, X, y, cells, test, warm=False, return_models=True)
    assert len(firms) == len(cells)
    # each firm gives its cell's metrics, and equals an independent fit on the cell's reported labels
    for firm, metrics, (_, flips) in zip(firms, per_cell, cells):
        assert evaluate(firm, test) == metrics
        fresh = Firm(est).fit(X, np.where(flips, 1, y))
        np.testing.assert_allclose(firm.model_.coef_, fresh.model_.coef_)
    assert evaluate(base_firm, test) == base
    np.testing.assert_allclose(base_firm.model_.coef_, Firm(est).fit(X, y).model_.coef_)
    assert firms[2] is base_firm  # nobody relabels: the base model
    assert firms[1] is firms[3]  # the same labels: one fit
    assert firms[0] is not firms[1]


def test_warm_chain_returns_each_link():
    X, y, test = data(seed=1)
    est = make_estimator("logistic-regression", {}, random_state=0)
    cells = [("c", flips_of(y, 40)), ("c", flips_of(y, 5))]
    _, per_cell, (base_firm, firms) = train_cells(est, X, y, cells, test, warm=True, return_models=True)
    # the chain runs 5 flips then 40, each warm-started from the previous link
    link5 = base_firm.refit(X, np.where(cells[1][1], 1, y))
    link40 = link5.refit(X, np.where(cells[0][1], 1, y))
    np.testing.assert_allclose(firms[1].model_.coef_, link5.model_.coef_)
    np.testing.assert_allclose(firms[0].model_.coef_, link40.model_.coef_)
    assert [evaluate(f, test) for f in firms] == per_cell
