"""Certificates and keys for a deployment: TLS for the SuperLink, a key pair per SuperNode.

A deployment's traffic (users' replies, the coalition's relayed messages, the
firm's model) crosses the network between SuperNodes and the SuperLink, so it
goes over TLS, and the SuperLink admits only SuperNodes whose public key was
registered with it (Flower's SuperNode authentication: each request is signed
with the node's private key). This module makes that material with the
``cryptography`` package, offline:

* :func:`make_server_tls` a fresh self-signed CA and a server certificate
  signed by it, for the addresses the devices dial (default 127.0.0.1 and
  localhost). The CA's private key is never written: it signs the one server
  certificate and is dropped, so nobody (not even whoever reads the work
  folder later) can mint another certificate the devices would trust.
* :func:`make_node_key` one SuperNode's EC P-384 key pair in the OpenSSH
  formats that ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read.

Every file is written 0600 (atomically, like the node files), in a 0700 folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from agents.errors import ConfigError

__all__ = ["NodeKey", "ServerTls", "make_node_key", "make_server_tls"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServerTls:
    """The SuperLink's TLS files. ``ca_cert`` is what every SuperNode and the ``flwr``
    CLI get (``--root-certificates`` / ``root-certificates``); the other two stay with the SuperLink."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def superlink_flags(self) -> list[str]:
        return ["--ssl-ca-certfile", str(self.ca_cert), "--ssl-certfile", str(self.server_cert),
                "--ssl-keyfile", str(self.server_key)]


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair: ``private`` stays on the device, ``public`` is registered with the SuperLink."""

    private: Path
    public: Path


def make_server_tls(folder, *, hosts: Iterable[str] = LOOPBACK_HOSTS, days: int = 30) -> ServerTls:
    """A new CA and a server certificate for ``hosts`` (IP addresses or DNS names) in ``folder``.

    Files: ``ca.crt`` (the root certificate to distribute), ``server.crt`` and
    ``server.key`` (the SuperLink's). Valid from five minutes ago (clock skew)
    for ``days`` days; calling it again replaces them all.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = _subject_alt_names(hosts)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ConfigError(f"certificate validity {days!r} days; allowed: a whole number of days >= 1")
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collective-fairness deployment CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _display(names[0]))]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    folder = Path(folder)
    pem = serialization.Encoding.PEM
    tls = ServerTls(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    _write_private(tls.server_key, server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    _write_private(tls.server_cert, server_cert.public_bytes(pem))
    _write_private(tls.ca_cert, ca_cert.public_bytes(pem))
    return tls


def make_node_key(folder, name: str) -> NodeKey:
    """A new EC P-384 key pair for one SuperNode: ``<name>`` (OpenSSH private key) and ``<name>.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"node key name {name!r}; allowed: a plain file name")
    key = ec.generate_private_key(ec.SECP384R1())
    folder = Path(folder)
    node = NodeKey(folder / name, folder / f"{name}.pub")
    _write_private(node.private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()))
    _write_private(node.public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                             serialization.PublicFormat.OpenSSH) + b"\n")
    return node


def _subject_alt_names(hosts: Iterable[str]) -> list:
    from cryptography import x509

    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    names = []
    for host in hosts:
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
            raise ConfigError(f"certificate host {host!r}; allowed: IP addresses or DNS names the devices dial")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise ConfigError("certificate hosts: none given; allowed: IP addresses or DNS names the devices dial")
    return names


def _display(name) -> str:
    return str(name.value)


def _write_private(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically, mode 0600, in a folder made 0700 if it is new."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # the mode given to mkdir is masked by the umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
