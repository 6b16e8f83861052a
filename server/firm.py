"""The firm: trains any scikit-learn classifier on the labels users report.

The firm does not cooperate with the collective; it trains as usual. For
sweeps the engine refits the same model on many slightly different label
vectors, so :meth:`Firm.refit` warm-starts from an already fitted firm when
the estimator supports it (same optimum, a few solver iterations instead of
a cold start).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.utils.validation import check_is_fitted

__all__ = ["FIRM_MODELS", "Firm", "check_trainable", "estimator_class", "make_estimator"]


def _logistic(**params):
    # newton-cholesky: 5 iterations instead of lbfgs' ~60 on one-hot Adult.
    return LogisticRegression(**{"solver": "newton-cholesky", "max_iter": 1000, **params})


FIRM_MODELS = {
    "logistic-regression": _logistic,
    "random-forest": lambda **p: RandomForestClassifier(**{"n_estimators": 100, "n_jobs": 1, **p}),
    "gradient-boosting": lambda **p: HistGradientBoostingClassifier(**p),
    "mlp": lambda **p: MLPClassifier(**{"hidden_layer_sizes": (64,), "max_iter": 300, **p}),
}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def estimator_class(name: str) -> type:
    """The class named by ``module:Class``, checked to be a scikit-learn classifier.

    Nothing is called: the class is only imported and inspected, so a path to a
    function (``subprocess:call``) is rejected before it could run.
    """
    allowed = "a scikit-learn classifier class, e.g. 'sklearn.tree:DecisionTreeClassifier'"
    module, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        raise ValueError(f"cannot import firm model {name!r} ({_one_line(exc)}); allowed: {allowed}") from None
    if not inspect.isclass(obj):
        raise ValueError(f"firm model {name!r} is a {type(obj).__name__}, not a class; allowed: {allowed}")
    # is_classifier() wants an instance in recent scikit-learn; a class is checked by its mixin.
    if not issubclass(obj, BaseEstimator) or not issubclass(obj, ClassifierMixin):
        raise ValueError(f"firm model {name!r} is not a scikit-learn classifier; allowed: {allowed}")
    return obj


def make_estimator(name: str = "logistic-regression", params: dict | None = None, *, random_state=None):
    """A scikit-learn classifier from a registry name or a ``module:Class`` path.

    The parameters are checked with scikit-learn's own validation, so a bad value is
    a ``ValueError`` here rather than at fit time.
    """
    params = dict(params or {})
    if not isinstance(name, str):
        raise ValueError(f"firm model {name!r} is not a name; allowed: {', '.join(FIRM_MODELS)}, or 'module:Class'")
    bad_keys = [k for k in params if not isinstance(k, str) or not k.isidentifier()]
    if bad_keys:
        raise ValueError(f"firm parameter name {bad_keys[0]!r} is not allowed; allowed: parameter names of {name!r}")
    if name in FIRM_MODELS:
        build = FIRM_MODELS[name]
    elif ":" in name:
        build = estimator_class(name)
    else:
        allowed = ", ".join(FIRM_MODELS)
        raise ValueError(f"unknown firm model {name!r}; allowed: {allowed}, or 'module:Class'")
    try:
        est = build(**params)
        if hasattr(est, "_validate_params"):
            est._validate_params()
    except Exception as exc:  # noqa: BLE001 - a user's class may raise anything; InvalidParameterError is a ValueError
        raise ValueError(f"cannot build {name!r} with params {params}: {_one_line(exc)}; allowed: parameters "
                         f"{name!r} accepts, with values in their documented ranges") from None
    if not is_classifier(est):
        raise ValueError(f"firm model {name!r} is not a classifier; allowed: a scikit-learn classifier")
    if random_state is not None and "random_state" in est.get_params() and "random_state" not in params:
        est.set_params(random_state=random_state)
    return est


def check_trainable(estimator, X, y, *, rows: int = 200) -> None:
    """Fit a clone of ``estimator`` once on up to ``rows`` rows of each class of (X, y).

    Catches what scikit-learn only checks at fit time (an l1 penalty with lbfgs, a
    class_weight naming absent classes, a model that needs non-negative features) before
    a run writes anything; a ``ValueError`` in one line.
    """
    y = np.asarray(y)
    picked = np.sort(np.concatenate([np.flatnonzero(y == c)[:rows] for c in np.unique(y)]))
    try:
        with warnings.catch_warnings():  # convergence on a small sample is not the user's business
            warnings.simplefilter("ignore")
            clone(estimator).fit(np.asarray(X)[picked], y[picked])
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model on the data is a bad configuration
        raise ValueError(f"{type(estimator).__name__} cannot be trained on this data: {_one_line(exc)}; allowed: "
                         "a model and parameters that fit these features and 0/1 labels") from None


class Firm(BaseEstimator):
    """A firm that trains ``estimator`` on whatever labels it receives."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y, sample_weight=None):
        base = self.estimator if self.estimator is not None else make_estimator()
        model = clone(base)
        if sample_weight is None:
            self.model_ = model.fit(X, y)
        else:
            self.model_ = model.fit(X, y, sample_weight=sample_weight)
        return self

    def refit(self, X, y):
        """A new firm fitted on (X, y), warm-started from this one if possible."""
        check_is_fitted(self, "model_")
        if "warm_start" not in self.model_.get_params():
            return Firm(self.estimator).fit(X, y)
        new = Firm(self.estimator)
        new.model_ = copy.deepcopy(self.model_).set_params(warm_start=True).fit(X, y)
        return new

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict(X)

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(X)

    @property
    def classes_(self):
        return self.model_.classes_
