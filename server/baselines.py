"""Firm-side fairness baselines that the collective's relabelling is compared with.

Each baseline is a scikit-learn classifier wrapping any base classifier
(default: the firm's logistic regression). Those that need the sensitive
attribute take it fairlearn-style as keyword-only ``sensitive_features=``
(0/1, 1 = protected minority); the others accept and ignore it, so every
baseline can be called the same way. Every baseline has one trade-off
parameter; ``BASELINES`` maps each name to its default grid over it,
``BASELINE_PARAMS`` to the parameter's name, and :func:`baseline_front` runs
one baseline over its grid.

fairlearn provides the threshold optimizer and the exponentiated-gradient
reduction; massaging, reweighing (Kamiran & Calders 2012) and calibrated
equalized odds (Pleiss et al. 2017) are implemented here because no
maintained package supports them on numpy 2 / pandas 3 without heavy,
import-time side effects (see docs/baselines.md).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient, TruePositiveRateParity
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from agents.errors import ConfigError, DataError
from agents.protocol import budget_count
from agents.validation import as_binary, stream_int
from server.firm import make_estimator
from server.metrics import fairness_metrics

__all__ = [
    "BASELINES",
    "BASELINE_PARAMS",
    "CalibratedEqOdds",
    "ExpGradClassifier",
    "Massaging",
    "MinorityMassaging",
    "MixedThresholdOptimizer",
    "Reweighing",
    "baseline_front",
    "calibrated_eqodds_rates",
    "make_baseline",
    "massaging_count",
    "reweighing_weights",
]

# fairlearn 0.15 sets Series items through deprecated pandas paths on every fit;
# silence exactly those (pandas' deprecation class, raised from fairlearn code).
_PANDAS_DEPRECATION = getattr(pd.errors, "Pandas4Warning", FutureWarning)


@contextmanager
def _quiet_fairlearn():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=_PANDAS_DEPRECATION, module=r"fairlearn\.")
        yield


# ----------------------------------------------------------------------------- helpers


def _binary(values, name: str) -> np.ndarray:
    return as_binary(values, name).astype(np.int64)


def _check_data(X, y=None, a=None):
    """Dense float X, 0/1 int y and a (either may be None), equal lengths."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D, got shape {X.shape}")
    y = None if y is None else _binary(y, "y")
    a = None if a is None else _binary(a, "sensitive_features")
    for name, arr in (("y", y), ("sensitive_features", a)):
        if arr is not None and len(arr) != len(X):
            raise DataError(f"{name} has {len(arr)} rows but X has {len(X)}")
    return X, y, a


def _require_a(sensitive_features, n: int, who: str) -> np.ndarray:
    if sensitive_features is None:
        raise DataError(f"{who} needs sensitive_features= (0/1, 1 = protected)")
    a = _binary(sensitive_features, "sensitive_features")
    if len(a) != n:
        raise DataError(f"sensitive_features has {len(a)} rows but X has {n}")
    return a


def _seed_sequence(random_state, stream: int) -> np.random.SeedSequence:
    """Independent, reproducible stream ``stream`` of a non-negative int seed."""
    if isinstance(random_state, bool) or not isinstance(random_state, Integral) or random_state < 0:
        raise ConfigError(f"random_state must be a non-negative int, got {random_state!r}")
    return np.random.SeedSequence(int(random_state), spawn_key=(stream,))


def _rng(random_state, stream: int) -> np.random.Generator:
    return np.random.default_rng(_seed_sequence(random_state, stream))


def _int_seed(random_state, stream: int) -> int:
    """A 32-bit seed for APIs (fairlearn, sklearn) that want an int or RandomState."""
    return stream_int(_seed_sequence(random_state, stream), bits=32)


def _fresh(estimator, random_state, stream: int = 0):
    """Unfitted clone of ``estimator`` (default: the firm's model), seeded if it is random."""
    est = make_estimator() if estimator is None else clone(estimator)
    params = est.get_params()
    if "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=_int_seed(random_state, 100 + stream))
    return est


