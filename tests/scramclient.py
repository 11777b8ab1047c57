"""A SCRAM-SHA-512 client that sends what TrueNAS's client sends (read from its source,
written here independently): ``n=<user>:<key id>``, a nonce that is base64 of 32 random
bytes, ``p=tls-server-end-point`` binding over TLS, a combined nonce that must decode to 64
bytes starting with ours, and the server's signature checked at the end. Either the raw key
or the precomputed ``client_material`` of ``api_key.create``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def attributes(text: str) -> dict[str, str]:
    return {part[0]: part[2:] for part in text.split(",")}


@dataclass
class TrueNasScram:
    username: str
    api_key_id: int
    raw_secret: str | None = None  # the part after "<id>-"
    client_key: bytes | None = None
    stored_key: bytes | None = None
    server_key: bytes | None = None
    # tls-server-end-point of the certificate the client saw; None: unbound ("n,,").
    binding: bytes | None = None
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _first_bare: str = ""
    _server_first: str = ""
    _without_proof: str = ""

    @classmethod
    def from_key(cls, username: str, key: str, binding: bytes | None = None) -> TrueNasScram:
        kid, _, secret = key.partition("-")
        return cls(username, int(kid), raw_secret=secret, binding=binding)

    @property
    def gs2(self) -> str:
        return "p=tls-server-end-point,," if self.binding is not None else "n,,"

    def first(self) -> str:
        self._first_bare = f"n={self.username}:{self.api_key_id},r={b64(self.nonce)}"
        return self.gs2 + self._first_bare

    def final(self, server_first: str) -> str:
        self._server_first = server_first
        fields = attributes(server_first)
        combined = base64.b64decode(fields["r"])
        if len(combined) != 64 or not combined.startswith(self.nonce):
            raise ValueError("the server's nonce is not ours followed by 32 bytes")
        if self.raw_secret is not None:
            salted = hashlib.pbkdf2_hmac(
                "sha512", self.raw_secret.encode(), base64.b64decode(fields["s"]), int(fields["i"])
            )
            self.client_key = hmac.digest(salted, b"Client Key", "sha512")
            self.stored_key = hashlib.sha512(self.client_key).digest()
            self.server_key = hmac.digest(salted, b"Server Key", "sha512")
        assert self.client_key is not None and self.stored_key is not None
        cb = self.gs2.encode() + (self.binding or b"")
        self._without_proof = f"c={b64(cb)},r={fields['r']}"
        signature = hmac.digest(self.stored_key, self._auth_message(), "sha512")
        proof = bytes(a ^ b for a, b in zip(self.client_key, signature, strict=True))
        return f"{self._without_proof},p={b64(proof)}"

    def verify(self, server_final: str) -> bool:
        assert self.server_key is not None
        expected = hmac.digest(self.server_key, self._auth_message(), "sha512")
        return hmac.compare_digest(base64.b64decode(attributes(server_final)["v"]), expected)

    def _auth_message(self) -> bytes:
        return f"{self._first_bare},{self._server_first},{self._without_proof}".encode()
