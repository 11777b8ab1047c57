"""Web Push's pure parts: payload encryption held to RFC 8291's Appendix A byte for byte and
to a second implementation (http_ece), VAPID JWTs checked as a push service does, and the
endpoints the server refuses to post to."""

from __future__ import annotations

import ipaddress
import json
import time

import http_ece  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from middlewared_plugins import webpush
from middlewared_plugins.pushsubs import PublicResolver, endpoint_refusal

B = webpush.b64url_decode
# RFC 8291 Appendix A.
AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
SALT = "DGv6ra1nlYgDCS1FRnbzlw"
BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYW"
    "AmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgS"
    "xsj_Qulcy4a-fN"
)


def test_encryption_reproduces_rfc_8291_appendix_a() -> None:
    sender = ec.derive_private_key(int.from_bytes(B(AS_PRIVATE), "big"), ec.SECP256R1())
    body = webpush.encrypt(
        b"When I grow up, I want to be a watermelon",
        B(UA_PUBLIC),
        B(AUTH),
        salt=B(SALT),
        sender=sender,
    )
    assert webpush.b64url(body) == BODY


def test_http_ece_decrypts_what_we_encrypt() -> None:
    receiver = ec.generate_private_key(ec.SECP256R1())
    auth = b"0123456789abcdef"
    payload = json.dumps({"title": "Été", "message": "x" * 3000}).encode()
    body = webpush.encrypt(payload, webpush.public_bytes(receiver.public_key()), auth)
    assert body[16:20] == (4096).to_bytes(4, "big")
    assert http_ece.decrypt(body, private_key=receiver, auth_secret=auth) == payload
    with pytest.raises(ValueError, match="more than"):
        webpush.encrypt(
            b"x" * (webpush.MAX_PAYLOAD + 1), webpush.public_bytes(receiver.public_key()), auth
        )


def test_vapid_jwt_verifies_with_the_public_key() -> None:
    vapid = webpush.Vapid(ec.generate_private_key(ec.SECP256R1()))
    now = time.time()
    header = vapid.authorization("https://push.example.net:8443/wpush/v2/abc?x=1", "mailto:a@b.c")
    token, key = header.removeprefix("vapid t=").split(", k=")
    assert key == vapid.public_key
    signed, _, signature = token.rpartition(".")
    raw = B(signature)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), B(key))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, signed.encode(), ec.ECDSA(hashes.SHA256()))
    claims = json.loads(B(signed.split(".")[1]))
    assert claims["aud"] == "https://push.example.net:8443" and claims["sub"] == "mailto:a@b.c"
    assert now < claims["exp"] <= now + 24 * 3600
    assert json.loads(B(signed.split(".")[0])) == {"typ": "JWT", "alg": "ES256"}


@pytest.mark.parametrize(
    ("endpoint", "insecure", "refused"),
    [
        ("https://fcm.googleapis.com/fcm/send/x", False, None),
        ("http://fcm.googleapis.com/fcm/send/x", False, "https://"),
        ("https://127.0.0.1:8443/p", False, "not public"),
        ("https://10.1.2.3/p", True, "not public"),
        ("https://[::1]/p", False, "not public"),
        ("https://169.254.169.254/latest", False, "not public"),
        ("https://localhost/p", False, "not public"),
        ("https://user@push.example.net/p", False, "no user"),
        ("ftp://push.example.net/p", True, "https://"),
        ("http://127.0.0.1:8080/p", True, None),
    ],
)
def test_endpoints_refused(endpoint: str, insecure: bool, refused: str | None) -> None:
    why = endpoint_refusal(endpoint, insecure)
    assert (why is None) if refused is None else (why is not None and refused in why), why


def test_subscription_keys_are_checked() -> None:
    point = webpush.b64url(
        webpush.public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    )
    assert webpush.check_subscription_keys(point, AUTH) is None
    assert "16 bytes" in (webpush.check_subscription_keys(point, "AAAA") or "")
    assert "P-256" in (webpush.check_subscription_keys(AUTH + AUTH + AUTH, AUTH) or "")


async def test_names_resolve_to_public_addresses_only() -> None:
    """A name that points inside the network is refused when connecting (DNS may have changed
    since the subscription was checked); loopback passes only when insecure endpoints do."""
    strict, local = PublicResolver(insecure=False), PublicResolver(insecure=True)
    try:
        with pytest.raises(OSError, match="no public address"):
            await strict.resolve("localhost", 443)
        found = await local.resolve("localhost", 443)
        assert found and all(ipaddress.ip_address(r["host"]).is_loopback for r in found)
    finally:
        await strict.close()
        await local.close()
