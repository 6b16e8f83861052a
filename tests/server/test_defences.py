"""server.defences: detection of known flipped labels, actions, seeding, validation."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.tree import DecisionTreeClassifier

from server.baselines import _int_seed
from server.defences import (
    ACTIONS,
    DEFENCES,
    ConfidentLearningAudit,
    TrustedSampleAudit,
    apply_action,
    audit,
    defend,
)
from server.firm import make_estimator
from agents.errors import ConfigError, DataError

W = np.array([1.5, -1.0, 0.5, 0.0])


def _clean(n, rng):
    """Labels from the features alone, the same rule in both groups."""
    X = rng.standard_normal((n, 4))
    a = (rng.random(n) < 0.3).astype(np.int64)
    y = (X @ W + 0.5 * rng.standard_normal(n) > 0.3).astype(np.int64)
    return X, y, a


@pytest.fixture(scope="module")
def poisoned():
    """Received data where a random quarter of the minority negatives claim y=1."""
    rng = np.random.default_rng(0)
    X, y, a = _clean(1500, rng)
    negatives = np.flatnonzero((a == 1) & (y == 0))
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rng.choice(negatives, size=len(negatives) // 4, replace=False)] = True
    received = np.where(flipped, 1, y)
    trusted = _clean(300, rng)
    return X, y, received, a, flipped, trusted


def _recall_and_chance(flags, flipped, received, a):
    audited = (a == 1) & (received == 1)
    recall = (flags & flipped).sum() / flipped.sum()
    chance = flags.sum() / audited.sum()  # recall of flagging as many audited rows at random
    return recall, chance


def test_confident_learning_detects_flips_well_above_chance(poisoned):
    X, _, received, a, flipped, _ = poisoned
    audit_ = ConfidentLearningAudit(random_state=0).fit(X, received, sensitive_features=a)
    flags = audit_.flags_
    assert not (flags & ((a == 0) | (received == 0))).any()  # only minority positives
    recall, chance = _recall_and_chance(flags, flipped, received, a)
    assert recall > 0.4 and recall > 3 * chance
    assert (flags & flipped).sum() / flags.sum() > 0.8  # precision


def test_confident_learning_thresholds_follow_the_paper(poisoned):
    X, _, received, a, _, _ = poisoned
    audit_ = ConfidentLearningAudit(cv=4, random_state=2).fit(X, received, sensitive_features=a)
    # independent recomputation of the out-of-fold probabilities and per-class thresholds
    folds = StratifiedKFold(4, shuffle=True, random_state=_int_seed(2, 4))
    p1 = cross_val_predict(make_estimator(), X, received, cv=folds, method="predict_proba")[:, 1]
    np.testing.assert_allclose(audit_.scores_, p1)
    t0, t1 = (1 - p1[received == 0]).mean(), p1[received == 1].mean()
    np.testing.assert_allclose(audit_.thresholds_, [t0, t1])
    p0 = 1 - p1
    expected = (a == 1) & (received == 1) & (p0 >= t0) & ((p1 < t1) | (p0 > p1))
    np.testing.assert_array_equal(audit_.flags_, expected)
    fixed = ConfidentLearningAudit(cv=4, threshold=0.3, random_state=2)
    np.testing.assert_array_equal(
        fixed.fit_predict(X, received, sensitive_features=a), (a == 1) & (received == 1) & (p1 < 0.3)
    )
    everyone = ConfidentLearningAudit(cv=4, group=None, random_state=2)
    everyone.fit(X, received, sensitive_features=a)
    assert (everyone.flags_ & (a == 0)).any() and not (everyone.flags_ & (received == 0)).any()


def test_trusted_sample_flags_the_excess_least_plausible_positives(poisoned):
    X, _, received, a, flipped, (Xt, yt, at) = poisoned
    audit_ = TrustedSampleAudit(random_state=0).fit(
        X, received, sensitive_features=a, X_trusted=Xt, y_trusted=yt, a_trusted=at
    )
    n_min = np.count_nonzero(a == 1)
    excess = (received[a == 1].mean() - yt[at == 1].mean()) * n_min
    assert audit_.n_excess_ == int(np.floor(excess + 1e-9)) == audit_.flags_.sum() > 0
    # the flagged are the lowest-scored minority positives under the trusted-sample model
    p1 = make_estimator().fit(Xt, yt).predict_proba(X)[:, 1]
    pos = np.flatnonzero((a == 1) & (received == 1))
    np.testing.assert_array_equal(np.flatnonzero(audit_.flags_),
                                  np.sort(pos[np.argsort(p1[pos])[: audit_.n_excess_]]))
    recall, chance = _recall_and_chance(audit_.flags_, flipped, received, a)
    assert recall > 0.3 and recall > 3 * chance
    # a tolerance above the observed excess flags nothing
    loose = TrustedSampleAudit(tolerance=1.0).fit(
        X, received, sensitive_features=a, X_trusted=Xt, y_trusted=yt, a_trusted=at
    )
    assert loose.n_excess_ == 0 and not loose.flags_.any()


def test_audits_flag_little_on_clean_data(poisoned):
    X, y, _, a, _, (Xt, yt, at) = poisoned
    cl = audit("confident-learning", X, y, a, random_state=0)
    assert cl.sum() <= 0.05 * np.sum((a == 1) & (y == 1))
    ts = audit("trusted-sample", X, y, a, random_state=0, trusted=(Xt, yt, at))
    assert ts.sum() <= 0.15 * np.sum((a == 1) & (y == 1))  # only the trusted sample's noise


def test_actions_drop_downweight_revert():
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([1, 1, 0, 1, 0, 1])
    flags = np.array([True, False, False, True, False, False])
    Xd, yd, wd = apply_action("drop", X, y, flags)
    np.testing.assert_array_equal(Xd, X[[1, 2, 4, 5]])
    np.testing.assert_array_equal(yd, [1, 0, 0, 1])
    assert wd is None
    Xr, yr, wr = apply_action("revert", X, y, flags)
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(yr, [0, 1, 0, 0, 0, 1])
    assert wr is None
    Xw, yw, ww = apply_action("downweight", X, y, flags, flag_weight=0.2)
    np.testing.assert_array_equal(yw, y)
    np.testing.assert_array_equal(ww, [0.2, 1, 1, 0.2, 1, 1])
    np.testing.assert_array_equal(y, [1, 1, 0, 1, 0, 1])  # inputs untouched
    with pytest.raises(ConfigError, match="allowed"):
        apply_action("relabel", X, y, flags)
    with pytest.raises(ConfigError, match="flag_weight"):
        apply_action("downweight", X, y, flags, flag_weight=2.0)
    with pytest.raises(DataError, match="flags"):
        apply_action("drop", X, y, flags[:-1])


def test_defend_revert_restores_flipped_labels(poisoned):
    X, y, received, a, flipped, _ = poisoned
    Xr, yr, w = defend("confident-learning", "revert", X, received, a, random_state=0)
    assert w is None and Xr.shape == X.shape
    changed = yr != received
    assert np.all(received[changed] == 1) and np.all(yr[changed] == 0)
    assert (changed & flipped).sum() > 0.4 * flipped.sum()  # flips restored to their true 0
    assert (yr != y).sum() < 0.7 * (received != y).sum()  # much closer to the true labels
    Xd, yd, _ = defend("confident-learning", "drop", X, received, a, random_state=0)
    np.testing.assert_array_equal(Xd, X[~changed])
    np.testing.assert_array_equal(yd, received[~changed])
    assert defend("none", "drop", X, received, a)[0].shape == X.shape
    assert set(DEFENCES) == {"none", "confident-learning", "trusted-sample"}
    assert set(ACTIONS) == {"drop", "downweight", "revert"}


def test_seeded_determinism(poisoned):
    X, _, received, a, _, trusted = poisoned
    tree = DecisionTreeClassifier(max_depth=4, max_features=2)  # random: seeded from random_state
    for defence in ("confident-learning", "trusted-sample"):
        runs = [audit(defence, X, received, a, random_state=7, trusted=trusted, estimator=tree)
                for _ in range(2)]
        np.testing.assert_array_equal(runs[0], runs[1])
        w1 = defend(defence, "downweight", X, received, a, random_state=7, trusted=trusted)[2]
        w2 = defend(defence, "downweight", X, received, a, random_state=7, trusted=trusted)[2]
        np.testing.assert_array_equal(w1, w2)


def test_validation(poisoned):
    X, _, received, a, _, (Xt, yt, at) = poisoned
    with pytest.raises(ConfigError, match="trusted"):
        audit("trusted-sample", X, received, a)
    with pytest.raises(ConfigError, match="unknown defence"):
        audit("oracle", X, received, a)
    with pytest.raises(ConfigError, match="unknown action"):
        defend("confident-learning", "burn", X, received, a)
    with pytest.raises(DataError, match="both labels"):
        audit("trusted-sample", X, received, a, trusted=(Xt, np.zeros_like(yt), at))
    with pytest.raises(DataError, match="group 1"):
        audit("trusted-sample", X, received, a, trusted=(Xt, yt, np.zeros_like(at)))
    with pytest.raises(DataError, match="cv"):
        audit("confident-learning", X[:6], np.array([1, 0, 0, 0, 0, 0]), a[:6])
