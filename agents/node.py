"""What one Flower node holds: its users' own records, or the coordinator's reference.

A node is one user on a device, or a shard of K users in simulation; it knows
only its users' ``(user id, x, a, y)`` and the collective's two ticket keys.
One node per run is the coalition's coordinator instead: it holds the grid,
the majority reference rows the collective may see, the two ticket keys (so it
can recompute every ticket members send) and its identity token; users' files
carry the token's SHA-256 digest, the coordinator's public identity. For sealing
(:mod:`agents.sealing`) the coordinator's file holds its X25519 private key,
users' files its public key, and every file the run's collective secret. Many
rounds with a graph (:mod:`agents.rounds`): the coordinator's file holds the
members' graph (CSR ``graph_indptr``/``graph_indices`` over ``graph_ids``, the
minority users' ids): the coordinator knows the collective's social graph. Both are
``.npz`` files read without pickle, written readable by their owner only
(mode 0600; a folder this module creates for them is 0700).
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decision import TicketHolder
from .errors import DataError
from .protocol import ROLE_COORDINATOR, ROLE_USERS, CellGrid, token_digest
from .rounds import MembersGraph, RoundSettings

__all__ = ["CoordinatorData", "NodeData", "load_node_file", "new_coordinator_token", "token_digest",
           "write_coordinator_file", "write_users_file",
           "Invitation", "RawRecords", "is_raw_records", "load_invitation", "load_raw_records", "node_from_raw",
           "write_invitation", "write_private"]


def new_coordinator_token() -> str:
    """A fresh secret identity for a run's coordinator: 32 random bytes, hex."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class NodeData(TicketHolder):
    """One node's users: only their own records and the collective's ticket keys."""

    user_ids: np.ndarray
    X: np.ndarray
    a: np.ndarray
    y: np.ndarray
    membership_key: int
    tie_key: int
    cf_proba: np.ndarray | None = None  # synthetic data only (oracle method)
    coordinator_digest: str = ""  # SHA-256 of the coordinator's token ("" : unknown)
    coordinator_key: bytes = b""  # the coordinator's X25519 public key (b"": payloads travel unsealed)
    collective_key: bytes = b""  # the run's collective secret: opens the coordinator's answers
    dynamics: RoundSettings | None = None  # many rounds (agents.rounds); None: the one-shot rule

    @property
    def sealed(self) -> bool:
        return bool(self.coordinator_key)


@dataclass(frozen=True)
class CoordinatorData:
    """What the coalition's coordinator knows: the grid, each method's parameters and
    the majority reference."""

    grid: CellGrid
    params: dict  # method -> {name: number}
    X_ref: np.ndarray
    y_ref: np.ndarray
    membership_key: int | None = None  # the ticket keys: tickets are recomputed from user ids
    tie_key: int | None = None
    token: str = ""  # the coordinator's secret identity ("" : none)
    private_key: bytes = b""  # its X25519 private key: opens what members seal (b"": unsealed run)
    collective_key: bytes = b""  # the run's collective secret: seals its answers to every member
    dynamics: RoundSettings | None = None  # many rounds (agents.rounds); None: the one-shot rule
    graph: MembersGraph | None = None  # the members' graph (many rounds that read it)

    @property
    def sealed(self) -> bool:
        return bool(self.private_key)


def write_users_file(path, *, user_ids, X, a, y, membership_key, tie_key, cf_proba=None,
                     coordinator_digest: str = "", coordinator_key: bytes = b"", collective_key: bytes = b"",
                     dynamics: RoundSettings | None = None) -> Path:
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
    if coordinator_digest:
        arrays["coordinator_digest"] = np.array(str(coordinator_digest))
    arrays.update(_key_arrays(coordinator_key=coordinator_key, collective_key=collective_key))
    if dynamics is not None:  # JSON text: read back without pickle
        arrays["dynamics"] = np.array(dynamics.to_json())
    return _write(path, arrays)