def _proba1(model, X) -> np.ndarray:
    return model.predict_proba(X)[:, list(model.classes_).index(1)]


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _top(scores, tickets, idx, m: int, *, highest: bool) -> np.ndarray:
    """The ``m`` rows of ``idx`` with the highest (or lowest) score; ties by ticket."""
    if m <= 0 or len(idx) == 0:
        return idx[:0]
    s, t = scores[idx], tickets[idx]
    order = np.lexsort((-t, -s)) if highest else np.lexsort((t, s))
    return np.sort(idx[order[:m]])


def _positive_rates(y, a):
    n_w, n_b = np.count_nonzero(a == 0), np.count_nonzero(a == 1)
    if n_w == 0 or n_b == 0:
        raise DataError("both groups (sensitive_features 0 and 1) must be present")
    return y[a == 0].mean(), y[a == 1].mean(), n_w, n_b


# -------------------------------------------------------------- fairlearn: post-processing


class MixedThresholdOptimizer(ClassifierMixin, BaseEstimator):
    """fairlearn's ThresholdOptimizer (Hardt et al. 2016) under equalized odds, mixed.

    fairlearn does not relax ``equalized_odds`` (its ``tol`` is for simple
    constraints only), so the trade-off is traced by mixing: each prediction is
    the optimizer's randomized prediction with probability ``mix`` and the
    base model's otherwise (``mix=0``: base model, ``mix=1``: fairlearn's
    classifier). ``mix`` is used only by :meth:`predict`, so one fit serves a
    whole sweep; the random draws are fixed by ``random_state``, so the set of
    switched rows grows monotonically with ``mix``.
    """

    def __init__(self, estimator=None, *, mix=1.0, objective="accuracy_score", grid_size=1000,
                 random_state=0):
        self.estimator = estimator
        self.mix = mix
        self.objective = objective
        self.grid_size = grid_size
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        optimizer = ThresholdOptimizer(
            estimator=_fresh(self.estimator, self.random_state),
            constraints="equalized_odds",
            objective=self.objective,
            grid_size=self.grid_size,
            predict_method="auto",
        )
        with _quiet_fairlearn():
            self.optimizer_ = optimizer.fit(X, y, sensitive_features=a)
        self.estimator_ = self.optimizer_.estimator_
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X, *, sensitive_features):
        check_is_fitted(self, "optimizer_")
        X, _, _ = _check_data(X)
        a = _require_a(sensitive_features, len(X), type(self).__name__)
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"mix must be in [0, 1], got {self.mix}")
        base = np.asarray(self.estimator_.predict(X)).astype(np.int64)
        with _quiet_fairlearn():
            fair = self.optimizer_.predict(
                X, sensitive_features=a, random_state=_int_seed(self.random_state, 1)
            ).astype(np.int64)
        switch = _rng(self.random_state, 2).random(len(X)) < self.mix
        return np.where(switch, fair, base)


# ------------------------------------------------------------------ fairlearn: reduction

_EXPGRAD_CONSTRAINTS = {
    "equalized_odds": EqualizedOdds,
    "true_positive_rate_parity": TruePositiveRateParity,
}


class ExpGradClassifier(ClassifierMixin, BaseEstimator):
    """fairlearn's ExponentiatedGradient (Agarwal et al. 2018) with a difference bound.

    ``constraint`` is ``"equalized_odds"`` or ``"true_positive_rate_parity"``;
    ``difference_bound`` is the allowed disparity of the constraint moment, the
    trade-off parameter swept for a front: each group's rate may differ from
    the overall rate (not from the other group's) by at most this much.
    fairlearn's own ``eps`` only sets the multiplier bound B = 1/eps and is
    passed through. Predictions are
    fairlearn's randomized ones, drawn with a seed derived from ``random_state``.
    """

    def __init__(self, estimator=None, *, constraint="equalized_odds", difference_bound=0.01,
                 eps=0.01, max_iter=50, random_state=0):
        self.estimator = estimator
        self.constraint = constraint
        self.difference_bound = difference_bound
        self.eps = eps
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        if self.constraint not in _EXPGRAD_CONSTRAINTS:
            allowed = ", ".join(_EXPGRAD_CONSTRAINTS)
            raise ConfigError(f"unknown constraint {self.constraint!r}; allowed: {allowed}")
        moment = _EXPGRAD_CONSTRAINTS[self.constraint](difference_bound=self.difference_bound)
        reduction = ExponentiatedGradient(
            _fresh(self.estimator, self.random_state), moment, eps=self.eps, max_iter=self.max_iter
        )
        with _quiet_fairlearn():
            self.reduction_ = reduction.fit(X, y, sensitive_features=a)
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X, *, sensitive_features=None):
        check_is_fitted(self, "reduction_")
        X, _, _ = _check_data(X)
        with _quiet_fairlearn():
            pred = self.reduction_.predict(X, random_state=_int_seed(self.random_state, 1))
        return np.asarray(pred).astype(np.int64)


