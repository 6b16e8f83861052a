"""The collective's local decision rule, vectorised over any set of users.

Every function here takes arrays with one entry per user, so the same code
decides for one user on a device, a shard inside a Flower node, or a million
users in a study. Nothing depends on how users are grouped: randomness comes
from *tickets*, uniform numbers that are a pure function of (key, user id).

The rule (arXiv 2508.15374): members of the collective whose label is 0 are
candidates; the coalition publishes a threshold, the score of the M-th best
candidate; each candidate flips its label to 1 iff its own score reaches it.
Ties in score are broken by the tie ticket, so exactly ``min(M, pool)`` flip
(tickets are 53-bit uniforms: two users share one with probability ~1e-16·n²).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .protocol import budget_count, relabel  # what a budget and a flip mean travels with the grid

__all__ = [
    "Threshold",
    "TicketHolder",
    "budget_count",
    "coalition_threshold",
    "decide",
    "member_count",
    "membership_cutoff",
    "relabel",
    "stream_key",
    "user_tickets",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def stream_key(seed_sequence: np.random.SeedSequence) -> int:
    """A 64-bit ticket key drawn from a spawned ``SeedSequence``."""
    return int(seed_sequence.generate_state(1, dtype=np.uint64)[0])


def user_tickets(user_ids, key: int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per user, fixed by ``(key, user id)``.

    A counter-based generator (SplitMix64 finaliser): unlike drawing from a
    shared ``Generator``, a user's ticket does not depend on which other users
    are drawn with it, so every backend and sharding gives the same tickets.
    """
    ids = np.asarray(user_ids)
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0):
        raise ValueError("user ids must be non-negative integers")
    z = ids.astype(np.uint64) * _GOLDEN + np.uint64(key % 2**64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class TicketHolder:
    """Mixin for a set of users (``user_ids``) that knows the collective's two ticket keys
    (``membership_key``, ``tie_key``): a node's users, or every user of a simulated world."""

    @property
    def member_tickets(self) -> np.ndarray:
        return user_tickets(self.user_ids, self.membership_key)

    @property
    def tie_tickets(self) -> np.ndarray:
        return user_tickets(self.user_ids, self.tie_key)


def member_count(alpha: float, n_minority: int) -> int:
    """Collective size for a fraction ``alpha`` of the minority (rounded half up)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return min(n_minority, math.floor(alpha * n_minority + 0.5))


def membership_cutoff(member_tickets, count: int) -> float:
    """Ticket cutoff so that exactly ``count`` users have ``ticket < cutoff``.

    Collectives are nested: the members at a smaller alpha are also members
    at every larger alpha, as when more people join one campaign.
    """
    tickets = np.asarray(member_tickets, dtype=np.float64)
    if count <= 0:
        return 0.0
    if count >= tickets.size:
        return math.inf
    return float(np.partition(tickets, count)[count])


class Threshold(NamedTuple):
    """The coalition signal: the (score, tie ticket) of the M-th best candidate."""

    score: float
    ticket: float

    @classmethod
    def none(cls) -> "Threshold":
        """A threshold no candidate reaches (M = 0)."""
        return cls(math.inf, math.inf)


def coalition_threshold(scores, tickets, m: int) -> Threshold:
    """The M-th best candidate's (score, ticket), best = highest score, then ticket."""
    scores = np.asarray(scores, dtype=np.float64)
    tickets = np.asarray(tickets, dtype=np.float64)
    if scores.shape != tickets.shape:
        raise ValueError("scores and tickets must have the same shape")
    if np.isnan(scores).any():
        raise ValueError("scores must not contain NaN")
    n = scores.size
    if m <= 0 or n == 0:
        return Threshold.none()
    m = min(m, n)
    order = np.lexsort((tickets, scores))  # ascending: last key is primary
    i = order[n - m]
    return Threshold(float(scores[i]), float(tickets[i]))


def decide(scores, tickets, threshold: Threshold, *, eligible) -> np.ndarray:
    """Each user's local decision: flip iff eligible and (score, ticket) >= threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    tickets = np.asarray(tickets, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    t_score, t_ticket = threshold
    # NaN scores (non-candidates) compare False everywhere, so they never flip.
    reaches = (scores > t_score) | ((scores == t_score) & (tickets >= t_ticket))
    return eligible & reaches
