"""The firm trains any scikit-learn classifier on the labels it receives."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from server.firm import FIRM_MODELS, Firm, estimator_class, make_estimator


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    y = (X @ rng.normal(size=6) + rng.logistic(size=2000) > 0).astype(int)
    return X, y


def test_default_firm_is_logistic_regression(data):
    X, y = data
    firm = Firm().fit(X, y)
    ref = LogisticRegression(max_iter=1000).fit(X, y)
    assert (firm.predict(X) == ref.predict(X)).mean() > 0.998
    np.testing.assert_allclose(firm.predict_proba(X)[:, 1], ref.predict_proba(X)[:, 1], atol=1e-3)


def test_warm_refit_reaches_the_cold_optimum(data):
    X, y = data
    base = Firm().fit(X, y)
    y2 = y.copy()
    y2[np.flatnonzero(y == 0)[:150]] = 1
    warm = base.refit(X, y2)
    cold = Firm().fit(X, y2)
    np.testing.assert_allclose(warm.model_.coef_, cold.model_.coef_, atol=1e-3)
    assert warm.model_.n_iter_[0] <= cold.model_.n_iter_[0]
    assert base.model_.coef_ is not warm.model_.coef_  # the base firm is left as it was
    np.testing.assert_allclose(base.model_.coef_, Firm().fit(X, y).model_.coef_)


def test_refit_without_warm_start_support_is_a_fresh_fit(data):
    X, y = data
    firm = Firm(DecisionTreeClassifier(random_state=0)).fit(X, y)
    again = firm.refit(X, 1 - y)
    np.testing.assert_array_equal(again.predict(X), 1 - y)


def test_sample_weight_is_passed_to_the_model(data):
    X, y = data
    w = np.where(y == 1, 5.0, 1.0)
    weighted = Firm().fit(X, y, sample_weight=w)
    assert weighted.predict(X).mean() > Firm().fit(X, y).predict(X).mean()


SMALL = {"gradient-boosting": {"max_iter": 20}, "random-forest": {"n_estimators": 10}, "mlp": {"max_iter": 20}}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(FIRM_MODELS))
def test_registry_models_fit_and_predict(name, data):
    X, y = data
    firm = Firm(make_estimator(name, SMALL.get(name), random_state=0)).fit(X[:500], y[:500])
    assert set(np.unique(firm.predict(X))) <= {0, 1}


def test_make_estimator_paths_and_errors():
    est = make_estimator("sklearn.tree:DecisionTreeClassifier", {"max_depth": 3}, random_state=4)
    assert isinstance(est, DecisionTreeClassifier) and est.max_depth == 3 and est.random_state == 4
    assert make_estimator("logistic-regression", {"C": 0.5}).C == 0.5
    with pytest.raises(ValueError, match="allowed: logistic-regression"):
        make_estimator("svm-magic")
    with pytest.raises(ValueError, match="cannot import"):
        make_estimator("sklearn.tree:NoSuchTree")


@pytest.mark.parametrize(
    "name, message",
    [
        ("subprocess:call", "firm model 'subprocess:call' is a function, not a class; allowed: a scikit-learn classifier class"),
        ("os:system", "is a builtin_function_or_method, not a class"),
        ("collections:OrderedDict", "firm model 'collections:OrderedDict' is not a scikit-learn classifier"),
        ("sklearn.linear_model:LinearRegression", "is not a scikit-learn classifier"),
        ("sklearn.preprocessing:StandardScaler", "is not a scikit-learn classifier"),
        ("no_such_module_xyz:Model", "cannot import firm model 'no_such_module_xyz:Model'"),
        (":", "cannot import firm model ':'"),
    ],
)
def test_module_class_must_be_a_classifier_class_and_is_never_called(name, message, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: calls.append(a))
    for check in (estimator_class, make_estimator):
        with pytest.raises(ValueError) as info:
            check(name)
        assert message in str(info.value) and "\n" not in str(info.value)
    assert calls == []
    assert estimator_class("sklearn.tree:DecisionTreeClassifier") is DecisionTreeClassifier


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("logistic-regression", {"C": "high"}, "The 'C' parameter of LogisticRegression must be a float"),
        ("logistic-regression", {"solver": "magic"}, "The 'solver' parameter"),
        ("random-forest", {"n_estimators": 0}, "The 'n_estimators' parameter"),
        ("mlp", {"hidden_layer_sizes": "big"}, "The 'hidden_layer_sizes' parameter"),
        ("logistic-regression", {"not_a_param": 1}, "unexpected keyword argument 'not_a_param'"),
        ("sklearn.tree:DecisionTreeClassifier", {"max_depth": -1}, "The 'max_depth' parameter"),
    ],
)
def test_bad_params_fail_when_built_not_at_fit_time(name, params, message):
    with pytest.raises(ValueError) as info:
        make_estimator(name, params)
    assert str(info.value).startswith(f"cannot build {name!r} with params {params}: ")
    assert message in str(info.value) and "\n" not in str(info.value)
