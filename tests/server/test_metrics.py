"""server.metrics against fairlearn, hand-worked counts, nan edge cases and validation."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pandas.api.types import is_float_dtype, is_integer_dtype
from sklearn.metrics import zero_one_loss

from server.metrics import counterfactual_metrics, fairness_metrics, group_table

GROUP_KEYS = ("tpr", "fpr", "sel", "error", "base_rate")


def _random_case(rng, n, minority_frac):
    """Labels/predictions with group-dependent base rates and a noisy classifier.

    Redraws until both groups hold both labels, so every rate is defined and the
    comparison with fairlearn (which reports 0 rather than nan) is meaningful.
    """
    while True:
        a = (rng.random(n) < minority_frac).astype(int)
        base = np.where(a == 1, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.7))
        y = (rng.random(n) < base).astype(int)
        flip = rng.random(n) < np.where(a == 1, 0.35, 0.15)
        p = np.where(flip, 1 - y, y)
        if all(np.unique(y[a == g]).size == 2 for g in (0, 1)):
            return y, p, a


def _fairlearn_frame(y, p, a):
    return MetricFrame(
        metrics={
            "count": count,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "sel": selection_rate,
            "error": zero_one_loss,
            "base_rate": lambda yt, yp: float(np.mean(yt)),
        },
        y_true=y,
        y_pred=p,
        sensitive_features=a,
    )


CASES = [
    (seed, n, frac)
    for seed in (0, 1, 2)
    for n in (40, 333, 5000)
    for frac in (0.06, 0.25, 0.5)
]


@pytest.mark.parametrize(("seed", "n", "frac"), CASES)
def test_fairness_metrics_match_fairlearn(seed, n, frac):
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, int(frac * 100)]))
    y, p, a = _random_case(rng, n, frac)
    got = fairness_metrics(y, p, sensitive_features=a)
    mf = _fairlearn_frame(y, p, a)

    for g in (0, 1):
        for key in GROUP_KEYS:
            assert got[f"{key}_{g}"] == pytest.approx(mf.by_group.loc[g, key], abs=1e-12), (key, g)
    assert got["n"] == n
    assert got["error"] == pytest.approx(mf.overall["error"], abs=1e-12)
    assert got["accuracy"] == pytest.approx(1 - mf.overall["error"], abs=1e-12)

    kw = {"sensitive_features": a}
    assert got["sp_diff"] == pytest.approx(demographic_parity_difference(y, p, **kw), abs=1e-12)
    assert got["eqod_max"] == pytest.approx(equalized_odds_difference(y, p, **kw), abs=1e-12)
    assert got["eqod_max"] == pytest.approx(
        equalized_odds_difference(y, p, agg="worst_case", **kw), abs=1e-12
    )
    assert got["eqod"] == pytest.approx(equalized_odds_difference(y, p, agg="mean", **kw), abs=1e-12)
    assert got["eopp_diff"] == pytest.approx(equal_opportunity_difference(y, p, **kw), abs=1e-12)

    # Signed differences: protected (1) minus majority (0), from fairlearn's per-group values.
    bg = mf.by_group
    assert got["sp_signed"] == pytest.approx(bg.loc[1, "sel"] - bg.loc[0, "sel"], abs=1e-12)
    assert got["tpr_signed"] == pytest.approx(bg.loc[1, "tpr"] - bg.loc[0, "tpr"], abs=1e-12)
    assert got["fpr_signed"] == pytest.approx(bg.loc[1, "fpr"] - bg.loc[0, "fpr"], abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "frac"), CASES[::4])
def test_group_table_matches_fairlearn(seed, n, frac):
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, 7]))
    y, p, a = _random_case(rng, n, frac)
    table = group_table(y, p, sensitive_features=a)
    mf = _fairlearn_frame(y, p, a)

    assert list(table.index) == [0, 1, "overall"]
    assert list(table.columns) == ["count", "selection_rate", "tpr", "fpr", "error"]
    ours = {"count": "count", "selection_rate": "sel", "tpr": "tpr", "fpr": "fpr", "error": "error"}
    for col, ref in ours.items():
        for g in (0, 1):
            assert table.loc[g, col] == pytest.approx(mf.by_group.loc[g, ref], abs=1e-12), (col, g)
        assert table.loc["overall", col] == pytest.approx(mf.overall[ref], abs=1e-12), col


def test_hand_worked_tiny_case():
    # Majority (a=0), 6 rows: TP=2, FN=1, FP=1, TN=2.
    # Minority (a=1), 4 rows: TP=0, FN=1, FP=1, TN=2.  Rows interleaved on purpose.
    y = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    p = [1, 0, 1, 0, 0, 1, 0, 0, 1, 0]
    a = [0, 1, 0, 1, 0, 0, 1, 0, 1, 0]
    m = fairness_metrics(y, p, sensitive_features=a)
    expected = {
        "n": 10,
        "error": 4 / 10,  # FN+FP = 2 + 2
        "accuracy": 6 / 10,
        "tpr_0": 2 / 3,
        "tpr_1": 0 / 1,
        "fpr_0": 1 / 3,
        "fpr_1": 1 / 3,
        "sel_0": 3 / 6,
        "sel_1": 1 / 4,
        "error_0": 2 / 6,
        "error_1": 2 / 4,
        "base_rate_0": 3 / 6,
        "base_rate_1": 1 / 4,
        "sp_signed": 1 / 4 - 3 / 6,
        "sp_diff": 1 / 4,
        "tpr_signed": -2 / 3,
        "fpr_signed": 0.0,
        "eopp_diff": 2 / 3,
        "eqod": (2 / 3 + 0) / 2,
        "eqod_max": 2 / 3,
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-15), key
        assert type(m[key]) is (int if key == "n" else float), key  # plain Python numbers

    table = group_table(y, p, sensitive_features=a)
    assert table.loc[0].tolist() == pytest.approx([6, 3 / 6, 2 / 3, 1 / 3, 2 / 6])
    assert table.loc[1].tolist() == pytest.approx([4, 1 / 4, 0.0, 1 / 3, 2 / 4])
    # overall: 4 positives (TP=2), 6 negatives (FP=2), 4 selected, 4 errors.
    assert table.loc["overall"].tolist() == pytest.approx([10, 4 / 10, 2 / 4, 2 / 6, 4 / 10])
    assert is_integer_dtype(table["count"])
    assert all(is_float_dtype(table[c]) for c in ("selection_rate", "tpr", "fpr", "error"))


def test_accepts_lists_bools_floats_and_series():
    y = [1, 0, 1, 0, 1, 0]
    p = [1, 1, 0, 0, 1, 0]
    a = [0, 0, 0, 1, 1, 1]
    ref = fairness_metrics(np.array(y), np.array(p), sensitive_features=np.array(a))
    variants = [
        (np.array(y, dtype=bool), np.array(p, dtype=bool), np.array(a, dtype=bool)),
        (np.array(y, dtype=float), np.array(p, dtype=np.float32), np.array(a, dtype=np.uint8)),
        (pd.Series(y), pd.Series(p, index=range(10, 16)), pd.DataFrame({"a": a})),
    ]
    for yv, pv, av in variants:
        got = fairness_metrics(yv, pv, sensitive_features=av)
        assert got == pytest.approx(ref, nan_ok=True)


def _assert_nan(m, keys):
    for key in keys:
        assert math.isnan(m[key]), key


def test_undefined_rates_are_nan_without_warnings():
    # Minority has no positives: TPR_1 and everything built on it is undefined.
    y = [1, 0, 1, 0, 0, 0]
    p = [1, 0, 0, 1, 1, 0]
    a = [0, 0, 0, 1, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fairness_metrics(y, p, sensitive_features=a)
        table = group_table(y, p, sensitive_features=a)
    _assert_nan(m, ["tpr_1", "tpr_signed", "eopp_diff", "eqod", "eqod_max"])
    assert m["tpr_0"] == pytest.approx(1 / 2)
    assert m["fpr_1"] == pytest.approx(2 / 3)
    assert m["fpr_0"] == pytest.approx(0.0)
    assert m["sp_diff"] == pytest.approx(2 / 3 - 1 / 3)
    assert m["base_rate_1"] == 0.0
    assert math.isnan(table.loc[1, "tpr"])
    assert table.loc["overall", "tpr"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("argument_order", ["tpr_nan_first", "fpr_nan_first"])
def test_eqod_max_is_nan_whichever_side_is_undefined(argument_order):
    # Python's max(nan, x) depends on order; the result must be nan either way.
    if argument_order == "tpr_nan_first":  # group 1 has no positives
        y, p, a = [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]
    else:  # group 1 has no negatives
        y, p, a = [1, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1]
    m = fairness_metrics(y, p, sensitive_features=a)
    _assert_nan(m, ["eqod", "eqod_max"])


def test_missing_group_and_degenerate_labels():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only_majority = fairness_metrics([1, 0, 1], [1, 1, 0], sensitive_features=[0, 0, 0])
        all_negative = fairness_metrics([0, 0, 0, 0], [0, 1, 0, 0], sensitive_features=[0, 1, 0, 1])
    _assert_nan(only_majority, ["sel_1", "tpr_1", "fpr_1", "error_1", "base_rate_1", "sp_diff", "eqod"])
    assert only_majority["error"] == pytest.approx(2 / 3)
    _assert_nan(all_negative, ["tpr_0", "tpr_1", "eopp_diff", "eqod", "eqod_max"])
    assert all_negative["fpr_signed"] == pytest.approx(0.5)
    assert all_negative["sp_diff"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("y", "p", "a", "match"),
    [
        ([0, 1, 1], [0, 1], [0, 1, 0], "lengths must match"),
        ([0, 2, 1], [0, 1, 1], [0, 1, 0], "y_true must contain only 0 and 1, found \\[2\\]"),
        ([0, 1, 1], [0, np.nan, 1], [0, 1, 0], "y_pred must contain only 0 and 1"),
        ([0, 1, 1], [0, 1, 1], [0, 1, 2], "sensitive_features must contain only 0 and 1"),
        ([0, 1, 1], [0, 1, 1], ["a", "b", "a"], "sensitive_features must be numeric"),
        ([[0, 1], [1, 0]], [0, 1], [0, 1], "y_true must be 1-D"),
        ([], [], [], "empty"),
    ],
)
def test_validation_errors(y, p, a, match):
    for func in (fairness_metrics, group_table):
        with pytest.raises(ValueError, match=match) as info:
            func(y, p, sensitive_features=a)
        assert "\n" not in str(info.value)


def test_sensitive_features_is_keyword_only():
    with pytest.raises(TypeError):
        fairness_metrics([0, 1], [0, 1], [0, 1])


def test_counterfactual_metrics_by_hand():
    pred = [1, 0, 1, 1]
    pred_cf = [1, 1, 1, 0]  # agrees on rows 0 and 2
    m = counterfactual_metrics(pred, pred_cf)
    assert m == {"success": 0.5, "cf_gap": 0.5, "n_cf": 4}
    # Keys must not collide with fairness_metrics' (the engine merges the two dicts).
    assert not set(m) & set(fairness_metrics([0, 1], [0, 1], sensitive_features=[0, 1]))

    proba = [0.9, 0.4, 0.6, 0.7]
    proba_cf = [0.8, 0.6, 0.6, 0.2]  # |gaps| = 0.1, 0.2, 0.0, 0.5 -> mean 0.2
    m = counterfactual_metrics(pred, pred_cf, proba=proba, proba_cf=proba_cf)
    assert m["success"] == 0.5
    assert m["cf_gap"] == pytest.approx(0.2)

    # sklearn predict_proba output (n, 2): the positive-class column is used.
    two_col = np.column_stack([1 - np.array(proba), proba])
    two_col_cf = np.column_stack([1 - np.array(proba_cf), proba_cf])
    m2 = counterfactual_metrics(pred, pred_cf, proba=two_col, proba_cf=two_col_cf)
    assert m2["cf_gap"] == pytest.approx(0.2)

    assert counterfactual_metrics([1, 0, 1], [1, 0, 1])["success"] == 1.0
    assert counterfactual_metrics([1, 0, 1], [1, 0, 1])["cf_gap"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pred": [1, 0], "pred_cf": [1]}, "lengths must match"),
        ({"pred": [1, 3], "pred_cf": [1, 0]}, "pred must contain only 0 and 1"),
        ({"pred": [1, 0], "pred_cf": [1, 0], "proba": [0.2, 0.3]}, "both proba and proba_cf"),
        ({"pred": [1, 0], "pred_cf": [1, 0], "proba": [0.2, 1.3], "proba_cf": [0.1, 0.1]}, "\\[0, 1\\]"),
        ({"pred": [1, 0], "pred_cf": [1, 0], "proba": [0.2], "proba_cf": [0.1]}, "lengths must match"),
        ({"pred": [], "pred_cf": []}, "empty"),
    ],
)
def test_counterfactual_validation(kwargs, match):
    pred, pred_cf = kwargs.pop("pred"), kwargs.pop("pred_cf")
    with pytest.raises(ValueError, match=match) as info:
        counterfactual_metrics(pred, pred_cf, **kwargs)
    assert "\n" not in str(info.value)
