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
  membership is) and the share of participants each member sees next round.

Supported on a node: participation ``fixed`` and ``threshold`` with ``seen =
"everyone"``, random organisers, compliance, dropout and score noise (see
docs/federated.md, "Dynamics on Flower").
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

__all__ = ["PARTICIPATION_ON_NODES", "RoundSettings", "complies", "noisy", "organiser_count", "organiser_cutoffs",
           "participate", "seen_shares"]

PARTICIPATION_ON_NODES = ("fixed", "threshold")


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
        if settings.participation not in PARTICIPATION_ON_NODES:
            raise DataError(f"{source}: participation {settings.participation!r}; allowed: "
                            f"{', '.join(PARTICIPATION_ON_NODES)}")
        return settings


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


def participate(settings: RoundSettings, round_: int, user_ids, members, organisers, joined, seen):
    """User half of step 3: ``(joined, acting)`` per alpha (rows) and user (columns).

    ``members`` and ``organisers`` are masks per alpha; ``joined`` is last round's
    (all False before round 1); ``seen`` the share of participants among the members
    the coordinator published for last round, per alpha (0 before round 1). The
    rule, then organisers (who always act and never drop out), then dropout, as
    :class:`simulations.dynamics.CollectiveDynamics` does it.
    """
    members = np.asarray(members, dtype=bool)
    organisers = np.asarray(organisers, dtype=bool) & members
    joined = np.asarray(joined, dtype=bool)
    if settings.participation == "fixed":
        new = members.copy()
    else:
        thresholds = rules.normal_draws(user_ids, settings.threshold_key, mean=settings.threshold_mean,
                                        sd=settings.threshold_sd)
        new = np.stack([rules.threshold_rule(thresholds, np.full(thresholds.shape, float(s)), j, leave=settings.leave)
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
