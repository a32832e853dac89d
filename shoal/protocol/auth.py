"""HMAC challenge-response authentication, written sans-IO.

Both ends prove they hold the cluster key without sending it:

    server -> client   SERVER_NONCE (32 bytes)
    client -> server   CLIENT_NONCE (32 bytes) + HMAC(key, b"c" + server_nonce + client_nonce + B)
    server -> client   HMAC(key, b"s" + client_nonce + server_nonce + B)

The nonces make every proof single-use, so a recorded handshake cannot be
replayed.  B is the channel binding: empty on plain links, the SHA-256 of
the server's TLS certificate on TLS links (see tls.py), so a proof made
through a man-in-the-middle does not check out.  Everything else on the connection follows only after both proofs
check out; a peer that fails gets the connection closed.
"""
from __future__ import annotations

import hashlib
import hmac
import os

NONCE_SIZE = 32
DIGEST_SIZE = 32
CLIENT_PROOF_SIZE = NONCE_SIZE + DIGEST_SIZE


class AuthenticationError(ConnectionError):
    """The peer does not hold the cluster key (or spoke something else)."""


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def _mac(key: bytes, tag: bytes, a: bytes, b: bytes, binding: bytes) -> bytes:
    return hmac.new(key, tag + a + b + binding, hashlib.sha256).digest()


def client_proof(key: bytes, server_nonce: bytes, binding: bytes = b"") -> tuple[bytes, bytes]:
    """Return (bytes to send, client nonce to remember)."""
    client_nonce = new_nonce()
    return client_nonce + _mac(key, b"c", server_nonce, client_nonce, binding), client_nonce


def check_client_proof(key: bytes, server_nonce: bytes, proof: bytes,
                       binding: bytes = b"") -> bytes:
    """Verify the client's proof; return the server's reply proof."""
    if len(proof) != CLIENT_PROOF_SIZE:
        raise AuthenticationError("malformed client proof")
    client_nonce, mac = proof[:NONCE_SIZE], proof[NONCE_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, b"c", server_nonce, client_nonce, binding)):
        raise AuthenticationError("wrong cluster key (or a tampered channel)")
    return _mac(key, b"s", client_nonce, server_nonce, binding)


def check_server_proof(key: bytes, server_nonce: bytes, client_nonce: bytes, proof: bytes,
                       binding: bytes = b"") -> None:
    if not hmac.compare_digest(proof, _mac(key, b"s", client_nonce, server_nonce, binding)):
        raise AuthenticationError("the server does not hold the cluster key")
