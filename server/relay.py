"""The coalition's relay: the collective's own messages, copied between nodes unread.

Flower has no peer-to-peer channel, so the ServerApp carries the coalition's
``query.*`` messages: the users' membership tickets to the coordinator node,
its cutoffs and majority knowledge back to the users, their candidates' scores
to the coordinator, and its thresholds out with the collection request. The
relay copies these records without interpreting them; only the coordinator's
public summary (members, pool, M, threshold) is kept for the experiment
record. The firm's code never sees any of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import ConfigRecord, RecordDict

from agents.protocol import (
    COORDINATE,
    JOIN,
    ROLE_COORDINATOR,
    ROLE_USERS,
    SCORES,
    STAGE_CUTOFFS,
    STAGE_REPEAT,
    STAGE_THRESHOLDS,
    CellGrid,
    Signal,
    record_of,
)

from .waves import Wire, copy_content

__all__ = ["Coalition", "coalition_signal", "sign_up"]


@dataclass
class Coalition:
    """What the relay keeps between rounds: who the users and the coordinator are, and
    the coordinator's opaque first answer (cutoffs and majority knowledge). Membership
    is fixed at sign-up."""

    users: list = field(default_factory=list)
    coordinator: int | None = None
    knowledge: RecordDict | None = None
    scored: bool = False  # the coordinator holds the members' scores for this knowledge


def _forward(replies: dict, record: str, stage: str) -> RecordDict:
    """One message to the coordinator carrying every member's record, unread."""
    content = RecordDict({"stage": ConfigRecord({"stage": stage})})
    for i, n in enumerate(sorted(replies)):
        if record in replies[n].content:
            content[f"member-{i}"] = replies[n].content[record]
    return content


def sign_up(wire: Wire, nodes) -> Coalition:
    """First round: minority users join; the coordinator sizes the collective and
    publishes the majority knowledge."""
    joined = wire.wave({n: RecordDict() for n in nodes}, JOIN)
    roles = {n: str(r.content["node"]["role"]) for n, r in joined.items() if "node" in r.content}
    coalition = Coalition(users=sorted(n for n, role in roles.items() if role == ROLE_USERS))
    coordinators = sorted(n for n, role in roles.items() if role == ROLE_COORDINATOR)
    if len(coordinators) != 1:
        wire.log.error_reasons.append(f"round {wire.round}: {len(coordinators)} coordinators answered; nobody relabels")
        return coalition
    coalition.coordinator = coordinators[0]
    got = wire.wave({coalition.coordinator: _forward({n: joined[n] for n in coalition.users}, "join", STAGE_CUTOFFS)},
                    COORDINATE)
    if coalition.coordinator in got:
        coalition.knowledge = copy_content(got[coalition.coordinator].content)
    return coalition


def coalition_signal(wire: Wire, coalition: Coalition, grid: CellGrid) -> tuple[RecordDict, dict]:
    """Members score themselves and the coordinator answers with the signal (thresholds).

    Returns the records every user receives with the collection request, and
    the coordinator's public summary. Scores depend only on a member's own x
    and the knowledge, which stays fixed after sign-up: from the second round
    on, the coordinator reuses the scores it was sent (``repeat``) and only the
    collection wave reaches every node, which halves a round's messages (what
    dominates with thousands of nodes).
    """
    if coalition.knowledge is None:
        return _nobody_flips(grid), {}
    coord = coalition.coordinator
    if coalition.scored:
        ask = RecordDict({"stage": ConfigRecord({"stage": STAGE_REPEAT})})
    else:
        scored = wire.wave({n: copy_content(coalition.knowledge) for n in coalition.users}, SCORES)
        ask = _forward(scored, "candidates", STAGE_THRESHOLDS)
    got = wire.wave({coord: ask}, COORDINATE)
    if coord not in got:
        return _nobody_flips(grid), {}
    coalition.scored = True
    answer = got[coord].content
    summary = {k: v.numpy().tolist() for k, v in answer["summary"].items()} if "summary" in answer else {}
    return copy_content(answer, skip=("summary",)), summary


def _nobody_flips(grid: CellGrid) -> RecordDict:
    """What users get when the coalition could not agree: thresholds nobody reaches."""
    return RecordDict({"thresholds": record_of(**Signal.none(grid).decision_arrays()),
                       "plan": ConfigRecord(grid.to_config())})
