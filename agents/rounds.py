"""Many rounds on a node: what a member decides each round, from its own tickets only.

The dynamics model (``simulations.dynamics``) decides, round by round, who of the
collective acts (participation, organisers, dropout), what each candidate sees
(its score plus noise) and whether it follows the signal (compliance). Every one
of those draws is a ticket of (key, user id) (:mod:`agents.participation`), so a
Flower node holding K users decides here exactly what the vectorised model
decides for them, with the same functions:

* :class:`RoundSettings`: the dynamics settings and ticket keys a node file
  carries (JSON text, no pickle);
* the **user half** (:func:`participate`, :func:`noisy`, :func:`complies`): a
  node's users' participation per alpha from the share the coordinator
  published for last round, their noisy scores and who complies;
* the **coordinator half** (:func:`organiser_cutoffs`, :func:`seen_shares`):
  which members are organisers (published as one ticket cutoff per alpha, as
  membership is) and the share of participants each member sees next round;
* the **coordinator's graph** (:class:`MembersGraph`, :func:`graph_organisers`,
  :func:`gossip_estimates`): with ``seen = "neighbours"``, most-connected
  organisers or gossip, the coordinator holds the members' graph and computes
  each member's neighbours' share, the organisers by degree, and gossip's
  per-member threshold estimates with :func:`agents.gossip.gossip_thresholds`,
  the code the vectorised model calls (gossip is simulated, not relayed: see
  docs/federated.md, "Dynamics on Flower").

Supported on a node: participation ``fixed``, ``threshold`` (``seen``
everyone or neighbours) and ``benefit-cost`` (each member's gain from the models
the firm publishes, :func:`agents.participation.published_gain`; flags then have
one row per cell, :attr:`RoundSettings.per_cell`), random or most-connected organisers, coordination
``coordinator``, ``reach`` (:func:`reached`, with ``hops``) or ``gossip``,
``staleness`` (the coordinator keeps each member's signals and sends the one of
``staleness`` rounds ago), compliance, dropout and score noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from numbers import Integral

import numpy as np

from . import participation as rules
from .decision import user_tickets
from .errors import DataError

__all__ = ["COORDINATION_ON_NODES", "MembersGraph", "PARTICIPATION_ON_NODES", "RoundSettings", "complies",
           "fold_deltas", "gossip_estimates", "graph_organisers", "noisy", "organiser_count", "organiser_cutoffs",
           "participate", "reached", "seen_shares", "threshold_errors"]

PARTICIPATION_ON_NODES = ("fixed", "threshold", "benefit-cost")
COORDINATION_ON_NODES = ("coordinator", "reach", "gossip")


@dataclass(frozen=True)
class RoundSettings:
    """What a node needs for the dynamics' user half: the settings and the ticket keys
    (:class:`simulations.dynamics.DrawKeys`) of the run's seed."""

    participation: str = "fixed"
    threshold_mean: float = 0.25
    threshold_sd: float = 0.1
    leave: bool = False
    organisers: float | int = 0  # an int count, or a fraction of the members
    compliance: float = 1.0
    dropout: float = 0.0
    score_noise: float = 0.0
    threshold_key: int = 0
    organisers_key: int = 0
    dropout_key: int = 0
    compliance_key: int = 0
    noise_key: int = 0
    seen: str = "everyone"  # or "neighbours": the coordinator publishes each member's own share
    organisers_by: str = "random"  # or "most-connected": the coordinator publishes the organisers' ids
    coordination: str = "coordinator"  # or "gossip": simulated by the coordinator over the members' graph
    gossip_steps: int = 30
    gossip_bins: int = 256
    hops: int = 1  # reach: the coordinator reaches participants within hops of a participating organiser
    staleness: int = 0  # members act on the signal of this many rounds ago (the coordinator keeps them)
    cost_mean: float = 0.02  # benefit-cost: each member's cost, a normal draw of its cost ticket
    cost_sd: float = 0.01
    cost_key: int = 0
    free_ride: bool = False
    memory: int = 1  # rounds of published models a member's gain averages
    public: tuple = ("own-outcome", "group-rates")  # what the published models show a member

    def __post_init__(self):
        object.__setattr__(self, "public", tuple(self.public))

    @property
    def per_cell(self) -> bool:
        """Whether participation is decided per cell (benefit-cost: each cell's model gives each
        member its own gain) rather than per alpha."""
        return self.participation == "benefit-cost"

    def rows_of(self, grid) -> np.ndarray:
        """Each cell's row of the participation flags: its alpha's, or (per cell) its own."""
        return np.arange(len(grid)) if self.per_cell else np.asarray(grid.alpha_of)

    def row_alphas(self, grid, n_alphas: int) -> np.ndarray:
        """Each participation row's alpha index."""
        return np.asarray(grid.alpha_of) if self.per_cell else np.arange(n_alphas)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, source: str = "node file") -> "RoundSettings":
        try:
            data = json.loads(text)
            settings = cls(**data)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: dynamics settings do not parse ({exc}); allowed: the JSON prepare_run "
                            "writes") from None
        if not set(settings.public) <= set(rules.PUBLIC_CHOICES) or not isinstance(settings.memory, int) or \
                settings.memory < 1:
            raise DataError(f"{source}: public {list(settings.public)!r}, memory {settings.memory!r}; allowed: public "
                            f"among {', '.join(rules.PUBLIC_CHOICES)}, memory an integer >= 1")
        for name, allowed in (("participation", PARTICIPATION_ON_NODES), ("seen", ("everyone", "neighbours")),
                              ("organisers_by", ("random", "most-connected")), ("coordination", COORDINATION_ON_NODES)):
            if getattr(settings, name) not in allowed:
                raise DataError(f"{source}: {name} {getattr(settings, name)!r}; allowed: {', '.join(allowed)}")
        return settings

    @property
    def uses_graph(self) -> bool:
        """Whether the coordinator needs the members' graph."""
        return (self.participation == "threshold" and self.seen == "neighbours") or \
            self.organisers_by == "most-connected" or self.coordination in ("reach", "gossip")


