"""Sealed payloads: the coalition's messages, readable only by the party they are for.

Flower has no peer-to-peer channel, so the ServerApp relays the coalition's
``query.*`` messages. Sealing keeps them from the relay and the SuperLink
operator, who see one opaque byte array per record:

* **users -> coordinator** (join: ids + membership tickets; scores: ids, member
  ticket, tie ticket, scores) are sealed to the coordinator's X25519 public key
  (:func:`seal_to` / :func:`open_from`): a fresh ephemeral key per message,
  HKDF-SHA256 of the Diffie-Hellman secret gives a one-time ChaCha20-Poly1305
  key and nonce (the construction of HPKE's base mode, RFC 9180, from the
  ``cryptography`` package's primitives). Only the coordinator's private key opens them.
* **coordinator -> users** (cutoffs, majority knowledge, thresholds: the same
  for every member) are sealed once with the **collective key**
  (:class:`CollectiveKey`), ChaCha20-Poly1305 under a key derived with HKDF from
  a 32-byte secret that every node file of the run holds; one blob serves all
  nodes, whatever their number.

Every seal authenticates **associated data** (:func:`context`): the message
kind, the run (the coordinator's identity digest, fresh for each set of node
files), the round, the sender's declared role and, for members, the node the
relay addressed. A blob replayed as another message type, round, role or node
does not open.

Payloads are arrays packed without pickle (:func:`pack` / :func:`unpack`:
names, allow-listed dtypes, shapes, raw bytes). A member pads its arrays to
as many slots as it has users (:func:`padded`), so what the relay sees of a
payload -- its size -- depends only on the node's number of users, which the
firm knows anyway: candidates cannot be told from other users.
"""

from __future__ import annotations

import os
import struct

import numpy as np

__all__ = ["KEY_BYTES", "CollectiveKey", "SealError", "blob_of", "context", "is_sealed", "new_key_pair", "new_secret",
           "open_from", "pack", "padded", "public_key_of", "seal_to", "sealed_record", "unpack", "unpadded"]

KEY_BYTES = 32  # X25519 keys and the collective secret
_TO_KEY, _COLLECTIVE = b"\x01", b"\x02"  # blob versions: sealed to a public key / with the collective key
_NONCE = 12
_TAG = 16
_INFO = b"collective-fairness/sealing/v1"


class SealError(ValueError):
    """A blob that does not open: not sealed for this key or context, altered, or truncated."""


# ------------------------------------------------------------------ keys


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes: (private, public)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    private = X25519PrivateKey.generate()
    return _raw_private(private), _raw_public(private.public_key())


def public_key_of(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return _raw_public(X25519PrivateKey.from_private_bytes(bytes(private_key)).public_key())


def new_secret() -> bytes:
    """A fresh 32-byte secret from the operating system (the collective key's material)."""
    return os.urandom(KEY_BYTES)


def _raw_private(key) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())


def _raw_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)


def _hkdf(secret: bytes, length: int, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_INFO + b"/" + info).derive(secret)


def context(kind: str, *, run: str, role: str, round_: int | None = None, node=None, plan: str = "") -> bytes:
    """The associated data a seal is bound to: kind, run, round, sender's role, node, and
    ``plan``, a digest of public data the blob is valid with only (the grid it is for).

    ``None`` leaves a field unbound (the coordinator's sign-up answer is relayed
    again in a later round if its thresholds were lost; broadcasts name no node).
    """
    fields = (kind, f"run={run}", f"round={'' if round_ is None else int(round_)}", f"role={role}",
              f"node={'' if node is None else node}", f"plan={plan}")
    return "\x1f".join(fields).encode("utf-8")


# ------------------------------------------------------------------ sealing