def write_coordinator_file(path, *, grid: CellGrid, params: dict, X_ref, y_ref, membership_key=None, tie_key=None,
                           token: str = "", private_key: bytes = b"", collective_key: bytes = b"",
                           dynamics: RoundSettings | None = None, graph: MembersGraph | None = None) -> Path:
    flat = {f"param:{method}:{name}": np.array(value) for method, values in params.items()
            for name, value in values.items()}
    extra = {}
    if membership_key is not None and tie_key is not None:
        extra["keys"] = np.array([membership_key, tie_key], dtype=np.uint64)
    if token:
        extra["token"] = np.array(str(token))
    extra.update(_key_arrays(private_key=private_key, collective_key=collective_key))
    if dynamics is not None:
        extra["dynamics"] = np.array(dynamics.to_json())
    if graph is not None:  # plain int64 arrays: read back without pickle
        extra.update(graph_ids=np.asarray(graph.user_ids, dtype=np.int64),
                     graph_indptr=np.asarray(graph.indptr, dtype=np.int64),
                     graph_indices=np.asarray(graph.indices, dtype=np.int64))
    return _write(path, dict(role=np.array(ROLE_COORDINATOR), **grid.to_arrays(), **flat, **extra,
                             X_ref=np.asarray(X_ref, dtype=np.float64), y_ref=np.asarray(y_ref).astype(np.int8)))


def _key_arrays(**keys: bytes) -> dict[str, np.ndarray]:
    """Sealing keys as uint8 arrays (both or neither: a run is sealed or not)."""
    given = {name: bytes(value) for name, value in keys.items() if value}
    if given and len(given) != len(keys):
        raise ValueError(f"sealing needs all of {', '.join(keys)}, got only {', '.join(given)}")
    return {name: np.frombuffer(value, dtype=np.uint8) for name, value in given.items()}


def _key(f, name: str, path) -> bytes:
    """A 32-byte key of a node file, or b"" if it has none."""
    if name not in f.files:
        return b""
    arr = f[name]
    if arr.dtype != np.uint8 or arr.shape != (32,):
        raise DataError(f"{path}: {name} is {arr.dtype} of shape {arr.shape}; allowed: 32 bytes (uint8)")
    return arr.tobytes()


def _write(path, arrays: dict) -> Path:
    return write_private(path, lambda fh: np.savez(fh, **arrays))


def write_private(path, write) -> Path:
    """Write a file with ``write(binary file handle)`` atomically, readable by the owner only (0600).

    The data goes to a 0600 temporary file in the same folder, which then
    replaces ``path``: nobody else can open it at any moment, and a reader never
    sees half a file. A missing folder is created 0700.
    """
    path = Path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_node_file(path) -> NodeData | CoordinatorData:
    with np.load(path, allow_pickle=False) as f:
        role = str(f["role"])
        if role == ROLE_COORDINATOR:
            params: dict = {}
            for key in f.files:
                if key.startswith("param:"):
                    _, method, name = key.split(":", 2)
                    params.setdefault(method, {})[name] = f[key].item()
            keys = [int(k) for k in f["keys"]] if "keys" in f.files else [None, None]
            return CoordinatorData(grid=CellGrid.from_arrays(f), params=params, X_ref=f["X_ref"], y_ref=f["y_ref"],
                                   membership_key=keys[0], tie_key=keys[1],
                                   token=str(f["token"]) if "token" in f.files else "",
                                   private_key=_key(f, "private_key", path),
                                   collective_key=_key(f, "collective_key", path), dynamics=_dynamics(f, path),
                                   graph=_graph(f, path))
        if role != ROLE_USERS:
            raise ValueError(f"{path}: unknown node role {role!r}; allowed: {ROLE_USERS}, {ROLE_COORDINATOR}")
        keys = f["keys"]
        return NodeData(
            user_ids=f["user_ids"], X=f["X"], a=f["a"], y=f["y"],
            membership_key=int(keys[0]), tie_key=int(keys[1]),
            cf_proba=f["cf_proba"] if "cf_proba" in f.files else None,
            coordinator_digest=str(f["coordinator_digest"]) if "coordinator_digest" in f.files else "",
            coordinator_key=_key(f, "coordinator_key", path), collective_key=_key(f, "collective_key", path),
            dynamics=_dynamics(f, path),
        )


