"""Users as Flower clients: a node holds its own users' records and decides locally.

A node is one user on a device, or a shard of K users in simulation
(:mod:`agents.node`). It reads its records from the file named in its node
config (``data-path``) or, in simulation, ``<node-data-dir>/node-<partition-id>.npz``
from the run config. On a device ``data-path`` may name the user's own raw records
(``.csv``/``.json``): with the collective's invitation (node config ``collective``)
and the firm's feature encoding, which arrives with ``query.join``, the node
encodes them itself (:mod:`agents.encoding`). One node per run is the coalition's
coordinator instead.

The handlers are thin: message formats come from :mod:`agents.protocol`, the
collective's rule from :mod:`agents.rule` (coordinator half on the
coordinator, user half on every other node), scorers from
:mod:`agents.knowledge`. Message types (the ServerApp relays the coalition's
``query.*`` messages unread; see docs/federated.md):

* ``query.join``        users -> coordinator: (user id, membership ticket) of minority users.
* ``query.coordinate``  coordinator: membership cutoffs + the majority knowledge, then thresholds;
                        it recomputes every ticket from (key, user id) and drops, counted by
                        reason, what it cannot verify (see ``DROP_REASONS``).
* ``query.scores``      users -> coordinator: (user id, member ticket, tie ticket, scores) of
                        members with y = 0, scored locally from the knowledge.
* ``train.report``      users -> firm (deployment): the reports (x, a, reported y), ONE label
                        per user: the one the collective's deployed cell gives (the
                        coordinator's plan must hold exactly one cell, else the node refuses).
* ``evaluate.cells``    users -> the experimenter's evaluator (simulation only): (x, a) with
                        row 0 the true labels and one reported label row per cell of the grid.

Many rounds (node files with dynamics settings, :mod:`agents.rounds`): with its
scores each node sends, sealed, which of its members joined and act this round
per alpha (``participation``), decided locally from the share the coordinator
published last round, its organiser cutoffs and its own dropout tickets;
candidates send their noisy scores every round. The coordinator's pools hold this
round's participants only, and its thresholds carry next round's seen shares.
Candidates flip on their noisy scores if they comply (their own tickets).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from . import participation, rounds, rule, sealing
from .decision import user_tickets
from .knowledge import knowledge_digest, knowledge_from_reference, scorers_from_knowledge
from .node import CoordinatorData, NodeData, load_node_file
from .encoding import Encoding
from .errors import DataError
from .node import is_raw_records, load_invitation, load_raw_records, node_from_raw
from .protocol import (
    JOIN,
    ROLE_COORDINATOR,
    ROLE_USERS,
    SCORES,
    STAGE_CUTOFFS,
    STAGE_REPEAT,
    STAGE_THRESHOLDS,
    CellGrid,
    Signal,
    arrays_of,
    record_of,
    token_digest,
)

__all__ = ["DROP_REASONS", "ENCODING_RECORD", "answers_evaluator", "app", "invitation_path", "node_file_path", "reported_labels"]

# The firm's published feature encoding (agents.encoding), sent to every node with query.join.
ENCODING_RECORD = "encoding"


def _remember_encoding(msg: Message, context: Context, call_next) -> Message:
    """A node keeps the firm's feature encoding when it arrives (with ``query.join``) in its
    state, which outlives the message: a node of raw records encodes them with it from then on."""
    if ENCODING_RECORD in msg.content:
        record = msg.content[ENCODING_RECORD]
        if not isinstance(record, ConfigRecord):
            raise DataError(f"the firm's feature encoding came as a {type(record).__name__}; allowed: a ConfigRecord")
        context.state[ENCODING_RECORD] = ConfigRecord(dict(record))
    return call_next(msg, context)


app = ClientApp(mods=[_remember_encoding])
_log = logging.getLogger(__name__)


# The key a node sends, sealed to the coordinator, for the answers meant for it alone (many rounds).
REPLY_KEY = "reply_key"

# Per-process caches: a Ray actor serves many nodes, a device one node.
_FILES: OrderedDict = OrderedDict()
_SCORERS: OrderedDict = OrderedDict()
_FILE_CACHE_SIZE, _SCORER_CACHE_SIZE = 4096, 4


def _cached(cache: OrderedDict, key, make, size: int):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > size:
        cache.popitem(last=False)
    return value


def node_file_path(context: Context) -> Path:
    """The node's data file: ``data-path`` in its node config, else from the run config."""
    if "data-path" in context.node_config:
        return Path(str(context.node_config["data-path"]))
    data_dir = context.run_config.get("node-data-dir", "")
    if not data_dir:
        raise ValueError("node has neither a data-path node config nor a node-data-dir run config")
    return Path(str(data_dir)) / f"node-{int(context.node_config['partition-id'])}.npz"


def invitation_path(context: Context) -> Path | None:
    """The collective's invitation (``collective`` in the node config): the ticket keys and the
    coordinator's identity of a node whose data file holds raw records."""
    value = str(context.node_config.get("collective", ""))
    return Path(value) if value else None


def _file_key(context: Context) -> tuple:
    path = node_file_path(context)
    stat = os.stat(path)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _node(context: Context) -> NodeData | CoordinatorData:
    key = _file_key(context)
    if is_raw_records(key[0]):
        return _raw_node(context, key)
    return _cached(_FILES, key, lambda: load_node_file(key[0]), _FILE_CACHE_SIZE)


def _raw_node(context: Context, key: tuple) -> NodeData:
    """A node of raw records (CSV/JSON): encoded with the firm's published encoding, once per
    (file, invitation, encoding); from then on it is a node like any other."""
    name = Path(key[0]).name
    invitation = invitation_path(context)
    if invitation is None:
        raise DataError(f"{name} holds raw records, so the node needs the collective's invitation; allowed: "
                        "node config collective='<path to collective.json>'")
    if ENCODING_RECORD not in context.state:
        raise DataError(f"{name} holds raw records, which need the firm's feature encoding; it comes with "
                        "query.join, and none has arrived; allowed: a ServerApp that publishes its encoding")
    encoding = Encoding.from_config(context.state[ENCODING_RECORD])
    try:
        stat = os.stat(invitation)
    except OSError as exc:
        raise DataError(f"cannot read the invitation {invitation} ({exc.strerror}); allowed: the collective's "
                        "collective.json") from None
    full = (*key, str(invitation), stat.st_mtime_ns, stat.st_size, encoding.digest)
    return _cached(_FILES, full, lambda: node_from_raw(load_raw_records(key[0]), load_invitation(invitation), encoding),
                   _FILE_CACHE_SIZE)


# ------------------------------------------------------------------ handlers


def _reply(msg: Message, **records) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def _round(msg: Message) -> int:
    return int(msg.content["round"]["round"])


@app.query("join")
def join(msg: Message, context: Context) -> Message:
    """Minority users join the collective by sending their ids and membership tickets.

    The coordinator answers with its role and its identity token (the relay
    checks it against the digest users hold); user nodes name the digest they
    hold, how many users they have (the bound on what they may claim) and
    which user ids they hold: the firm knows its customers, and fixes at
    sign-up which node reports for whom."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg, node=ConfigRecord({"role": ROLE_COORDINATOR, "n_users": 0, "token": node.token}))
    minority = node.a == 1
    return _reply(
        msg,
        node=ConfigRecord({"role": ROLE_USERS, "n_users": int(node.user_ids.size),
                           "user_ids": [int(u) for u in node.user_ids],
                           "coordinator": node.coordinator_digest}),
        join=_sealed_payload(node, msg, JOIN, user_ids=node.user_ids[minority],
                             member_tickets=node.member_tickets[minority]),
    )


# ------------------------------------------------------------------ sealing (agents.sealing)
#
# Members seal their payloads to the coordinator's public key, padded to one slot
# per user of the node; the coordinator seals its answers with the collective key.
# A run whose node files hold no keys (the benchmark's plain runs) sends plain records.


def _run_identity(node: NodeData | CoordinatorData) -> str:
    """The run a seal is bound to: the coordinator's identity digest (fresh for every set of node files)."""
    if isinstance(node, CoordinatorData):
        return token_digest(node.token) if node.token else ""
    return node.coordinator_digest


