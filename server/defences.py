"""A firm that fights back: audit the received labels, then act on suspicious ones.

The collective relabels some protected-group negatives as positives, so the
audits look only at received positives of one group (default: the protected
group, a=1) and flag those whose label is implausible:

* :class:`ConfidentLearningAudit` - out-of-fold P(y=1) from k-fold
  ``cross_val_predict`` on the received data; a positive is flagged when it is
  confidently a negative, with the per-class thresholds of confident learning
  (Northcutt et al. 2021) or a fixed probability threshold.
* :class:`TrustedSampleAudit` - the firm holds a small sample with true
  labels; it flags the group's least plausible positives (by a model trained
  on that sample) until the group's positive rate matches the trusted one.

Actions on flagged rows: ``drop`` them, ``downweight`` them (sample_weight)
or ``revert`` their label to 0. :func:`defend` chains an audit and an action.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from server.baselines import _check_data, _fresh, _int_seed, _proba1, _rng, _top
from agents.errors import ConfigError, DataError

__all__ = [
    "ACTIONS",
    "DEFENCES",
    "ConfidentLearningAudit",
    "TrustedSampleAudit",
    "apply_action",
    "audit",
    "defend",
]

DEFENCES = ("none", "confident-learning", "trusted-sample")
ACTIONS = ("drop", "downweight", "revert")


def _audited(y, a, group) -> np.ndarray:
    """Mask of the rows an audit may flag: received positives of ``group`` (None = all)."""
    if group is None:
        return y == 1
    if group not in (0, 1):
        raise ConfigError(f"group must be 0, 1 or None, got {group!r}")
    return (y == 1) & (a == group)


def confident_negatives(proba, y) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning's rule (binary case): which rows a model calls confident negatives.

    ``proba`` is an out-of-fold P(y=1) per row and ``y`` the labels the rows
    carry. The per-class thresholds are t_j = mean P(y=j) over rows labelled j;
    a row is a confident negative when P(y=0) >= t_0 and it is not also above
    t_1 with P(y=1) > P(y=0) (the off-diagonal entry of Northcutt et al.'s
    confident joint). Returns (mask, thresholds [t_0, t_1]).
    """
    p1 = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    p0 = 1.0 - p1
    thresholds = np.array([p0[y == 0].mean(), p1[y == 1].mean()])
    return (p0 >= thresholds[0]) & ((p1 < thresholds[1]) | (p0 > p1)), thresholds


class ConfidentLearningAudit(BaseEstimator):
    """Flag received positives that out-of-fold predictions call confident negatives.

    ``threshold=None`` flags the positives that :func:`confident_negatives`
    calls confident negatives (per-class thresholds t_j = mean P(y=j)).
    A float ``threshold`` flags positives with P(y=1) < threshold instead.
    """

    def __init__(self, estimator=None, *, cv=5, threshold=None, group=1, random_state=0):
        self.estimator = estimator
        self.cv = cv
        self.threshold = threshold
        self.group = group
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        if np.bincount(y, minlength=2).min() < self.cv:
            raise DataError(f"each label needs at least cv={self.cv} rows for the audit")
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=_int_seed(self.random_state, 4))
        proba = cross_val_predict(
            _fresh(self.estimator, self.random_state), X, y, cv=folds, method="predict_proba"
        )[:, 1]
        if self.threshold is None:
            confident_negative, self.thresholds_ = confident_negatives(proba, y)
        else:
            self.thresholds_ = None
            confident_negative = proba < self.threshold
        self.scores_ = proba
        self.flags_ = _audited(y, a, self.group) & confident_negative
        return self

    def fit_predict(self, X, y, *, sensitive_features):
        """Fit and return the flags (True = label judged implausible)."""
        return self.fit(X, y, sensitive_features=sensitive_features).flags_