# ------------------------------------------------------------- Kamiran & Calders: massaging


def massaging_count(y, a) -> int:
    """Kamiran & Calders' M = disc * |B| * |W| / |D| (rounded half up, 0 if disc <= 0).

    disc = P(+ | W) - P(+ | B), with W the favoured group (a=0) and B the
    deprived one (a=1); swapping M labels each way makes disc zero (up to rounding).
    """
    y, a = _binary(y, "y"), _binary(a, "sensitive_features")
    p_w, p_b, n_w, n_b = _positive_rates(y, a)
    return max(0, _round_half_up((p_w - p_b) * n_b * n_w / len(y)))


class _TrainedOnChangedData(ClassifierMixin, BaseEstimator):
    """Pre-processing baselines: predictions are the inner model's (no group at test time)."""

    def predict(self, X, *, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(_check_data(X)[0])

    def predict_proba(self, X, *, sensitive_features=None):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(_check_data(X)[0])


class _MassagingBase(_TrainedOnChangedData):
    """Shared fit: rank with ``ranker``, relabel, train the base model."""

    def _ranker_scores(self, X, y, a):
        Xr = np.column_stack([X, a]) if self.ranker_uses_sensitive else X
        self.ranker_ = _fresh(self.ranker, self.random_state, stream=1).fit(Xr, y)
        return _proba1(self.ranker_, Xr)

    def _fit_massaged(self, X, y, a, promoted, demoted):
        y_new = y.copy()
        y_new[promoted] = 1
        y_new[demoted] = 0
        self.promoted_, self.demoted_, self.y_massaged_ = promoted, demoted, y_new
        self.estimator_ = _fresh(self.estimator, self.random_state).fit(X, y_new)
        self.classes_ = self.estimator_.classes_
        return self


class Massaging(_MassagingBase):
    """Massaging (Kamiran & Calders 2012): swap M labels across groups, then train.

    A ranker (default: the firm's logistic regression on all training rows,
    without the sensitive attribute unless ``ranker_uses_sensitive``) scores
    P(+); the M highest-ranked negatives of the protected group (a=1) are
    promoted and the M lowest-ranked positives of the favoured group (a=0)
    demoted. M is ``n_flips`` if given, else ``flip_scale`` times the paper's
    :func:`massaging_count` (rounded half up), capped by both candidate pools.
    Ties in rank are broken by seeded random tickets.
    """

    def __init__(self, estimator=None, *, ranker=None, n_flips=None, flip_scale=1.0,
                 ranker_uses_sensitive=False, random_state=0):
        self.estimator = estimator
        self.ranker = ranker
        self.n_flips = n_flips
        self.flip_scale = flip_scale
        self.ranker_uses_sensitive = ranker_uses_sensitive
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        p_w, p_b, _, _ = _positive_rates(y, a)
        self.disc_ = float(p_w - p_b)
        if self.n_flips is None:
            if self.flip_scale < 0:
                raise ConfigError(f"flip_scale must be >= 0, got {self.flip_scale}")
            m = _round_half_up(self.flip_scale * massaging_count(y, a))
        elif isinstance(self.n_flips, Integral) and not isinstance(self.n_flips, bool):
            m = budget_count(self.n_flips, len(y))
        else:
            raise ConfigError(f"n_flips must be a non-negative int or None, got {self.n_flips!r}")
        promote_pool = np.flatnonzero((a == 1) & (y == 0))
        demote_pool = np.flatnonzero((a == 0) & (y == 1))
        self.n_flips_ = min(m, len(promote_pool), len(demote_pool))
        scores = self._ranker_scores(X, y, a)
        tickets = _rng(self.random_state, 3).random(len(y))
        promoted = _top(scores, tickets, promote_pool, self.n_flips_, highest=True)
        demoted = _top(scores, tickets, demote_pool, self.n_flips_, highest=False)
        return self._fit_massaged(X, y, a, promoted, demoted)


class MinorityMassaging(_MassagingBase):
    """Promotion-only massaging of the protected group: the firm-side twin of the collective.

    Promotes the top M protected negatives (a=1, y=0) by a full-data ranker,
    as the collective's rb-prob rule does, but chosen by the firm. ``n_flips``
    is an int count or a float fraction of the protected negatives (like the
    collective's budget); ``None`` = the count that equalises the two groups'
    positive rates, round(disc * |B|).
    """

    def __init__(self, estimator=None, *, ranker=None, n_flips=None, ranker_uses_sensitive=False,
                 random_state=0):
        self.estimator = estimator
        self.ranker = ranker
        self.n_flips = n_flips
        self.ranker_uses_sensitive = ranker_uses_sensitive
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        p_w, p_b, _, n_b = _positive_rates(y, a)
        self.disc_ = float(p_w - p_b)
        pool = np.flatnonzero((a == 1) & (y == 0))
        if self.n_flips is None:
            self.n_flips_ = min(len(pool), max(0, _round_half_up(self.disc_ * n_b)))
        else:
            self.n_flips_ = budget_count(self.n_flips, len(pool))
        scores = self._ranker_scores(X, y, a)
        tickets = _rng(self.random_state, 3).random(len(y))
        promoted = _top(scores, tickets, pool, self.n_flips_, highest=True)
        return self._fit_massaged(X, y, a, promoted, pool[:0])


# ------------------------------------------------------------- Kamiran & Calders: reweighing


def reweighing_weights(y, a) -> np.ndarray:
    """Table W[a, y] = P(a) P(y) / P(a, y) of Kamiran & Calders' reweighing (0 if a cell is empty)."""
    y, a = _binary(y, "y"), _binary(a, "sensitive_features")
    joint = np.bincount(2 * a + y, minlength=4).reshape(2, 2) / len(y)
    expected = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    return np.divide(expected, joint, out=np.zeros((2, 2)), where=joint > 0)


class Reweighing(_TrainedOnChangedData):
    """Reweighing (Kamiran & Calders 2012): train with sample_weight W(a, y).

    ``strength`` interpolates linearly between uniform weights (0) and the
    paper's weights (1, default); it is our addition, so that reweighing also
    has a front.
    """

    def __init__(self, estimator=None, *, strength=1.0, random_state=0):
        self.estimator = estimator
        self.strength = strength
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        _positive_rates(y, a)
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"strength must be in [0, 1], got {self.strength}")
        self.weights_ = reweighing_weights(y, a)
        self.sample_weight_ = (1.0 - self.strength) + self.strength * self.weights_[a, y]
        self.estimator_ = _fresh(self.estimator, self.random_state).fit(
            X, y, sample_weight=self.sample_weight_
        )
        self.classes_ = self.estimator_.classes_
        return self



