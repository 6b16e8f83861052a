"""Gossip: push-sum by hand, its convergence and spectral-gap speed, and members'
threshold estimates against the coordinator's exact threshold."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from agents.gossip import (
    exact_threshold,
    extreme_consensus,
    flip_mask,
    gossip_thresholds,
    push_sum,
    threshold_error,
    transfer_matrix,
)
from simulations.graphs import build_graph


def _graph(n, edges):
    u, v = np.array(edges).T
    a = sp.coo_matrix((np.ones(2 * len(u), dtype=bool), (np.r_[u, v], np.r_[v, u])), shape=(n, n))
    return sp.csr_matrix(a)


PATH3 = _graph(3, [(0, 1), (1, 2)])


# ---------------------------------------------------------------- push-sum

def test_push_sum_by_hand_on_a_path():
    # 0-1-2: the ends keep 1/2 and push 1/2 to 1; the middle keeps 1/3 and pushes 1/3 to each end.
    # Sums (3, 0, 0) -> (3/2, 3/2, 0) -> (5/4, 5/4, 1/2);
    # weights (1, 1, 1) -> (5/6, 4/3, 5/6) -> (31/36, 46/36, 31/36).
    values, weights = np.array([3.0, 0.0, 0.0]), np.ones(3)
    np.testing.assert_allclose(push_sum(PATH3, values, weights, 0), [3, 0, 0])
    np.testing.assert_allclose(push_sum(PATH3, values, weights, 1), [1.8, 1.125, 0.0])
    np.testing.assert_allclose(push_sum(PATH3, values, weights, 2), [45 / 31, 45 / 46, 18 / 31])
    # Several quantities at once, and the callback sees the same steps.
    two = np.c_[values, 2 * values]
    seen = {}
    out = push_sum(PATH3, two, weights, 2, callback=lambda t, s, w: seen.setdefault(t, s[:, 1] / w))
    np.testing.assert_allclose(out[:, 1], [90 / 31, 90 / 46, 36 / 31])
    np.testing.assert_allclose(seen[1], [3.6, 2.25, 0.0])


def test_transfer_matrix_conserves_mass():
    a = build_graph("barabasi-albert", 300, rng_or_seed=1, m=2)
    k = transfer_matrix(a)
    np.testing.assert_allclose(np.asarray(k.sum(axis=0)).ravel(), 1.0)
    assert np.all(k.diagonal() == 1.0 / (np.diff(a.indptr) + 1))


def test_push_sum_converges_and_never_widens():
    a = build_graph("erdos-renyi", 2000, rng_or_seed=5, mean_degree=10)
    assert connected_components(a)[0] == 1
    x = np.random.default_rng(0).normal(size=2000)
    spread = []
    est = push_sum(a, x, np.ones(2000), 80,
                   callback=lambda t, s, w: spread.append((np.max(s / w), np.min(s / w))))
    np.testing.assert_allclose(est, x.mean(), atol=1e-10)
    # Each estimate is a weighted average of the neighbours' previous estimates,
    # so the largest never grows and the smallest never shrinks.
    hi, lo = np.array(spread).T
    assert np.all(np.diff(hi) <= 1e-15) and np.all(np.diff(lo) >= -1e-15)
    # Weighted average: sum(values) / sum(weights).
    w = np.random.default_rng(1).random(2000)
    np.testing.assert_allclose(push_sum(a, x, w, 120), x.sum() / w.sum(), atol=1e-9)


def test_components_average_apart_and_unreached_members_have_no_estimate():
    a = _graph(5, [(0, 1), (2, 3)])  # 4 is isolated
    est = push_sum(a, np.array([1.0, 3.0, 10.0, 20.0, 7.0]), np.ones(5), 60)
    np.testing.assert_allclose(est, [2, 2, 15, 15, 7])
    # Counting members: weight 1 at member 0 only; 2 and 3 never hear of it.
    est = push_sum(a, np.ones(5), np.array([1.0, 0, 0, 0, 0]), 60)
    np.testing.assert_allclose(est[:2], 2.0)
    assert np.isnan(est[2:]).all()


def _second_eigenvalue(a):
    """|lambda_2| of push-sum's K, from the symmetric matrix it is similar to."""
    d = np.diff(a.indptr) + 1.0
    s = (a.astype(np.float64) + sp.identity(a.shape[0])).toarray() / np.sqrt(np.outer(d, d))
    ev = np.sort(np.abs(np.linalg.eigvalsh(s)))
    return ev[-2]


