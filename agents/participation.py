"""Who takes part in a round: the local participation rules, vectorised over users.

A user decides from what it can see: the share of its neighbours that act
(Granovetter's threshold model, Watts's cascades on a graph), or what acting
bought it and what it costs (the benefit-cost rule, with free riding as in
Sigg et al., "Decline Now"). Committed organisers always act; imperfect members
comply with a probability, drop out, see noisy scores or a stale signal.

Every function takes one entry per user (positions ``0..n-1``), so one user on a
device, a shard or a million users run the same code. Graphs are symmetric
``scipy.sparse`` CSR adjacency matrices (bool or 0/1, no self loops); ``None``
means everyone sees everyone.

Randomness comes only from *tickets* (:func:`agents.decision.user_tickets`):
uniforms in [0, 1) that are a pure function of (key, user id), passed in by the
caller, one per user. A user's draw therefore never depends on which other
users are drawn with it, so a Flower node holding K users, a shard or the
vectorised engine over every user get the same draws for the same seed. A draw
made afresh each round uses the round's key, :func:`round_key` (the stream's
key mixed with the round number); a normal draw is the inverse normal CDF of a
ticket (:func:`normal_draws`).
"""

from __future__ import annotations

import math
from collections import deque
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr, ndtri

from .decision import user_tickets
from .errors import ConfigError

__all__ = [
    "ORGANISER_CHOICES",
    "SignalHistory",
    "benefit_cost_round",
    "benefit_cost_rule",
    "comply",
    "degrees",
    "linear_favourable",
    "dropout",
    "granovetter_equilibrium",
    "granovetter_fixed_point",
    "mix_key",
    "neighbour_lists",
    "neighbour_share",
    "noisy_scores",
    "normal_draws",
    "organisers",
    "published_gain",
    "round_key",
    "threshold_rule",
]

ORGANISER_CHOICES = ("random", "most-connected")

_MASK64 = 2**64 - 1