# ------------------------------------------------------- Pleiss et al.: calibrated eq. odds

COST_CONSTRAINTS = ("fnr", "fpr", "weighted")


def _group_cost(y, s, cost_constraint: str) -> float:
    """Generalized cost of scores ``s``: GFPR = E[s | y=0], GFNR = E[1 - s | y=1]."""
    gfpr = s[y == 0].mean() if np.any(y == 0) else 0.0
    gfnr = (1.0 - s[y == 1]).mean() if np.any(y == 1) else 0.0
    if cost_constraint == "fpr":
        return float(gfpr)
    if cost_constraint == "fnr":
        return float(gfnr)
    base = y.mean()  # weighted: equal weights on the expected FP and FN mass
    return float(0.5 * gfpr * (1.0 - base) + 0.5 * gfnr * base)


def calibrated_eqodds_rates(y, scores, a, *, cost_constraint="weighted") -> dict[str, np.ndarray]:
    """Mixing rates of calibrated equalized odds (Pleiss et al. 2017, Algorithm 1).

    For each group t the cost of the calibrated scores h_t and of the trivial
    classifier (every score = the group's base rate mu_t) are computed; the
    group with the lower cost c_lo is mixed with its trivial classifier at rate
    alpha = (c_hi - c_lo) / (c_trivial_lo - c_lo), the other at 0. alpha is
    clipped to [0, 1] (it exceeds 1 when even the trivial classifier cannot
    reach c_hi). Returns arrays indexed by group: ``mix_rates``,
    ``base_rates``, ``costs``, ``trivial_costs``.
    """
    if cost_constraint not in COST_CONSTRAINTS:
        raise ConfigError(
            f"unknown cost_constraint {cost_constraint!r}; allowed: {', '.join(COST_CONSTRAINTS)}"
        )
    y, a = _binary(y, "y"), _binary(a, "sensitive_features")
    s = np.asarray(scores, dtype=np.float64)
    _positive_rates(y, a)
    base = np.array([y[a == g].mean() for g in (0, 1)])
    cost = np.array([_group_cost(y[a == g], s[a == g], cost_constraint) for g in (0, 1)])
    trivial = np.array(
        [_group_cost(y[a == g], np.full(np.count_nonzero(a == g), base[g]), cost_constraint)
         for g in (0, 1)]
    )
    mix = np.zeros(2)
    lo, hi = (0, 1) if cost[0] < cost[1] else (1, 0)
    gain = trivial[lo] - cost[lo]
    if cost[lo] < cost[hi] and gain > 0:  # mixing can only raise the cheaper group's cost
        mix[lo] = min(1.0, (cost[hi] - cost[lo]) / gain)
    return {"mix_rates": mix, "base_rates": base, "costs": cost, "trivial_costs": trivial}