def _member_context(node, kind: str, round_: int, node_id) -> bytes:
    return sealing.context(kind, run=_run_identity(node), role=ROLE_USERS, round_=round_, node=node_id)


def _answer_context(node, stage: str, round_: int | None, grid: CellGrid) -> bytes:
    import hashlib
    import json

    plan = hashlib.sha256(json.dumps(grid.to_config(), sort_keys=True).encode("utf-8")).hexdigest()
    return sealing.context(f"query.coordinate/{stage}", run=_run_identity(node), role=ROLE_COORDINATOR, round_=round_,
                           plan=plan)


def _sealed_payload(node: NodeData, msg: Message, kind: str, reply_key: bytes = b"", **arrays):
    """A member's payload: sealed to the coordinator and padded to the node's number of users
    (``reply_key``, many rounds: the key the coordinator seals this node's own answers with)."""
    if not node.sealed:
        return record_of(**arrays)
    padded = sealing.padded(arrays, int(node.user_ids.size))
    if reply_key:
        padded[REPLY_KEY] = np.frombuffer(reply_key, dtype=np.uint8)
    plain = sealing.pack(padded)
    ctx = _member_context(node, kind, _round(msg), int(msg.metadata.dst_node_id))
    return sealing.sealed_record(sealing.seal_to(node.coordinator_key, plain, ctx))


def _opened_payloads(node: CoordinatorData, msg: Message, kind: str, drops: dict,
                     prefix: str = "member-") -> list[tuple[str, dict]]:
    """Every member's payload, opened, in node-id order. A record that is not a sealed
    blob, or whose plaintext is not padded arrays, is ``malformed``; a blob that does
    not open (altered, or sealed for another message type, round or node) is ``sealed``."""
    out = []
    for name, record in _payloads(msg.content, prefix):
        try:
            if not node.sealed:
                out.append((name, arrays_of(record)))
                continue
            blob = sealing.blob_of(record)
        except Exception:  # noqa: BLE001 - an undecodable record is a malformed payload
            drops["malformed"] += 1
            continue
        try:
            plain = sealing.open_from(node.private_key, blob, _member_context(node, kind, _round(msg), name))
        except sealing.SealError:
            drops["sealed"] += 1
            continue
        try:
            arrays = sealing.unpack(plain)
            key = arrays.pop(REPLY_KEY, None)
            arrays = sealing.unpadded(arrays)
            if key is not None:
                if key.dtype != np.uint8 or key.shape != (sealing.KEY_BYTES,):
                    raise ValueError("reply key")
                arrays[REPLY_KEY] = key
            out.append((name, arrays))
        except ValueError:
            drops["malformed"] += 1
    return out


def _sealed_answer(node: CoordinatorData, stage: str, round_: int | None, grid: CellGrid, **arrays):
    """The coordinator's answer for every member, sealed once with the collective key and
    bound to the plan it travels with (the grid stays readable: the relay knows it)."""
    if not node.sealed:
        return record_of(**arrays)
    ctx = _answer_context(node, stage, round_, grid)
    return sealing.sealed_record(sealing.CollectiveKey(node.collective_key).seal(sealing.pack(arrays), ctx))


def _opened_answer(node: NodeData, content: RecordDict, name: str, stage: str, round_: int | None,
                   grid: CellGrid) -> dict:
    """The arrays of the coordinator's answer ``name``; ``ValueError`` if it does not open."""
    if name not in content:
        raise ValueError(f"no {name} record")
    if not node.sealed:
        return arrays_of(content[name])
    plain = sealing.CollectiveKey(node.collective_key).open(sealing.blob_of(content[name]),
                                                            _answer_context(node, stage, round_, grid))
    return sealing.unpack(plain)


def _signal(node: NodeData, content: RecordDict, grid: CellGrid) -> Signal:
    """The coordinator's thresholds. A node that holds the collective key acts only on
    thresholds sealed with it for this round and plan: anything else (the relay's own
    "nobody flips" when the coalition could not agree, or a forgery) means nobody flips."""
    try:
        round_ = int(content["round"]["round"]) if node.sealed else None
        return Signal.from_arrays(_opened_answer(node, content, "thresholds", STAGE_THRESHOLDS, round_, grid))
    except (KeyError, ValueError) as exc:
        if not node.sealed:
            raise
        if "thresholds" in content and sealing.is_sealed(content["thresholds"]):
            _log.warning("the coordinator's thresholds do not open (%s); nobody on this node flips", exc)
        return Signal.none(grid)


# ------------------------------------------------------------------ the coordinator's checks

# Why the coordinator drops a member's entry (counted in its public summary):
DROP_REASONS = (
    "malformed",  # a whole payload: not a sealed blob, missing arrays, wrong shapes, ids not non-negative integers
    "sealed",  # a whole payload whose blob does not open (altered, or sealed for another type, round or node)
    "unregistered",  # entries from a node that did not register (join) / whose join was dropped
    "ticket",  # a ticket that is not the one recomputed from (key, user id)
    "non-finite",  # a candidate with a NaN or infinite score
    "not-joined",  # a candidate this node did not sign up at join
    "duplicate",  # a user id already claimed (by an earlier node in node-id order, or twice)
    "over-claim",  # more entries than the users the node registered
)


def _payloads(content: RecordDict, prefix: str = "member-") -> list[tuple[str, object]]:
    """The members' records ``member-<node>``, in node-id order (the order of "first claimant")."""
    named = [(name[len(prefix):], rec) for name, rec in content.items() if name.startswith(prefix)]
    return sorted(named, key=lambda kv: (0, int(kv[0]), "") if kv[0].isdigit() else (1, 0, kv[0]))


def _ids_ok(ids) -> bool:
    return isinstance(ids, np.ndarray) and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer) and \
        (ids.size == 0 or int(ids.min()) >= 0)