def organiser_count(n_members: int, organisers) -> int:
    """How many organisers a collective of ``n_members`` has: an int count (at most
    everyone), or a fraction of the members rounded half up (at least one when > 0)."""
    if isinstance(organisers, Integral) and not isinstance(organisers, bool):
        return min(int(organisers), n_members)
    return min(n_members, max(1 if organisers > 0 else 0, math.floor(organisers * n_members + 0.5)))


def organiser_cutoffs(member_tickets, organiser_tickets, cutoffs, organisers) -> np.ndarray:
    """Coordinator: one organiser cutoff per alpha. The organisers at alpha are the
    members whose organiser ticket is <= the cutoff: the ``organiser_count`` members
    with the smallest tickets, as :func:`agents.participation.organisers` chooses
    them (-1: none)."""
    member_tickets = np.asarray(member_tickets, dtype=np.float64)
    organiser_tickets = np.asarray(organiser_tickets, dtype=np.float64)
    out = np.full(len(cutoffs), -1.0)
    for i, cutoff in enumerate(cutoffs):
        mine = np.sort(organiser_tickets[member_tickets < cutoff])
        count = organiser_count(int(mine.size), organisers)
        if count:
            out[i] = mine[count - 1]
    return out


def participate(settings: RoundSettings, round_: int, user_ids, members, organisers, joined, seen, *,
                gains=None, participants=None, free=None):
    """User half of step 3: ``(joined, acting)`` per row (an alpha, or per cell a cell) and user (columns).

    ``members`` and ``organisers`` are masks per row; ``joined`` is last round's
    (all False before round 1); ``seen`` the share of participants among the members
    the coordinator published for last round, per row (0 before round 1). The
    rule, then organisers (who always act and never drop out), then dropout, as
    :class:`simulations.dynamics.CollectiveDynamics` does it.

    Benefit-cost (rows are cells): ``gains`` holds the last ``memory`` rounds' gains
    (:func:`agents.participation.published_gain`, rows x users each, this round's
    last), ``participants`` last round's participants per cell (free riding), and
    ``free`` (an array of the rows' shape) receives who free rides.
    """
    members = np.asarray(members, dtype=bool)
    organisers = np.asarray(organisers, dtype=bool) & members
    joined = np.asarray(joined, dtype=bool)
    if settings.participation == "fixed":
        new = members.copy()
    elif settings.participation == "benefit-cost":
        costs = rules.normal_draws(user_ids, settings.cost_key, mean=settings.cost_mean, sd=settings.cost_sd)
        new = np.zeros(members.shape, dtype=bool)
        riding = np.zeros(members.shape, dtype=bool)
        for r in range(members.shape[0]):
            new[r], riding[r] = rules.benefit_cost_round([g[r] for g in gains], costs, joined[r],
                                                         free_ride=settings.free_ride,
                                                         participants=int(participants[r]))
        new &= members
        if free is not None:
            free[...] = riding & members & ~organisers
    else:
        thresholds = rules.normal_draws(user_ids, settings.threshold_key, mean=settings.threshold_mean,
                                        sd=settings.threshold_sd)
        # ``seen`` per alpha: one share for everyone, or (neighbours) one per user.
        new = np.stack([rules.threshold_rule(thresholds, np.broadcast_to(np.asarray(s, dtype=np.float64),
                                                                         thresholds.shape), j, leave=settings.leave)
                        for s, j in zip(seen, joined)]).reshape(members.shape) & members
    stay = rules.dropout(np.ones(np.shape(user_ids), dtype=bool), settings.dropout,
                         user_tickets(user_ids, rules.round_key(settings.dropout_key, round_)))
    new = new | organisers
    return new, (new & stay) | organisers


