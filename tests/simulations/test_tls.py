"""The deployment's certificates pass a real TLS handshake, and only for the names they were made for;
node keys are what Flower's own loaders accept; every file is 0600."""

import socket
import ssl
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from agents.errors import ConfigError
from simulations.flower.tls import make_node_key, make_server_tls


def handshake(tls, ca_cert, server_hostname) -> None:
    """A TLS handshake on 127.0.0.1 between a server holding ``tls``'s certificate and a
    client trusting ``ca_cert`` and dialling ``server_hostname``; raises what the client sees."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.server_cert, tls.server_key)
    client_ctx = ssl.create_default_context(cafile=str(ca_cert))  # verifies the chain and the host name
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
                    s.sendall(b"x")
        finally:
            thread.join(5)


def test_server_certificate_is_trusted_for_loopback_only_through_its_own_ca(tmp_path):
    tls = make_server_tls(tmp_path / "tls")
    handshake(tls, tls.ca_cert, "127.0.0.1")  # the SAN the devices dial here
    handshake(tls, tls.ca_cert, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(tls, tls.ca_cert, "superlink.example.org")
    other = make_server_tls(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(tls, other.ca_cert, "127.0.0.1")  # another deployment's CA does not vouch for it
    named = make_server_tls(tmp_path / "named", hosts=["superlink.example.org", "10.0.0.5"])
    handshake(named, named.ca_cert, "superlink.example.org")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(named, named.ca_cert, "127.0.0.1")


def test_files_are_private_and_the_ca_key_is_never_written(tmp_path):
    tls = make_server_tls(tmp_path / "tls")
    folder = tmp_path / "tls"
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "server.crt", "server.key"]
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600} and folder.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in folder.iterdir() if b"PRIVATE KEY" in p.read_bytes()] == ["server.key"]
    first = tls.ca_cert.read_bytes()
    make_server_tls(folder)  # a second call replaces the lot: a new CA
    assert tls.ca_cert.read_bytes() != first and len(list(folder.iterdir())) == 3


def test_node_key_is_what_flower_loads(tmp_path):
    key = make_node_key(tmp_path / "keys", "node-0")
    assert {p.stat().st_mode & 0o777 for p in (key.private, key.public)} == {0o600}
    private = serialization.load_ssh_private_key(key.private.read_bytes(), None)  # flower-supernode's loader
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    # `flwr supernode register` reads the .pub; it is the private key's own public half
    assert try_load_public_key(key.public) == public_key_to_bytes(private.public_key())
    assert make_node_key(tmp_path / "keys", "node-1").public.read_bytes() != key.public.read_bytes()


@pytest.mark.parametrize("hosts", [[], [""], ["a b"], [None]])
def test_bad_hosts_are_refused(tmp_path, hosts):
    with pytest.raises(ConfigError, match="allowed: IP addresses or DNS names"):
        make_server_tls(tmp_path, hosts=hosts)


def test_bad_validity_and_key_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="allowed: a whole number of days >= 1"):
        make_server_tls(tmp_path, days=0)
    with pytest.raises(ConfigError, match="allowed: a plain file name"):
        make_node_key(tmp_path, "../x")
