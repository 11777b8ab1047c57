"""Web Push's cryptography: the server's VAPID key pair (RFC 8292, ES256 JWTs) and payload
encryption for a subscription (RFC 8291, ``aes128gcm`` of RFC 8188, one record)."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# One aes128gcm record of 4096 bytes: header (86) + payload + delimiter (1) + tag (16).
RECORD_SIZE = 4096
MAX_PAYLOAD = RECORD_SIZE - 86 - 1 - 16
# RFC 8292: a JWT's exp is at most 24 h ahead; ours ask for 12 h.
JWT_LIFETIME = 12 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (browsers give it without)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point (65 bytes), as p256dh and VAPID's ``k`` carry it."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key kept at ``path`` (PEM, 0600), made on first use."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL: two servers starting at once on one data dir keep the first one's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        return key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError(f"{path} does not hold a P-256 private key")
    return loaded


def origin(endpoint: str) -> str:
    """A URL's origin (scheme://host[:port]): VAPID's ``aud``."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(frozen=True)
class Vapid:
    """The server's application server key pair (RFC 8292)."""

    key: ec.EllipticCurvePrivateKey

    @property
    def public_key(self) -> str:
        """Base64url of the uncompressed public point: ``applicationServerKey`` in browsers."""
        return b64url(public_bytes(self.key.public_key()))

    def jwt(self, endpoint: str, subject: str, now: float | None = None) -> str:
        header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
        claims = {
            "aud": origin(endpoint),
            "exp": int(now if now is not None else time.time()) + JWT_LIFETIME,
            "sub": subject,
        }
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{body}".encode()
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        # JWS wants r || s, 32 bytes each, not DER.
        return f"{header}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def authorization(self, endpoint: str, subject: str) -> str:
        return f"vapid t={self.jwt(endpoint, subject)}, k={self.public_key}"


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def encrypt(
    payload: bytes,
    p256dh: bytes,
    auth: bytes,
    *,
    salt: bytes | None = None,
    sender: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The ``aes128gcm`` body for the subscription with public key ``p256dh`` and secret
    ``auth`` (RFC 8291 section 3.4); ``salt`` and ``sender`` are random unless given."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes, more than {MAX_PAYLOAD}")
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    sender = sender or ec.generate_private_key(ec.SECP256R1())
    salt = salt or os.urandom(16)
    sender_public = public_bytes(sender.public_key())
    shared = sender.exchange(ec.ECDH(), receiver)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + p256dh + sender_public, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    # \x02: the last (and only) record, no padding.
    sealed = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)
    header = salt + RECORD_SIZE.to_bytes(4, "big") + bytes([len(sender_public)]) + sender_public
    return header + sealed


def check_subscription_keys(p256dh: str, auth: str) -> str | None:
    """Why these keys cannot serve, or None: p256dh a P-256 point, auth 16 bytes."""
    try:
        point = b64url_decode(p256dh)
        secret = b64url_decode(auth)
    except ValueError:
        return "keys are not base64url"
    if len(secret) != 16:
        return "keys.auth must be 16 bytes"
    if len(point) != 65 or point[0] != 4:
        return "keys.p256dh must be an uncompressed P-256 point (65 bytes)"
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        return "keys.p256dh is not a P-256 public key"
    return None
