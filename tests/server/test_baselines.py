"""server.baselines: hand-worked tables, agreement with fairlearn and aif360, fronts, seeding."""

import warnings

import numpy as np
import pytest
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from server.baselines import (
    BASELINE_PARAMS,
    BASELINES,
    CalibratedEqOdds,
    ExpGradClassifier,
    Massaging,
    MinorityMassaging,
    MixedThresholdOptimizer,
    Reweighing,
    _int_seed,
    baseline_front,
    calibrated_eqodds_rates,
    make_baseline,
    massaging_count,
    reweighing_weights,
)
from server.firm import make_estimator
from server.metrics import fairness_metrics
from agents.errors import ConfigError, DataError


def _data(n=800, seed=0, penalty=2.5):
    """Protected group (a=1) with a proxy feature and a label penalty: disc > 0, EqOd > 0."""
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.35).astype(np.int64)
    X = rng.standard_normal((n, 4))
    X[:, 3] += 2.0 * a  # the model sees the group only through this proxy
    logit = X[:, :3] @ np.array([1.5, -1.0, 0.5]) - penalty * a
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-0.7 * logit))).astype(np.int64)
    return X, y, a


@pytest.fixture(scope="module")
def data():
    return _data()


# Ten applicants with the group/class counts of Kamiran & Calders' running example:
# 5 favoured (a=0), 4 positive; 5 deprived (a=1), 2 positive. One feature x, higher = better.
PAPER_A = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
PAPER_Y = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0])
PAPER_X = np.array([[5.0], [4.0], [3.0], [2.5], [1.0], [4.5], [3.5], [2.0], [0.5], [0.0]])


def _eqod(y, pred, a):
    return fairness_metrics(y, pred, sensitive_features=a)["eqod"]


# ------------------------------------------------------------------------------ reweighing


def test_reweighing_weights_match_hand_computation():
    # P(a=0)=P(a=1)=.5, P(+)=.6: W(0,+)=.5*.6/.4, W(0,-)=.5*.4/.1, W(1,+)=.5*.6/.2, W(1,-)=.5*.4/.3
    w = reweighing_weights(PAPER_Y, PAPER_A)
    np.testing.assert_allclose(w, [[2.0, 0.75], [2.0 / 3.0, 1.5]])


def test_reweighing_equalises_weighted_positive_rates_and_trains_with_the_weights(data):
    X, y, a = data
    model = Reweighing(random_state=0).fit(X, y, sensitive_features=a)
    w = model.sample_weight_
    rates = [np.average(y[a == g], weights=w[a == g]) for g in (0, 1)]
    np.testing.assert_allclose(rates, [y.mean(), y.mean()])
    direct = make_estimator().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(model.estimator_.coef_, direct.coef_)
    np.testing.assert_array_equal(model.predict(X), direct.predict(X))


def test_reweighing_strength_zero_is_the_plain_model(data):
    X, y, a = data
    model = Reweighing(strength=0.0).fit(X, y, sensitive_features=a)
    np.testing.assert_array_equal(model.sample_weight_, np.ones(len(y)))
    np.testing.assert_allclose(model.estimator_.coef_, make_estimator().fit(X, y).coef_)
    with pytest.raises(ConfigError, match="strength"):
        Reweighing(strength=1.5).fit(X, y, sensitive_features=a)


# ------------------------------------------------------------------------------- massaging


def test_massaging_paper_table_by_hand():
    # disc = 4/5 - 2/5 = 0.4, M = 0.4 * 5 * 5 / 10 = 1
    assert massaging_count(PAPER_Y, PAPER_A) == 1
    model = Massaging(random_state=0).fit(PAPER_X, PAPER_Y, sensitive_features=PAPER_A)
    # best-ranked deprived negative is x=2.0 (row 7); worst-ranked favoured positive x=2.5 (row 3)
    np.testing.assert_array_equal(model.promoted_, [7])
    np.testing.assert_array_equal(model.demoted_, [3])
    ym = model.y_massaged_
    assert ym[PAPER_A == 0].mean() == ym[PAPER_A == 1].mean() == 0.6
    np.testing.assert_array_equal(PAPER_Y, [1, 1, 1, 1, 0, 1, 1, 0, 0, 0])  # input untouched


