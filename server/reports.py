"""The firm's intake: validate every node's reply before training on it.

A report is what one node sends in reply to ``train.report`` (to the firm: one
label row) or ``evaluate.cells`` (to the experimenter's evaluator: the true
labels and one row per cell): an ``ArrayRecord`` named ``report`` holding
exactly the arrays ``user_ids`` (integers), ``X`` (real numbers), ``a`` and
``labels`` (0/1, one row per label vector). Both roles check replies with the
same code. A reply that breaks any rule below is rejected whole, counted under
its reason, and the round goes on with the others (and completes, with no
metrics, when nothing is left). Checks run in this order, cheapest first, and
no array is decoded before its size has been checked:

``no-report``      the reply has no ``report`` record;
``record-type``    ``report`` is not an ``ArrayRecord`` (e.g. a ``ConfigRecord``);
``missing``        one of the four arrays is missing;
``extra-array``    an array other than the four (the report's names are fixed);
``size``           message size limit: the arrays hold more than
                   ``n x (features + label rows + 2) + 1024`` elements (or bytes
                   beyond 8 per element + 4 kB of headers), ``n`` being the users the
                   node declared at sign-up (``n_users`` of its join reply; the
                   firm's customer count if it declared none);
``dtype``          ids not integers, ``X`` not real (complex, str, object ...),
                   ``a``/labels not numbers, or an array that does not decode;
``shape``          shapes inconsistent with ``len(user_ids)``, the feature count
                   or the number of label rows;
``non-finite``     NaN or infinite features;
``schema``         a feature outside the firm's accepted range. The firm knows its
                   schema from its own data: column ``j`` is accepted in
                   ``[lo_j - 10 w_j, hi_j + 10 w_j]``, where ``lo_j``/``hi_j`` are the
                   smallest/largest value of column ``j`` in the firm's test set and
                   ``w_j = max(hi_j - lo_j, 1)``; a one-hot column is accepted in
                   [-10, 11], a standardised one within ten test-set spans of what
                   the firm has seen (see :class:`Schema`);
``labels``         a label not 0 or 1;  ``sensitive``: an ``a`` not 0 or 1;
``unknown-user``   an id not on the firm's customer list;
``user-count``     more users than the node declared at sign-up;
``not-owner``      an id owned by another node, or (once the node owns users) an
                   id it does not own. Ownership is fixed at sign-up: each user
                   node lists its user ids in its join reply's ``node`` record, and
                   owns them for the whole run (:meth:`Registry.declare`); a node
                   that declared none owns the ids of its first accepted report.
                   Later claims by others are rejected and the owner keeps its users;
``duplicate-user`` an id repeated within a report, or claimed in the same round by
                   two nodes that own nothing yet (neither declared it: which is
                   honest cannot be told, so both are dropped, whatever the order).

An id that two nodes declared at sign-up is **contested**: it is nobody's for the
run. Its rows are dropped from every report that holds it (counted as
``users_dropped["contested"]``, the rest of the report is kept), and every other
id of those nodes stays theirs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from agents.validation import is_binary

__all__ = ["REASONS", "Intake", "Registry", "Schema", "assemble", "check_report", "decode_report", "max_elements",
           "validate_replies", "validate_reports"]

REQUIRED = ("user_ids", "X", "a", "labels")
REASONS = ("no-report", "record-type", "missing", "extra-array", "size", "dtype", "shape", "non-finite", "schema",
           "labels", "sensitive", "unknown-user", "user-count", "not-owner", "duplicate-user")
SLACK_ELEMENTS = 1024
HEADER_BYTES = 4096
SCHEMA_WIDEN = 10.0


@dataclass(frozen=True)
class Schema:
    """The features the firm accepts: one closed range per column."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def from_test_set(cls, X_test, *, widen: float = SCHEMA_WIDEN) -> "Schema":
        X = np.asarray(X_test, dtype=np.float64)
        lo, hi = X.min(axis=0), X.max(axis=0)
        width = np.maximum(hi - lo, 1.0)
        return cls(lo - widen * width, hi + widen * width)

    def accepts(self, X: np.ndarray) -> bool:
        return bool(((X >= self.lo) & (X <= self.hi)).all())