def _graph(f, path) -> MembersGraph | None:
    if "graph_ids" not in f.files:
        return None
    ids, indptr, indices = (f[k] for k in ("graph_ids", "graph_indptr", "graph_indices"))
    n = ids.size
    ok = all(a.ndim == 1 and a.dtype == np.int64 for a in (ids, indptr, indices)) and indptr.size == n + 1 and \
        indptr[0] == 0 and indptr[-1] == indices.size and bool(np.all(np.diff(indptr) >= 0)) and \
        (indices.size == 0 or (indices.min() >= 0 and indices.max() < n))
    if not ok:
        raise DataError(f"{path}: the members' graph is malformed; allowed: int64 graph_ids (n), graph_indptr "
                        "(n + 1, from 0 to the number of indices, non-decreasing) and graph_indices (in [0, n))")
    return MembersGraph(ids, indptr, indices)


def _dynamics(f, path) -> RoundSettings | None:
    return RoundSettings.from_json(str(f["dynamics"]), str(path)) if "dynamics" in f.files else None


# ------------------------------------------------------------------ a person's own raw records
#
# On a device a user keeps their records as they are (a CSV or JSON file of raw
# columns, nothing encoded) and the collective's invitation (``collective.json``);
# the firm's feature encoding arrives over the federation (:mod:`agents.encoding`)
# and :func:`node_from_raw` turns the three into the same :class:`NodeData` a
# prepared ``.npz`` file gives.

RAW_SUFFIXES = (".csv", ".json")
USER_ID, SENSITIVE, LABEL, CF_PROBA = "user_id", "a", "y", "cf_proba"  # reserved columns of a raw file
INVITATION_FORMAT = "collective-fairness/invitation-1"


@dataclass(frozen=True)
class RawRecords:
    """A node's own records as written in its file: ids, a, y and the raw feature
    columns (as text), one entry per record; ``cf_proba`` only in simulated worlds."""

    source: str  # the file's name, for error messages
    user_ids: np.ndarray
    a: np.ndarray
    y: np.ndarray
    columns: dict  # raw column name -> values (str), every column of the file but the reserved ones
    cf_proba: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)


@dataclass(frozen=True)
class Invitation:
    """What the collective hands each member (``collective.json``): the two ticket keys,
    the coordinator's public identity (the SHA-256 digest of its token) and, in a sealed
    run (:mod:`agents.sealing`), the coordinator's public key and the collective secret."""

    membership_key: int
    tie_key: int
    coordinator_digest: str = ""
    coordinator_key: bytes = b""
    collective_key: bytes = b""


def is_raw_records(path) -> bool:
    """Whether ``path`` names a raw records file (``.csv`` / ``.json``) rather than an ``.npz`` node file."""
    return Path(path).suffix.lower() in RAW_SUFFIXES


