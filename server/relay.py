"""The coalition's relay: the collective's own messages, copied between nodes unread.

Flower has no peer-to-peer channel, so the ServerApp carries the coalition's
``query.*`` messages: the users' membership tickets to the coordinator node,
its cutoffs and majority knowledge back to the users, their candidates' scores
to the coordinator, and its thresholds out with the collection request. The
relay copies these records without interpreting them; only the coordinator's
public summary (members, pool, M, threshold, entries it dropped by reason) is
kept for the experiment record. The firm's code never sees any of it.

What the relay does read is each node's ``node`` record of its join reply (role,
number of users, the coordinator's identity): at most one node is the
coordinator. User nodes' files carry the SHA-256 digest of the coordinator's
secret token; a node claiming the role must present the token whose digest most
user nodes name. Other claimants are impostors: counted, and treated as user
nodes if they sent a join record. Without any digest (older node files) the role
is accepted only if exactly one node claims it. The relay forwards each node's
records under ``member-<node id>`` with the users each registered, so the
coordinator can bound every node's claims.
"""

from __future__ import annotations

import hmac
from collections import Counter
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
    token_digest,
)

from .waves import Wire, copy_content

__all__ = ["Coalition", "addressed", "coalition_signal", "sign_up"]


@dataclass
class Coalition:
    """What the relay keeps between rounds: who the users and the coordinator are, and
    the coordinator's opaque first answer (cutoffs and majority knowledge). Membership
    is fixed at sign-up."""

    users: list = field(default_factory=list)
    coordinator: int | None = None
    knowledge: RecordDict | None = None
    scored: bool = False  # the coordinator holds the members' scores for this knowledge
    registered: dict = field(default_factory=dict)  # node id -> users it registered at join
    impostors: int = 0  # nodes that claimed the coordinator's role without its token


def _forward(replies: dict, record: str, stage: str, registered: dict | None = None) -> RecordDict:
    """One message to the coordinator carrying every member's record, unread, named by node id
    (``member-<node>``; a node's ``participation`` record, many rounds, as ``participation-<node>``)."""
    content = RecordDict({"stage": ConfigRecord({"stage": stage})})
    for n in sorted(replies):
        if record in replies[n].content:
            content[f"member-{n}"] = replies[n].content[record]
        if "participation" in replies[n].content:
            content[f"participation-{n}"] = replies[n].content["participation"]
    if registered is not None:
        content["registered"] = ConfigRecord({str(n): int(registered[n]) for n in sorted(registered)})
    return content


def _field(reply, name: str, kind=str, default=None):
    """One value of a join reply's ``node`` record, or ``default`` if missing or malformed."""
    try:
        return kind(reply.content["node"][name])
    except (KeyError, TypeError, ValueError):
        return default


def _coordinator(joined: dict, roles: dict) -> tuple[list, int]:
    """The genuine coordinator(s) among the claimants, and how many claimants are impostors.

    The expected identity is the token digest most user nodes name (their files
    carry it); a claimant is genuine iff the SHA-256 of the token it presents equals it.
    """
    claims = sorted(n for n, role in roles.items() if role == ROLE_COORDINATOR)
    votes = Counter(d for n, role in roles.items() if role == ROLE_USERS
                    for d in [_field(joined[n], "coordinator", default="")] if d)
    if not votes:  # no identity to check against (older node files): exactly one claimant
        return claims, 0
    top = votes.most_common(2)
    if len(top) > 1 and top[0][1] == top[1][1]:  # no majority identity: nobody is trusted
        return [], len(claims)
    expected = top[0][0]
    genuine = [n for n in claims  # bytes: compare_digest refuses non-ASCII str (a node chooses what it sends)
               if hmac.compare_digest(token_digest(_field(joined[n], "token", default="")).encode(),
                                      expected.encode("utf-8", "replace"))]
    return genuine, len(claims) - len(genuine)