def mix_key(key: int, *values: int) -> int:
    """A 64-bit ticket key derived from ``key`` and non-negative integers ``values``.

    Each value is folded in by SplitMix64's step: ``z = (z + (value + 1) * golden)
    mod 2^64``, then the finaliser (the same constants as
    :func:`agents.decision.user_tickets`). Pure and documented, so any backend
    (or a reader with pencil and paper) derives the same key: a round's key is
    ``mix_key(stream_key, round)`` (:func:`round_key`), a method's within a round
    ``mix_key(stream_key, round, method_index)``.
    """
    z = int(key) & _MASK64
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"key values must be non-negative integers, got {value!r}")
        z = (z + (int(value) + 1) * 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z = z ^ (z >> 31)
    return z


def round_key(key: int, round_: int) -> int:
    """The key of a per-round draw: the stream's ``key`` mixed with the round number."""
    return mix_key(key, round_)


def normal_draws(user_ids, key: int, *, mean: float = 0.0, sd: float = 1.0) -> np.ndarray:
    """Normal(mean, sd) draws, one per user, fixed by (key, user id): the inverse normal
    CDF of each user's ticket, taken at the middle of the ticket's 2^-53 cell (so never
    at 0, where it would be -inf)."""
    tickets = user_tickets(user_ids, key)
    return mean + sd * ndtri(tickets + 2.0**-54)


def neighbour_lists(adjacency) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of a square CSR adjacency, explicit zeros left out:
    user i's neighbours are ``indices[indptr[i]:indptr[i + 1]]``.

    Only the pattern matters (an edge is a stored non-zero), so a bool, 0/1
    integer or float matrix gives the same neighbourhoods.
    """
    if not sp.issparse(adjacency):
        raise ValueError(f"adjacency must be a scipy.sparse matrix or None, got {type(adjacency).__name__}")
    a = adjacency if adjacency.format == "csr" else sp.csr_matrix(adjacency)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {a.shape}")
    if a.nnz and not np.all(a.data != 0):
        a = a.copy()
        a.eliminate_zeros()
    return a.indptr, a.indices


def degrees(adjacency) -> np.ndarray:
    """Number of neighbours of each user (int64, one per user)."""
    indptr, _ = neighbour_lists(adjacency)
    return np.diff(indptr).astype(np.int64)


def neighbour_share(adjacency, acting) -> np.ndarray:
    """Share of each user's neighbours that act (float64, one per user).

    This is what a user observes before deciding; a user with no neighbours sees
    nobody act (share 0), so on a graph only a seed can start anything there.
    With ``adjacency=None`` everyone sees everyone and the share is that of the
    whole population, *counting the user itself* — Granovetter's all-to-all
    model, where "the proportion of others who act" is taken over everyone so
    that the dynamics is the map r -> F(r) of the threshold distribution F.
    """
    acting = np.asarray(acting, dtype=bool)
    if acting.ndim != 1:
        raise ValueError(f"acting must be 1-D, got shape {acting.shape}")
    n = acting.size
    if adjacency is None:
        share = acting.mean() if n else 0.0
        return np.full(n, share, dtype=np.float64)
    indptr, indices = neighbour_lists(adjacency)
    if indptr.size - 1 != n:
        raise ValueError(f"adjacency has {indptr.size - 1} users, acting has {n}")
    # Counting by a running sum over the neighbour lists works for any dtype of
    # the matrix and never copies it (a bool @ float product would).
    running = np.concatenate(([0], np.cumsum(acting[indices], dtype=np.int64)))
    counts = running[indptr[1:]] - running[indptr[:-1]]
    deg = np.diff(indptr)
    return np.divide(counts, deg, out=np.zeros(n, dtype=np.float64), where=deg > 0)


def threshold_rule(thresholds, seen_share, acting, *, leave: bool = False) -> np.ndarray:
    """Granovetter's rule: a user acts once the share it sees reaches its threshold.

    Without ``leave`` participation is sticky (who acts keeps acting): the
    cascade only grows, as in Granovetter's and Watts's models. With ``leave``
    a user also stops when the share it sees falls below its threshold, so
    participation can shrink again when others drop out.
    A threshold <= 0 means acting unprompted; a threshold > 1 means never.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    seen_share = np.asarray(seen_share, dtype=np.float64)
    acting = np.asarray(acting, dtype=bool)
    if not thresholds.shape == seen_share.shape == acting.shape:
        raise ValueError("thresholds, seen_share and acting must have the same shape, got "
                         f"{thresholds.shape}, {seen_share.shape}, {acting.shape}")
    reached = seen_share >= thresholds
    return reached if leave else acting | reached


def granovetter_equilibrium(thresholds, adjacency=None, *, max_steps: int = 10_000,
                            leave: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run the threshold rule from "only users with threshold <= 0 act" to a fixed point.

    Returns ``(acting, trajectory)``: the final mask and the share acting after
    each step, starting with the initial share (so ``trajectory[0]`` is the
    unprompted share and ``trajectory[-1]`` the final one). Synchronous updates:
    everyone decides on what the previous step showed. Without ``leave`` the
    acting set only grows, so a fixed point is reached in at most n steps; with
    ``leave`` the dynamics may cycle, and it stops after ``max_steps``.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1:
        raise ValueError(f"thresholds must be 1-D, got shape {thresholds.shape}")
    if np.isnan(thresholds).any():
        raise ValueError("thresholds must not contain NaN")
    acting = thresholds <= 0
    trajectory = [acting.mean() if acting.size else 0.0]
    for _ in range(max_steps):
        new = threshold_rule(thresholds, neighbour_share(adjacency, acting), acting, leave=leave)
        if np.array_equal(new, acting):
            break
        acting = new
        trajectory.append(acting.mean())
    return acting, np.asarray(trajectory, dtype=np.float64)


def granovetter_fixed_point(mean: float, sigma: float, *, tol: float = 1e-13,
                            max_iter: int = 1_000_000) -> float:
    """Theoretical final share for thresholds ~ Normal(mean, sigma), all-to-all.

    In an infinite population the share acting follows r <- Phi((r - mean) /
    sigma), where Phi is the standard normal CDF (the share whose threshold is at
    most r). From r = 0 it increases monotonically to the *smallest* fixed point,
    which is what the population reaches. Near a critical sigma the map nearly
    touches the diagonal and the iteration slows down (a bottleneck), hence the
    generous ``max_iter``.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = 0.0
    for _ in range(max_iter):
        nxt = float(ndtr((r - mean) / sigma))
        if abs(nxt - r) <= tol:
            return nxt
        r = nxt
    return r


def benefit_cost_rule(gain, cost, acting, *, free_ride: bool = False,
                      free_ride_gain=None) -> tuple[np.ndarray, np.ndarray]:
    """Act when what acting brings beats what it costs; return ``(participating, free_riding)``.

    ``gain`` is each user's expected gain from acting, as the last rounds showed
    it (the change of the minority's favourable-outcome rate, or of the user's
    own outcome: the caller computes it); ``cost`` is the user's personal cost.
    ``acting`` is who acted last round: a user exactly indifferent (gain equal to
    cost) keeps doing what it did, so ties never make users flicker.

    Without ``free_ride`` a user participates iff ``gain > cost``. With it, a
    user weighs only what its own action adds: ``gain - free_ride_gain`` against
    ``cost``, where ``free_ride_gain`` is the gain it keeps without acting (for
    instance the group's rate change attributable to the others). A user who
    would act under the first rule but not under the second is *free riding*:
    it stops (or never starts) acting and still keeps the gain. Both masks are
    returned so that the benefits of participating and of free riding can be
    reported separately.
    """
    gain = np.asarray(gain, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    acting = np.asarray(acting, dtype=bool)
    gain, cost = np.broadcast_arrays(gain, cost)
    if gain.shape != acting.shape:
        raise ValueError(f"gain and cost must match acting's shape {acting.shape}, got {gain.shape}")

    def beats(benefit):
        return (benefit > cost) | (acting & (benefit == cost))

    naive = beats(gain)
    if not free_ride:
        return naive, np.zeros_like(naive)
    if free_ride_gain is None:
        raise ValueError("free_ride=True needs free_ride_gain (the gain a user keeps without acting)")
    kept = np.broadcast_to(np.asarray(free_ride_gain, dtype=np.float64), gain.shape)
    participating = beats(gain - kept)
    return participating, naive & ~participating


PUBLIC_CHOICES = ("own-outcome", "group-rates")


def published_gain(public, n: int, *, own=None, base_own=None, gap=None, base_gap=None) -> np.ndarray:
    """What one published model shows each of ``n`` members it gained over the base model.

    ``public`` says what a member can see (:data:`PUBLIC_CHOICES`): ``own-outcome``,
    its own favourable probability under the published model (``own``) against the
    base model's (``base_own``), one per member; ``group-rates``, the favourable-rate
    gap minority minus majority the firm publishes (``gap``) against the base
    model's (``base_gap``), one number for everyone. The gain is the sum of what is
    seen; nothing published yet (``own`` and ``gap`` None, round 1 publishes the base
    model): zero. The vectorised model and a Flower node both call this one.
    """
    gain = np.zeros(int(n))
    if "own-outcome" in public and own is not None:
        gain = gain + (np.asarray(own, dtype=np.float64) - np.asarray(base_own, dtype=np.float64))
    if "group-rates" in public and gap is not None:
        gain = gain + (float(gap) - float(base_gap))
    return gain


def linear_favourable(X, coef, intercept, *, block: int = 65536) -> np.ndarray:
    """Each row's probability of the favourable label under a published logistic model
    (``coef`` over the features, ``intercept``): ``expit(x . coef + intercept)``, as
    scikit-learn's ``predict_proba`` column of label 1. Each row's dot product is summed
    on its own (blocks of ``block`` rows), so a node holding K users gets the very bits
    the vectorised model gets for them over every user."""
    from scipy.special import expit

    X = np.asarray(X, dtype=np.float64)
    coef = np.asarray(coef, dtype=np.float64).ravel()
    out = np.empty(X.shape[0])
    for start in range(0, X.shape[0], block):
        out[start:start + block] = (X[start:start + block] * coef[None, :]).sum(axis=1)
    return expit(out + float(np.asarray(intercept, dtype=np.float64).ravel()[0]))


def benefit_cost_round(gains, cost, acting, *, free_ride: bool = False,
                       participants: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One round of the benefit-cost rule from the gains of the last ``memory`` rounds.

    ``gains`` holds one :func:`published_gain` array per remembered round (the caller
    keeps the last ``memory`` of them, this round's included); a member's gain is their
    mean. With ``free_ride`` a member reckons its own action adds only 1/N of what the
    N ``participants`` of last round achieved and keeps the rest without acting
    (:func:`benefit_cost_rule`'s ``free_ride_gain``). Returns ``(participating,
    free_riding)``, as :func:`benefit_cost_rule`.
    """
    gain = np.mean(np.stack([np.asarray(g, dtype=np.float64) for g in gains]), axis=0)
    kept = gain * (1.0 - 1.0 / max(1, int(participants))) if free_ride else None
    return benefit_cost_rule(gain, cost, acting, free_ride=free_ride, free_ride_gain=kept)


def organisers(n: int, count: int, *, how: str = "random", adjacency=None, tickets) -> np.ndarray:
    """The committed organisers (always act), as a mask over ``n`` users.

    ``tickets`` holds one organiser ticket per user (:func:`agents.decision.user_tickets`).
    ``how="random"``: the ``count`` users with the smallest tickets (a uniform choice
    without replacement; two equal 53-bit tickets among n users have probability
    ~n^2 * 2^-54, and would be ordered by position).
    ``how="most-connected"``: the ``count`` users with the most neighbours, equal
    degrees ordered by ticket (smallest first); with ``adjacency=None`` all degrees
    are equal and this is random.
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ConfigError(f"number of users must be a non-negative integer, got {n!r}")
    if isinstance(count, bool) or not isinstance(count, Integral) or not 0 <= count <= n:
        raise ConfigError(f"organiser count must be an integer in [0, {n}], got {count!r}")
    if how not in ORGANISER_CHOICES:
        raise ConfigError(f"unknown organiser choice {how!r}; allowed: {', '.join(ORGANISER_CHOICES)}")
    tickets = np.asarray(tickets, dtype=np.float64)
    if tickets.shape != (n,):
        raise ValueError(f"tickets must have one entry per user ({n}), got shape {tickets.shape}")
    mask = np.zeros(n, dtype=bool)
    if how == "random" or adjacency is None:
        mask[np.argsort(tickets, kind="stable")[:count]] = True
        return mask
    deg = degrees(adjacency)
    if deg.size != n:
        raise ValueError(f"adjacency has {deg.size} users, expected {n}")
    order = np.lexsort((tickets, -deg))  # primary: degree (descending), then ticket
    mask[order[:count]] = True
    return mask


def _draw(tickets, probability: float, name: str) -> np.ndarray:
    if not 0.0 <= probability <= 1.0 or math.isnan(probability):
        raise ConfigError(f"{name} probability must be in [0, 1], got {probability}")
    # Tickets lie in [0, 1): probability 1 always holds, probability 0 never.
    return np.asarray(tickets, dtype=np.float64) < probability


def comply(tickets, probability: float, *, among=None) -> np.ndarray:
    """Who follows the collective's instruction this round: each user independently
    with ``probability`` (its compliance ticket < probability) -- imperfect members.
    ``among``: a mask of the users asked (the others never comply)."""
    draw = _draw(tickets, probability, "compliance")
    return draw if among is None else np.asarray(among, dtype=bool) & draw


def dropout(acting, probability: float, tickets) -> np.ndarray:
    """Who is still acting after each acting user drops out independently with
    ``probability`` (its dropout ticket < probability); returns the users who stay."""
    acting = np.asarray(acting, dtype=bool)
    draw = _draw(tickets, probability, "dropout")
    if draw.shape != acting.shape:
        raise ValueError(f"tickets must match acting's shape {acting.shape}, got {draw.shape}")
    return acting & ~draw


def noisy_scores(scores, sd: float, tickets) -> np.ndarray:
    """Scores as a member sees them: plus Normal(0, sd) noise, the inverse normal CDF
    of each user's noise ticket (coordination noise, Karan et al. "Sync or Sink").
    ``tickets`` broadcasts against ``scores``. NaN (non-candidates) stays NaN."""
    if not sd >= 0:
        raise ConfigError(f"score noise sd must be >= 0, got {sd}")
    scores = np.asarray(scores, dtype=np.float64)
    if not sd > 0:
        return scores.copy()
    return scores + sd * ndtri(np.asarray(tickets, dtype=np.float64) + 2.0**-54)


class SignalHistory:
    """The last signals published, so a member can act on a stale one.

    ``push`` the signal of each round; ``at(lag)`` is the signal ``lag`` rounds
    before the latest (``at(0)`` the latest), or ``initial`` while the history
    is shorter than that (nothing was published yet).
    """

    def __init__(self, max_lag: int = 0, initial=None):
        if isinstance(max_lag, bool) or not isinstance(max_lag, Integral) or max_lag < 0:
            raise ConfigError(f"signal lag must be a non-negative integer, got {max_lag!r}")
        self.max_lag = int(max_lag)
        self.initial = initial
        self._signals = deque(maxlen=self.max_lag + 1)

    def push(self, signal) -> None:
        self._signals.append(signal)

    def at(self, lag: int):
        if not 0 <= lag <= self.max_lag:
            raise ValueError(f"lag must be in [0, {self.max_lag}], got {lag}")
        return self._signals[-1 - lag] if lag < len(self._signals) else self.initial

    def __len__(self) -> int:
        return len(self._signals)