def test_massaging_removes_discrimination_and_follows_the_ranker(data):
    X, y, a = data
    model = Massaging(random_state=0).fit(X, y, sensitive_features=a)
    n_w, n_b = np.count_nonzero(a == 0), np.count_nonzero(a == 1)
    assert model.disc_ > 0.1 and model.n_flips_ == massaging_count(y, a) > 0
    ym = model.y_massaged_
    disc_after = ym[a == 0].mean() - ym[a == 1].mean()
    assert abs(disc_after) <= 0.5 * (1 / n_w + 1 / n_b) + 1e-12  # zero up to rounding of M
    # independent ranking: the same logistic regression fitted on all rows
    score = make_estimator().fit(X, y).predict_proba(X)[:, 1]
    b_neg = np.flatnonzero((a == 1) & (y == 0))
    w_pos = np.flatnonzero((a == 0) & (y == 1))
    m = model.n_flips_
    np.testing.assert_array_equal(model.promoted_, np.sort(b_neg[np.argsort(-score[b_neg])[:m]]))
    np.testing.assert_array_equal(model.demoted_, np.sort(w_pos[np.argsort(score[w_pos])[:m]]))
    assert (model.y_massaged_ != y).sum() == 2 * m


def test_massaging_n_flips_override_scale_and_ranker_options(data):
    X, y, a = data
    m = massaging_count(y, a)
    assert Massaging(flip_scale=0.5).fit(X, y, sensitive_features=a).n_flips_ == np.floor(m / 2 + 0.5)
    assert Massaging(n_flips=3).fit(X, y, sensitive_features=a).n_flips_ == 3
    capped = Massaging(n_flips=10**6).fit(X, y, sensitive_features=a)
    assert capped.n_flips_ == min(np.sum((a == 1) & (y == 0)), np.sum((a == 0) & (y == 1)))
    zero = Massaging(flip_scale=0.0).fit(X, y, sensitive_features=a)
    np.testing.assert_array_equal(zero.y_massaged_, y)
    np.testing.assert_array_equal(zero.predict(X), make_estimator().fit(X, y).predict(X))
    with_a = Massaging(ranker_uses_sensitive=True).fit(X, y, sensitive_features=a)
    assert with_a.ranker_.n_features_in_ == X.shape[1] + 1
    assert with_a.estimator_.n_features_in_ == X.shape[1]
    with pytest.raises(ConfigError, match="n_flips"):
        Massaging(n_flips=0.5).fit(X, y, sensitive_features=a)


def test_minority_massaging_promotes_only_protected_negatives(data):
    X, y, a = data
    pool = np.flatnonzero((a == 1) & (y == 0))
    model = MinorityMassaging(n_flips=0.2).fit(X, y, sensitive_features=a)
    assert model.n_flips_ == int(np.floor(0.2 * len(pool) + 1e-9))
    assert len(model.demoted_) == 0
    changed = np.flatnonzero(model.y_massaged_ != y)
    np.testing.assert_array_equal(changed, model.promoted_)
    score = make_estimator().fit(X, y).predict_proba(X)[:, 1]
    expected = np.sort(pool[np.argsort(-score[pool])[: model.n_flips_]])
    np.testing.assert_array_equal(model.promoted_, expected)
    # default M equalises the positive rates (promotion only: round(disc * |B|))
    default = MinorityMassaging().fit(X, y, sensitive_features=a)
    n_b = np.count_nonzero(a == 1)
    assert default.n_flips_ == np.floor(default.disc_ * n_b + 0.5)
    ym = default.y_massaged_
    assert abs(ym[a == 0].mean() - ym[a == 1].mean()) <= 0.5 / n_b + 1e-12
    assert MinorityMassaging(n_flips=7).fit(X, y, sensitive_features=a).n_flips_ == 7


# ------------------------------------------------------------- calibrated equalized odds

