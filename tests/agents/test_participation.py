"""Participation rules: Granovetter's threshold model against its fixed-point map,
hand-worked neighbour shares, benefit-cost and free-riding cases, seeded choices."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import brentq
from scipy.special import ndtr

from agents.errors import ConfigError
from agents.participation import (
    SignalHistory,
    benefit_cost_round,
    benefit_cost_rule,
    comply,
    dropout,
    granovetter_equilibrium,
    granovetter_fixed_point,
    mix_key,
    neighbour_share,
    noisy_scores,
    published_gain,
    normal_draws,
    organisers,
    round_key,
    threshold_rule,
)
from agents.decision import user_tickets


def _graph(n, edges, dtype=bool):
    u, v = np.array(edges).T
    a = sp.coo_matrix((np.ones(2 * len(u)), (np.r_[u, v], np.r_[v, u])), shape=(n, n))
    return sp.csr_matrix(a.astype(dtype))


# A star 0-{1,2,3}, an edge 3-4, and an isolated user 5.
STAR = [(0, 1), (0, 2), (0, 3), (3, 4)]


# ---------------------------------------------------------------- neighbour share

@pytest.mark.parametrize("dtype", [bool, np.int8, np.float64])
def test_neighbour_share_by_hand(dtype):
    a = _graph(6, STAR, dtype)
    acting = np.array([0, 1, 1, 0, 1, 1], dtype=bool)
    # 0 sees 1,2,3 (2 act); 1 sees 0; 2 sees 0; 3 sees 0,4 (4 acts); 4 sees 3; 5 nobody.
    np.testing.assert_allclose(neighbour_share(a, acting), [2 / 3, 0, 0, 1 / 2, 0, 0])


def test_neighbour_share_ignores_stored_zeros():
    a = _graph(6, STAR, np.float64)
    a.data[:] = 1.0
    a[0, 1] = 0.0  # a stored zero is not an edge
    a[1, 0] = 0.0
    acting = np.array([0, 1, 1, 0, 1, 1], dtype=bool)
    np.testing.assert_allclose(neighbour_share(a, acting)[:2], [1 / 2, 0])


def test_all_to_all_share_counts_everyone_including_oneself():
    acting = np.array([1, 0, 0, 0], dtype=bool)
    np.testing.assert_allclose(neighbour_share(None, acting), [0.25] * 4)


def test_threshold_rule_sticky_and_leaving():
    thresholds = np.array([0.0, 0.5, 0.5, 0.9])
    seen = np.array([0.2, 0.5, 0.4, 0.4])
    acting = np.array([False, False, True, True])
    np.testing.assert_array_equal(threshold_rule(thresholds, seen, acting), [1, 1, 1, 1])
    np.testing.assert_array_equal(threshold_rule(thresholds, seen, acting, leave=True), [1, 1, 0, 0])


def test_cascade_on_a_path_by_hand():
    # Path 0-1-2-3: user 0 acts unprompted; 1 needs half its neighbours, 2 needs all of them.
    a = _graph(4, [(0, 1), (1, 2), (2, 3)])
    acting, trajectory = granovetter_equilibrium(np.array([0.0, 0.5, 0.5, 0.4]), a)
    np.testing.assert_array_equal(acting, [1, 1, 1, 1])
    np.testing.assert_allclose(trajectory, [0.25, 0.5, 0.75, 1.0])
    acting, trajectory = granovetter_equilibrium(np.array([0.0, 0.5, 0.6, 0.4]), a)
    np.testing.assert_array_equal(acting, [1, 1, 0, 0])  # 2 sees only 1 of 2 acting
    np.testing.assert_allclose(trajectory, [0.25, 0.5])


# ---------------------------------------------------------------- Granovetter, all-to-all

def _critical_sigma(mean):
    """Where the fixed-point map's outcome jumps, by bisection on the map itself."""
    lo, hi = 0.05, 0.3
    assert granovetter_fixed_point(mean, lo) < 0.5 < granovetter_fixed_point(mean, hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if granovetter_fixed_point(mean, mid) < 0.5 else (lo, mid)
    return lo


def test_fixed_point_is_the_smallest_root_of_the_map():
    for sigma in (0.08, 0.11, 0.13, 0.2):
        r = granovetter_fixed_point(0.25, sigma)
        g = lambda x: ndtr((x - 0.25) / sigma) - x  # noqa: E731
        assert abs(g(r)) < 1e-9
        # No root below it: the map stays above the diagonal on [0, r).
        grid = np.linspace(0, r, 2001)[:-1]
        assert np.all(g(grid) > 0)
        # An independent root finder, started from 0, lands on the same root.
        if r < 0.99:
            np.testing.assert_allclose(brentq(g, 0.0, r + 0.01, xtol=1e-14), r, atol=1e-9)


def test_granovetter_jump_near_the_critical_sigma():
    critical = _critical_sigma(0.25)
    assert 0.115 < critical < 0.13  # the text says about 0.122
    n = 200_000
    rng = np.random.default_rng(20240601)
    z = rng.standard_normal(n)  # the same draws at every sigma: only the spread changes
    finals = {}
    for sigma in (0.11, 0.115, 0.13, 0.14):
        acting, trajectory = granovetter_equilibrium(0.25 + sigma * z)
        assert trajectory[-1] == acting.mean()
        assert np.all(np.diff(trajectory) > 0)  # the cascade only grows
        finals[sigma] = acting.mean()
        assert abs(finals[sigma] - granovetter_fixed_point(0.25, sigma)) < 0.01
    assert finals[0.11] < 0.1 and finals[0.115] < 0.1
    assert finals[0.13] > 0.9 and finals[0.14] > 0.9


# ---------------------------------------------------------------- benefit and cost

def test_benefit_cost_by_hand():
    gain = np.array([0.03, 0.01, 0.02, 0.02, 0.0])
    cost = np.array([0.01, 0.02, 0.02, 0.02, 0.0])
    acting = np.array([False, True, True, False, False])
    participating, free_riding = benefit_cost_rule(gain, cost, acting)
    # gain beats cost for 0; 1 stops; 2 and 3 are indifferent and keep what they did.
    np.testing.assert_array_equal(participating, [1, 0, 1, 0, 0])
    assert not free_riding.any()


def test_free_riding_by_hand():
    gain = np.array([0.05, 0.05, 0.05, 0.01])
    cost = np.array([0.02, 0.02, 0.02, 0.02])
    kept = np.array([0.0, 0.02, 0.04, 0.01])  # what each keeps without acting
    acting = np.ones(4, dtype=bool)
    participating, free_riding = benefit_cost_rule(gain, cost, acting, free_ride=True, free_ride_gain=kept)
    # Own contributions 0.05, 0.03, 0.01, 0.0 against cost 0.02.
    np.testing.assert_array_equal(participating, [1, 1, 0, 0])
    np.testing.assert_array_equal(free_riding, [0, 0, 1, 0])  # 3 never gained enough to act
    assert not (participating & free_riding).any()
    with pytest.raises(ValueError, match="free_ride_gain"):
        benefit_cost_rule(gain, cost, acting, free_ride=True)


def test_published_gain_and_memory_by_hand():
    """A member's gain is what it can see (own probability, the published gap) over the base
    model, averaged over the remembered rounds; free riders keep (N - 1)/N of it."""
    own, base_own = np.array([0.6, 0.3, 0.5]), np.array([0.5, 0.4, 0.5])
    gap, base_gap = -0.05, -0.2  # minority minus majority: +0.15 for everyone
    assert published_gain(["own-outcome"], 3).tolist() == [0.0, 0.0, 0.0]  # nothing published yet
    np.testing.assert_allclose(published_gain(["own-outcome"], 3, own=own, base_own=base_own), [0.1, -0.1, 0.0])
    np.testing.assert_allclose(published_gain(["group-rates"], 3, own=own, base_own=base_own, gap=gap,
                                              base_gap=base_gap), [0.15, 0.15, 0.15])
    both = published_gain(["own-outcome", "group-rates"], 3, own=own, base_own=base_own, gap=gap, base_gap=base_gap)
    np.testing.assert_allclose(both, [0.25, 0.05, 0.15])
    # Memory 2: round 1 showed nothing, round 2 ``both``: means 0.125, 0.025, 0.075 against cost 0.05.
    cost, acting = np.full(3, 0.05), np.zeros(3, dtype=bool)
    joined, free = benefit_cost_round([np.zeros(3), both], cost, acting)
    np.testing.assert_array_equal(joined, [1, 0, 1])
    assert not free.any()
    # Free riding with 4 participants last round: own share is a quarter, 0.03125, 0.00625, 0.01875,
    # against cost 0.02; all three would act on the whole gain, so 1 and 2 free ride.
    joined, free = benefit_cost_round([np.zeros(3), both], np.full(3, 0.02), acting, free_ride=True, participants=4)
    np.testing.assert_array_equal(joined, [1, 0, 0])
    np.testing.assert_array_equal(free, [0, 1, 1])


# ---------------------------------------------------------------- seeded choices

def test_organisers_by_ticket_and_most_connected():
    a = _graph(6, STAR)
    tickets = user_tickets(np.arange(6), 1)
    a1 = organisers(6, 2, how="most-connected", adjacency=a, tickets=tickets)
    assert a1[0] and a1[3] and a1.sum() == 2  # degrees 3 and 2
    # Equal degrees are ordered by ticket, smallest first: on the empty graph it is "random".
    empty = sp.csr_matrix((6, 6), dtype=bool)
    hand = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8])
    np.testing.assert_array_equal(organisers(6, 3, how="most-connected", adjacency=empty, tickets=hand),
                                  [0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(organisers(6, 2, tickets=hand), [0, 1, 0, 0, 1, 0])
    r = [organisers(1000, 100, tickets=user_tickets(np.arange(1000), key)) for key in (5, 5, 6)]
    assert r[0].sum() == 100 and np.array_equal(r[0], r[1]) and not np.array_equal(r[0], r[2])
    with pytest.raises(ConfigError, match="allowed: random, most-connected"):
        organisers(6, 1, how="loudest", tickets=hand)
    with pytest.raises(ConfigError, match=r"in \[0, 6\]"):
        organisers(6, 7, tickets=hand)


def test_imperfect_members():
    n = 100_000
    ids = np.arange(n)
    members = ids % 2 == 0
    c = comply(user_tickets(ids, 3), 0.7, among=members)
    assert not (c & ~members).any() and abs(c.sum() / members.sum() - 0.7) < 0.01
    np.testing.assert_array_equal(comply(np.array([0.0, 0.69, 0.7, 0.99]), 0.7), [1, 1, 0, 0])
    stay = dropout(members, 0.2, user_tickets(ids, 4))
    assert not (stay & ~members).any() and abs(stay.sum() / members.sum() - 0.8) < 0.01
    assert comply(user_tickets(np.arange(10), 0), 1.0).all()
    assert not comply(np.zeros(3), 0.0).any()
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        dropout(members, 1.5, user_tickets(ids, 4))
    scores = np.array([0.1, np.nan, 0.5])
    noisy = noisy_scores(scores, 0.1, np.array([0.5 - 2.0**-54, 0.3, 0.975]))
    assert np.isnan(noisy[1])
    np.testing.assert_allclose(noisy[[0, 2]], [0.1, 0.5 + 0.1 * 1.959963984540054])  # ndtri(0.5)=0, ndtri(0.975)
    np.testing.assert_array_equal(noisy_scores(scores, 0.0, np.array([0.1, 0.2, 0.3])), scores)
    z = normal_draws(ids, 9, mean=0.25, sd=0.1)
    assert abs(z.mean() - 0.25) < 0.002 and abs(z.std() - 0.1) < 0.002 and np.isfinite(z).all()


def test_per_user_draws_do_not_depend_on_sharding():
    """A node holding some users draws exactly what a draw over everyone gives them."""
    ids = np.random.default_rng(0).permutation(5000)[:1200]
    key = round_key(0x1234_5678_9ABC_DEF0, 3)
    shard = ids[[7, 100, 3, 999]]
    pos = [7, 100, 3, 999]
    np.testing.assert_array_equal(user_tickets(shard, key), user_tickets(ids, key)[pos])
    np.testing.assert_array_equal(normal_draws(shard, key, mean=1, sd=2), normal_draws(ids, key, mean=1, sd=2)[pos])
    np.testing.assert_array_equal(dropout(np.ones(4, bool), 0.3, user_tickets(shard, key)),
                                  dropout(np.ones(ids.size, bool), 0.3, user_tickets(ids, key))[pos])
    # Rounds and methods get distinct keys; the mixing is a pure function.
    assert len({round_key(7, t) for t in range(1000)}) == 1000
    assert mix_key(7, 2, 1) == mix_key(7, 2, 1) != mix_key(7, 1, 2)
    assert round_key(7, 2) == mix_key(7, 2) and 0 <= mix_key(2**64 - 1, 5) < 2**64


def test_signal_history_lags():
    h = SignalHistory(2, initial="none")
    assert h.at(0) == "none"
    for s in ("a", "b", "c", "d"):
        h.push(s)
    assert (h.at(0), h.at(1), h.at(2)) == ("d", "c", "b")
    h2 = SignalHistory(2, initial="none")
    h2.push("a")
    assert (h2.at(0), h2.at(1)) == ("a", "none")
    with pytest.raises(ValueError):
        h.at(3)