@dataclass
class Registry:
    """Who owns which users, for the whole run.

    Fixed at sign-up from the ids nodes declare (:meth:`declare`); a node that
    declared none owns the ids of its first accepted report. ``declared`` holds
    the user counts nodes declared at sign-up (the size bound of their reports).
    """

    owner: dict = field(default_factory=dict)  # user id -> node id
    owned: dict = field(default_factory=dict)  # node id -> frozenset of user ids
    declared: dict = field(default_factory=dict)  # node id -> n_users of its join reply
    contested: frozenset = frozenset()  # ids declared by two or more nodes: nobody's

    def register(self, node_id, ids) -> None:
        ids = frozenset(int(u) for u in ids)
        self.owned[node_id] = ids
        for u in ids:
            self.owner[u] = node_id

    def declare(self, ids_by_node: dict) -> int:
        """Fix ownership from the user ids each node declared at sign-up; returns how many
        ids are contested. An id declared by two nodes is owned by neither (which one is
        honest cannot be told); every other declared id belongs to its node for the run."""
        sets = {node_id: frozenset(int(u) for u in ids) for node_id, ids in ids_by_node.items()}
        counts = Counter(u for ids in sets.values() for u in ids)
        self.contested = self.contested | {u for u, c in counts.items() if c > 1}
        for node_id, ids in sets.items():
            self.register(node_id, ids - self.contested)
        return sum(1 for c in counts.values() if c > 1)


def max_elements(n_users: int, *, n_features: int, n_label_rows: int) -> int:
    """The message size limit of one report, in array elements."""
    return int(n_users) * (n_features + n_label_rows + 2) + SLACK_ELEMENTS


def decode_report(content, *, limit: int) -> tuple[dict | None, str | None]:
    """A reply's report as numpy arrays, or the reason it cannot be read.

    Sizes are checked on the serialised bytes before anything is decoded.
    """
    from flwr.app import ArrayRecord

    try:
        if "report" not in content:
            return None, "no-report"
        record = content["report"]
    except Exception:
        return None, "no-report"
    if not isinstance(record, ArrayRecord):
        return None, "record-type"
    names = set(record.keys())
    if not set(REQUIRED) <= names:
        return None, "missing"
    if names - set(REQUIRED):
        return None, "extra-array"
    try:
        n_bytes = sum(len(record[k].data) for k in REQUIRED)
        n_elements = sum(int(np.prod(record[k].shape, dtype=np.float64)) for k in REQUIRED)
    except Exception:
        return None, "dtype"
    if n_elements > limit or n_bytes > 8 * limit + HEADER_BYTES:
        return None, "size"
    try:
        arrays = {k: record[k].numpy() for k in REQUIRED}
    except Exception:  # object arrays, other serialisations, corrupt bytes
        return None, "dtype"
    return arrays, None


def check_report(arrays: dict, *, n_features: int, n_label_rows: int, known_ids=None,
                 schema: Schema | None = None) -> str | None:
    """The reason a report's arrays are rejected, or ``None`` if they are well formed."""
    if any(name not in arrays for name in REQUIRED):
        return "missing"
    ids, X, a, labels = (np.asarray(arrays[name]) for name in REQUIRED)
    if (ids.dtype.kind not in "iu" or X.dtype.kind not in "iuf" or a.dtype.kind not in "biuf"
            or labels.dtype.kind not in "biuf"):
        return "dtype"
    k = ids.shape[0] if ids.ndim == 1 else -1
    if k < 0 or X.shape != (k, n_features) or a.shape != (k,) or labels.shape != (n_label_rows, k):
        return "shape"
    if not np.isfinite(X).all():
        return "non-finite"
    if schema is not None and not schema.accepts(X):
        return "schema"
    if not is_binary(labels):
        return "labels"
    if not is_binary(a):
        return "sensitive"
    if known_ids is not None and not np.isin(ids, known_ids).all():
        return "unknown-user"
    if np.unique(ids).size != k:
        return "duplicate-user"
    return None


@dataclass
class Intake:
    """The outcome of one collection phase."""

    accepted: list = field(default_factory=list)  # (node_id, arrays)
    rejected: Counter = field(default_factory=Counter)  # reason -> number of reports
    rejected_nodes: dict = field(default_factory=dict)  # node_id -> reason
    users_dropped: Counter = field(default_factory=Counter)  # reason -> rows dropped from accepted reports

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def reject(self, node_id, reason: str) -> None:
        self.rejected[reason] += 1
        self.rejected_nodes[node_id] = reason

    def summary(self, n_asked: int) -> dict:
        """What ``results.json`` records of one collection phase."""
        out = {"users": n_asked, "reports_accepted": len(self.accepted), "reports_rejected": dict(self.rejected),
               "rejected_nodes": {str(k): v for k, v in self.rejected_nodes.items()}}
        if self.users_dropped:
            out["users_dropped"] = dict(self.users_dropped)
        return out


