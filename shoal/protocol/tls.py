"""TLS for links that leave the host.

A connection to or from a non-loopback address is wrapped in TLS; loopback
and Unix-socket links stay plain (they never leave the machine, and object
transfers keep sendfile).  Every listener that needs TLS makes itself a
self-signed certificate at start (or uses one the user gives).

Clients do not verify certificates against a CA.  Instead the HMAC
handshake that follows (auth.py) is bound to the channel: both proofs cover
the SHA-256 of the server's certificate as each side sees it.  A
man-in-the-middle with a certificate of its own yields a different hash on
each side and fails authentication, and without the cluster key it cannot
forge the proofs.  So the key alone authenticates, and TLS encrypts.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from typing import Optional


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def needs_tls(host: str) -> bool:
    return not is_loopback(host)


def generate_certificate(directory: str, name: str = "shoal") -> tuple[str, str]:
    """A fresh self-signed certificate and private key, as 0600 PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.join(directory, f"{name}-cert.pem")
    key_path = os.path.join(directory, f"{name}-key.pem")
    for path, data in ((cert_path, cert.public_bytes(serialization.Encoding.PEM)),
                       (key_path, key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return cert_path, key_path


class ServerTLS:
    """A listener's TLS: its context and the hash its clients will see."""

    def __init__(self, cert_path: str, key_path: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_path, key_path)
        with open(cert_path) as f:
            self.binding = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).digest()

    @classmethod
    def create(cls, directory: str, name: str, cert_path: Optional[str] = None,
               key_path: Optional[str] = None) -> "ServerTLS":
        if not cert_path:
            cert_path, key_path = generate_certificate(directory, name)
        return cls(cert_path, key_path)


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE      # authenticated by the channel-bound HMAC instead
    return ctx


def wrap_client(sock: socket.socket) -> tuple[ssl.SSLSocket, bytes]:
    """TLS over a connected socket; returns it and the channel binding."""
    tls = client_context().wrap_socket(sock)
    return tls, hashlib.sha256(tls.getpeercert(binary_form=True)).digest()