def sign_up(wire: Wire, nodes, *, encoding: dict | None = None) -> Coalition:
    """First round: minority users join; the coordinator sizes the collective and
    publishes the majority knowledge.

    The join message also carries the firm's published feature encoding
    (``encoding``, a record named ``encoding``: how it turns raw records into its
    features, see ``agents.encoding``), so a node that holds raw records can encode
    them before it reports; the relay never reads it."""
    publish = lambda: RecordDict({"encoding": ConfigRecord(encoding)} if encoding else {})  # noqa: E731 - one per node
    joined = wire.wave({n: publish() for n in nodes}, JOIN)
    roles = {n: _field(r, "role") for n, r in joined.items()}
    genuine, impostors = _coordinator(joined, roles)
    # An impostor's claim is ignored: if it also sent its users' join record it stays a user node.
    users = sorted(n for n, role in roles.items()
                   if role == ROLE_USERS or (role == ROLE_COORDINATOR and n not in genuine and "join" in joined[n].content))
    coalition = Coalition(users=users, impostors=impostors,
                          registered={n: min(max(0, _field(joined[n], "n_users", int, 0)), 2**62) for n in users})
    if impostors:
        wire.log.error_reasons.append(f"round {wire.round}: {impostors} node(s) claimed the coordinator's role "
                                      "without its token; ignored")
    if len(genuine) != 1:
        wire.log.error_reasons.append(f"round {wire.round}: {len(genuine)} coordinators answered; nobody relabels")
        return coalition
    coalition.coordinator = genuine[0]
    got = wire.wave({coalition.coordinator: _forward({n: joined[n] for n in coalition.users}, "join", STAGE_CUTOFFS,
                                                     coalition.registered)},
                    COORDINATE)
    if coalition.coordinator in got:
        coalition.knowledge = copy_content(got[coalition.coordinator].content)
    return coalition


def coalition_signal(wire: Wire, coalition: Coalition, grid: CellGrid, *, every_round: bool = False,
                     published: dict | None = None) -> tuple[RecordDict, dict]:
    """Members score themselves and the coordinator answers with the signal (thresholds).

    Returns the records every user receives with the collection request, and
    the coordinator's public summary. Scores depend only on a member's own x
    and the knowledge, which stays fixed after sign-up: from the second round
    on, the coordinator reuses the scores it was sent (``repeat``) and only the
    collection wave reaches every node, which halves a round's messages (what
    dominates with thousands of nodes). With ``every_round`` (many rounds: who acts and
    the noisy scores change each round) members send theirs every round. ``published``
    (many rounds, benefit-cost: the arrays the firm made public after last round, each
    cell's model and group rates) goes to every member with the scores request.
    """
    if coalition.knowledge is None:
        return _nobody_flips(grid), {}
    coord = coalition.coordinator
    if coalition.scored and not every_round:
        ask = RecordDict({"stage": ConfigRecord({"stage": STAGE_REPEAT})})
    else:
        scored = wire.wave({n: _with_published(copy_content(coalition.knowledge), published)
                            for n in coalition.users}, SCORES)
        ask = _forward(scored, "candidates", STAGE_THRESHOLDS)
    got = wire.wave({coord: ask}, COORDINATE)
    if coord not in got:
        return _nobody_flips(grid), {}
    coalition.scored = True
    answer = got[coord].content
    summary = _summary(answer["summary"]) if "summary" in answer else {}
    if coalition.impostors:
        summary.setdefault("dropped", {})["relay"] = {"impostor": coalition.impostors}
    return copy_content(answer, skip=("summary",)), summary


def _with_published(content: RecordDict, published: dict | None) -> RecordDict:
    if published:
        content["published"] = record_of(**published)
    return content


def addressed(signal: RecordDict, node) -> RecordDict:
    """What node ``node`` receives of the coordinator's answer: the records for every member,
    and of the records for one node only (``private-<node>``, many rounds: sealed with that
    node's own key) its own, as ``private``; the others' never reach it."""
    own = f"private-{node}"
    out = RecordDict({k: v for k, v in signal.items() if not k.startswith("private-") and k != "round"})
    if own in signal:
        out["private"] = signal[own]
    return out


def _summary(record) -> dict:
    """The coordinator's public summary as lists; its drop counts ``dropped:<stage>:<reason>``
    become ``{"dropped": {stage: {reason: n}}}``."""
    summary: dict = {}
    for key, value in record.items():
        if key.startswith("dropped:"):
            _, stage, reason = key.split(":", 2)
            summary.setdefault("dropped", {}).setdefault(stage, {})[reason] = int(value.numpy().ravel()[0])
        else:
            summary[key] = value.numpy().tolist()
    return summary


def _nobody_flips(grid: CellGrid) -> RecordDict:
    """What users get when the coalition could not agree: thresholds nobody reaches."""
    return RecordDict({"thresholds": record_of(**Signal.none(grid).decision_arrays()),
                       "plan": ConfigRecord(grid.to_config())})