def validate_replies(replies, *, n_features: int, n_label_rows: int, known_ids=None, schema: Schema | None = None,
                     registry: Registry | None = None) -> Intake:
    """Check ``(node_id, content)`` replies to ``train.report`` or ``evaluate.cells`` (any record type)."""
    intake, decoded = Intake(), []
    n_customers = len(known_ids) if known_ids is not None else None
    for node_id, content in replies:
        n_users = registry.declared.get(node_id) if registry is not None else None
        if n_users is None:
            n_users = n_customers if n_customers is not None else 10**6
        arrays, reason = decode_report(content, limit=max_elements(n_users, n_features=n_features,
                                                                   n_label_rows=n_label_rows))
        if reason is not None:
            intake.reject(node_id, reason)
        else:
            decoded.append((node_id, arrays))
    return validate_reports(decoded, n_features=n_features, n_label_rows=n_label_rows, known_ids=known_ids,
                            schema=schema, registry=registry, intake=intake)


def validate_reports(reports, *, n_features: int, n_label_rows: int, known_ids=None, schema: Schema | None = None,
                     registry: Registry | None = None, intake: Intake | None = None) -> Intake:
    """Check ``(node_id, arrays)`` reports, then ownership.

    With a ``registry`` (kept across rounds), ids another node owns, or ids a
    node that owns users does not own, reject the report ("not-owner") and the
    owner keeps its users; ids claimed by several nodes that own nothing yet
    reject all of them ("duplicate-user"). Rows of contested ids (declared by
    two nodes at sign-up) are dropped from the report and counted, the rest is
    kept. Accepted reports of nodes that own nothing yet register their ids.
    Without a registry, ids claimed twice reject every report holding them.
    """
    intake, passed = intake if intake is not None else Intake(), []
    registry = registry if registry is not None else Registry()
    for node_id, arrays in reports:
        reason = check_report(arrays, n_features=n_features, n_label_rows=n_label_rows, known_ids=known_ids,
                              schema=schema)
        if reason is None:
            ids = [int(u) for u in np.asarray(arrays["user_ids"])]
            declared = registry.declared.get(node_id)
            owned = registry.owned.get(node_id)
            claimed = [u for u in ids if u not in registry.contested]
            if declared is not None and len(ids) > declared:
                reason = "user-count"
            elif owned is not None and not all(u in owned for u in claimed):
                reason = "not-owner"
            elif any(registry.owner.get(u, node_id) != node_id for u in claimed):
                reason = "not-owner"
            elif len(claimed) < len(ids):  # nobody's: drop those rows, keep the rest
                keep = ~np.isin(np.asarray(arrays["user_ids"]), np.fromiter(registry.contested, dtype=np.int64))
                intake.users_dropped["contested"] += int(np.count_nonzero(~keep))
                arrays = {"user_ids": np.asarray(arrays["user_ids"])[keep], "X": np.asarray(arrays["X"])[keep],
                          "a": np.asarray(arrays["a"])[keep], "labels": np.asarray(arrays["labels"])[:, keep]}
        if reason is None:
            passed.append((node_id, arrays))
        else:
            intake.reject(node_id, reason)
    # Which of two new nodes claiming one user is honest cannot be told: drop both,
    # so the outcome does not depend on the order replies arrived in.
    counts = Counter(int(u) for _, arrays in passed for u in np.asarray(arrays["user_ids"]))
    for node_id, arrays in passed:
        ids = np.asarray(arrays["user_ids"])
        if any(counts[int(u)] > 1 for u in ids):
            intake.reject(node_id, "duplicate-user")
        else:
            intake.accepted.append((node_id, arrays))
    for node_id, arrays in intake.accepted:
        if node_id not in registry.owned:
            registry.register(node_id, np.asarray(arrays["user_ids"]))
    return intake


def assemble(accepted, *, order=None) -> dict[str, np.ndarray] | None:
    """Stack accepted reports into the firm's training table (``None`` if there is none).

    Rows follow ``order`` (the firm's customer list) when given, else
    increasing user id, so the table does not depend on the sharding.
    """
    if not accepted:
        return None
    ids = np.concatenate([np.asarray(r["user_ids"], dtype=np.int64) for _, r in accepted])
    if not ids.size:  # only contested users were reported
        return None
    if order is None:
        perm = np.argsort(ids, kind="stable")
    else:
        order = np.asarray(order, dtype=np.int64)
        sorter = np.argsort(order, kind="stable")
        position = sorter[np.searchsorted(order, ids, sorter=sorter)]  # index in the customer list
        perm = np.argsort(position, kind="stable")
    return {
        "user_ids": ids[perm],
        "X": np.concatenate([np.asarray(r["X"], dtype=np.float64) for _, r in accepted])[perm],
        "a": np.concatenate([np.asarray(r["a"]).astype(np.int8) for _, r in accepted])[perm],
        "labels": np.concatenate([np.asarray(r["labels"]).astype(np.int8) for _, r in accepted], axis=1)[:, perm],
    }