class CalibratedEqOdds(ClassifierMixin, BaseEstimator):
    """Calibrated equalized odds post-processing (Pleiss et al. 2017).

    The base model's P(y=1) (assumed calibrated; logistic regression roughly
    is) is computed on the training rows; :func:`calibrated_eqodds_rates`
    gives per-group mixing rates. At prediction, each row of group t keeps its
    score with probability 1 - ``mix_scale`` * alpha_t and otherwise gets the
    group base rate mu_t; labels are score >= ``threshold`` (0.5, as in
    aif360) or, with ``threshold=None``, drawn as Bernoulli(score), the
    probabilistic classifier whose error rates equal the generalized rates
    the method equalises. ``mix_scale`` (in [0, 1], predict-time only) is the
    swept trade-off: 0 = base model, 1 = the paper's classifier.

    The method equalises one *generalized* (score-based) rate between groups
    while keeping calibration; it does not target hard-label equalized odds,
    which can get worse (see docs/baselines.md).
    """

    def __init__(self, estimator=None, *, cost_constraint="weighted", mix_scale=1.0,
                 threshold=0.5, random_state=0):
        self.estimator = estimator
        self.cost_constraint = cost_constraint
        self.mix_scale = mix_scale
        self.threshold = threshold
        self.random_state = random_state

    def fit(self, X, y, *, sensitive_features):
        X, y, a = _check_data(X, y, sensitive_features)
        self.estimator_ = _fresh(self.estimator, self.random_state).fit(X, y)
        rates = calibrated_eqodds_rates(
            y, _proba1(self.estimator_, X), a, cost_constraint=self.cost_constraint
        )
        self.mix_rates_ = rates["mix_rates"]
        self.base_rates_ = rates["base_rates"]
        self.costs_ = rates["costs"]
        self.trivial_costs_ = rates["trivial_costs"]
        self.classes_ = np.array([0, 1])
        return self

    def predict_scores(self, X, *, sensitive_features):
        """Randomized calibrated scores (seeded, so repeated calls agree)."""
        check_is_fitted(self, "mix_rates_")
        X, _, _ = _check_data(X)
        a = _require_a(sensitive_features, len(X), type(self).__name__)
        if not 0.0 <= self.mix_scale <= 1.0:
            raise ConfigError(f"mix_scale must be in [0, 1], got {self.mix_scale}")
        s = _proba1(self.estimator_, X)
        mixed = _rng(self.random_state, 1).random(len(X)) < self.mix_scale * self.mix_rates_[a]
        return np.where(mixed, self.base_rates_[a], s)

    def predict(self, X, *, sensitive_features):
        scores = self.predict_scores(X, sensitive_features=sensitive_features)
        if self.threshold is None:
            return (_rng(self.random_state, 2).random(len(scores)) < scores).astype(np.int64)
        return (scores >= self.threshold).astype(np.int64)