def _screen(node: CoordinatorData, payloads, bounds: dict, drops: dict, *, fields: tuple, n_methods: int = 0,
            allowed: dict | None = None, flags: tuple = (), n_alphas: int = 0) -> dict[str, dict]:
    """Every member entry the coordinator can verify, per node: tickets recomputed from
    (key, user id), finite scores, ids claimed once (first claimant), at most the node's
    registered users, and (scores) only ids the node signed up at join."""
    keys = {"member_tickets": node.membership_key, "tie_tickets": node.tie_key}
    seen: set = set()
    out = {}
    for name, arrays in payloads:
        ids = arrays.get("user_ids")
        if not _ids_ok(ids) or any(
                f not in arrays or arrays[f].shape != ids.shape or not np.issubdtype(arrays[f].dtype, np.floating)
                for f in fields) or (n_methods and (
                "scores" not in arrays or arrays["scores"].shape != (n_methods, ids.size)
                or not np.issubdtype(arrays["scores"].dtype, np.number) or np.iscomplexobj(arrays["scores"]))) or any(
                f not in arrays or arrays[f].shape != (n_alphas, ids.size) or not np.issubdtype(arrays[f].dtype,
                                                                                                np.integer)
                for f in flags):
            drops["malformed"] += 1
            continue
        if name not in bounds:
            drops["unregistered"] += int(ids.size)
            continue
        keep = np.ones(ids.size, dtype=bool)
        for f in fields:  # recompute every ticket (tickets are a pure function of key and id)
            if keys[f] is not None:
                keep &= arrays[f] == user_tickets(ids, keys[f])
        drops["ticket"] += int(np.count_nonzero(~keep))
        if n_methods:
            finite = np.isfinite(arrays["scores"]).all(axis=0)
            drops["non-finite"] += int(np.count_nonzero(keep & ~finite))
            keep &= finite
        if allowed is not None:
            joined = np.isin(ids, allowed.get(name, np.empty(0, dtype=np.int64)))
            drops["not-joined"] += int(np.count_nonzero(keep & ~joined))
            keep &= joined
        # Once per user id: the first valid claim, in node-id order then payload order.
        idx = np.flatnonzero(keep)
        first = np.zeros(idx.size, dtype=bool)
        first[np.unique(ids[idx], return_index=True)[1]] = True
        fresh = first & np.fromiter((int(i) not in seen for i in ids[idx]), dtype=bool, count=idx.size)
        drops["duplicate"] += int(np.count_nonzero(~fresh))
        keep[idx[~fresh]] = False
        over = np.flatnonzero(keep)[int(bounds[name]):]
        drops["over-claim"] += int(over.size)
        keep[over] = False
        seen.update(int(i) for i in ids[keep])
        out[name] = {k: (v[:, keep] if k in ("scores", *flags) else v[keep]) for k, v in arrays.items()
                     if k in ("user_ids", "scores", *fields, *flags)}
    return out


def _bounds(content: RecordDict) -> dict[str, int]:
    """Users each node registered (its join reply's ``n_users``), as the relay forwards them."""
    if "registered" not in content:
        return {}
    out = {}
    for name, value in content["registered"].items():
        try:
            out[str(name)] = max(0, int(value))
        except (TypeError, ValueError):
            continue
    return out


def _drop_arrays(stage: str, drops: dict) -> dict[str, np.ndarray]:
    return {f"dropped:{stage}:{reason}": np.array([n], dtype=np.int64) for reason, n in drops.items() if n}


@app.query("coordinate")
def coordinate(msg: Message, context: Context) -> Message:
    """The coordinator: cutoffs and the majority knowledge, then the thresholds of every cell.

    Before using them it verifies what members send (:func:`_screen`) and counts
    every dropped entry by reason in its public summary."""
    node = _node(context)
    if not isinstance(node, CoordinatorData):
        raise ValueError("query.coordinate reached a node that is not the coordinator")
    stage = str(msg.content["stage"]["stage"])
    grid = node.grid
    if stage == STAGE_CUTOFFS:
        drops = dict.fromkeys(DROP_REASONS, 0)
        bounds = _bounds(msg.content)
        payloads = _opened_payloads(node, msg, JOIN, drops)
        joined = _screen(node, payloads, bounds, drops, fields=("member_tickets",))
        tickets = np.concatenate([p["member_tickets"] for p in joined.values()]) if joined else np.empty(0)
        cutoffs, n_members = rule.membership_cutoffs(tickets, grid.alphas)
        head = {}
        if node.dynamics is not None:  # organisers: the members with the smallest organiser tickets, per alpha
            ids = np.concatenate([p["user_ids"] for p in joined.values()]) if joined else np.empty(0, dtype=np.int64)
            org = user_tickets(ids, node.dynamics.organisers_key)
            if node.dynamics.organisers_by == "most-connected" and node.graph is not None:
                # By degree among the members, which only the coordinator knows: it publishes
                # the organisers' ids per alpha (organisers act in the open) instead of a cutoff.
                chosen = [ids[tickets < c][rounds.graph_organisers(node.graph, ids[tickets < c], org[tickets < c],
                                                                   node.dynamics.organisers)] for c in cutoffs]
                head["organisers"] = np.full(cutoffs.size, -1.0)
                head["organiser_ids"] = np.concatenate([np.sort(c) for c in chosen] or [np.empty(0, dtype=np.int64)])
                head["organiser_counts"] = np.array([c.size for c in chosen], dtype=np.int64)
                head["n_organisers"] = head["organiser_counts"].copy()
            else:
                head["organisers"] = rounds.organiser_cutoffs(tickets, org, cutoffs, node.dynamics.organisers)
                head["n_organisers"] = np.array([np.count_nonzero((tickets < c) & (org <= o))
                                                 for c, o in zip(cutoffs, head["organisers"])], dtype=np.int64)
        # The coordinator's own memory between its two stages.
        context.state["coordinator"] = record_of(cutoffs=cutoffs, n_members=n_members, round=np.array([_round(msg)]),
                                                 **head)
        context.state["coordinator-joined"] = record_of(**{f"ids-{n}": p["user_ids"] for n, p in joined.items()},
                                                        **{f"bound-{n}": np.array([b]) for n, b in bounds.items()},
                                                        **_drop_arrays("join", drops))
        knowledge = _cached(
            _SCORERS, ("knowledge", *_file_key(context)),
            lambda: knowledge_from_reference(grid.methods, node.X_ref, node.y_ref, params=node.params), _SCORER_CACHE_SIZE,
        )
        # Sealed once for every member; bound to the plan (the relay cannot change the grid
        # users score for) but not to the round: the relay may pass them on in a later round.
        digest = np.frombuffer(knowledge_digest(knowledge).encode("ascii"), dtype=np.uint8)
        organisers = {k: head[k] for k in ("organisers", "organiser_ids", "organiser_counts") if k in head}
        return _reply(msg, cutoffs=_sealed_answer(node, STAGE_CUTOFFS, None, grid, cutoffs=cutoffs, digest=digest,
                                                  **organisers),
                      knowledge=_sealed_answer(node, "knowledge", None, grid, **knowledge),
                      plan=ConfigRecord(grid.to_config()))
    if stage in (STAGE_THRESHOLDS, STAGE_REPEAT):
        if "coordinator" not in context.state:
            raise ValueError("query.coordinate thresholds before the members joined (no cutoffs yet)")
        memory = arrays_of(context.state["coordinator"])
        signed = arrays_of(context.state["coordinator-joined"]) if "coordinator-joined" in context.state else {}
        if stage == STAGE_THRESHOLDS:
            drops = dict.fromkeys(DROP_REASONS, 0)
            allowed = {k[len("ids-"):]: v for k, v in signed.items() if k.startswith("ids-")}
            bounds = {k[len("bound-"):]: int(v[0]) for k, v in signed.items() if k.startswith("bound-")}
            payloads = _opened_payloads(node, msg, SCORES, drops)
            screened = _screen(node, payloads, bounds, drops, fields=("member_tickets", "tie_tickets"),
                               n_methods=len(grid.methods), allowed=allowed).values()
            cat = lambda key, shape: np.concatenate([p[key] for p in screened], axis=-1) if screened else np.empty(shape)
            cands = dict(user_ids=cat("user_ids", 0).astype(np.int64), member_tickets=cat("member_tickets", 0),
                         tie_tickets=cat("tie_tickets", 0),
                         scores=cat("scores", (len(grid.methods), 0)), **_drop_arrays("scores", drops))
            # Scores depend only on each member's x and the knowledge: while it is
            # unchanged, later rounds reuse them instead of asking everyone again.
            context.state["coordinator-candidates"] = record_of(**cands)
        elif "coordinator-candidates" in context.state:
            cands = arrays_of(context.state["coordinator-candidates"])
        else:
            raise ValueError("query.coordinate repeat before any member sent scores")
        if node.dynamics is not None and stage == STAGE_THRESHOLDS:
            return _dynamics_answer(node, msg, grid, memory, signed, cands, allowed, bounds, context)
        signal = rule.publish(grid, memory["cutoffs"], memory["n_members"], cands["member_tickets"],
                              cands["tie_tickets"], cands["scores"])
        dropped = {k: v for k, v in (*signed.items(), *cands.items()) if k.startswith("dropped:")}
        return _reply(msg, thresholds=_sealed_answer(node, STAGE_THRESHOLDS, _round(msg), grid,
                                                     **signal.decision_arrays()),
                      plan=ConfigRecord(grid.to_config()),
                      summary=record_of(**signal.summary_arrays(), **dropped))
    raise ValueError(f"unknown coordinator stage {stage!r}; allowed: {STAGE_CUTOFFS}, {STAGE_THRESHOLDS}, {STAGE_REPEAT}")


