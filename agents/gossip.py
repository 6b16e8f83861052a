"""The coalition's threshold without a coordinator: members estimate it by gossip.

With a coordinator, the coalition publishes tau, the score (here: the ranking
*key*) of the M-th best candidate, M = ``budget_count(fraction, pool)``, and a
candidate flips iff its key >= tau (:func:`exact_threshold`; the exact rule in
:mod:`agents.decision` breaks equal scores by tie tickets, gossip ranks by one
1-D key the caller gives: the score, or the tie ticket for the ``random``
method). Without one, members talk only to their neighbours on a graph, and
each ends with its own estimate tau_i (:func:`gossip_thresholds`):

1. min/max consensus of the candidates' keys: every member learns the key range
   (exact after as many steps as the graph's diameter);
2. push-sum (Kempe, Dobra, Gehrke 2003) averages every member's one-hot
   histogram of its own key over ``bins`` equal-width bins of that range
   (non-candidates contribute zeros), together with the candidate share;
3. each member inverts its estimated histogram at the budget quantile,
   interpolating linearly inside the bin where the quantile falls.

Push-sum converges at a speed set by the graph's spectral gap (Boyd et al.
2006): fast on random graphs, slow on clustered rings. Everything is vectorised
over members (one array entry per member), deterministic (no randomness at
all) and memory-conscious: the histogram is pushed in blocks of bins, so 3·10^5
members x 256 bins never need more than a few (members x block) arrays. The
cost is one sparse product per step and bin, about 4 ns per edge and bin: on an
Erdos-Renyi graph of 3·10^5 members (mean degree 10), 50 steps took 81 s with
128 bins and 132 s with 256, 0.4 GB above the graph (benchmarks/graphs_gossip.py).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Callable, NamedTuple

import numpy as np
import scipy.sparse as sp

from .participation import neighbour_lists
from .protocol import budget_count

__all__ = [
    "ThresholdError",
    "exact_threshold",
    "extreme_consensus",
    "flip_mask",
    "gossip_thresholds",
    "push_sum",
    "threshold_error",
    "transfer_matrix",
]


def transfer_matrix(adjacency) -> sp.csr_matrix:
    """Push-sum's one step as a matrix K: ``new = K @ old``.

    Every member keeps one share and pushes one equal share to each neighbour,
    so member j's value is split into deg_j + 1 parts: K[i, j] = 1 / (deg_j + 1)
    for i a neighbour of j or j itself. Columns sum to 1, so sums and weights
    are conserved; the kept share makes the chain aperiodic (on a bipartite
    graph pure pushing would oscillate). An isolated member keeps everything.
    """
    indptr, indices = neighbour_lists(adjacency)
    n = indptr.size - 1
    b = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n, n))
    if b.diagonal().any():
        raise ValueError("adjacency must not have self loops")
    k = (b.T + sp.identity(n, format="csr")).tocsr()
    k.sort_indices()
    k.data = 1.0 / (np.diff(indptr) + 1.0)[k.indices]  # column j carries 1 / (deg_j + 1)
    return k


def _push(k, sums, weights, steps, callback):
    if callback is not None:
        callback(0, sums, weights)
    for t in range(1, steps + 1):
        sums = k @ sums
        weights = k @ weights
        if callback is not None:
            callback(t, sums, weights)
    return sums, weights


def _ratio(sums, weights):
    w = weights if sums.ndim == 1 else weights[:, None]
    w = np.broadcast_to(w, sums.shape)
    return np.divide(sums, w, out=np.full(sums.shape, np.nan), where=w > 0)


def push_sum(adjacency, values, weights, steps: int, *,
             callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """Synchronous push-sum: each member's estimate of sum(values) / sum(weights).

    ``values`` is (n,) or (n, d) (d quantities averaged at once), ``weights``
    (n,), non-negative. Each step every member keeps one share of its (sum,
    weight) and pushes equal shares to each neighbour (:func:`transfer_matrix`);
    the estimate is sum / weight. On a connected graph every estimate converges
    to sum(values) / sum(weights) (weights all 1: the average), with an error
    shrinking like lambda_2^t, lambda_2 the second largest eigenvalue modulus of
    K. A member no weight has reached yet has no estimate (NaN).

    ``callback(t, sums, weights)`` is called after step t = 0..steps (t = 0:
    before any message) to read intermediate estimates (``sums / weights``)
    without storing every step; the arrays are replaced each step, not mutated.
    Memory: two float64 arrays the shape of ``values`` plus K (nnz + n floats).
    """
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    sums = np.array(values, dtype=np.float64)
    weights = np.array(weights, dtype=np.float64)
    if sums.ndim not in (1, 2) or weights.shape != sums.shape[:1]:
        raise ValueError(f"values must be (n,) or (n, d) and weights (n,), got {sums.shape} and {weights.shape}")
    if np.any(weights < 0):
        raise ValueError("weights must be non-negative")
    k = transfer_matrix(adjacency)
    if k.shape[0] != sums.shape[0]:
        raise ValueError(f"adjacency has {k.shape[0]} members, values have {sums.shape[0]}")
    sums, weights = _push(k, sums, weights, steps, callback)
    return _ratio(sums, weights)


def extreme_consensus(adjacency, values, *, how: str = "max", steps: int | None = None):
    """Max (or min) consensus: each step every member takes the largest (smallest)
    value among itself and its neighbours. Returns ``(values, steps_taken)``.

    After as many steps as the graph's diameter every member holds its
    component's extreme exactly. With ``steps=None`` it runs until no value
    changes — a simulator's shortcut for "members know a bound on the diameter";
    ``steps_taken`` then counts the steps in which something changed.
    """
    if how not in ("max", "min"):
        raise ValueError(f"how must be 'max' or 'min', got {how!r}")
    op = np.maximum if how == "max" else np.minimum
    indptr, indices = neighbour_lists(adjacency)
    values = np.array(values, dtype=np.float64)
    deg = np.diff(indptr)
    rows = np.flatnonzero(deg > 0)
    starts = indptr[:-1][rows]  # segments of non-empty rows tile indices exactly
    taken = 0
    while steps is None or taken < steps:
        new = values.copy()
        if rows.size:
            new[rows] = op(values[rows], op.reduceat(values[indices], starts))
        if steps is None and np.array_equal(new, values):
            break
        values = new
        taken += 1
    return values, taken


def exact_threshold(keys, is_candidate, fraction: float) -> float:
    """The coordinator's threshold: the key of the M-th best candidate (+inf if M = 0),
    M = ``budget_count(fraction, pool)`` (rounded down, as the exact rule)."""
    keys, cand = _check_keys(keys, is_candidate)
    pool = keys[cand]
    m = budget_count(float(fraction), pool.size)
    if m == 0:
        return float("inf")
    return float(np.partition(pool, pool.size - m)[pool.size - m])


def flip_mask(thresholds, keys, is_candidate) -> np.ndarray:
    """Who flips: candidates whose key reaches their own threshold (NaN: no estimate, no flip)."""
    keys, cand = _check_keys(keys, is_candidate)
    with np.errstate(invalid="ignore"):
        return cand & (keys >= np.asarray(thresholds, dtype=np.float64))


class ThresholdError(NamedTuple):
    """Per member: |tau_i - tau|, and how many candidates lie between tau_i and tau."""

    absolute: np.ndarray
    ranks: np.ndarray


def threshold_error(thresholds, keys, is_candidate, fraction: float) -> ThresholdError:
    """How far each member's threshold is from the coordinator's, in key units and in
    ranks (|#candidates with key >= tau_i - #candidates with key >= tau|: how many
    flips member i's estimate adds or misses if everyone used it). NaN: no estimate."""
    keys, cand = _check_keys(keys, is_candidate)
    tau = exact_threshold(keys, cand, fraction)
    est = np.asarray(thresholds, dtype=np.float64)
    pool = np.sort(keys[cand])

    def above(x):
        return pool.size - np.searchsorted(pool, x, side="left")

    with np.errstate(invalid="ignore"):
        absolute = np.where(est == tau, 0.0, np.abs(est - tau))
    ranks = np.abs(above(est) - above(tau)).astype(np.float64)
    ranks[np.isnan(est)] = np.nan
    return ThresholdError(absolute, ranks)


def _check_keys(keys, is_candidate):
    keys = np.asarray(keys, dtype=np.float64)
    cand = np.asarray(is_candidate, dtype=bool)
    if keys.ndim != 1 or cand.shape != keys.shape:
        raise ValueError(f"keys and is_candidate must be 1-D of the same length, got {keys.shape}, {cand.shape}")
    if np.isnan(keys[cand]).any():
        raise ValueError("candidates' keys must not be NaN")
    return keys, cand


def gossip_thresholds(adjacency, keys, is_candidate, fraction: float, *, steps, bins: int = 128,
                      key_range: tuple[float, float] | None = None, block: int = 32) -> np.ndarray:
    """Each member's estimate of the coalition's threshold after ``steps`` gossip steps.

    ``steps`` counts every step, the key-range consensus included: without
    ``key_range`` the first D steps are min/max consensus (D: until no member's
    range changes, at most the diameter; see :func:`extreme_consensus`) and the
    remaining ``steps - D`` are push-sum; a member has no estimate (NaN) before
    step D. A known ``key_range`` (e.g. (0, 1) for probabilities or tickets)
    skips that phase; keys outside it count in the edge bins. ``steps`` may be a
    sequence: the result is then one row per entry, computed in one run.

    Returns float64 (n,) (or (len(steps), n)): the threshold each member
    would apply; +inf where the member believes no candidate should flip
    (``fraction`` 0, or it has heard of no candidate). Use :func:`flip_mask`.

    Accuracy: once push-sum has converged (error ~ lambda_2^t of the graph), the
    only error is the linear interpolation inside the bin holding tau: at most
    the number of candidates in that bin, and about the square root of it for
    keys with a smooth density. It grows when keys bunch up (many equal scores,
    one outlier stretching the range so most keys share a few bins): use more
    bins or a known ``key_range`` then. Members cannot know n, so each aims at
    ``fraction`` x (its estimate of the pool), not at the rounded-down count M:
    in the limit the flips differ from M by less than one.
    """
    keys, cand = _check_keys(keys, is_candidate)
    n = keys.size
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    scalar = isinstance(steps, Integral)
    record = np.atleast_1d(np.asarray(steps))
    if record.dtype.kind not in "iu" or record.ndim != 1 or np.any(record < 0):
        raise ValueError(f"steps must be a non-negative integer or a sequence of them, got {steps!r}")
    k = transfer_matrix(adjacency)
    if k.shape[0] != n:
        raise ValueError(f"adjacency has {k.shape[0]} members, keys have {n}")

    # 1. The key range each member knows.
    if key_range is None:
        lo, d_lo = extreme_consensus(adjacency, np.where(cand, keys, np.inf), how="min")
        hi, d_hi = extreme_consensus(adjacency, np.where(cand, keys, -np.inf), how="max")
        spent = max(d_lo, d_hi)  # both run side by side in the same messages
    else:
        lo, hi = (np.full(n, float(x)) for x in key_range)
        if not hi[0] >= lo[0]:
            raise ValueError(f"key_range must be (low, high) with low <= high, got {key_range}")
        spent = 0
    known = np.isfinite(lo) & np.isfinite(hi)  # heard of at least one candidate
    width = np.where(known, (hi - lo) / bins, 0.0)
    # Each candidate's bin by its own (= its component's) range; column 0 is the top bin.
    holders = np.flatnonzero(cand)
    w_h = width[holders]
    pos = np.zeros(holders.size)
    np.divide(keys[holders] - lo[holders], w_h, out=pos, where=w_h > 0)
    top_down = np.zeros(n, dtype=np.int64)
    top_down[holders] = bins - 1 - np.clip(np.floor(pos), 0, bins - 1).astype(np.int64)

    push_steps = record - spent
    out = np.full((record.size, n), np.nan)
    active = push_steps >= 0
    targets = np.zeros((record.size, n))
    running = np.zeros((record.size, n))
    found = np.zeros((record.size, n), dtype=bool)

    for c0 in range(0, bins, block):
        c1 = min(bins, c0 + block)
        first = c0 == 0
        width_cols = (c1 - c0) + first  # the first block also carries the candidate share
        values = np.zeros((n, width_cols))
        if first:
            values[:, 0] = cand
        inside = holders[(top_down[holders] >= c0) & (top_down[holders] < c1)]
        values[inside, top_down[inside] - c0 + first] = 1.0

        def invert(t, sums, weights, c0=c0, first=first):
            for r in np.flatnonzero(active & (push_steps == t)):
                est = _ratio(sums, weights)
                if first:
                    targets[r] = fraction * np.nan_to_num(est[:, 0])
                    none = ~known | (targets[r] <= 0)
                    out[r, none] = np.inf
                    found[r] = none
                    est = est[:, 1:]
                est = np.nan_to_num(est)
                cum = running[r][:, None] + np.cumsum(est, axis=1)
                cross = (cum >= targets[r][:, None]) & ~found[r][:, None]
                who = np.flatnonzero(cross.any(axis=1))
                col = np.argmax(cross[who], axis=1)
                h = est[who, col]
                share = np.clip((targets[r][who] - (cum[who, col] - h)) / h, 0.0, 1.0)
                upper = hi[who] - (c0 + col) * width[who]  # upper edge of that bin
                out[r, who] = upper - share * width[who]
                found[r, who] = True
                running[r] = cum[:, -1]

        if active.any():
            _push(k, values, np.ones(n), int(push_steps[active].max()), invert)
    # Rounding can leave the whole histogram a hair short of the target: everyone flips.
    rest = active[:, None] & ~found
    out[rest] = np.broadcast_to(lo, out.shape)[rest]
    return out[0] if scalar else out