def test_clustered_ring_averages_slower_than_random_graph():
    # Same size and degree; the ring with little rewiring has a small spectral gap (Boyd et al.).
    n = 1500
    er = build_graph("erdos-renyi", n, rng_or_seed=2, mean_degree=10)
    ws = build_graph("watts-strogatz", n, rng_or_seed=2, k=10, p=0.02)
    assert connected_components(er)[0] == connected_components(ws)[0] == 1
    x = np.random.default_rng(3).normal(size=n)
    err = {name: np.abs(push_sum(a, x, np.ones(n), 30) - x.mean()).max() for name, a in (("er", er), ("ws", ws))}
    lam = {"er": _second_eigenvalue(er), "ws": _second_eigenvalue(ws)}
    assert lam["er"] < 0.8 < 0.95 < lam["ws"]
    assert err["er"] < 1e-3 * err["ws"]
    # The error decays like lambda_2^t: 30 more steps shrink it by about lambda_2^30.
    later = np.abs(push_sum(er, x, np.ones(n), 60) - x.mean()).max()
    assert later < err["er"] * lam["er"] ** 30 * 50


# ---------------------------------------------------------------- thresholds

KEYS = np.array([0.9, 0.1, 0.5, 0.7, np.nan, 0.3])
CAND = np.array([1, 1, 1, 1, 0, 1], dtype=bool)


def test_exact_threshold_and_errors_by_hand():
    assert exact_threshold(KEYS, CAND, 0.4) == 0.7  # M = floor(0.4 * 5) = 2: 0.9 and 0.7
    assert exact_threshold(KEYS, CAND, 0.5) == 0.7  # M = floor(2.5) = 2, as budget_count rounds
    assert exact_threshold(KEYS, CAND, 0.0) == np.inf
    assert exact_threshold(KEYS, CAND, 1.0) == 0.1
    np.testing.assert_array_equal(flip_mask(0.5, KEYS, CAND), [1, 0, 1, 1, 0, 0])
    err = threshold_error([0.7, 0.6, 0.2, np.inf, np.nan, 0.75], KEYS, CAND, 0.4)
    np.testing.assert_allclose(err.absolute[[0, 1, 2, 3, 5]], [0, 0.1, 0.5, np.inf, 0.05])
    np.testing.assert_array_equal(err.ranks, [0, 0, 2, 2, np.nan, 1])


