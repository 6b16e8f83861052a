"""The coalition rule on hand-worked cases."""

import math

import numpy as np
import pytest

from agents.decision import (
    Threshold,
    budget_count,
    coalition_threshold,
    decide,
    member_count,
    membership_cutoff,
    relabel,
    stream_key,
    user_tickets,
)


def test_tickets_are_per_user_and_independent_of_batching():
    ids = np.arange(1000)
    all_at_once = user_tickets(ids, key=42)
    one_by_one = np.concatenate([user_tickets([i], key=42) for i in ids])
    np.testing.assert_array_equal(all_at_once, one_by_one)
    shuffled = np.random.default_rng(0).permutation(ids)
    np.testing.assert_array_equal(user_tickets(shuffled, key=42), all_at_once[shuffled])


def test_tickets_look_uniform_and_depend_on_the_key():
    t = user_tickets(np.arange(100_000), key=7)
    assert t.min() >= 0 and t.max() < 1
    assert abs(t.mean() - 0.5) < 0.005
    hist, _ = np.histogram(t, bins=10, range=(0, 1))
    assert hist.min() > 9_500 and hist.max() < 10_500
    assert np.unique(t).size == t.size
    other = user_tickets(np.arange(100_000), key=8)
    assert abs(np.corrcoef(t, other)[0, 1]) < 0.02


def test_tickets_reject_bad_ids():
    with pytest.raises(ValueError, match="non-negative integers"):
        user_tickets([-1, 2], key=1)
    with pytest.raises(ValueError):
        user_tickets([0.5], key=1)


def test_stream_key_is_reproducible():
    a = stream_key(np.random.SeedSequence(3).spawn(2)[1])
    b = stream_key(np.random.SeedSequence(3).spawn(2)[1])
    c = stream_key(np.random.SeedSequence(3).spawn(2)[0])
    assert a == b != c


@pytest.mark.parametrize(
    "budget, pool, expected",
    [(0.2, 10, 2), (0.3, 10, 3), (0.25, 10, 2), (1.0, 7, 7), (0.0, 7, 0), (3, 10, 3), (30, 10, 10), (0, 5, 0)],
)
def test_budget_count(budget, pool, expected):
    assert budget_count(budget, pool) == expected


@pytest.mark.parametrize("bad", [-1, 1.5, -0.1, True, "10"])
def test_budget_count_rejects_bad_budgets(bad):
    with pytest.raises(ValueError):
        budget_count(bad, 10)


def test_member_count_rounds_half_up():
    assert member_count(0.05, 10) == 1  # 0.5 rounds up
    assert member_count(0.3, 10) == 3
    assert member_count(0.25, 10) == 3  # 2.5 rounds up
    assert member_count(1.0, 10) == 10
    with pytest.raises(ValueError):
        member_count(1.2, 10)


def test_membership_cutoff_selects_exactly_count_users():
    tickets = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
    assert membership_cutoff(tickets, 0) == 0.0
    assert membership_cutoff(tickets, 2) == 0.5  # users with 0.1 and 0.3 are below it
    assert (tickets < membership_cutoff(tickets, 2)).sum() == 2
    assert membership_cutoff(tickets, 5) == math.inf
    rng = np.random.default_rng(1)
    t = rng.random(500)
    for count in (1, 17, 250, 499):
        assert (t < membership_cutoff(t, count)).sum() == count


def test_threshold_is_the_mth_best_and_exactly_m_flip():
    # Worked by hand: candidates ranked by score, ties by ticket (higher first):
    # (0.9,.2) > (0.7,.8) > (0.7,.3) > (0.4,.9) > (0.1,.5)
    scores = np.array([0.7, 0.1, 0.9, 0.7, 0.4])
    tickets = np.array([0.3, 0.5, 0.2, 0.8, 0.9])
    assert coalition_threshold(scores, tickets, 1) == Threshold(0.9, 0.2)
    assert coalition_threshold(scores, tickets, 2) == Threshold(0.7, 0.8)
    assert coalition_threshold(scores, tickets, 3) == Threshold(0.7, 0.3)
    eligible = np.ones(5, bool)
    flips = decide(scores, tickets, coalition_threshold(scores, tickets, 2), eligible=eligible)
    np.testing.assert_array_equal(flips, [False, False, True, True, False])
    for m in range(6):
        th = coalition_threshold(scores, tickets, m)
        assert decide(scores, tickets, th, eligible=eligible).sum() == m
    assert coalition_threshold(scores, tickets, 99) == Threshold(0.1, 0.5)
    assert coalition_threshold(scores, tickets, 0) == Threshold.none()


def test_all_ties_are_broken_by_tickets():
    scores = np.zeros(6)
    tickets = np.array([0.6, 0.1, 0.5, 0.9, 0.2, 0.3])
    flips = decide(scores, tickets, coalition_threshold(scores, tickets, 3), eligible=np.ones(6, bool))
    np.testing.assert_array_equal(np.flatnonzero(flips), [0, 2, 3])


def test_decide_ignores_ineligible_and_nan_scores():
    scores = np.array([np.nan, 0.8, 0.9, 0.2])
    tickets = np.array([0.5, 0.5, 0.5, 0.5])
    eligible = np.array([True, True, False, True])
    th = Threshold(0.1, 0.0)
    np.testing.assert_array_equal(decide(scores, tickets, th, eligible=eligible), [False, True, False, True])


def test_local_decisions_match_the_global_rule_for_any_sharding():
    rng = np.random.default_rng(5)
    n = 300
    scores = rng.integers(0, 5, n).astype(float)  # many ties
    tickets = user_tickets(np.arange(n), key=11)
    eligible = rng.random(n) < 0.4
    th = coalition_threshold(scores[eligible], tickets[eligible], 37)
    whole = decide(scores, tickets, th, eligible=eligible)
    assert whole.sum() == 37
    shards = np.array_split(np.arange(n), 13)
    pieces = np.concatenate([decide(scores[s], tickets[s], th, eligible=eligible[s]) for s in shards])
    np.testing.assert_array_equal(pieces, whole)


def test_coalition_threshold_rejects_nan_and_shape_mismatch():
    with pytest.raises(ValueError):
        coalition_threshold([np.nan], [0.1], 1)
    with pytest.raises(ValueError):
        coalition_threshold([0.1, 0.2], [0.1], 1)


def test_relabel_only_turns_flips_positive():
    y = np.array([0, 1, 0, 0], dtype=np.int8)
    out = relabel(y, [True, False, False, True])
    np.testing.assert_array_equal(out, [1, 1, 0, 1])
    np.testing.assert_array_equal(y, [0, 1, 0, 0])  # input untouched
