"""HMAC challenge-response authentication, written sans-IO.

Both ends prove they hold the cluster key without sending it:

    server -> client   SERVER_NONCE (32 bytes)
    client -> server   CLIENT_NONCE (32 bytes) + HMAC(key, b"c" + server_nonce + client_nonce)
    server -> client   HMAC(key, b"s" + client_nonce + server_nonce)

The nonces make every proof single-use, so a recorded handshake cannot be
replayed.  Everything else on the connection follows only after both proofs
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


def _mac(key: bytes, tag: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(key, tag + a + b, hashlib.sha256).digest()


def client_proof(key: bytes, server_nonce: bytes) -> tuple[bytes, bytes]:
    """Return (bytes to send, client nonce to remember)."""
    client_nonce = new_nonce()
    return client_nonce + _mac(key, b"c", server_nonce, client_nonce), client_nonce


def check_client_proof(key: bytes, server_nonce: bytes, proof: bytes) -> bytes:
    """Verify the client's proof; return the server's reply proof."""
    if len(proof) != CLIENT_PROOF_SIZE:
        raise AuthenticationError("malformed client proof")
    client_nonce, mac = proof[:NONCE_SIZE], proof[NONCE_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, b"c", server_nonce, client_nonce)):
        raise AuthenticationError("wrong cluster key")
    return _mac(key, b"s", client_nonce, server_nonce)


def check_server_proof(key: bytes, server_nonce: bytes, client_nonce: bytes, proof: bytes) -> None:
    if not hmac.compare_digest(proof, _mac(key, b"s", client_nonce, server_nonce)):
        raise AuthenticationError("the server does not hold the cluster key")
