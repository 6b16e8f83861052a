"""Sealing round trips: what one party seals, only the intended party opens, in the intended context."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord

from agents import sealing
from agents.protocol import record_of

CTX = sealing.context("query.scores", run="d" * 64, role="users", round_=1, node=1007)


@pytest.fixture(scope="module")
def keys():
    return sealing.new_key_pair()


def test_a_blob_sealed_to_a_key_opens_with_its_private_key_only(keys):
    private, public = keys
    assert len(private) == len(public) == 32 and sealing.public_key_of(private) == public
    blob = sealing.seal_to(public, b"member payload", CTX)
    assert b"member payload" not in blob
    assert sealing.open_from(private, blob, CTX) == b"member payload"
    other, _ = sealing.new_key_pair()
    with pytest.raises(sealing.SealError):
        sealing.open_from(other, blob, CTX)


def test_every_seal_is_fresh(keys):
    """An ephemeral key per message: the same payload never gives the same bytes twice."""
    _, public = keys
    assert sealing.seal_to(public, b"x" * 40, CTX) != sealing.seal_to(public, b"x" * 40, CTX)
    shared = sealing.CollectiveKey(sealing.new_secret())
    assert shared.seal(b"x" * 40, CTX) != shared.seal(b"x" * 40, CTX)


@pytest.mark.parametrize("field, other", [
    ("kind", dict(kind="query.join")), ("run", dict(run="e" * 64)), ("round", dict(round_=2)),
    ("role", dict(role="coordinator")), ("node", dict(node=1008)), ("plan", dict(plan="another grid")),
])
def test_a_blob_opens_only_in_the_context_it_was_sealed_for(keys, field, other):
    private, public = keys
    base = dict(kind="query.scores", run="d" * 64, role="users", round_=1, node=1007)
    moved = {**base, **other}
    blob = sealing.seal_to(public, b"payload", sealing.context(moved.pop("kind"), **moved))
    with pytest.raises(sealing.SealError):
        sealing.open_from(private, blob, CTX)
    secret = sealing.CollectiveKey(sealing.new_secret())
    moved = {**base, **other}
    with pytest.raises(sealing.SealError):
        secret.open(secret.seal(b"payload", sealing.context(moved.pop("kind"), **moved)), CTX)


def test_an_altered_or_truncated_blob_does_not_open(keys):
    private, public = keys
    blob = sealing.seal_to(public, b"payload" * 10, CTX)
    for i in (0, 1, 20, len(blob) // 2, len(blob) - 1):  # version, ephemeral key, ciphertext, tag
        altered = bytearray(blob)
        altered[i] ^= 0x40
        with pytest.raises(sealing.SealError):
            sealing.open_from(private, bytes(altered), CTX)
    for cut in (0, 1, 33, 48, len(blob) - 1):
        with pytest.raises(sealing.SealError):
            sealing.open_from(private, blob[:cut], CTX)


def test_a_low_order_ephemeral_key_is_refused_not_a_crash(keys):
    private, _ = keys
    blob = b"\x01" + bytes(32) + bytes(40)  # the all-zero point: no shared secret
    with pytest.raises(sealing.SealError):
        sealing.open_from(private, blob, CTX)


def test_the_collective_key_opens_for_every_holder_and_nobody_else():
    secret = sealing.new_secret()
    blob = sealing.CollectiveKey(secret).seal(b"thresholds", CTX)
    assert sealing.CollectiveKey(bytes(secret)).open(blob, CTX) == b"thresholds"  # another holder
    with pytest.raises(sealing.SealError):
        sealing.CollectiveKey(sealing.new_secret()).open(blob, CTX)
    with pytest.raises(sealing.SealError):  # a blob sealed to a public key is not a collective blob
        sealing.CollectiveKey(secret).open(sealing.seal_to(sealing.new_key_pair()[1], b"x", CTX), CTX)
    with pytest.raises(ValueError, match="32 bytes"):
        sealing.CollectiveKey(b"short")


def test_the_construction_is_x25519_hkdf_chacha20poly1305(keys):
    """An independent opening with the library's primitives, as documented."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    private, public = keys
    blob = sealing.seal_to(public, b"members", CTX)
    sender = blob[1:33]
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(sender))
    okm = HKDF(hashes.SHA256(), 44, None, b"collective-fairness/sealing/v1/to-key/" + sender + public).derive(shared)
    assert ChaCha20Poly1305(okm[:32]).decrypt(okm[32:], blob[33:], CTX) == b"members"


def test_arrays_pack_and_unpack_exactly():
    arrays = {"user_ids": np.array([3, 2**62], dtype=np.int64), "scores": np.arange(6.0).reshape(2, 3),
              "flags": np.array([True, False]), "a": np.array([1, 0], dtype=np.int8), "empty": np.zeros((3, 0)),
              "big-endian": np.array([1.5, -2.0], dtype=">f8"), "scalar": np.float64(0.25)}
    out = sealing.unpack(sealing.pack(arrays))
    assert list(out) == list(arrays)
    for name, value in arrays.items():
        assert out[name].shape == np.shape(value) and out[name].dtype.kind == np.asarray(value).dtype.kind
        np.testing.assert_array_equal(out[name], value)
    out["scores"][0, 0] = 7.0  # writable, as a record's arrays are


@pytest.mark.parametrize("value", [np.array(["text"]), np.array([object()], dtype=object), np.array([1 + 2j])])
def test_only_plain_numbers_are_packed(value):
    with pytest.raises(ValueError, match="allowed: bool, integer or float"):
        sealing.pack({"x": value})


def test_odd_bytes_do_not_unpack():
    good = sealing.pack({"x": np.arange(4)})
    for bad in (b"", b"CFA1", good[:-1], good + b"\0", b"XXXX" + good[4:],
                good.replace(b"<i8", b"|O8"), good.replace(b"<i8", b"zzz")):
        with pytest.raises(ValueError):
            sealing.unpack(bad)


def test_padding_hides_how_many_entries_a_payload_has():
    def payload(n):
        return sealing.pack(sealing.padded({"user_ids": np.arange(n, dtype=np.int64), "scores": np.ones((3, n))}, 25))

    assert len({len(payload(n)) for n in (0, 1, 7, 25)}) == 1
    back = sealing.unpadded(sealing.unpack(payload(7)))
    np.testing.assert_array_equal(back["user_ids"], np.arange(7))
    assert back["scores"].shape == (3, 7)
    with pytest.raises(ValueError, match="cannot pad"):
        sealing.padded({"user_ids": np.arange(26)}, 25)
    for count in (-1, 26):
        arrays = sealing.padded({"user_ids": np.arange(3)}, 25)
        arrays["count"] = np.array([count])
        with pytest.raises(ValueError, match="outside"):
            sealing.unpadded(arrays)
    with pytest.raises(ValueError, match="count"):
        sealing.unpadded({"user_ids": np.arange(3)})


def test_a_sealed_record_is_one_byte_array():
    record = sealing.sealed_record(b"\x01\x02\x03")
    assert list(record) == ["sealed"] and record["sealed"].numpy().dtype == np.uint8
    assert sealing.blob_of(record) == b"\x01\x02\x03" and sealing.is_sealed(record)
    for other in (record_of(user_ids=np.arange(3)), record_of(sealed=np.arange(3.0)),
                  record_of(sealed=np.zeros((2, 2), dtype=np.uint8)), ConfigRecord({"sealed": b"\x01"})):
        assert not sealing.is_sealed(other)
        with pytest.raises(ValueError):
            sealing.blob_of(other)
