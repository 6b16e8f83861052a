"""What one Flower node holds: its users' own records, or the coordinator's reference.

A node is one user on a device, or a shard of K users in simulation; it knows
only its users' ``(user id, x, a, y)`` and the collective's two ticket keys.
One node per run is the coalition's coordinator instead: it holds the grid,
the majority reference rows the collective may see, the two ticket keys (so it
can recompute every ticket members send) and its identity token; users' files
carry the token's SHA-256 digest, the coordinator's public identity. For sealing
(:mod:`agents.sealing`) the coordinator's file holds its X25519 private key,
users' files its public key, and every file the run's collective secret. Both are
``.npz`` files read without pickle, written readable by their owner only
(mode 0600; a folder this module creates for them is 0700).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decision import TicketHolder
from .errors import DataError
from .protocol import ROLE_COORDINATOR, ROLE_USERS, CellGrid, token_digest

__all__ = ["CoordinatorData", "NodeData", "load_node_file", "new_coordinator_token", "token_digest",
           "write_coordinator_file", "write_users_file"]


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

    @property
    def sealed(self) -> bool:
        return bool(self.private_key)


def write_users_file(path, *, user_ids, X, a, y, membership_key, tie_key, cf_proba=None,
                     coordinator_digest: str = "", coordinator_key: bytes = b"", collective_key: bytes = b"") -> Path:
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
    return _write(path, arrays)


def write_coordinator_file(path, *, grid: CellGrid, params: dict, X_ref, y_ref, membership_key=None, tie_key=None,
                           token: str = "", private_key: bytes = b"", collective_key: bytes = b"") -> Path:
    flat = {f"param:{method}:{name}": np.array(value) for method, values in params.items()
            for name, value in values.items()}
    extra = {}
    if membership_key is not None and tie_key is not None:
        extra["keys"] = np.array([membership_key, tie_key], dtype=np.uint64)
    if token:
        extra["token"] = np.array(str(token))
    extra.update(_key_arrays(private_key=private_key, collective_key=collective_key))
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
    """Write ``arrays`` to ``path`` atomically, readable by the owner only (0600).

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
            np.savez(fh, **arrays)
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
                                   collective_key=_key(f, "collective_key", path))
        if role != ROLE_USERS:
            raise ValueError(f"{path}: unknown node role {role!r}; allowed: {ROLE_USERS}, {ROLE_COORDINATOR}")
        keys = f["keys"]
        return NodeData(
            user_ids=f["user_ids"], X=f["X"], a=f["a"], y=f["y"],
            membership_key=int(keys[0]), tie_key=int(keys[1]),
            cf_proba=f["cf_proba"] if "cf_proba" in f.files else None,
            coordinator_digest=str(f["coordinator_digest"]) if "coordinator_digest" in f.files else "",
            coordinator_key=_key(f, "coordinator_key", path), collective_key=_key(f, "collective_key", path),
        )