PARTICIPATION = f"{SCORES}/participation"  # the sealing kind of a node's participation flags
PRIVATE = "private"  # the coordinator's answer for one node only (its members' seen shares, gossip thresholds)


def _dynamics_answer(node: CoordinatorData, msg: Message, grid: CellGrid, memory: dict, signed: dict, cands: dict,
                     allowed: dict, bounds: dict, context: Context) -> Message:
    """Many rounds: this round's pools hold the candidates who act at each alpha (from the
    members' sealed participation flags, screened as their scores are); the answer adds the
    share of participants every member sees next round (``seen``); the summary adds
    participants, dropouts and organisers per alpha and intended flips per cell.

    With the members' graph (``seen = "neighbours"``, gossip) what differs per member --
    its neighbours' share, its own gossip estimate of each cell's threshold -- goes to
    its node only (``private-<node>``, sealed with the key the node sent)."""
    settings, graph = node.dynamics, node.graph
    drops = dict.fromkeys(DROP_REASONS, 0)
    cutoffs, n_members = memory["cutoffs"], memory["n_members"]
    k = cutoffs.size
    payloads = _opened_payloads(node, msg, PARTICIPATION, drops, prefix="participation-")
    reply_keys = {name: arrays.get(REPLY_KEY) for name, arrays in payloads}
    # One row of flags per alpha, or (benefit-cost) per cell: ``rows`` gives each row's alpha,
    # ``row_of`` each cell's row.
    rows, row_of = settings.row_alphas(grid, k), settings.rows_of(grid)
    n_rows = rows.size
    names_of_flags = ("joined", "active", "free") if settings.per_cell else ("joined", "active")
    screened = _screen(node, payloads, bounds, drops, fields=("member_tickets",), allowed=allowed,
                       flags=names_of_flags, n_alphas=n_rows)
    names, flags = list(screened), list(screened.values())
    cat = lambda key, shape: np.concatenate([p[key] for p in flags], axis=-1) if flags else np.zeros(shape)  # noqa: E731
    ids = cat("user_ids", 0).astype(np.int64)
    member = cat("member_tickets", 0)[None, :] < cutoffs[:, None]
    member_rows = member[rows]
    joined = cat("joined", (n_rows, 0)).astype(bool) & member_rows
    active = cat("active", (n_rows, 0)).astype(bool) & member_rows
    participants = active.sum(axis=1).astype(np.int64)
    # Each candidate's flags, found by user id (a candidate without flags does not act).
    cand_ids = cands.get("user_ids", np.empty(0, dtype=np.int64)).astype(np.int64)
    at = _find(ids, cand_ids)
    acting = np.zeros((n_rows, cand_ids.size), dtype=bool)
    acting[:, at >= 0] = active[:, at[at >= 0]]
    private: dict[str, np.ndarray] = {}  # per member (columns of ``ids``), one row per alpha or cell
    extra: dict[str, np.ndarray] = {}
    cand_of = _find(cand_ids, ids)
    if settings.coordination == "gossip" and graph is not None:
        signal, intended, private["threshold"], extra = _gossip_round(node, grid, cutoffs, n_members, ids, member,
                                                                       active, cands, cand_of)
        private["delta"] = None  # one per method, the same for every node
        if settings.staleness > 0:  # members act on their estimates of ``staleness`` rounds ago
            keys, ties, pool = _member_keys(grid, ids, active, cands, cand_of, fold=True, row_of=row_of)
            own = _stale(context, ids, (private["threshold"], np.where(np.isnan(private["threshold"]), np.nan, 0.0)),
                         settings.staleness)
            private["threshold"] = own[0]
            intended, extra["threshold_error"], extra["threshold_error_rank"] = _member_decisions(grid, keys, ties,
                                                                                                  pool, own)
    elif settings.coordination == "reach" or settings.staleness > 0:
        signal, own, reached = _member_signals(node, grid, memory, ids, member, active, cands, cand_of)
        keys, ties, pool = _member_keys(grid, ids, active, cands, cand_of, row_of=row_of)
        if settings.staleness > 0:
            own = _stale(context, ids, own, settings.staleness)
        private["threshold"], private["ticket"] = own
        intended, error, rank_error = _member_decisions(grid, keys, ties, pool, own)
        extra = {"reached": reached, "threshold_error": error, "threshold_error_rank": rank_error}
    else:
        signal = rule.publish(grid, cutoffs, n_members, cands["member_tickets"], cands["tie_tickets"],
                              cands["scores"], participating=acting, per_cell=settings.per_cell)
        intended = rule.decide_cells(grid, signal, cands["member_tickets"], cands["tie_tickets"], cands["scores"],
                                     held_back=~acting, per_cell=settings.per_cell).sum(axis=1).astype(np.int64)
    seen = rounds.seen_shares(participants, np.asarray(n_members)[rows])
    if settings.per_cell:  # benefit-cost: who free rides (summary); participants per cell for next round
        extra["free_riders"] = (cat("free", (n_rows, 0)).astype(bool) & member_rows).sum(axis=1).astype(np.int64)
    if settings.participation == "threshold" and settings.seen == "neighbours" and graph is not None:
        private["seen"] = np.zeros((k, ids.size))
        for i in range(k):
            cols = np.flatnonzero(member[i])
            order, adjacency = graph.among(ids[cols])
            private["seen"][i, cols[order]] = participation.neighbour_share(adjacency, active[i, cols[order]])
    records = {}
    if private:
        delta = rounds.fold_deltas(cands["scores"]) if "delta" in private else None
        offsets = np.cumsum([0] + [p["user_ids"].size for p in flags])
        for j, name in enumerate(names):
            cols = slice(offsets[j], offsets[j + 1])
            arrays = {"user_ids": ids[cols], **{key: v[:, cols] for key, v in private.items() if v is not None}}
            if delta is not None:
                arrays["delta"] = delta
            records[f"{PRIVATE}-{name}"] = _private_answer(node, reply_keys.get(name), _round(msg), grid, arrays)
    dropped = {k: v for k, v in (*signed.items(), *cands.items(), *_drop_arrays("participation", drops).items())
               if k.startswith("dropped:")}
    per_cell = {"participants": participants} if settings.per_cell else {}
    return _reply(msg, thresholds=_sealed_answer(node, STAGE_THRESHOLDS, _round(msg), grid,
                                                 **signal.decision_arrays(), seen=seen, **per_cell),
                  plan=ConfigRecord(grid.to_config()),
                  summary=record_of(**signal.summary_arrays(), **dropped, participants=participants,
                                    dropouts=(joined & ~active).sum(axis=1).astype(np.int64),
                                    organisers=memory.get("n_organisers", np.zeros(k, dtype=np.int64)),
                                    intended=intended, **extra),
                  **records)