class TrustedSampleAudit(BaseEstimator):
    """Flag a group's least plausible positives until its rate matches a trusted sample.

    The number flagged is the excess of received positives over the trusted
    rate, floor((rate_received - rate_trusted - ``tolerance``) * n_group);
    the flagged ones are the positives with the lowest P(y=1) under a model
    trained on the trusted sample (ties broken by seeded random tickets).
    """

    def __init__(self, estimator=None, *, tolerance=0.0, group=1, random_state=0):
        self.estimator = estimator
        self.tolerance = tolerance
        self.group = group
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features, X_trusted, y_trusted, a_trusted):
        X, y, a = _check_data(X, y, sensitive_features)
        X_t, y_t, a_t = _check_data(X_trusted, y_trusted, a_trusted)
        if self.group not in (0, 1):
            raise ConfigError(f"group must be 0 or 1, got {self.group!r}")
        in_group, in_group_t = a == self.group, a_t == self.group
        if not in_group.any() or not in_group_t.any():
            raise DataError(f"group {self.group} must appear in both received and trusted data")
        if len(np.unique(y_t)) < 2:
            raise DataError("the trusted sample needs both labels")
        self.rate_received_ = float(y[in_group].mean())
        self.rate_trusted_ = float(y_t[in_group_t].mean())
        candidates = np.flatnonzero(_audited(y, a, self.group))
        excess = (self.rate_received_ - self.rate_trusted_ - self.tolerance) * in_group.sum()
        self.n_excess_ = min(len(candidates), max(0, math.floor(excess + 1e-9)))
        self.model_ = _fresh(self.estimator, self.random_state).fit(X_t, y_t)
        self.scores_ = _proba1(self.model_, X)
        tickets = _rng(self.random_state, 5).random(len(y))
        self.flags_ = np.zeros(len(y), dtype=bool)
        self.flags_[_top(self.scores_, tickets, candidates, self.n_excess_, highest=False)] = True
        return self

    def fit_predict(self, X, y, *, sensitive_features, X_trusted, y_trusted, a_trusted):
        """Fit and return the flags (True = label judged implausible)."""
        return self.fit(X, y, sensitive_features=sensitive_features, X_trusted=X_trusted,
                        y_trusted=y_trusted, a_trusted=a_trusted).flags_


def audit(defence: str, X, y, a, *, random_state=0, trusted=None, **params) -> np.ndarray:
    """Flags (bool, one per received row) of audit ``defence``; "none" flags nothing.

    ``trusted=(X_t, y_t, a_t)`` is required by "trusted-sample"; ``params``
    go to the audit's constructor (e.g. ``cv``, ``threshold``, ``estimator``).
    """
    if defence == "none":
        return np.zeros(len(_check_data(X, y, a)[1]), dtype=bool)
    if defence == "confident-learning":
        return ConfidentLearningAudit(random_state=random_state, **params).fit_predict(
            X, y, sensitive_features=a
        )
    if defence == "trusted-sample":
        if trusted is None:
            raise ConfigError("defence 'trusted-sample' needs trusted=(X, y, a) with true labels")
        X_t, y_t, a_t = trusted
        return TrustedSampleAudit(random_state=random_state, **params).fit_predict(
            X, y, sensitive_features=a, X_trusted=X_t, y_trusted=y_t, a_trusted=a_t
        )
    raise ConfigError(f"unknown defence {defence!r}; allowed: {', '.join(DEFENCES)}")


def apply_action(action: str, X, y, flags, *, flag_weight=0.5):
    """(X', y', sample_weight) after acting on flagged rows.

    ``drop`` removes them, ``revert`` sets their label to 0 (sample_weight
    None for both); ``downweight`` keeps them with weight ``flag_weight``
    (others 1). Inputs are not modified.
    """
    X, y, _ = _check_data(X, y)
    flags = np.asarray(flags, dtype=bool)
    if flags.shape != y.shape:
        raise DataError(f"flags has shape {flags.shape}, labels have {y.shape}")
    if action == "drop":
        return X[~flags], y[~flags], None
    if action == "revert":
        return X, np.where(flags, 0, y), None
    if action == "downweight":
        if not 0.0 <= flag_weight <= 1.0:
            raise ConfigError(f"flag_weight must be in [0, 1], got {flag_weight}")
        return X, y, np.where(flags, float(flag_weight), 1.0)
    raise ConfigError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")


def defend(defence: str, action: str, X, y, a, *, random_state=0, trusted=None, flag_weight=0.5,
           **params):
    """Audit the received (X, y, a) with ``defence``, then apply ``action``.

    Returns (X', y', sample_weight) for ``Firm.fit``; for ``drop`` the caller
    that also needs a' can use ``audit`` + ``apply_action`` (a' = a[~flags]).
    """
    if action not in ACTIONS:  # fail before the (costly) audit
        raise ConfigError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
    flags = audit(defence, X, y, a, random_state=random_state, trusted=trusted, **params)
    return apply_action(action, X, y, flags, flag_weight=flag_weight)