# Group 0: y=[1,1,0,0], s=[.8,.6,.4,.2]  -> mu=.5,  GFPR=.3, GFNR=.3
# Group 1: y=[1,0,0,0], s=[.9,.3,.2,.1]  -> mu=.25, GFPR=.2, GFNR=.1
# fnr:      c0=.3,  c1=.1,  trivial1 = 1-mu1 = .75       -> alpha1 = (.3-.1)/(.75-.1) = 4/13
# weighted: c = .5*GFPR*(1-mu) + .5*GFNR*mu: c0=.15, c1=.0875, trivial1 = mu1(1-mu1) = .1875
#                                                       -> alpha1 = .0625/.1 = .625
# fpr:      c0=.3, c1=.2, trivial1 = mu1 = .25          -> alpha1 = .1/.05 = 2, clipped to 1
# aif360 0.6.1's CalibratedEqOddsPostprocessing gives the same (unclipped) rates on this case.
HAND_A = np.array([0, 0, 0, 0, 1, 1, 1, 1])
HAND_Y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
HAND_S = np.array([0.8, 0.6, 0.4, 0.2, 0.9, 0.3, 0.2, 0.1])


@pytest.mark.parametrize(
    ("cost", "alpha", "costs", "trivial"),
    [
        ("fnr", 4 / 13, [0.3, 0.1], [0.5, 0.75]),
        ("weighted", 0.625, [0.15, 0.0875], [0.25, 0.1875]),
        ("fpr", 1.0, [0.3, 0.2], [0.5, 0.25]),
    ],
)
def test_calibrated_eqodds_rates_worked_example(cost, alpha, costs, trivial):
    r = calibrated_eqodds_rates(HAND_Y, HAND_S, HAND_A, cost_constraint=cost)
    np.testing.assert_allclose(r["mix_rates"], [0.0, alpha])
    np.testing.assert_allclose(r["costs"], costs)
    np.testing.assert_allclose(r["trivial_costs"], trivial)
    np.testing.assert_allclose(r["base_rates"], [0.5, 0.25])
    swapped = calibrated_eqodds_rates(HAND_Y, HAND_S, 1 - HAND_A, cost_constraint=cost)
    np.testing.assert_allclose(swapped["mix_rates"], [alpha, 0.0])


def test_calibrated_eqodds_rates_equal_costs_and_bad_constraint():
    s = np.array([0.8, 0.2, 0.8, 0.2])
    r = calibrated_eqodds_rates([1, 0, 1, 0], s, [0, 0, 1, 1])
    np.testing.assert_array_equal(r["mix_rates"], [0.0, 0.0])
    with pytest.raises(ConfigError, match="cost_constraint"):
        calibrated_eqodds_rates(HAND_Y, HAND_S, HAND_A, cost_constraint="tpr")


def test_calibrated_eqodds_equalises_expected_costs_on_training_data():
    X, y, a = _data(penalty=1.0)  # milder disparity: the rates are not clipped at 1
    for cost in ("fnr", "weighted", "fpr"):
        model = CalibratedEqOdds(cost_constraint=cost).fit(X, y, sensitive_features=a)
        alpha = model.mix_rates_
        assert alpha.max() > 0 and alpha.max() < 1 and alpha.min() == 0
        s = model.estimator_.predict_proba(X)[:, 1]
        expected = (1 - alpha[a]) * s + alpha[a] * model.base_rates_[a]  # E[score] after mixing
        after = calibrated_eqodds_rates(y, expected, a, cost_constraint=cost)["costs"]
        assert after[0] == pytest.approx(after[1], abs=1e-12)