def _member_keys(grid: CellGrid, ids, active, cands, cand_of, *, fold: bool = False, row_of=None):
    """Per cell (rows) and member (columns of ``ids``): each candidate's key (its noisy score;
    ``fold``: gossip's, the tie ticket folded in, ties then 0), tie ticket and whether it is in
    the cell's pool (acting at the cell's alpha). NaN keys: members who are not candidates."""
    n, has = len(grid), cand_of >= 0
    scores = cands["scores"]
    ticket = cands["tie_tickets"]
    if fold:
        scores = scores + ticket[None, :] * rounds.fold_deltas(scores)[:, None]
        ticket = np.zeros_like(ticket)
    keys, ties = np.full((n, ids.size), np.nan), np.full((n, ids.size), np.nan)
    keys[:, has] = scores[grid.method_of][:, cand_of[has]]
    ties[:, has] = ticket[cand_of[has]][None, :]
    pool = np.asarray(active, dtype=bool)[grid.alpha_of if row_of is None else row_of] & has[None, :]
    return keys, ties, pool


def _member_signals(node: CoordinatorData, grid: CellGrid, memory: dict, ids, member, active, cands, cand_of):
    """Coordination ``coordinator`` or ``reach`` with a signal per member (reach, or stale
    signals): the public signal (its threshold: the one the coordinator publishes, for
    ``reach`` the reached pool's), each member's own threshold per cell (score, ticket; NaN:
    no signal) and the participants reached per cell, as the vectorised model's ``_coordinate``."""
    from .decision import coalition_threshold
    from .protocol import Signal, budget_count

    settings, n, k = node.dynamics, len(grid), len(memory["cutoffs"])
    rows, row_of = settings.row_alphas(grid, k), settings.rows_of(grid)
    keys, ties, pool = _member_keys(grid, ids, active, cands, cand_of, row_of=row_of)
    reached = np.asarray(active, dtype=bool).copy()  # per row (alpha, or benefit-cost cell)
    if settings.coordination == "reach":
        org = member & (user_tickets(ids, settings.organisers_key)[None, :] <= memory["organisers"][:, None])
        if "organiser_ids" in memory:
            parts = np.split(memory["organiser_ids"].astype(np.int64), np.cumsum(memory["organiser_counts"])[:-1])
            org |= member & np.stack([np.isin(ids, p) for p in parts])
        for r, i in enumerate(rows):
            cols = np.flatnonzero(member[i])
            order, adjacency = (np.arange(cols.size), None) if node.graph is None else node.graph.among(ids[cols])
            cols = cols[order]
            reached[r] = False
            reached[r, cols] = rounds.reached(adjacency, active[r, cols], org[i, cols], settings.hops)
    own_s, own_t = np.full((n, ids.size), np.nan), np.full((n, ids.size), np.nan)
    score, ticket = np.empty(n), np.empty(n)
    pool_size, m_out = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for cell in grid:
        i, c = row_of[cell.index], cell.index
        heard = pool[c] & reached[i]
        pool_size[c] = int(pool[c].sum())
        m_out[c] = budget_count(cell.budget, int(pool_size[c]))
        t = coalition_threshold(keys[c, heard], ties[c, heard], budget_count(cell.budget, int(heard.sum())))
        own_s[c, reached[i]], own_t[c, reached[i]], score[c], ticket[c] = t.score, t.ticket, t.score, t.ticket
    signal = Signal(np.asarray(memory["cutoffs"], dtype=np.float64), score, ticket,
                    np.asarray(memory["n_members"], dtype=np.int64), pool_size, m_out)
    return signal, (own_s, own_t), reached[row_of].sum(axis=1).astype(np.int64)


def _stale(context: Context, ids, own, lag: int):
    """The members' signals of ``lag`` rounds ago (NaN: no signal then, or none published
    that long ago yet), from the history the coordinator keeps in its state; this round's
    are pushed first (the vectorised model's ``SignalHistory``)."""
    history = arrays_of(context.state["coordinator-signals"]) if "coordinator-signals" in context.state else {}
    entries = [(history[f"ids-{j}"], history[f"score-{j}"], history[f"ticket-{j}"])
               for j in range(len([key for key in history if key.startswith("ids-")]))]
    entries = (entries + [(np.asarray(ids, dtype=np.int64), *own)])[-(lag + 1):]
    context.state["coordinator-signals"] = record_of(**{f"{name}-{j}": v for j, entry in enumerate(entries)
                                                       for name, v in zip(("ids", "score", "ticket"), entry)})
    out = (np.full(own[0].shape, np.nan), np.full(own[1].shape, np.nan))
    if len(entries) <= lag:
        return out
    then, score, ticket = entries[0]
    at = _find(np.asarray(then, dtype=np.int64), np.asarray(ids, dtype=np.int64))
    out[0][:, at >= 0], out[1][:, at >= 0] = score[:, at[at >= 0]], ticket[:, at[at >= 0]]
    return out


def _member_decisions(grid: CellGrid, keys, ties, pool, own):
    """Per cell: the pool's intended flips on each member's own threshold, and the threshold
    errors against the exact threshold of this round's pool (:func:`agents.rounds.threshold_errors`)."""
    from .decision import Threshold, coalition_threshold, decide
    from .protocol import budget_count

    n = len(grid)
    intended = np.zeros(n, dtype=np.int64)
    error, rank_error = np.full(n, np.nan), np.full(n, np.nan)
    for cell in grid:
        c, p = cell.index, pool[cell.index]
        m = budget_count(cell.budget, int(p.sum()))
        exact = coalition_threshold(keys[c, p], ties[c, p], m)
        intended[c] = int(decide(keys[c], ties[c], Threshold(own[0][c], own[1][c]), eligible=p).sum())
        error[c], rank_error[c] = rounds.threshold_errors(keys[c, p], ties[c, p], own[0][c, p], own[1][c, p], exact, m)
    return intended, error, rank_error