def noisy(settings: RoundSettings, round_: int, user_ids, scores) -> np.ndarray:
    """Each candidate's scores as it sees them this round (one row per method of the grid)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not settings.score_noise > 0:
        return scores.copy()
    tickets = np.stack([user_tickets(user_ids, rules.mix_key(settings.noise_key, round_, i))
                        for i in range(scores.shape[0])]) if scores.shape[0] else np.empty(scores.shape)
    return rules.noisy_scores(scores, settings.score_noise, tickets)


def complies(settings: RoundSettings, round_: int, user_ids) -> np.ndarray:
    """Who follows the signal this round (compliance ticket < compliance)."""
    return rules.comply(user_tickets(user_ids, rules.round_key(settings.compliance_key, round_)), settings.compliance)


def seen_shares(acting_members: np.ndarray, n_members) -> np.ndarray:
    """Coordinator: the share of participants each member sees next round, per alpha
    (``seen = "everyone"``: participants among all members, the member itself included,
    as :func:`agents.participation.neighbour_share` with no graph)."""
    counts = np.asarray(acting_members, dtype=np.int64)
    n = np.asarray(n_members, dtype=np.int64)
    return np.array([c / m if m else 0.0 for c, m in zip(counts.tolist(), n.tolist())], dtype=np.float64)


# ------------------------------------------------------------------ the coordinator's graph


@dataclass(frozen=True)
class MembersGraph:
    """The graph among the minority's training users, as the coordinator's node file holds
    it: CSR ``indptr``/``indices`` over ``user_ids`` (in the vectorised model's order, which
    is also the order the model ranks members in)."""

    user_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray

    def positions(self, ids) -> np.ndarray:
        """Each id's row in the graph (-1: not in it)."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(self.user_ids, kind="stable")
        at = np.searchsorted(self.user_ids[order], ids)
        found = at < self.user_ids.size
        found[found] = self.user_ids[order][at[found]] == ids[found]
        out = np.full(ids.shape, -1, dtype=np.int64)
        out[found] = order[at[found]]
        return out

    def among(self, ids):
        """``(order, adjacency)``: the given users (ids of the graph) sorted into the graph's
        order (``ids[order]``), and the graph among them in that order (scipy CSR)."""
        from scipy import sparse

        pos = self.positions(ids)
        if (pos < 0).any():
            raise ValueError("members missing from the members' graph")
        order = np.argsort(pos, kind="stable")
        n = self.user_ids.size
        full = sparse.csr_matrix((np.ones(self.indices.size, dtype=np.int8), self.indices, self.indptr), shape=(n, n))
        chosen = pos[order]
        return order, full[chosen][:, chosen].tocsr()


def graph_organisers(graph: MembersGraph, member_ids, organiser_tickets, organisers) -> np.ndarray:
    """Coordinator, ``organisers_by = "most-connected"``: a mask over ``member_ids`` of the
    ``organiser_count`` members with the most neighbours among the members, equal degrees
    by organiser ticket (:func:`agents.participation.organisers`, as the vectorised model)."""
    order, adjacency = graph.among(member_ids)
    count = organiser_count(int(order.size), organisers)
    chosen = rules.organisers(int(order.size), count, how="most-connected", adjacency=adjacency,
                              tickets=np.asarray(organiser_tickets, dtype=np.float64)[order])
    out = np.zeros(order.size, dtype=bool)
    out[order[chosen]] = True
    return out


