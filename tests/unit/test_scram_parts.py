"""The SCRAM server's parts: parsing, one exchange end to end against the test client (an
independent implementation of TrueNAS's), and what is stored."""

from __future__ import annotations

import hashlib

import pytest

from middlewared.auth.scram import (
    ScramFailed,
    ScramSecrets,
    ServerExchange,
    derive,
    parse_client_first,
    verify_plain,
)
from tests.scramclient import TrueNasScram

ITERATIONS = 50_000


def secrets_for(secret: str) -> ScramSecrets:
    return derive(secret, iterations=ITERATIONS)[0]


def test_stored_secrets_are_not_the_client_key() -> None:
    keys, client_key = derive("secret-key-material", iterations=ITERATIONS)
    assert hashlib.sha512(client_key).digest() == keys.stored_key
    assert client_key not in (keys.stored_key, keys.server_key)
    assert ScramSecrets.from_record(keys.record()) == keys


def test_plain_verification() -> None:
    keys = secrets_for("right")
    assert verify_plain("right", keys) and not verify_plain("wrong", keys)


@pytest.mark.parametrize("binding", [None, b"\x01" * 32])
def test_one_exchange_with_the_truenas_client(binding: bytes | None) -> None:
    keys = secrets_for("abc123")
    client = TrueNasScram.from_key("root", "4-abc123", binding)
    first = parse_client_first(client.first())
    assert (first.username, first.api_key_id) == ("root", 4)
    assert first.binding == (None if binding is None else "tls-server-end-point")
    exchange = ServerExchange(first, keys, binding)
    answer = exchange.final(client.final(exchange.server_first))
    assert client.verify(answer)
    with pytest.raises(ScramFailed, match="ended"):
        exchange.final(client.final(exchange.server_first))


def test_a_wrong_key_fails_at_the_proof() -> None:
    client = TrueNasScram.from_key("root", "4-wrong")
    exchange = ServerExchange(parse_client_first(client.first()), secrets_for("right"), None)
    with pytest.raises(ScramFailed, match="wrong proof"):
        exchange.final(client.final(exchange.server_first))


def test_binding_data_must_match() -> None:
    keys = secrets_for("k")
    client = TrueNasScram.from_key("root", "1-k", b"\x02" * 32)
    exchange = ServerExchange(parse_client_first(client.first()), keys, b"\x03" * 32)
    with pytest.raises(ScramFailed, match="channel binding"):
        exchange.final(client.final(exchange.server_first))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("", "GS2"),
        ("n,,", "unexpected"),
        ("n,x,n=root:1,r=abcdefgh", "GS2"),
        ("q,,n=root:1,r=abcdefgh", "flag"),
        ("p=tls-unique,,n=root:1,r=abcdefgh", "not supported"),
        ("n,,n=root,r=abcdefgh", "<user>:<api key id>"),
        ("n,,n=root:x,r=abcdefgh", "<user>:<api key id>"),
        ("n,,r=abcdefgh,n=root:1", "expected n="),
        ("n,,n=root:1,r=short", "printable"),
        ("n,,n=root:1,r=abcdefgh,e=x", "unexpected"),
    ],
)
def test_malformed_client_first(message: str, reason: str) -> None:
    with pytest.raises(ScramFailed, match=reason):
        parse_client_first(message)


def test_rfc_7677_vector() -> None:
    """RFC 7677 section 3's SCRAM-SHA-256 exchange (user "user", password "pencil"), run
    through the server's code with SHA-256 and the RFC's server nonce: the same messages."""
    import base64

    from middlewared.auth.scram import ClientFirst

    keys, _ = derive("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096, "sha256")
    first = ClientFirst(
        "n,,", None, "user", 0, "rOprNGfwEbeRWgbNEkqO", None, "n=user,r=rOprNGfwEbeRWgbNEkqO"
    )
    exchange = ServerExchange(first, keys, None, "sha256", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert exchange.server_first == (
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client_final = (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert exchange.final(client_final) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