def test_calibrated_eqodds_mixing_is_seeded_and_scaled():
    X, y, a = _data(penalty=1.0)
    model = CalibratedEqOdds(cost_constraint="fnr").fit(X, y, sensitive_features=a)
    g = int(np.argmax(model.mix_rates_))
    s = model.estimator_.predict_proba(X)[:, 1]
    XX, aa = np.tile(X, (25, 1)), np.tile(a, 25)  # many rows for the frequency check
    mixed = model.predict_scores(XX, sensitive_features=aa) != np.tile(s, 25)
    assert mixed[aa == g].mean() == pytest.approx(model.mix_rates_[g], abs=0.03)
    assert not mixed[aa != g].any()
    np.testing.assert_array_equal(model.predict(X, sensitive_features=a),
                                  model.predict(X, sensitive_features=a))
    base = model.set_params(mix_scale=0.0).predict(X, sensitive_features=a)
    np.testing.assert_array_equal(base, (s >= 0.5).astype(int))
    sampled = model.set_params(threshold=None).predict(XX, sensitive_features=aa)  # Bernoulli(score)
    assert sampled.mean() == pytest.approx(s.mean(), abs=0.01)
    assert set(np.unique(sampled)) == {0, 1}
    with pytest.raises(DataError, match="sensitive_features"):
        model.predict(X, sensitive_features=None)


# ------------------------------------------------------------------- fairlearn: threshold


def test_threshold_optimizer_endpoints_match_base_and_fairlearn(data):
    X, y, a = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedThresholdOptimizer(random_state=3).fit(X, y, sensitive_features=a)
        model.predict(X, sensitive_features=a)
    assert not [w for w in caught if "fairlearn" in w.filename]  # pandas noise filtered
    base = make_estimator().fit(X, y).predict(X)
    np.testing.assert_array_equal(model.set_params(mix=0.0).predict(X, sensitive_features=a), base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = ThresholdOptimizer(estimator=make_estimator(), constraints="equalized_odds",
                                    predict_method="auto").fit(X, y, sensitive_features=a)
        expected = direct.predict(X, sensitive_features=a, random_state=_int_seed(3, 1))
    np.testing.assert_array_equal(model.set_params(mix=1.0).predict(X, sensitive_features=a), expected)
    assert _eqod(y, expected, a) < 0.5 * _eqod(y, base, a)


def test_threshold_optimizer_mixing_is_monotone(data):
    X, y, a = data
    model = MixedThresholdOptimizer(random_state=0).fit(X, y, sensitive_features=a)
    XX, aa = np.tile(X, (25, 1)), np.tile(a, 25)  # many rows for the frequency check
    base = model.set_params(mix=0.0).predict(XX, sensitive_features=aa)
    fair = model.set_params(mix=1.0).predict(XX, sensitive_features=aa)
    differ = fair != base
    assert differ.sum() > 500
    prev = np.zeros(len(aa), dtype=bool)
    for t in (0.25, 0.5, 0.75, 1.0):
        pred = model.set_params(mix=t).predict(XX, sensitive_features=aa)
        assert np.all((pred == base) | (pred == fair))
        switched = pred != base
        assert np.all(switched[prev])  # rows switched at a lower mix stay switched
        # each row takes the fair prediction with probability t
        assert switched[differ].mean() == pytest.approx(t, abs=0.05)
        prev = switched
    with pytest.raises(ConfigError, match="mix"):
        model.set_params(mix=1.2).predict(X, sensitive_features=a)


# ------------------------------------------------------------------- fairlearn: reduction


@pytest.fixture(scope="module")
def small():
    return _data(n=250, seed=1)


def test_expgrad_matches_fairlearn_and_is_seeded(small):
    X, y, a = small
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ExpGradClassifier(difference_bound=0.02, max_iter=10, random_state=5).fit(
            X, y, sensitive_features=a
        )
        pred = model.predict(X)
    assert not [w for w in caught if "fairlearn" in w.filename]  # pandas noise filtered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = ExponentiatedGradient(make_estimator(), EqualizedOdds(difference_bound=0.02),
                                       max_iter=10).fit(X, y, sensitive_features=a)
        expected = direct.predict(X, random_state=_int_seed(5, 1))
    np.testing.assert_array_equal(pred, expected)
    np.testing.assert_array_equal(model.predict(X, sensitive_features=a), pred)
    with pytest.raises(ConfigError, match="constraint"):
        ExpGradClassifier(constraint="demographic").fit(X, y, sensitive_features=a)


# ----------------------------------------------------------------------- registry, fronts