def fold_deltas(scores) -> np.ndarray:
    """Per method, how far gossip's key folds the tie ticket in: half the smallest gap
    between distinct scores of all candidates (1 when all are equal), so key = score +
    ticket x delta orders candidates as (score, ticket) does (as the vectorised model)."""
    out = []
    for row in np.asarray(scores, dtype=np.float64):
        gaps = np.diff(np.unique(row))
        out.append(0.5 * float(gaps.min()) if gaps.size else 1.0)
    return np.array(out, dtype=np.float64)


def gossip_estimates(adjacency, active, keys, pool, fraction: float, *, steps: int, bins: int) -> np.ndarray:
    """Each member's own estimate of the threshold key (NaN: none), by gossip among this
    round's participants over the members' graph (members in the graph's order)."""
    from .gossip import gossip_thresholds

    idx = np.flatnonzero(active)
    estimate = np.full(np.shape(active), np.nan)
    if idx.size:
        graph = adjacency[idx][:, idx].tocsr()
        estimate[idx] = gossip_thresholds(graph, np.asarray(keys)[idx], np.asarray(pool)[idx], fraction,
                                          steps=steps, bins=bins)
    return estimate


def reached(adjacency, active, organisers, hops: int) -> np.ndarray:
    """Coordination ``reach``: the participants within ``hops`` of a participating organiser,
    over the participants' graph (``adjacency`` None: the complete graph), breadth first
    from the organisers, as the vectorised model reaches them."""
    active = np.asarray(active, dtype=bool)
    out = np.asarray(organisers, dtype=bool) & active
    if not out.any():
        return out
    if adjacency is None:
        return active.copy() if hops >= 1 else out
    idx = np.flatnonzero(active)
    graph = adjacency[idx][:, idx].tocsr()
    frontier = out[idx].astype(np.int8)
    seen = frontier.astype(bool)
    for _ in range(int(hops)):
        new = ((graph @ frontier) > 0) & ~seen
        if not new.any():
            break
        seen |= new
        frontier = new.astype(np.int8)
    out = np.zeros(active.shape, dtype=bool)
    out[idx[seen]] = True
    return out


def threshold_errors(scores, ties, t_score, t_ticket, exact, m: int) -> tuple[float, float]:
    """Mean |own threshold - exact threshold| over the pool's candidates holding a signal
    (not NaN), in score units (where both are finite or equal) and in ranks (|how many of the pool
    reach the own threshold - M|): ``threshold_error`` and ``threshold_error_rank`` of
    rounds.csv, on both backends (:mod:`simulations.dynamics` calls this one)."""
    held = ~np.isnan(t_score)
    if not held.any():
        return math.nan, math.nan
    own = t_score[held]
    rank_error = float(np.abs(_ranks(scores, ties, own, t_ticket[held]) - m).mean())
    comparable = np.isfinite(own) & math.isfinite(exact.score)
    equal = own == exact.score
    diffs = np.concatenate([np.abs(own[comparable] - exact.score), np.zeros(int((equal & ~comparable).sum()))])
    return (float(diffs.mean()) if diffs.size else math.nan), rank_error


def _ranks(scores, ties, t_score, t_ticket) -> np.ndarray:
    """How many of the pool (``scores``, ``ties``) reach each threshold (score, ticket)."""
    if not scores.size:
        return np.zeros(t_score.shape, dtype=np.int64)
    order = np.lexsort((ties, scores))
    s, k = scores[order], ties[order]
    # Every pool member as one sortable number: the dense rank of its score plus its
    # tie ticket in [0, 1) (ranks are exact; within a score, tickets order as numbers).
    values, dense = np.unique(s, return_inverse=True)
    combined = dense + k
    q = np.searchsorted(values, t_score, side="left")
    present = (q < values.size) & (values[np.minimum(q, values.size - 1)] == t_score)
    key = np.where(present, q + np.clip(t_ticket, 0.0, 1.0), q).astype(np.float64)
    return s.size - np.searchsorted(combined, key, side="left")
