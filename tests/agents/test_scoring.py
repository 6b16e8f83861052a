"""Scorers on hand-worked small cases."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from agents.scoring import METHODS, PARAMETERS, OracleScorer, RandomScorer, RBDist, RBLabel, RBProb, make_scorer

X_REF = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
Y_REF = np.array([1, 1, 0, 0, 0])


def test_rb_label_counts_positive_neighbours():
    s = RBLabel(k=2).fit(X_REF, Y_REF)
    # [0.4]: nearest 0 (0.4) and 1 (0.6): both positive.  [1.6]: 2 (0.4), 1 (0.6): one.
    # [10.4]: 10 and 11: none.
    np.testing.assert_array_equal(s.score_samples([[0.4], [1.6], [10.4]]), [2, 1, 0])


def test_rb_label_uses_euclidean_distance_in_several_dimensions():
    X = np.array([[0, 0], [3, 4], [1, 1], [6, 8]], dtype=float)
    y = np.array([1, 0, 1, 0])
    # From (2.5, 3): distances 3.9, 1.1, 2.5, 6.0 -> k=2 nearest: (3,4) neg, (1,1) pos.
    assert RBLabel(k=2).fit(X, y).score_samples([[2.5, 3.0]])[0] == 1
    assert RBLabel(k=1).fit(X, y).score_samples([[2.5, 3.0]])[0] == 0


def test_rb_dist_is_minus_mean_distance_to_positive_neighbours():
    s = RBDist(k=2).fit(X_REF, Y_REF)
    # positives at 0 and 1.  [3]: distances 3 and 2 -> -2.5.  [0.5]: 0.5, 0.5 -> -0.5.
    np.testing.assert_allclose(s.score_samples([[3.0], [0.5], [-1.0]]), [-2.5, -0.5, -1.5])


def test_rb_dist_k_is_capped_by_positive_rows_and_needs_one():
    s = RBDist(k=10).fit(X_REF, Y_REF)
    assert s.n_neighbors_ == 2
    with pytest.raises(ValueError, match="positive"):
        RBDist().fit(X_REF, np.zeros(5))


def test_rb_prob_is_the_majority_model_probability():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    ref = LogisticRegression(solver="newton-cholesky", max_iter=1000).fit(X, y)
    Q = rng.normal(size=(20, 3))
    np.testing.assert_allclose(RBProb().fit(X, y).score_samples(Q), ref.predict_proba(Q)[:, 1])
    # Any probabilistic classifier can be the majority model.
    from sklearn.naive_bayes import GaussianNB

    nb = GaussianNB().fit(X, y)
    np.testing.assert_allclose(RBProb(GaussianNB()).fit(X, y).score_samples(Q), nb.predict_proba(Q)[:, 1])


def test_rb_prob_with_a_one_class_reference_scores_everyone_equally():
    s = RBProb().fit(X_REF[:2], Y_REF[:2])
    np.testing.assert_array_equal(s.score_samples([[5.0], [-3.0]]), [1.0, 1.0])


def test_random_and_oracle():
    np.testing.assert_array_equal(RandomScorer().fit(X_REF, Y_REF).score_samples(np.ones((3, 1))), [0, 0, 0])
    o = OracleScorer().fit(X_REF, Y_REF)
    np.testing.assert_array_equal(o.score_samples(np.ones((2, 1)), counterfactual_proba=[0.2, 0.9]), [0.2, 0.9])
    with pytest.raises(ValueError, match="synthetic"):
        o.score_samples(np.ones((2, 1)))


def test_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 8))
    y = (rng.random(500) < 0.4).astype(int)
    Q = rng.normal(size=(60, 8))
    for method in ("rb-prob", "rb-label", "rb-dist"):
        s = make_scorer(method, **({"k": 7} if method != "rb-prob" else {})).fit(X, y)
        whole = s.score_samples(Q)
        single = np.concatenate([s.score_samples(Q[i : i + 1]) for i in range(60)])
        np.testing.assert_array_equal(whole, single)


def test_estimator_contract():
    for method, cls in METHODS.items():
        s = make_scorer(method, **{name: 3 for name in PARAMETERS[method]})
        assert isinstance(s, cls) and all(s.get_params()[name] == 3 for name in PARAMETERS[method])
        assert clone(s).get_params() == s.get_params()
        assert not any(k.endswith("_") for k in vars(s))  # nothing learned before fit
        assert s.fit(X_REF, Y_REF) is s  # fit returns the scorer itself, now fitted
        assert any(k.endswith("_") for k in vars(s))
    with pytest.raises(ValueError, match="unknown method"):
        make_scorer("rb-magic")
    with pytest.raises(ValueError, match="has no parameter k; allowed: none"):
        make_scorer("rb-prob", k=3)  # each method takes only its own parameters


def test_unfitted_scorer_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        RBLabel().score_samples(X_REF)