def load_raw_records(path) -> RawRecords:
    """A person's records from a CSV (header row, one record per line) or JSON file (a list
    of objects, or one object) with columns ``user_id`` (a non-negative integer, distinct),
    the raw feature columns, ``a`` and ``y`` (0 or 1). Raises :class:`DataError` naming the
    file and what is wrong."""
    path = Path(path)
    name = path.name
    allowed = (f"allowed: a {' or '.join(RAW_SUFFIXES)} file with columns {USER_ID}, the raw feature columns, "
               f"{SENSITIVE} and {LABEL} (see docs/federated.md, On a device)")
    if not is_raw_records(path):
        raise DataError(f"{name}: not a raw records file; {allowed}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{name}: not UTF-8 text; {allowed}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); {allowed}") from None
    header, rows = (_csv_table if path.suffix.lower() == ".csv" else _json_table)(text, name, allowed)
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{name}: column(s) {', '.join(map(repr, repeated))} occur more than once; "
                        "allowed: distinct column names")
    missing = [c for c in (USER_ID, SENSITIVE, LABEL) if c not in header]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(map(repr, missing))}; {allowed}")
    if not rows:
        raise DataError(f"{name}: no records; {allowed}")
    columns = {c: np.array([row[j] for row in rows], dtype=str) for j, c in enumerate(header)}
    user_ids = _user_ids(columns.pop(USER_ID), name)
    a = _binary(columns.pop(SENSITIVE), SENSITIVE, name, "0 (majority) or 1 (protected minority)")
    y = _binary(columns.pop(LABEL), LABEL, name, "0 or 1 (1 = the favourable label)")
    cf_proba = None
    if CF_PROBA in columns:
        cf_proba = _finite(columns.pop(CF_PROBA), CF_PROBA, name)
    return RawRecords(source=name, user_ids=user_ids, a=a, y=y, columns=columns, cf_proba=cf_proba)


def _csv_table(text: str, name: str, allowed: str) -> tuple[list, list]:
    import csv
    import io

    try:
        lines = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    except csv.Error as exc:
        raise DataError(f"{name}: cannot parse as CSV ({exc}); {allowed}") from None
    if not lines:
        raise DataError(f"{name}: empty file; {allowed}")
    header = [c.strip() for c in lines[0]]
    for i, row in enumerate(lines[1:]):
        if len(row) != len(header):
            raise DataError(f"{name}: record {i + 1} has {len(row)} fields, the header {len(header)}; "
                            "allowed: one value per column in every record")
    return header, lines[1:]


def _json_table(text: str, name: str, allowed: str) -> tuple[list, list]:
    import json

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{name}: not valid JSON ({exc}); {allowed}") from None
    records = [data] if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{name}: not a list of records (objects); {allowed}")
    header = list(records[0]) if records else [USER_ID, SENSITIVE, LABEL]
    rows = []
    for i, record in enumerate(records):
        if set(record) != set(header):
            diff = sorted(set(header) ^ set(record))
            raise DataError(f"{name}: record {i + 1} has other fields than the first record "
                            f"({', '.join(map(repr, diff))}); allowed: the same fields in every record")
        rows.append([_json_text(record[c], c, i, name) for c in header])
    return header, rows