def _find(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Each needle's position in ``haystack`` (-1: absent)."""
    order = np.argsort(haystack, kind="stable")
    at = np.searchsorted(haystack[order], needles)
    found = at < haystack.size
    found[found] = haystack[order][at[found]] == needles[found]
    out = np.full(needles.shape, -1, dtype=np.int64)
    out[found] = order[at[found]]
    return out


def _gossip_round(node: CoordinatorData, grid: CellGrid, cutoffs, n_members, ids, member, active, cands, cand_of):
    """Gossip, simulated by the coordinator over the members' graph with
    :func:`agents.rounds.gossip_estimates` (the vectorised model's code): per cell, each
    participant's own estimate of the threshold key among this round's participants. Keys
    fold the tie ticket into the noisy score (:func:`agents.rounds.fold_deltas`). Returns
    the public signal (no published threshold: NaN), intended flips per cell, the estimates
    (cells x members) and the summary's reached members and threshold errors per cell."""
    from .decision import Threshold, coalition_threshold, decide
    from .protocol import Signal, budget_count

    settings, n = node.dynamics, len(grid)
    delta = rounds.fold_deltas(cands["scores"])
    folded = cands["scores"] + cands["tie_tickets"][None, :] * delta[:, None]
    estimates = np.full((n, ids.size), np.nan)
    pool_size, m_out, intended, reached = (np.zeros(n, dtype=np.int64) for _ in range(4))
    error, rank_error = np.full(n, np.nan), np.full(n, np.nan)
    for cell in grid:
        cols = np.flatnonzero(member[cell.alpha_index])
        order, adjacency = node.graph.among(ids[cols])
        cols = cols[order]
        act, where = active[settings.rows_of(grid)[cell.index], cols], cand_of[cols]
        keys = np.full(cols.size, np.nan)
        keys[where >= 0] = folded[cell.method_index, where[where >= 0]]
        pool = act & (where >= 0)
        size = int(pool.sum())
        m = budget_count(cell.budget, size)
        fraction = cell.budget if isinstance(cell.budget, float) else (m / size if size else 0.0)
        estimate = rounds.gossip_estimates(adjacency, act, keys, pool, fraction, steps=settings.gossip_steps,
                                           bins=settings.gossip_bins)
        held = act & ~np.isnan(estimate)
        ticket = np.where(held, 0.0, np.nan)
        zeros = np.zeros(cols.size)
        exact = coalition_threshold(keys[pool], zeros[pool], m)
        intended[cell.index] = int(decide(keys, zeros, Threshold(estimate, ticket), eligible=pool).sum())
        error[cell.index], rank_error[cell.index] = rounds.threshold_errors(keys[pool], zeros[pool], estimate[pool],
                                                                            ticket[pool], exact, m)
        estimates[cell.index, cols] = np.where(held, estimate, np.nan)
        pool_size[cell.index], m_out[cell.index], reached[cell.index] = size, m, int(held.sum())
    signal = Signal(np.asarray(cutoffs, dtype=np.float64), np.full(n, np.nan), np.full(n, np.nan),
                    np.asarray(n_members, dtype=np.int64), pool_size, m_out)
    return signal, intended, estimates, {"reached": reached, "threshold_error": error,
                                         "threshold_error_rank": rank_error}


def _private_answer(node: CoordinatorData, reply_key, round_: int, grid: CellGrid, arrays: dict):
    """One node's own answer, sealed with the key it sent (a node that sent none gets nothing
    it could open: an empty record)."""
    if not node.sealed:
        return record_of(**arrays)
    if reply_key is None:
        return record_of()
    ctx = _answer_context(node, PRIVATE, round_, grid)
    return sealing.sealed_record(sealing.CollectiveKey(reply_key.tobytes()).seal(sealing.pack(arrays), ctx))


def _candidates(node: NodeData, cutoffs: np.ndarray) -> np.ndarray:
    """Positions of the node's users who are members at the largest alpha and have y = 0."""
    top = float(np.max(cutoffs)) if cutoffs.size else 0.0
    return np.flatnonzero((node.a == 1) & (node.y == 0) & (node.member_tickets < top))


@app.query("scores")
def scores(msg: Message, context: Context) -> Message:
    """Members with y = 0 score themselves locally from the majority knowledge."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg)
    grid = CellGrid.from_config(msg.content["plan"])
    methods = list(grid.methods)
    try:
        head = _opened_answer(node, msg.content, "cutoffs", STAGE_CUTOFFS, None, grid)
        cutoffs, digest = np.asarray(head["cutoffs"], dtype=np.float64), head["digest"].tobytes().decode("ascii")
        organisers = np.asarray(head.get("organisers", np.full(cutoffs.size, -1.0)), dtype=np.float64)
        named = _named_organisers(node, head, cutoffs.size)
    except (KeyError, ValueError) as exc:  # not the coordinator's: nobody here is a candidate
        _log.warning("query.scores: the coordinator's cutoffs do not open (%s); no candidate on this node", exc)
        cutoffs, digest, organisers, named = np.zeros(0), "", np.zeros(0), None
    cand = _candidates(node, cutoffs)
    out = _remembered_scores(context, digest, cand)
    if out is None and not cand.size:  # nobody to score: the knowledge is not needed
        out = np.empty((len(methods), 0))
    if out is None:
        if "knowledge" not in msg.content:  # the relay saves bandwidth after the first round
            return _reply(msg, need=ConfigRecord({"knowledge": True}))
        try:
            scorers = _cached(_SCORERS, digest, lambda: scorers_from_knowledge(
                methods, _opened_answer(node, msg.content, "knowledge", "knowledge", None, grid)), _SCORER_CACHE_SIZE)
        except ValueError as exc:
            _log.warning("query.scores: the majority knowledge does not open (%s); no candidate on this node", exc)
            cand, scorers = cand[:0], None
        from threadpoolctl import threadpool_limits

        # A node scores a handful of users: one BLAS/OpenMP thread is ~10x faster
        # than spinning up a pool per call (and leaves the other cores to other nodes).
        with threadpool_limits(1):
            out = _score(node, cand, methods, scorers)
    # Kept for the decision after the coordinator answers (context.state survives
    # between messages), and reused next round while the knowledge is the same: a
    # user's score depends only on its own x and the knowledge.
    context.state["candidates"] = record_of(index=cand, scores=out)
    context.state["candidates-meta"] = ConfigRecord({"round": _round(msg), "digest": digest})
    extra = {}
    if node.dynamics is not None:
        out, extra = _participation(node, msg, context, cutoffs, organisers, cand, out, named, grid=grid)
    # Every user node answers, candidates or not, with a payload of the same size.
    return _reply(
        msg,
        candidates=_sealed_payload(node, msg, SCORES, user_ids=node.user_ids[cand],
                                   member_tickets=node.member_tickets[cand], tie_tickets=node.tie_tickets[cand],
                                   scores=out),
        **extra,
    )


def _named_organisers(node: NodeData, head: dict, k: int) -> np.ndarray | None:
    """Most-connected organisers: which of this node's users the coordinator named, per alpha."""
    if "organiser_ids" not in head:
        return None
    counts = np.asarray(head["organiser_counts"], dtype=np.int64)
    if counts.shape != (k,) or (counts < 0).any() or counts.sum() != head["organiser_ids"].size:
        raise ValueError("malformed organiser ids")
    parts = np.split(np.asarray(head["organiser_ids"], dtype=np.int64), np.cumsum(counts)[:-1])
    return np.stack([np.isin(node.user_ids, p) for p in parts]) if k else np.zeros((0, node.user_ids.size), bool)


def _participation(node: NodeData, msg: Message, context: Context, cutoffs, organisers, cand, scores, named=None,
                   *, grid: CellGrid):
    """Many rounds: this node's members decide whether they act this round (:func:`agents.rounds.participate`)
    and its candidates see their noisy scores; kept for the decision, and sent sealed (with a
    fresh key for the coordinator's answers to this node alone). One row of flags per alpha,
    or with benefit-cost one per cell (each cell's published model gives its own gain)."""
    settings, t = node.dynamics, _round(msg)
    members = (node.a == 1)[None, :] & (node.member_tickets[None, :] < cutoffs[:, None])
    organiser = members & (user_tickets(node.user_ids, settings.organisers_key)[None, :] <= organisers[:, None])
    if named is not None:
        organiser |= members & named
    if settings.per_cell and cutoffs.size == len(grid.alphas):
        rows = settings.row_alphas(grid, cutoffs.size)
        members, organiser = members[rows], organiser[rows]
    before = arrays_of(context.state["dynamics"]) if "dynamics" in context.state else {}
    joined = before.get("joined", np.zeros(members.shape, dtype=np.int8)).astype(bool)
    seen = before.get("seen", np.zeros(members.shape))  # per row and user
    fresh = joined.shape != members.shape or seen.shape != members.shape  # another plan: start afresh
    if fresh:
        joined, seen = np.zeros(members.shape, dtype=bool), np.zeros(members.shape)
    extra_state, free = {}, np.zeros(members.shape, dtype=bool)
    kwargs = {}
    if settings.per_cell:  # benefit-cost: this round's gain from the published models, the last memory rounds'
        gain = _published_gain(node, msg, members.shape)
        history = before.get("gains") if not fresh else None
        history = [] if history is None or history.shape[1:] != members.shape else list(history)
        history = (history + [gain])[-settings.memory:]
        participants = before.get("participants", np.zeros(members.shape[0], dtype=np.int64))
        if fresh or participants.shape != members.shape[:1]:
            participants = np.zeros(members.shape[0], dtype=np.int64)
        kwargs = {"gains": history, "participants": participants, "free": free}
        extra_state = {"gains": np.stack(history), "participants": participants}
    joined, active = rounds.participate(settings, t, node.user_ids, members, organiser, joined, seen, **kwargs)
    noisy = rounds.noisy(settings, t, node.user_ids[cand], scores)
    reply_key = sealing.new_secret() if node.sealed else b""
    context.state["dynamics"] = record_of(joined=joined.astype(np.int8), active=active.astype(np.int8), seen=seen,
                                          noisy=noisy, index=cand, round=np.array([t]),
                                          reply_key=np.frombuffer(reply_key, dtype=np.uint8), **extra_state)
    idx = np.flatnonzero(members.any(axis=0))
    flags = {"free": free[:, idx].astype(np.int8)} if settings.per_cell else {}
    payload = _sealed_payload(node, msg, PARTICIPATION, reply_key=reply_key, user_ids=node.user_ids[idx],
                              member_tickets=node.member_tickets[idx], joined=joined[:, idx].astype(np.int8),
                              active=active[:, idx].astype(np.int8), **flags)
    return noisy, {"participation": payload}


def _published_gain(node: NodeData, msg: Message, shape) -> np.ndarray:
    """Benefit-cost: what the firm's published models (``published``: each cell's logistic
    model and group rates, of last round, and round 1's base model's, as ``public`` allows)
    show each of this node's users it gained, per cell (rows) and user
    (:func:`agents.participation.published_gain`); nothing published (round 1): zeros."""
    public = node.dynamics.public
    if "published" not in msg.content:
        return np.zeros(shape)
    try:
        pub = arrays_of(msg.content["published"])
        own = base_own = gap = base_gap = None
        if "own-outcome" in public:
            own = np.stack([participation.linear_favourable(node.X, c, i)
                            for c, i in zip(pub["coef"], pub["intercept"])])
            base_own = participation.linear_favourable(node.X, pub["base_coef"], pub["base_intercept"])
        if "group-rates" in public:
            gap, base_gap = pub["rates"][:, 1] - pub["rates"][:, 0], float(pub["base_rates"][1] - pub["base_rates"][0])
        rows = [participation.published_gain(public, shape[1], own=None if own is None else own[c], base_own=base_own,
                                             gap=None if gap is None else gap[c], base_gap=base_gap)
                for c in range(shape[0])]
        return np.stack(rows).reshape(shape)
    except (KeyError, ValueError, IndexError) as exc:
        _log.warning("query.scores: the firm's published models do not read (%s); no gain seen", exc)
        return np.zeros(shape)


def _score(node: NodeData, cand: np.ndarray, methods, scorers) -> np.ndarray:
    out = np.empty((len(methods), cand.size))
    if not cand.size:
        return out
    for i, method in enumerate(methods):
        extra = {}
        if method == "oracle":
            if node.cf_proba is None:
                raise ValueError("the oracle method needs counterfactual probabilities in the node file")
            extra["counterfactual_proba"] = node.cf_proba[cand]
        out[i] = scorers[method].score_samples(node.X[cand], **extra)
    return out


def _remembered_scores(context: Context, digest: str, cand: np.ndarray) -> np.ndarray | None:
    if "candidates-meta" not in context.state or str(context.state["candidates-meta"]["digest"]) != digest:
        return None
    memory = arrays_of(context.state["candidates"])
    return memory["scores"] if np.array_equal(memory["index"], cand) else None


@app.train("report")
def report(msg: Message, context: Context) -> Message:
    """Report (x, a, reported y) to the firm: one label per user, the one the collective's
    deployed cell gives. Nothing else leaves the node: the firm sees what it would see
    without a collective. A plan of more than one cell is refused (an error reply): a
    deployment runs exactly one cell, the grid is the experimenter's (``evaluate.cells``)."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg)
    n_cells = len(CellGrid.from_config(msg.content["plan"]))
    if n_cells != 1:
        raise ValueError(f"train.report: the coordinator's plan has {n_cells} cells; allowed: exactly one (the "
                         "cell the collective deploys; a grid of cells is the evaluator's, evaluate.cells)")
    labels = reported_labels(node, msg.content, _memory(context))[1:]
    return _reply(msg, report=record_of(user_ids=node.user_ids, X=node.X, a=node.a, labels=labels))


@app.evaluate("cells")
def cells(msg: Message, context: Context) -> Message:
    """The experimenter's counterfactual rows (simulation only): (x, a) with the true labels
    as row 0 and the reported labels of every cell of the grid, so the evaluator can train
    what the firm would train in each cell and count who flipped."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg)
    if not answers_evaluator(context):
        raise PermissionError("evaluate.cells: this node does not answer the experimenter's evaluator (its true "
                              "labels stay on the device); allowed: train.report, or node config evaluator=true "
                              "on a node whose owner takes part in an experiment")
    labels = reported_labels(node, msg.content, _memory(context), dynamics=_round_state(node, msg.content, context))
    return _reply(msg, report=record_of(user_ids=node.user_ids, X=node.X, a=node.a, labels=labels))


def _round_state(node: NodeData, content: RecordDict, context: Context) -> dict | None:
    """Many rounds: this round's participation and noisy scores (None: a one-shot node), after
    keeping the seen shares the coordinator's thresholds carry for next round."""
    if node.dynamics is None or "dynamics" not in context.state:
        return None
    state = arrays_of(context.state["dynamics"])
    try:
        grid = CellGrid.from_config(content["plan"])
        opened = _opened_answer(node, content, "thresholds", STAGE_THRESHOLDS,
                                int(content["round"]["round"]) if node.sealed else None, grid)
        seen = np.asarray(opened["seen"], dtype=np.float64)
        if seen.shape == state["seen"].shape[:1]:
            state["seen"] = np.repeat(seen[:, None], state["seen"].shape[1], axis=1)
        participants = np.asarray(opened.get("participants", np.zeros(0)), dtype=np.int64)
        if node.dynamics.per_cell and participants.shape == state["seen"].shape[:1]:  # free riding's N, next round
            state["participants"] = participants
    except (KeyError, ValueError) as exc:  # nothing published: members see what they saw before
        _log.warning("evaluate.cells: no seen shares in the coordinator's thresholds (%s)", exc)
        grid = None
    own = _own_answer(node, content, state, grid) if grid is not None else {}
    at = _find(node.user_ids, np.asarray(own.get("user_ids", np.empty(0)), dtype=np.int64))
    if "seen" in own and own["seen"].shape == (state["seen"].shape[0], at.size):  # each member's neighbours' share
        state["seen"][:, at[at >= 0]] = own["seen"][:, at >= 0]
    if "threshold" in own and own["threshold"].shape == (len(grid), at.size) and "ticket" in own:
        # reach, stale signals: each member's own threshold (score, ticket; NaN: no signal)
        for key, name in (("threshold", "own_score"), ("ticket", "own_ticket")):
            state[name] = np.full((len(grid), node.user_ids.size), np.nan)
            state[name][:, at[at >= 0]] = np.asarray(own[key], dtype=np.float64)[:, at >= 0]
    elif "threshold" in own and own["threshold"].shape == (len(grid), at.size):  # gossip: each member's own estimate
        state["own"] = np.full((len(grid), node.user_ids.size), np.nan)
        state["own"][:, at[at >= 0]] = own["threshold"][:, at >= 0]
        state["delta"] = np.asarray(own["delta"], dtype=np.float64)
    elif grid is not None and node.dynamics.coordination != "gossip" and (
            node.dynamics.coordination == "reach" or node.dynamics.staleness > 0):
        # A signal per member that did not come (or does not open): nobody here acts.
        state["own_score"] = state["own_ticket"] = np.full((len(grid), node.user_ids.size), np.nan)
    context.state["dynamics"] = record_of(**state)
    return state


def _own_answer(node: NodeData, content: RecordDict, state: dict, grid: CellGrid) -> dict:
    """The coordinator's answer for this node alone (``private``; {}: none, or it does not open)."""
    if PRIVATE not in content:
        return {}
    try:
        if not node.sealed:
            return arrays_of(content[PRIVATE])
        key = state.get(REPLY_KEY, np.empty(0, dtype=np.uint8)).astype(np.uint8).tobytes()
        ctx = _answer_context(node, PRIVATE, int(content["round"]["round"]), grid)
        return sealing.unpack(sealing.CollectiveKey(key).open(sealing.blob_of(content[PRIVATE]), ctx))
    except (KeyError, ValueError, sealing.SealError) as exc:
        _log.warning("evaluate.cells: the coordinator's answer for this node does not open (%s)", exc)
        return {}


def answers_evaluator(context: Context) -> bool:
    """Whether this node sends the evaluator its counterfactual rows (true labels included).

    A simulated node (its file found by ``partition-id`` in the experimenter's own
    ``node-data-dir``) does. A node started with its own ``data-path`` -- a device, or a
    deployment's node -- does only when its owner opted in with node config
    ``evaluator=true``: whoever runs the ServerApp cannot switch the evaluator on by
    itself, so a real firm gets reports only."""
    if "data-path" not in context.node_config:
        return True
    value = context.node_config.get("evaluator", False)
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _memory(context: Context) -> dict | None:
    """The node's latest scores: the coordinator's thresholds are computed from the
    same ones (re-sent only when the knowledge changes)."""
    return arrays_of(context.state["candidates"]) if "candidates" in context.state else None


def reported_labels(node: NodeData, content: RecordDict, memory: dict | None, *, dynamics: dict | None = None) -> np.ndarray:
    """One row of reported labels per cell, row 0 being the true labels (nobody relabels).

    ``dynamics`` (many rounds, this round's state from :func:`_participation`): candidates
    decide on their noisy scores, only where they act, and flip only if they comply."""
    grid = CellGrid.from_config(content["plan"])
    labels = np.repeat(node.y[None, :].astype(np.int8), len(grid) + 1, axis=0)
    # Most nodes have no candidate (member with y = 0): nothing can flip, whatever the thresholds.
    if len(grid) == 0 or (memory is not None and memory["index"].size == 0):
        return labels
    if dynamics is not None and "own" in dynamics:  # gossip: each member's own threshold estimate
        return _gossip_labels(node, content, grid, labels, memory, dynamics)
    if dynamics is not None and "own_score" in dynamics:  # reach, stale signals: each member's own threshold
        return _own_labels(node, content, grid, labels, memory, dynamics)
    signal = _signal(node, content, grid)
    if not signal.reachable:
        return labels
    if memory is None:
        raise ValueError("a report before query.scores: this node has no scores yet")
    cand = memory["index"].astype(np.int64)
    if dynamics is not None:
        if not np.array_equal(dynamics["index"], cand):
            raise ValueError("evaluate.cells: this round's participation is for other candidates than the scores")
        active = dynamics["active"].astype(bool)[:, cand]
        flips = rule.decide_cells(grid, signal, node.member_tickets[cand], node.tie_tickets[cand], dynamics["noisy"],
                                  held_back=~active, per_cell=node.dynamics.per_cell)
        flips &= rounds.complies(node.dynamics, int(content["round"]["round"]), node.user_ids[cand])[None, :]
    else:
        flips = rule.decide_cells(grid, signal, node.member_tickets[cand], node.tie_tickets[cand], memory["scores"])
    rows = labels[1:, cand]
    rows[flips] = 1
    labels[1:, cand] = rows
    return labels


def _gossip_labels(node: NodeData, content: RecordDict, grid: CellGrid, labels, memory, dynamics) -> np.ndarray:
    """Gossip: a candidate acting at the cell's alpha flips iff its key (noisy score with the
    tie ticket folded in) reaches its own estimate, and it complies."""
    from .decision import Threshold, decide

    if memory is None:
        raise ValueError("a report before query.scores: this node has no scores yet")
    cand = memory["index"].astype(np.int64)
    if not np.array_equal(dynamics["index"], cand):
        raise ValueError("evaluate.cells: this round's participation is for other candidates than the scores")
    own = dynamics["own"][:, cand]
    delta = np.asarray(dynamics["delta"], dtype=np.float64)[grid.method_of]
    keys = dynamics["noisy"][grid.method_of] + node.tie_tickets[cand][None, :] * delta[:, None]
    eligible = dynamics["active"].astype(bool)[:, cand][node.dynamics.rows_of(grid)]
    flips = decide(keys, np.zeros(keys.shape), Threshold(own, np.where(np.isnan(own), np.nan, 0.0)), eligible=eligible)
    flips &= rounds.complies(node.dynamics, int(content["round"]["round"]), node.user_ids[cand])[None, :]
    rows = labels[1:, cand]
    rows[flips] = 1
    labels[1:, cand] = rows
    return labels


def _own_labels(node: NodeData, content: RecordDict, grid: CellGrid, labels, memory, dynamics) -> np.ndarray:
    """Reach or stale signals: a candidate acting at the cell's alpha flips iff its (noisy
    score, tie ticket) reaches its own threshold (none: it does not act), and it complies."""
    from .decision import Threshold, decide

    if memory is None:
        raise ValueError("a report before query.scores: this node has no scores yet")
    cand = memory["index"].astype(np.int64)
    if not np.array_equal(dynamics["index"], cand):
        raise ValueError("evaluate.cells: this round's participation is for other candidates than the scores")
    keys = dynamics["noisy"][grid.method_of]
    ties = np.broadcast_to(node.tie_tickets[cand][None, :], keys.shape)
    eligible = dynamics["active"].astype(bool)[:, cand][node.dynamics.rows_of(grid)]
    flips = decide(keys, ties, Threshold(dynamics["own_score"][:, cand], dynamics["own_ticket"][:, cand]),
                   eligible=eligible)
    flips &= rounds.complies(node.dynamics, int(content["round"]["round"]), node.user_ids[cand])[None, :]
    rows = labels[1:, cand]
    rows[flips] = 1
    labels[1:, cand] = rows
    return labels
