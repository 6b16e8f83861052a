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

from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.utils.validation import check_is_fitted

__all__ = ["FIRM_MODELS", "Firm", "make_estimator"]


def _logistic(**params):
    # newton-cholesky: 5 iterations instead of lbfgs' ~60 on one-hot Adult.
    return LogisticRegression(**{"solver": "newton-cholesky", "max_iter": 1000, **params})


FIRM_MODELS = {
    "logistic-regression": _logistic,
    "random-forest": lambda **p: RandomForestClassifier(**{"n_estimators": 100, "n_jobs": 1, **p}),
    "gradient-boosting": lambda **p: HistGradientBoostingClassifier(**p),
    "mlp": lambda **p: MLPClassifier(**{"hidden_layer_sizes": (64,), "max_iter": 300, **p}),
}


def make_estimator(name: str = "logistic-regression", params: dict | None = None, *, random_state=None):
    """A scikit-learn classifier from a registry name or a ``module:Class`` path."""
    params = dict(params or {})
    if name in FIRM_MODELS:
        est = FIRM_MODELS[name](**params)
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import firm model {name!r}: {exc}") from None
        est = cls(**params)
    else:
        allowed = ", ".join(FIRM_MODELS)
        raise ValueError(f"unknown firm model {name!r}; allowed: {allowed}, or 'module:Class'")
    if random_state is not None and "random_state" in est.get_params() and "random_state" not in params:
        est.set_params(random_state=random_state)
    return est


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