def seal_to(public_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Seal ``plaintext`` so that only the holder of ``public_key``'s private key can open it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    recipient = X25519PublicKey.from_public_bytes(bytes(public_key))
    ephemeral = X25519PrivateKey.generate()
    sender = _raw_public(ephemeral.public_key())
    key, nonce = _one_time_key(ephemeral.exchange(recipient), sender, bytes(public_key))
    return _TO_KEY + sender + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def open_from(private_key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """The plaintext of a blob :func:`seal_to` sealed to this private key's public key."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    blob = bytes(blob)
    if len(blob) < 1 + KEY_BYTES + _TAG or blob[:1] != _TO_KEY:
        raise SealError("not a blob sealed to a public key (too short or another version)")
    private = X25519PrivateKey.from_private_bytes(bytes(private_key))
    sender = blob[1:1 + KEY_BYTES]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(sender))
    except ValueError as exc:  # a low-order point: no shared secret
        raise SealError(f"the sender's key is unusable: {exc}") from None
    key, nonce = _one_time_key(shared, sender, _raw_public(private.public_key()))
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[1 + KEY_BYTES:], associated_data)
    except InvalidTag:
        raise SealError("the blob does not open: another key or context, or altered") from None


def _one_time_key(shared: bytes, sender: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    # A fresh ephemeral key makes every (key, nonce) single-use: the nonce can be derived too.
    okm = _hkdf(shared, 32 + _NONCE, b"to-key/" + sender + recipient)
    return okm[:32], okm[32:]


class CollectiveKey:
    """The members' shared key: the coordinator seals its answers once for every node.

    Derived with HKDF-SHA256 from the 32-byte secret every node file of the run
    holds; ChaCha20-Poly1305 with a random 96-bit nonce per blob.
    """

    def __init__(self, secret: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if len(bytes(secret)) != KEY_BYTES:
            raise ValueError(f"the collective secret must be {KEY_BYTES} bytes, got {len(bytes(secret))}")
        self._aead = ChaCha20Poly1305(_hkdf(bytes(secret), 32, b"collective"))

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _COLLECTIVE + nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        blob = bytes(blob)
        if len(blob) < 1 + _NONCE + _TAG or blob[:1] != _COLLECTIVE:
            raise SealError("not a blob sealed with the collective key (too short or another version)")
        try:
            return self._aead.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], associated_data)
        except InvalidTag:
            raise SealError("the blob does not open: another key or context, or altered") from None


# ------------------------------------------------------------------ arrays <-> bytes

_MAGIC = b"CFA1"
_KINDS = "biuf"  # bool, signed and unsigned integers, floats: nothing that needs pickle
_MAX_NDIM = 8


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Named numeric arrays as bytes (no pickle): for each, its name, dtype, shape and data."""
    parts = [_MAGIC, struct.pack("<I", len(arrays))]
    for name, value in arrays.items():
        arr = np.asarray(value)  # tobytes() writes C order (ascontiguousarray would make a scalar 1-D)
        if arr.dtype.kind not in _KINDS or arr.ndim > _MAX_NDIM:
            raise ValueError(f"array {name!r}: dtype {arr.dtype} / {arr.ndim} dims cannot be packed; "
                             f"allowed: bool, integer or float arrays of at most {_MAX_NDIM} dims")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        key, dtype = name.encode("utf-8"), arr.dtype.str.encode("ascii")
        parts += [struct.pack("<HB", len(key), len(dtype)), key, dtype, struct.pack("<B", arr.ndim),
                  struct.pack(f"<{arr.ndim}Q", *arr.shape), arr.tobytes()]
    return b"".join(parts)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """The arrays :func:`pack` wrote (writable, sharing one buffer); anything else raises ``ValueError``."""
    buf, pos = bytearray(data), 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(buf):
            raise ValueError("packed arrays are truncated")
        pos += n
        return bytes(buf[pos - n:pos])

    if take(4) != _MAGIC:
        raise ValueError("not packed arrays")
    out = {}
    for _ in range(struct.unpack("<I", take(4))[0]):
        n_key, n_dtype = struct.unpack("<HB", take(3))
        name = take(n_key).decode("utf-8")
        try:
            dtype = np.dtype(take(n_dtype).decode("ascii"))
        except TypeError:
            raise ValueError(f"array {name!r}: not a dtype") from None
        ndim = struct.unpack("<B", take(1))[0]
        if dtype.kind not in _KINDS or ndim > _MAX_NDIM or name in out:
            raise ValueError(f"array {name!r}: dtype {dtype}, {ndim} dims or a repeated name")
        shape = struct.unpack(f"<{ndim}Q", take(8 * ndim))
        count = int(np.prod(shape, dtype=object))
        if pos + count * dtype.itemsize > len(buf):
            raise ValueError("packed arrays are truncated")
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).reshape(shape)
        pos += count * dtype.itemsize
    if pos != len(buf):
        raise ValueError("packed arrays have trailing bytes")
    return out


def padded(arrays: dict[str, np.ndarray], slots: int) -> dict[str, np.ndarray]:
    """Every array zero-padded along its last axis to ``slots`` entries, plus ``count``.

    A member's payload then has the same size whether it carries no entry or
    one per user: its size tells the relay the node's number of users only.
    """
    count = {np.asarray(v).shape[-1] for v in arrays.values()}
    if len(count) > 1 or (count and next(iter(count)) > slots):
        raise ValueError(f"cannot pad entries of lengths {sorted(count)} to {slots} slots")
    out = {"count": np.array([next(iter(count)) if count else 0], dtype=np.int64)}
    for name, value in arrays.items():
        value = np.asarray(value)
        full = np.zeros((*value.shape[:-1], slots), dtype=value.dtype)
        full[..., :value.shape[-1]] = value
        out[name] = full
    return out


def unpadded(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries :func:`padded` padded (``ValueError`` if ``count`` is missing or out of range)."""
    arrays = dict(arrays)
    count = arrays.pop("count", None)
    if count is None or count.shape != (1,) or count.dtype.kind not in "iu":
        raise ValueError("padded arrays need a count")
    n = int(count[0])
    if n < 0 or any(v.ndim == 0 or n > v.shape[-1] for v in arrays.values()):
        raise ValueError(f"count {n} is outside the padded arrays")
    return {k: v[..., :n] for k, v in arrays.items()}


# ------------------------------------------------------------------ on the wire


def sealed_record(blob: bytes):
    """A blob as the one thing a record carries: an ArrayRecord with one uint8 array ``sealed``."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({"sealed": Array(np.frombuffer(blob, dtype=np.uint8))})


def is_sealed(record) -> bool:
    """Whether ``record`` is shaped as a :func:`sealed_record` (whether it opens is another matter)."""
    try:
        blob_of(record)
    except ValueError:
        return False
    return True


def blob_of(record) -> bytes:
    """The blob of a :func:`sealed_record` (``ValueError`` for any other record)."""
    from flwr.app import ArrayRecord

    if not isinstance(record, ArrayRecord) or list(record.keys()) != ["sealed"]:
        raise ValueError("not a sealed record (one uint8 array named 'sealed')")
    try:
        arr = record["sealed"].numpy()
    except Exception as exc:  # noqa: BLE001 - whatever Flower's array decoding raises
        raise ValueError(f"a sealed record whose array does not decode: {exc}") from None
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError("a sealed record holds one 1-D uint8 array")
    return arr.tobytes()