# --------------------------------------------------------------------- registry and fronts

BASELINES: dict[str, tuple] = {
    "threshold-optimizer": tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
    # fairlearn bounds each group's deviation from the *overall* rate, about
    # (1 - group share) x the group gap: on Adult 0.08 is already unconstrained.
    "expgrad-eqodds": (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05),
    "expgrad-tprp": (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05),
    "massaging": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
    "massaging-minority": (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
    "calibrated-eqodds": tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
    "reweighing": (0.0, 0.25, 0.5, 0.75, 1.0),
}
"""Default trade-off grid of each baseline (values of ``BASELINE_PARAMS[name]``)."""

BASELINE_PARAMS: dict[str, str] = {
    "threshold-optimizer": "mix",
    "expgrad-eqodds": "difference_bound",
    "expgrad-tprp": "difference_bound",
    "massaging": "flip_scale",
    "massaging-minority": "n_flips",
    "calibrated-eqodds": "mix_scale",
    "reweighing": "strength",
}

_FACTORIES = {
    "threshold-optimizer": lambda **p: MixedThresholdOptimizer(**p),
    "expgrad-eqodds": lambda **p: ExpGradClassifier(constraint="equalized_odds", **p),
    "expgrad-tprp": lambda **p: ExpGradClassifier(constraint="true_positive_rate_parity", **p),
    "massaging": lambda **p: Massaging(**p),
    "massaging-minority": lambda **p: MinorityMassaging(**p),
    "calibrated-eqodds": lambda **p: CalibratedEqOdds(**p),
    "reweighing": lambda **p: Reweighing(**p),
}

# Baselines whose trade-off parameter acts only at predict time: one fit per front.
_PREDICT_TIME = {"threshold-optimizer", "calibrated-eqodds"}


def make_baseline(name: str, *, base_estimator=None, random_state=0, **params):
    """An unfitted baseline by registry name (``params`` go to its constructor)."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
    return _FACTORIES[name](estimator=base_estimator, random_state=random_state, **params)


def baseline_front(name, X_train, y_train, a_train, X_test, y_test, a_test, *, grid=None,
                   base_estimator=None, random_state=0, params=None) -> list[dict]:
    """Run baseline ``name`` over its trade-off grid; one row per grid value.

    Each row has ``baseline``, ``param`` (the parameter's name), ``value``,
    ``y_pred`` (test predictions), the test metrics of
    :func:`server.metrics.fairness_metrics` and, for the massaging baselines,
    the realised ``n_flips``. ``params`` are fixed constructor parameters
    (e.g. ``{"cost_constraint": "fnr"}``); ``grid`` defaults to ``BASELINES[name]``.
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
    param = BASELINE_PARAMS[name]
    grid = BASELINES[name] if grid is None else tuple(grid)
    params = dict(params or {})
    if param in params:
        raise ConfigError(f"{param!r} is the swept parameter of {name!r}; pass it as grid=")
    X_test, y_test, a_test = _check_data(X_test, y_test, a_test)
    fitted = None
    rows = []
    for value in grid:
        if name in _PREDICT_TIME and fitted is not None:
            model = fitted.set_params(**{param: value})
        else:
            model = make_baseline(name, base_estimator=base_estimator, random_state=random_state,
                                  **params, **{param: value})
            model.fit(X_train, y_train, sensitive_features=a_train)
            fitted = model
        y_pred = np.asarray(model.predict(X_test, sensitive_features=a_test)).astype(np.int64)
        row = {"baseline": name, "param": param, "value": value, "y_pred": y_pred}
        if hasattr(model, "n_flips_"):
            row["n_flips"] = int(model.n_flips_)
        row.update(fairness_metrics(y_test, y_pred, sensitive_features=a_test))
        rows.append(row)
    return rows
