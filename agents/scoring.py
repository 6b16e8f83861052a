"""Scoring strategies: how likely a user's label would be positive in the majority.

Each scorer follows scikit-learn's estimator contract: parameters in
``__init__``, ``fit(X_ref, y_ref)`` on the majority reference rows the
collective can see returns ``self``, learned attributes end in ``_``, and
``score_samples(X)`` returns one float per user (higher = flip first).
Scores depend only on a user's own features and the fitted reference, so one
user, a shard or the whole minority get the same score for the same person.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "METHODS",
    "OracleScorer",
    "RBDist",
    "RBLabel",
    "RBProb",
    "RandomScorer",
    "PARAMETERS",
    "make_scorer",
]

# Scores are sums in floating point, and BLAS may sum in another order for
# another batch size (the last bit differs). Rounding keeps one user's score
# identical whether it is scored alone, in a shard or with everyone, and
# exact ties then fall to the tie tickets as documented.
_DECIMALS = 10


def _as_2d(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array, got shape {X.shape}")
    return X


def _check_reference(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = _as_2d(X)
    y = np.asarray(y).astype(np.int8).ravel()
    if X.shape[0] != y.shape[0]:
        raise ValueError("reference features and labels have different lengths")
    if X.shape[0] == 0:
        raise ValueError("the collective needs at least one majority reference row")
    return X, y


class RBProb(BaseEstimator):
    """RB-prob: P(y=1 | x) from a probabilistic classifier fitted on majority rows."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        X, y = _check_reference(X, y)
        self.classes_seen_ = np.unique(y)
        if self.classes_seen_.size < 2:
            # A tiny reference sample can hold one class only: every user
            # then gets the same score and the tie tickets decide.
            self.estimator_ = None
        else:
            base = self.estimator or LogisticRegression(solver="newton-cholesky", max_iter=1000)
            self.estimator_ = clone(base).fit(X, y)
        return self

    def score_samples(self, X):
        check_is_fitted(self, "classes_seen_")
        X = _as_2d(X)
        if self.estimator_ is None:
            return np.full(X.shape[0], float(self.classes_seen_[0]))
        return np.round(self.estimator_.predict_proba(X)[:, 1].astype(np.float64), _DECIMALS)


class _NeighbourScorer(BaseEstimator):
    """Shared part of the k-nearest-neighbour scorers: exact Euclidean search."""

    def __init__(self, k: int = 10):
        self.k = k

    def _index(self, rows: np.ndarray):
        self.n_neighbors_ = min(int(self.k), rows.shape[0])
        self.neighbors_ = NearestNeighbors(n_neighbors=self.n_neighbors_, algorithm="brute").fit(rows)

    def _neighbours(self, X):
        """(distances, indices) of each row's k nearest reference rows, or None for no rows."""
        check_is_fitted(self, "neighbors_")
        X = _as_2d(X)
        return self.neighbors_.kneighbors(X) if X.shape[0] else None


class RBLabel(_NeighbourScorer):
    """RB-label: number of positive labels among the k nearest majority rows."""

    def fit(self, X, y):
        X, y = _check_reference(X, y)
        self.y_ref_ = y
        self._index(X)
        return self

    def score_samples(self, X):
        found = self._neighbours(X)
        return np.empty(0) if found is None else self.y_ref_[found[1]].sum(axis=1).astype(np.float64)


class RBDist(_NeighbourScorer):
    """RB-dist: minus the mean distance to the k nearest positive majority rows."""

    def fit(self, X, y):
        X, y = _check_reference(X, y)
        positives = X[y == 1]
        if positives.shape[0] == 0:
            raise ValueError("rb-dist needs at least one positive majority reference row")
        self._index(positives)
        return self

    def score_samples(self, X):
        found = self._neighbours(X)
        return np.empty(0) if found is None else np.round(-found[0].mean(axis=1), _DECIMALS)


class RandomScorer(BaseEstimator):
    """The paper's random baseline: no information, a uniformly random ranking.

    Every candidate gets the same score, so the ranking is decided by the
    per-user tie tickets alone, a uniform random order fixed by the run's seed
    that is identical on every backend.
    """

    def fit(self, X, y):
        _check_reference(X, y)
        self.fitted_ = True
        return self

    def score_samples(self, X):
        check_is_fitted(self, "fitted_")
        return np.zeros(_as_2d(X).shape[0])


class OracleScorer(BaseEstimator):
    """Synthetic data only: the true counterfactual P(y=1 | x_{A<-0}).

    The truth is not a function of the observed features the firm sees, so it
    is handed over per user: ``score_samples(X, counterfactual_proba=p)``.
    """

    def fit(self, X, y):
        _check_reference(X, y)
        self.fitted_ = True
        return self

    def score_samples(self, X, *, counterfactual_proba=None):
        check_is_fitted(self, "fitted_")
        if counterfactual_proba is None:
            raise ValueError("the oracle scorer needs counterfactual_proba (synthetic datasets only)")
        p = np.asarray(counterfactual_proba, dtype=np.float64).ravel()
        if p.shape[0] != _as_2d(X).shape[0]:
            raise ValueError("counterfactual_proba must have one entry per user")
        return p


METHODS = {
    "rb-prob": RBProb,
    "rb-label": RBLabel,
    "rb-dist": RBDist,
    "random": RandomScorer,
    "oracle": OracleScorer,
}


# Each method's own settable parameters (numbers, so they travel in a scenario file
# and a Flower message) and their defaults.
PARAMETERS = {"rb-prob": {}, "rb-label": {"k": 10}, "rb-dist": {"k": 10}, "random": {}, "oracle": {}}


def make_scorer(method: str, *, estimator=None, **params):
    """A fresh, unfitted scorer for a method name of ``METHODS``, with its own
    ``PARAMETERS`` (e.g. ``k`` for rb-label and rb-dist); ``estimator`` for rb-prob."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    unknown = sorted(set(params) - set(PARAMETERS[method]))
    if unknown:
        allowed = ", ".join(PARAMETERS[method]) or "none"
        raise ValueError(f"method {method!r} has no parameter {', '.join(unknown)}; allowed: {allowed}")
    if method == "rb-prob":
        return RBProb(estimator=estimator)
    return METHODS[method](**{**PARAMETERS[method], **params})
