"""Users as Flower clients: a node holds its own users' records and decides locally.

A node is one user on a device, or a shard of K users in simulation. It reads
its records ``(user id, x, a, y)`` from the file named in its node config
(``data-path``) or, in simulation, ``<node-data-dir>/node-<partition-id>.npz``
from the run config. One node per run is the coalition's coordinator instead:
its file holds the collective's majority reference rows and grid.

Message types (all relayed by the ServerApp, which never reads the coalition
ones; see docs/federated.md):

* ``query.join``        users -> coordinator: membership tickets of minority users.
* ``query.coordinate``  coordinator: membership cutoffs + shared signal, then thresholds.
* ``query.scores``      users -> coordinator: (member ticket, tie ticket, scores) of
                        members with y = 0, scored locally from the shared signal.
* ``train.report``      users -> firm: the reports (x, a, reported y), one reported
                        label row per cell of the grid (row 0: nobody relabels).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from .coalition import (
    budgets_from_arrays,
    budgets_to_arrays,
    cell_plan,
    coalition_thresholds,
    membership_cutoffs,
    scorers_from_signal,
    signal_digest,
    signal_from_reference,
)
from .decision import Threshold, decide, user_tickets

__all__ = [
    "CoordinatorData",
    "NodeData",
    "app",
    "arrays_of",
    "load_node_file",
    "record_of",
    "write_coordinator_file",
    "write_users_file",
]

app = ClientApp()

ROLE_USERS, ROLE_COORDINATOR = "users", "coordinator"


# ------------------------------------------------------------------ node files


@dataclass(frozen=True)
class NodeData:
    """One node's users: only their own records and the collective's ticket keys."""

    user_ids: np.ndarray
    X: np.ndarray
    a: np.ndarray
    y: np.ndarray
    membership_key: int
    tie_key: int
    cf_proba: np.ndarray | None = None  # synthetic data only (oracle method)

    @property
    def member_tickets(self) -> np.ndarray:
        return user_tickets(self.user_ids, self.membership_key)

    @property
    def tie_tickets(self) -> np.ndarray:
        return user_tickets(self.user_ids, self.tie_key)


@dataclass(frozen=True)
class CoordinatorData:
    """What the coalition's coordinator knows: the grid and the majority reference."""

    methods: tuple
    alphas: tuple
    budgets: tuple
    k: int
    X_ref: np.ndarray
    y_ref: np.ndarray


def write_users_file(path, *, user_ids, X, a, y, membership_key, tie_key, cf_proba=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        role=np.array(ROLE_USERS),
        user_ids=np.asarray(user_ids, dtype=np.int64),
        X=np.asarray(X, dtype=np.float64),
        a=np.asarray(a).astype(np.int8),
        y=np.asarray(y).astype(np.int8),
        keys=np.array([membership_key, tie_key], dtype=np.uint64),
    )
    if cf_proba is not None:
        arrays["cf_proba"] = np.asarray(cf_proba, dtype=np.float64)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def write_coordinator_file(path, *, methods, alphas, budgets, k, X_ref, y_ref) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values, is_count = budgets_to_arrays(budgets)
    with open(path, "wb") as fh:
        np.savez(
            fh,
            role=np.array(ROLE_COORDINATOR),
            methods=np.array(list(methods), dtype=str),
            alphas=np.asarray(alphas, dtype=np.float64),
            budgets=values,
            budget_is_count=is_count,
            k=np.array(int(k), dtype=np.int64),
            X_ref=np.asarray(X_ref, dtype=np.float64),
            y_ref=np.asarray(y_ref).astype(np.int8),
        )
    return path


def load_node_file(path) -> NodeData | CoordinatorData:
    with np.load(path, allow_pickle=False) as f:
        role = str(f["role"])
        if role == ROLE_COORDINATOR:
            return CoordinatorData(
                methods=tuple(str(m) for m in f["methods"]),
                alphas=tuple(float(a) for a in f["alphas"]),
                budgets=budgets_from_arrays(f["budgets"], f["budget_is_count"]),
                k=int(f["k"]),
                X_ref=f["X_ref"],
                y_ref=f["y_ref"],
            )
        if role != ROLE_USERS:
            raise ValueError(f"{path}: unknown node role {role!r}; allowed: users, coordinator")
        keys = f["keys"]
        return NodeData(
            user_ids=f["user_ids"],
            X=f["X"],
            a=f["a"],
            y=f["y"],
            membership_key=int(keys[0]),
            tie_key=int(keys[1]),
            cf_proba=f["cf_proba"] if "cf_proba" in f.files else None,
        )


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


