"""The firm's intake: validate every node's report before training on it.

A report is what one node sends the firm: its users' ids, features ``X``,
sensitive attribute ``a`` and one row of reported labels per cell. A report
with missing arrays, wrong shapes, non-finite features, values outside {0, 1},
unknown user ids, or user ids that occur twice (within the report or in
another report) is rejected whole and counted under its reason; the round goes
on with the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from agents.validation import is_binary

__all__ = ["REASONS", "Intake", "assemble", "check_report", "validate_reports"]

REQUIRED = ("user_ids", "X", "a", "labels")
REASONS = ("missing", "shape", "dtype", "non-finite", "labels", "sensitive", "unknown-user", "duplicate-user")


def check_report(arrays: dict, *, n_features: int, n_label_rows: int, known_ids=None) -> str | None:
    """The reason a report is rejected, or ``None`` if it is well formed."""
    if any(name not in arrays for name in REQUIRED):
        return "missing"
    ids, X, a, labels = (np.asarray(arrays[name]) for name in REQUIRED)
    k = ids.shape[0] if ids.ndim == 1 else -1
    if k < 0 or X.shape != (k, n_features) or a.shape != (k,) or labels.shape != (n_label_rows, k):
        return "shape"
    if not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(X.dtype, np.number):
        return "dtype"
    if not np.isfinite(X).all():
        return "non-finite"
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

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


def validate_reports(reports, *, n_features: int, n_label_rows: int, known_ids=None) -> Intake:
    """Check ``(node_id, arrays)`` reports; duplicated ids reject every report holding them."""
    intake, passed = Intake(), []
    for node_id, arrays in reports:
        reason = check_report(arrays, n_features=n_features, n_label_rows=n_label_rows, known_ids=known_ids)
        if reason is None:
            passed.append((node_id, arrays))
        else:
            intake.rejected[reason] += 1
            intake.rejected_nodes[node_id] = reason
    # Which of two nodes claiming one user is honest cannot be told: drop both,
    # so the outcome does not depend on the order replies arrived in.
    counts = Counter(int(u) for _, arrays in passed for u in np.asarray(arrays["user_ids"]))
    for node_id, arrays in passed:
        if any(counts[int(u)] > 1 for u in np.asarray(arrays["user_ids"])):
            intake.rejected["duplicate-user"] += 1
            intake.rejected_nodes[node_id] = "duplicate-user"
        else:
            intake.accepted.append((node_id, arrays))
    return intake


def assemble(accepted, *, order=None) -> dict[str, np.ndarray]:
    """Stack accepted reports into the firm's training table.

    Rows follow ``order`` (the firm's customer list) when given, else
    increasing user id, so the table does not depend on the sharding.
    """
    if not accepted:
        raise ValueError("no report was accepted: the firm has nothing to train on")
    ids = np.concatenate([np.asarray(r["user_ids"], dtype=np.int64) for _, r in accepted])
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