def test_extreme_consensus_takes_diameter_steps():
    path = _graph(5, [(0, 1), (1, 2), (2, 3), (3, 4)])
    out, taken = extreme_consensus(path, [5.0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out, 5.0)
    assert taken == 4
    out, taken = extreme_consensus(path, [5.0, 1, 2, 3, 4], steps=2)
    np.testing.assert_array_equal(out, [5, 5, 5, 4, 4])  # 3 saw its neighbour 4
    out, _ = extreme_consensus(path, [5.0, 1, 2, 3, 4], how="min")
    np.testing.assert_array_equal(out, 1.0)


def _central_inversion(keys, cand, fraction, bins):
    """What gossip converges to, computed centrally: the same histogram and interpolation."""
    k = keys[cand]
    counts, edges = np.histogram(k, bins=bins, range=(k.min(), k.max()))
    target, above = fraction * k.size, 0.0
    for b in range(bins - 1, -1, -1):
        if above + counts[b] >= target:
            return edges[b + 1] - (target - above) / counts[b] * (edges[b + 1] - edges[b])
        above += counts[b]
    return k.min()


@pytest.fixture(scope="module")
def er_members():
    n = 10_000
    a = build_graph("erdos-renyi", n, rng_or_seed=3, mean_degree=10)
    assert connected_components(a)[0] == 1
    rng = np.random.default_rng(0)
    cand = rng.random(n) < 0.5
    keys = np.where(cand, rng.beta(2, 5, n), np.nan)  # skewed, like probability scores
    return a, keys, cand


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6])
def test_gossip_thresholds_match_the_coordinator_within_one_percent(er_members, fraction):
    a, keys, cand = er_members
    steps = [10, 20, 30, 50, 100]
    est = gossip_thresholds(a, keys, cand, fraction, steps=steps, bins=128)
    m = int(flip_mask(exact_threshold(keys, cand, fraction), keys, cand).sum())
    flips = np.array([flip_mask(e, keys, cand).sum() for e in est])
    assert np.all(np.abs(flips[steps.index(50):] - m) <= 0.01 * m), (m, flips)
    # More steps never hurt: members' distance to what gossip converges to
    # (an independent central computation) shrinks at every step count.
    limit = _central_inversion(keys, cand, fraction, 128)
    gap = np.array([np.abs(e - limit).mean() for e in est])
    assert np.all(np.diff(gap) <= 0) and gap[-1] < 1e-12, gap
    # ...and so does the error against the coordinator's threshold in ranks, up to the bin's rounding.
    ranks = np.array([threshold_error(e, keys, cand, fraction).ranks.mean() for e in est])
    assert np.all(np.diff(ranks) <= 1.0) and ranks[-1] <= 0.002 * cand.sum()


def test_gossip_steps_count_the_range_phase(er_members):
    a, keys, cand = er_members
    # Min and max consensus run side by side: the range is known after the slower of the two.
    d = max(extreme_consensus(a, np.where(cand, keys, -np.inf))[1],
            extreme_consensus(a, np.where(cand, keys, np.inf), how="min")[1])
    assert 3 <= d <= 10
    est = gossip_thresholds(a, keys, cand, 0.3, steps=[d - 1, d, 60], bins=64)
    assert np.isnan(est[0]).all() and not flip_mask(est[0], keys, cand).any()
    # At step d a member knows only its own key: a candidate aims inside its own bin,
    # a non-candidate has heard of no candidate's histogram yet (no flips: +inf).
    assert np.isfinite(est[1][cand]).all() and np.all(est[1][~cand] == np.inf)
    # A known key range skips that phase, and the same number of steps lands as close.
    known = gossip_thresholds(a, keys, cand, 0.3, steps=60, bins=64, key_range=(0.0, 1.0))
    m = int(flip_mask(exact_threshold(keys, cand, 0.3), keys, cand).sum())
    assert abs(flip_mask(known, keys, cand).sum() - m) <= 0.01 * m
    # One step count gives one row; blocks of bins do not change the result.
    np.testing.assert_allclose(gossip_thresholds(a, keys, cand, 0.3, steps=60, bins=64, block=7), est[2],
                               rtol=1e-12)


def test_gossip_edge_cases():
    a = _graph(6, [(0, 1), (1, 2), (3, 4)])  # 5 is isolated and no candidate
    keys = np.array([0.2, 0.2, 0.2, 0.9, np.nan, np.nan])
    cand = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    est = gossip_thresholds(a, keys, cand, 0.5, steps=60, bins=16)
    np.testing.assert_allclose(est[:3], 0.2)  # all keys equal: everyone flips
    np.testing.assert_allclose(est[3:5], 0.9)  # its own component: the one candidate
    assert est[5] == np.inf  # heard of no candidate: nobody to flip
    assert np.all(gossip_thresholds(a, keys, cand, 0.0, steps=60) == np.inf)
    np.testing.assert_array_equal(flip_mask(gossip_thresholds(a, keys, cand, 1.0, steps=60), keys, cand), cand)
    with pytest.raises(ValueError, match="fraction"):
        gossip_thresholds(a, keys, cand, 1.5, steps=10)
    with pytest.raises(ValueError, match="NaN"):
        gossip_thresholds(a, np.full(6, np.nan), cand, 0.5, steps=10)
