"""SCRAM-SHA-512 (RFC 5802, RFC 7677's construction with SHA-512) for API keys, as TrueNAS
26 performs it over ``auth.login_ex``: the key never crosses the wire, and the server keeps
only what cannot log anyone in (the salt, the iteration count, ``StoredKey`` and
``ServerKey``).

Written with ``hashlib`` and ``hmac`` on purpose: ``scramp`` joins the two nonces as text,
while TrueNAS's client sends its nonce as base64 of 32 random bytes and requires the
combined nonce to decode to 32 or 64 bytes (the client's bytes then ours). TrueNAS's client
also names the key in the user name (``n=<user>:<key id>``). A client nonce that is not
base64 of 32 bytes is joined as text, as RFC 5802 says, so standard clients (scramp's) work
too.

Channel binding is RFC 5929's ``tls-server-end-point``: the hash of our own certificate
with the hash of its signature algorithm (MD5 and SHA-1 become SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

MIN_ITERATIONS = 50_000
MAX_ITERATIONS = 5_000_000
# TrueNAS's client computes PBKDF2 with what the server says; 500,000 is TrueNAS's default.
DEFAULT_ITERATIONS = 500_000
NONCE_BYTES = 32
SALT_BYTES = 32
KEY_BYTES = 64
TLS_SERVER_END_POINT = "tls-server-end-point"


class ScramFailed(Exception):
    """The exchange cannot go on; the caller answers AUTH_ERR, whatever the reason."""


@dataclass(frozen=True)
class ScramSecrets:
    """What the server keeps of a key: neither of these logs a client in."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def record(self) -> dict[str, Any]:
        return {
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "stored_key": _b64(self.stored_key),
            "server_key": _b64(self.server_key),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ScramSecrets:
        return cls(
            base64.b64decode(data["salt"]),
            int(data["iterations"]),
            base64.b64decode(data["stored_key"]),
            base64.b64decode(data["server_key"]),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScramFailed("bad base64") from None


# SHA-512 on the wire; the hash is a parameter so RFC 7677's SHA-256 vector checks the code.
HASH = "sha512"


def _hmac(key: bytes, data: bytes, hash_name: str = HASH) -> bytes:
    return hmac.digest(key, data, hash_name)


def derive(
    secret: str,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    hash_name: str = HASH,
) -> tuple[ScramSecrets, bytes]:
    """The server's secrets for ``secret`` and the client key (what TrueNAS's client takes
    precomputed, so it need not run PBKDF2 itself). Costs one PBKDF2: call off the loop."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac(hash_name, secret.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key", hash_name)
    stored = hashlib.new(hash_name, client_key).digest()
    server_key = _hmac(salted, b"Server Key", hash_name)
    return ScramSecrets(salt, iterations, stored, server_key), client_key


def verify_plain(secret: str, secrets_: ScramSecrets) -> bool:
    """Whether ``secret`` is the key these secrets were derived from (API_KEY_PLAIN)."""
    derived, _ = derive(secret, secrets_.salt, secrets_.iterations)
    return hmac.compare_digest(derived.stored_key, secrets_.stored_key)


def tls_server_end_point(cert: x509.Certificate) -> bytes:
    """RFC 5929 section 4.1: the certificate's DER hashed with its signature's hash."""
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:  # Ed25519, Ed448: no single hash is defined
        raise ScramFailed("tls-server-end-point is undefined for this certificate")
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return digest.finalize()


@dataclass(frozen=True)
class ClientFirst:
    gs2_header: str  # "n,," or "y,," or "p=tls-server-end-point,,"
    binding: str | None  # the binding type asked for ("p=..."), else None
    username: str
    api_key_id: int
    nonce: str
    # TrueNAS's client: the 32 bytes its nonce is base64 of (the server's are appended).
    nonce_bytes: bytes | None
    bare: str


def parse_client_first(text: str) -> ClientFirst:
    """``n,,n=<user>:<key id>,r=<nonce>`` (or ``p=tls-server-end-point,,...``)."""
    flag, sep, rest = text.partition(",")
    authzid, sep2, bare = rest.partition(",")
    if not sep or not sep2 or authzid:
        raise ScramFailed("bad GS2 header")
    binding: str | None = None
    if flag.startswith("p="):
        binding = flag[2:]
        if binding != TLS_SERVER_END_POINT:
            raise ScramFailed(f"channel binding {binding!r} is not supported")
    elif flag not in ("n", "y"):
        raise ScramFailed("bad GS2 flag")
    fields = _fields(bare, ("n", "r"))
    name, colon, key_id = fields["n"].rpartition(":")
    if not colon or not name or not key_id.isdigit():
        raise ScramFailed("the user name must be <user>:<api key id>")
    nonce = fields["r"]
    if not (8 <= len(nonce) <= 256 and all(0x21 <= ord(c) <= 0x7E for c in nonce)):
        raise ScramFailed("the client nonce must be 8 to 256 printable characters")
    nonce_bytes: bytes | None = None
    try:
        nonce_bytes = base64.b64decode(nonce, validate=True)
    except (binascii.Error, ValueError):
        nonce_bytes = None
    if nonce_bytes is not None and len(nonce_bytes) != NONCE_BYTES:
        nonce_bytes = None
    return ClientFirst(f"{flag},,", binding, name, int(key_id), nonce, nonce_bytes, bare)


def _fields(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """``k=v,k=v`` with exactly ``keys``, in that order (values may hold ``=``)."""
    parts = text.split(",")
    if len(parts) != len(keys):
        raise ScramFailed("unexpected attributes")
    found: dict[str, str] = {}
    for part, key in zip(parts, keys, strict=True):
        name, eq, value = part.partition("=")
        if name != key or not eq or not value:
            raise ScramFailed(f"expected {key}=")
        found[key] = value
    return found


class ServerExchange:
    """One exchange, from the client's first message to the server's final one. A second
    final message is refused: a nonce is never used twice."""

    def __init__(
        self,
        first: ClientFirst,
        keys: ScramSecrets,
        binding_data: bytes | None,
        hash_name: str = HASH,
        server_nonce: str | None = None,
    ) -> None:
        """``server_nonce``: the server's part of the nonce (tests with fixed vectors);
        random otherwise."""
        self.first = first
        self.keys = keys
        self.binding_data = binding_data
        self.hash_name = hash_name
        if first.nonce_bytes is not None:
            self.nonce = _b64(first.nonce_bytes + secrets.token_bytes(NONCE_BYTES))
        else:
            self.nonce = first.nonce + (server_nonce or secrets.token_urlsafe(NONCE_BYTES))
        self.server_first = f"r={self.nonce},s={_b64(keys.salt)},i={keys.iterations}"
        self._done = False

    def final(self, text: str) -> str:
        """Check the client's final message; the server's final one (``v=...``)."""
        if self._done:
            raise ScramFailed("this exchange has ended")
        self._done = True
        fields = _fields(text, ("c", "r", "p"))
        expected_cb = self.first.gs2_header.encode() + (
            self.binding_data if self.first.binding is not None and self.binding_data else b""
        )
        if not hmac.compare_digest(_unb64(fields["c"]), expected_cb):
            raise ScramFailed("channel binding does not match")
        if not hmac.compare_digest(fields["r"].encode(), self.nonce.encode()):
            raise ScramFailed("nonce does not match")
        proof = _unb64(fields["p"])
        if len(proof) != hashlib.new(self.hash_name).digest_size:
            raise ScramFailed("bad proof size")
        without_proof = f"c={fields['c']},r={fields['r']}"
        auth_message = f"{self.first.bare},{self.server_first},{without_proof}".encode()
        signature = _hmac(self.keys.stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        client_stored = hashlib.new(self.hash_name, client_key).digest()
        if not hmac.compare_digest(client_stored, self.keys.stored_key):
            raise ScramFailed("wrong proof")
        return f"v={_b64(_hmac(self.keys.server_key, auth_message, self.hash_name))}"