def _json_text(value, column: str, i: int, name: str) -> str:
    """A JSON value as the text a CSV would hold (numbers exactly: ``repr`` round-trips a float)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise DataError(f"{name}: record {i + 1}, field {column!r} is {_json_kind(value)}; allowed: a string or a number")


def _json_kind(value) -> str:
    return {bool: "a boolean", type(None): "null", list: "a list", dict: "an object"}.get(type(value),
                                                                                         type(value).__name__)


def _user_ids(text: np.ndarray, name: str) -> np.ndarray:
    values = [s.strip() for s in text.tolist()]
    for i, s in enumerate(values):
        if not (s.isascii() and s.isdigit()) or len(s) > 18:
            raise DataError(f"{name}: {USER_ID} of record {i + 1} is {text.tolist()[i]!r}; allowed: a non-negative "
                            "integer below 10^18")
    ids = np.array([int(s) for s in values], dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise DataError(f"{name}: {USER_ID} {int(dup[0])} occurs {int(counts[counts > 1][0])} times"
                        + (f" ({dup.size} ids repeated)" if dup.size > 1 else "") + "; allowed: each user once")
    return ids


def _finite(text: np.ndarray, column: str, name: str) -> np.ndarray:
    try:
        values = text.astype(np.float64)
    except ValueError:
        values = np.array([_float_or_nan(s) for s in text.tolist()])
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{name}: column {column!r} of record {bad[0] + 1} is {text.tolist()[bad[0]]!r}; "
                        "allowed: a finite number")
    return values


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _binary(text: np.ndarray, column: str, name: str, allowed: str) -> np.ndarray:
    values = np.array([_float_or_nan(s) for s in text.tolist()])
    bad = np.flatnonzero((values != 0) & (values != 1))  # NaN (not a number) fails both
    if bad.size:
        raise DataError(f"{name}: column {column!r} of record {bad[0] + 1} is {text.tolist()[bad[0]]!r}; "
                        f"allowed: {allowed}")
    return values.astype(np.int8)


def load_invitation(path) -> Invitation:
    """The collective's invitation (``collective.json``, :func:`write_invitation`)."""
    import json

    path = Path(path)
    allowed = (f"allowed: the collective's invitation, a JSON object with format {INVITATION_FORMAT!r}, "
               "membership_key and tie_key (integers in [0, 2^64)), coordinator (a SHA-256 hex digest) and, "
               "sealed, coordinator_key and collective_key (32 bytes each, hex)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise DataError(f"cannot read the invitation {path} ({exc.strerror}); {allowed}") from None
    except ValueError as exc:
        raise DataError(f"{path.name}: not valid JSON ({exc}); {allowed}") from None
    if not isinstance(data, dict) or data.get("format") != INVITATION_FORMAT:
        raise DataError(f"{path.name}: not an invitation; {allowed}")
    keys = [data.get(k) for k in ("membership_key", "tie_key")]
    hexes = [data.get(k, "") for k in ("coordinator", "coordinator_key", "collective_key")]
    if not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 2**64 for k in keys) or \
            not all(isinstance(h, str) and (h == "" or _is_hex32(h)) for h in hexes) or \
            bool(hexes[1]) != bool(hexes[2]):
        raise DataError(f"{path.name}: malformed keys or coordinator identity; {allowed}")
    return Invitation(membership_key=keys[0], tie_key=keys[1], coordinator_digest=hexes[0],
                      coordinator_key=bytes.fromhex(hexes[1]), collective_key=bytes.fromhex(hexes[2]))


def _is_hex32(text: str) -> bool:
    """64 lower-case hex digits: a SHA-256 digest or a 32-byte key."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def write_invitation(path, *, membership_key: int, tie_key: int, coordinator_digest: str = "",
                     coordinator_key: bytes = b"", collective_key: bytes = b"") -> Path:
    """The collective's invitation for its members, readable by its owner only (it holds the
    ticket keys and, in a sealed run, the collective secret)."""
    import json

    data = {"format": INVITATION_FORMAT, "membership_key": int(membership_key), "tie_key": int(tie_key),
            "coordinator": str(coordinator_digest)}
    if coordinator_key or collective_key:
        data.update(coordinator_key=bytes(coordinator_key).hex(), collective_key=bytes(collective_key).hex())
    return write_private(path, lambda fh: fh.write((json.dumps(data, indent=1) + "\n").encode("utf-8")))


def node_from_raw(records: RawRecords, invitation: Invitation, encoding) -> NodeData:
    """The node's users as an encoded node: ``encoding`` (:class:`agents.encoding.Encoding`,
    the firm's, as published) applied to the raw records; then it behaves as any node."""
    try:
        X = encoding.encode(records.columns, a=records.a)
    except DataError as exc:
        raise DataError(f"{records.source}: {exc}") from None
    sealed = dict(coordinator_key=invitation.coordinator_key, collective_key=invitation.collective_key) \
        if invitation.coordinator_key else {}  # a sealed run (agents.sealing)
    return NodeData(user_ids=records.user_ids, X=X, a=records.a, y=records.y,
                    membership_key=invitation.membership_key, tie_key=invitation.tie_key,
                    cf_proba=records.cf_proba, coordinator_digest=invitation.coordinator_digest, **sealed)