def _file_key(context: Context) -> tuple:
    path = node_file_path(context)
    stat = os.stat(path)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _node(context: Context) -> NodeData | CoordinatorData:
    key = _file_key(context)
    return _cached(_FILES, key, lambda: load_node_file(key[0]), _FILE_CACHE_SIZE)


# ------------------------------------------------------------------ record helpers


def record_of(**arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def arrays_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _reply(msg: Message, **records) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def _round(msg: Message) -> int:
    return int(msg.content["round"]["round"])


# ------------------------------------------------------------------ handlers


@app.query("join")
def join(msg: Message, context: Context) -> Message:
    """Minority users join the collective by sending their membership tickets."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg, node=ConfigRecord({"role": ROLE_COORDINATOR, "n_users": 0}))
    minority = node.a == 1
    return _reply(
        msg,
        node=ConfigRecord({"role": ROLE_USERS, "n_users": int(node.user_ids.size)}),
        join=record_of(member_tickets=node.member_tickets[minority]),
    )


@app.query("coordinate")
def coordinate(msg: Message, context: Context) -> Message:
    """The coordinator: cutoffs and the shared signal, then the thresholds of every cell."""
    node = _node(context)
    if not isinstance(node, CoordinatorData):
        raise ValueError("query.coordinate reached a node that is not the coordinator")
    stage = str(msg.content["stage"]["stage"])
    payloads = [arrays_of(rec) for name, rec in msg.content.array_records.items() if name.startswith("member-")]
    plan = cell_plan(node.methods, node.alphas, node.budgets)
    if stage == "cutoffs":
        tickets = np.concatenate([p["member_tickets"] for p in payloads]) if payloads else np.empty(0)
        cutoffs = membership_cutoffs(tickets, plan.alphas)
        n_members = np.array([(tickets < c).sum() for c in cutoffs], dtype=np.int64)
        # The coordinator's own memory between its two stages.
        context.state["coordinator"] = record_of(cutoffs=cutoffs, n_members=n_members, round=np.array([_round(msg)]))
        signal = _cached(
            _SCORERS, ("signal", *_file_key(context)),
            lambda: signal_from_reference(plan.methods, node.X_ref, node.y_ref, k=node.k), _SCORER_CACHE_SIZE,
        )
        return _reply(
            msg,
            cutoffs=record_of(cutoffs=cutoffs),
            signal=record_of(**signal),
            plan=ConfigRecord({
                "methods": list(plan.methods),
                "n_alphas": len(plan.alphas),
                "n_budgets": len(plan.budgets),
                "digest": signal_digest(signal),
            }),
        )
    if stage in ("thresholds", "repeat"):
        if "coordinator" not in context.state:
            raise ValueError("query.coordinate thresholds before the members joined (no cutoffs yet)")
        memory = arrays_of(context.state["coordinator"])
        if stage == "thresholds":
            cat = lambda key, shape: np.concatenate([p[key] for p in payloads], axis=-1) if payloads else np.empty(shape)
            cands = dict(member_tickets=cat("member_tickets", 0), tie_tickets=cat("tie_tickets", 0),
                         scores=cat("scores", (len(plan.methods), 0)))
            # Scores depend only on each member's x and the signal: while the signal
            # is unchanged, later rounds reuse them instead of asking everyone again.
            context.state["coordinator-candidates"] = record_of(**cands)
        elif "coordinator-candidates" in context.state:
            cands = arrays_of(context.state["coordinator-candidates"])
        else:
            raise ValueError("query.coordinate repeat before any member sent scores")
        t = coalition_thresholds(plan, memory["cutoffs"], memory["n_members"], cands["member_tickets"],
                                 cands["tie_tickets"], cands["scores"])
        return _reply(
            msg,
            thresholds=record_of(cutoffs=t.cutoffs, score=t.score, ticket=t.ticket),
            plan=ConfigRecord({"methods": list(plan.methods), "n_alphas": len(plan.alphas), "n_budgets": len(plan.budgets)}),
            summary=record_of(n_members=t.n_members, pool_size=t.pool_size, m=t.m, score=t.score),
        )
    raise ValueError(f"unknown coordinator stage {stage!r}; allowed: cutoffs, thresholds, repeat")


def _candidates(node: NodeData, cutoffs: np.ndarray) -> np.ndarray:
    """Positions of the node's users who are members at the largest alpha and have y = 0."""
    top = float(np.max(cutoffs)) if cutoffs.size else 0.0
    return np.flatnonzero((node.a == 1) & (node.y == 0) & (node.member_tickets < top))


@app.query("scores")
def scores(msg: Message, context: Context) -> Message:
    """Members with y = 0 score themselves locally from the shared signal."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg)
    cutoffs = msg.content["cutoffs"]["cutoffs"].numpy()
    plan = msg.content["plan"]
    methods, digest = [str(m) for m in plan["methods"]], str(plan["digest"])
    cand = _candidates(node, cutoffs)
    out = _remembered_scores(context, digest, cand)
    if out is None:
        if "signal" not in msg.content:  # the relay saves bandwidth after the first round
            return _reply(msg, need=ConfigRecord({"signal": True}))
        signal_record = msg.content["signal"]
        scorers = _cached(_SCORERS, digest, lambda: scorers_from_signal(methods, arrays_of(signal_record)),
                          _SCORER_CACHE_SIZE)
        from threadpoolctl import threadpool_limits

        # A node scores a handful of users: one BLAS/OpenMP thread is ~10x faster
        # than spinning up a pool per call (and leaves the other cores to other nodes).
        with threadpool_limits(1):
            out = _score(node, cand, methods, scorers)
    # Kept for the decision after the coordinator answers (context.state survives
    # between messages), and reused next round while the signal is the same: a
    # user's score depends only on its own x and the signal.
    context.state["candidates"] = record_of(index=cand, scores=out)
    context.state["candidates-meta"] = ConfigRecord({"round": _round(msg), "digest": digest})
    return _reply(
        msg,
        candidates=record_of(member_tickets=node.member_tickets[cand], tie_tickets=node.tie_tickets[cand], scores=out),
    )


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
    """Decide locally for every cell and report (x, a, reported y) to the firm."""
    node = _node(context)
    if isinstance(node, CoordinatorData):
        return _reply(msg)
    # The node's latest scores: the coordinator's thresholds are computed from the
    # same ones (re-sent only when the signal changes).
    candidates = context.state["candidates"] if "candidates" in context.state else None
    labels = reported_labels(node, msg.content, candidates)
    return _reply(msg, report=record_of(user_ids=node.user_ids, X=node.X, a=node.a, labels=labels))


def reported_labels(node: NodeData, content: RecordDict, candidates: ArrayRecord | None) -> np.ndarray:
    """One row of reported labels per cell, row 0 being the true labels (nobody relabels)."""
    plan = content["plan"]
    n_methods, n_alphas, n_budgets = len(list(plan["methods"])), int(plan["n_alphas"]), int(plan["n_budgets"])
    n_cells = n_methods * n_alphas * n_budgets
    labels = np.repeat(node.y[None, :].astype(np.int8), n_cells + 1, axis=0)
    memory = arrays_of(candidates) if candidates is not None else None
    # Most nodes have no candidate (member with y = 0): nothing can flip, whatever the thresholds.
    if n_cells == 0 or (memory is not None and memory["index"].size == 0):
        return labels
    t = arrays_of(content["thresholds"])
    if np.isinf(t["score"]).all():  # nobody can reach the threshold
        return labels
    if memory is None:
        raise ValueError("train.report before query.scores: this node has no scores yet")
    cand, cand_scores = memory["index"].astype(np.int64), memory["scores"]
    member, tie = node.member_tickets[cand], node.tie_tickets[cand]
    # Every cell at once; cell c is (method i, alpha j, budget) in row-major order.
    method_of = np.repeat(np.arange(n_methods), n_alphas * n_budgets)
    alpha_of = np.tile(np.repeat(np.arange(n_alphas), n_budgets), n_methods)
    eligible = member[None, :] < np.asarray(t["cutoffs"])[alpha_of][:, None]
    threshold = Threshold(np.asarray(t["score"], dtype=np.float64)[:, None], np.asarray(t["ticket"], dtype=np.float64)[:, None])
    flips = decide(cand_scores[method_of], tie[None, :], threshold, eligible=eligible)
    rows = labels[1:, cand]
    rows[flips] = 1
    labels[1:, cand] = rows
    return labels