def test_registry_names_and_grids():
    names = {"threshold-optimizer", "expgrad-eqodds", "expgrad-tprp", "massaging",
             "massaging-minority", "calibrated-eqodds", "reweighing"}
    assert set(BASELINES) == set(BASELINE_PARAMS) == names
    for name, grid in BASELINES.items():
        model = make_baseline(name)
        assert BASELINE_PARAMS[name] in model.get_params()
        assert len(grid) >= 3 and list(grid) == sorted(grid)
    with pytest.raises(ConfigError, match="allowed"):
        make_baseline("adversarial")


def test_front_rows_metrics_and_single_fit_for_predict_time_params(data):
    X, y, a = data
    Xte, yte, ate = _data(n=600, seed=10)
    rows = baseline_front("threshold-optimizer", X, y, a, Xte, yte, ate, random_state=4)
    assert [r["value"] for r in rows] == list(BASELINES["threshold-optimizer"])
    mid = MixedThresholdOptimizer(mix=0.5, random_state=4).fit(X, y, sensitive_features=a)
    row = rows[5]
    assert row["value"] == 0.5 and row["param"] == "mix"
    np.testing.assert_array_equal(row["y_pred"], mid.predict(Xte, sensitive_features=ate))
    expected = fairness_metrics(yte, row["y_pred"], sensitive_features=ate)
    assert {k: row[k] for k in expected} == expected
    assert rows[-1]["eqod"] < rows[0]["eqod"]


def test_front_for_the_other_baselines(data, small):
    X, y, a = data
    Xte, yte, ate = _data(n=600, seed=10)
    m = baseline_front("massaging", X, y, a, Xte, yte, ate, grid=[0.0, 1.0])
    assert m[0]["n_flips"] == 0 and m[1]["n_flips"] == massaging_count(y, a)
    c = baseline_front("calibrated-eqodds", X, y, a, Xte, yte, ate, grid=[0.0, 1.0],
                       params={"cost_constraint": "fnr"}, base_estimator=LogisticRegression())
    base = LogisticRegression().fit(X, y).predict(Xte)
    np.testing.assert_array_equal(c[0]["y_pred"], base)  # mix_scale 0 = the base model
    assert (c[1]["y_pred"] != base).any()
    Xs, ys, as_ = small
    t = baseline_front("expgrad-tprp", Xs, ys, as_, Xs, ys, as_, grid=[0.02],
                       params={"max_iter": 8})
    assert t[0]["param"] == "difference_bound" and len(t[0]["y_pred"]) == len(ys)
    with pytest.raises(ConfigError, match="swept"):
        baseline_front("reweighing", X, y, a, Xte, yte, ate, params={"strength": 0.5})
    with pytest.raises(ConfigError, match="unknown baseline"):
        baseline_front("nope", X, y, a, Xte, yte, ate)


@pytest.mark.parametrize("name", ["threshold-optimizer", "massaging", "massaging-minority",
                                  "calibrated-eqodds", "reweighing"])
def test_seeded_determinism_with_a_random_base_model(name, data):
    X, y, a = data
    tree = DecisionTreeClassifier(max_depth=4, max_features=2)  # random_state=None: seeded for us
    preds = [
        make_baseline(name, base_estimator=tree, random_state=11)
        .fit(X, y, sensitive_features=a).predict(X, sensitive_features=a)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(preds[0], preds[1])
    assert tree.get_params()["random_state"] is None  # the caller's estimator is not modified


def test_input_validation(data):
    X, y, a = data
    with pytest.raises(DataError, match="only 0 and 1"):
        Reweighing().fit(X, y * 2, sensitive_features=a)
    with pytest.raises(DataError, match="rows"):
        Massaging().fit(X, y, sensitive_features=a[:-1])
    with pytest.raises(DataError, match="both groups"):
        Massaging().fit(X, y, sensitive_features=np.zeros_like(a))
    with pytest.raises(ConfigError, match="random_state"):
        Reweighing(random_state=-1).fit(X, y, sensitive_features=a)
    with pytest.raises(ConfigError, match="random_state"):
        Massaging(random_state=None).fit(X, y, sensitive_features=a)
