"""SCRAM-SHA-512 API key logins over the wire (PROTOCOL.md section 12), replaying frame by
frame what TrueNAS's client sends for ``login_with_api_key`` (bound to the certificate over
wss://, unbound over ws://), its precomputed key material, scramp's standard client, and the
attacks: wrong keys, unknown keys and users (same answers), binding asked without TLS or for
another certificate, replayed and truncated exchanges, the throttle, keys made before
SCRAM, and no secret in the server's log."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import scramp
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.scramclient import TrueNasScram
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

SCRAM = "SCRAM"


async def first(c: Raw, rfc_str: str) -> dict[str, Any]:
    answer: dict[str, Any] = await c.call(
        "auth.login_ex",
        {"mechanism": SCRAM, "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": rfc_str},
    )
    return answer


async def final(c: Raw, rfc_str: str) -> dict[str, Any]:
    answer: dict[str, Any] = await c.call(
        "auth.login_ex",
        {"mechanism": SCRAM, "scram_type": "CLIENT_FINAL_MESSAGE", "rfc_str": rfc_str},
    )
    return answer


async def exchange(c: Raw, client: TrueNasScram) -> tuple[dict[str, Any], dict[str, Any]]:
    server_first = await first(c, client.first())
    if server_first["response_type"] != "SCRAM_RESPONSE":
        return server_first, server_first
    assert server_first["scram_type"] == "SERVER_FIRST_RESPONSE"
    return server_first, await final(c, client.final(server_first["rfc_str"]))


async def new_key(server: ServerProc, name: str, **extra: Any) -> dict[str, Any]:
    async with raw(server.ws_url, "root", server.password, **extra) as c:
        key: dict[str, Any] = await c.call("api_key.create", {"name": name})
    return key


def end_point(der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point of the certificate seen on the wire."""
    cert = x509.load_der_x509_certificate(der)
    algorithm = cert.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        algorithm = hashes.SHA256()
    return hashlib.new(algorithm.name, der).digest()


def peer_certificate(c: Raw) -> bytes:
    ssl_object = c.ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    assert der
    return bytes(der)


@pytest.fixture
def tls_server(make_server: Callable[..., ServerProc]) -> ServerProc:
    return make_server("--tls-self-signed", "--login-max-failures", "1000")


def tls_context(server: ServerProc) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.data_dir / "tls" / "self-signed.crt")


async def test_scram_is_offered_before_login(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        assert SCRAM in await c.call("auth.mechanism_choices")


async def test_truenas_client_exchange_bound_to_the_certificate(tls_server: ServerProc) -> None:
    ctx = tls_context(tls_server)
    key = await new_key(tls_server, "bound", ssl=ctx)
    async with raw(tls_server.ws_url, ssl=ctx) as c:
        client = TrueNasScram.from_key("root", key["key"], end_point(peer_certificate(c)))
        server_first, server_final = await exchange(c, client)
        assert server_first["user_info"] is None
        assert server_final["response_type"] == "SCRAM_RESPONSE"
        assert server_final["scram_type"] == "SERVER_FINAL_RESPONSE"
        assert client.verify(server_final["rfc_str"])  # the server knew the key
        assert server_final["user_info"]["pw_name"] == "root"
        me = await c.call("auth.me")
    assert me["credentials"] == {
        "type": "API_KEY",
        "data": {"username": "root", "api_key": {"id": key["id"]}},
    }
    # The salt and iterations are TrueNAS's ranges.
    fields = dict(p.split("=", 1) for p in server_first["rfc_str"].split(","))
    assert 50_000 <= int(fields["i"]) <= 5_000_000
    assert len(base64.b64decode(fields["r"])) == 64
    # Nothing secret reached the server's log.
    logged = "".join(tls_server.output)
    assert key["key"] not in logged and key["key"].split("-", 1)[1] not in logged
    assert key["client_material"]["client_key"] not in logged


async def test_unbound_over_plain_websocket(server: ServerProc) -> None:
    key = await new_key(server, "unbound")
    async with raw(server.ws_url) as c:
        client = TrueNasScram.from_key("root", key["key"])
        _, server_final = await exchange(c, client)
        assert server_final["scram_type"] == "SERVER_FINAL_RESPONSE"
        assert client.verify(server_final["rfc_str"])
        assert (await c.call("auth.me"))["pw_name"] == "root"


async def test_binding_asked_over_plain_websocket_is_refused(server: ServerProc) -> None:
    key = await new_key(server, "no-tls")
    async with raw(server.ws_url) as c:
        client = TrueNasScram.from_key("root", key["key"], binding=b"\0" * 32)
        assert (await first(c, client.first())) == {"response_type": "AUTH_ERR"}
        assert (await c.error("auth.me"))["data"]["errname"] == "ENOTAUTHENTICATED"


async def test_binding_to_another_certificate_is_refused(tls_server: ServerProc) -> None:
    ctx = tls_context(tls_server)
    key = await new_key(tls_server, "mitm", ssl=ctx)
    async with raw(tls_server.ws_url, ssl=ctx) as c:
        # A man in the middle's certificate: the binding the client computes differs.
        client = TrueNasScram.from_key("root", key["key"], binding=hashlib.sha256(b"x").digest())
        _, answer = await exchange(c, client)
        assert answer == {"response_type": "AUTH_ERR"}


async def test_the_client_may_opt_out_of_binding_over_tls(tls_server: ServerProc) -> None:
    ctx = tls_context(tls_server)
    key = await new_key(tls_server, "opt-out", ssl=ctx)
    async with raw(tls_server.ws_url, ssl=ctx) as c:
        client = TrueNasScram.from_key("root", key["key"])
        _, answer = await exchange(c, client)
        assert answer["scram_type"] == "SERVER_FINAL_RESPONSE"


async def test_precomputed_client_material_logs_in(server: ServerProc) -> None:
    key = await new_key(server, "precomputed")
    material = key["client_material"]
    assert material["api_key_id"] == key["id"]
    client = TrueNasScram(
        "root",
        material["api_key_id"],
        client_key=base64.b64decode(material["client_key"]),
        stored_key=base64.b64decode(material["stored_key"]),
        server_key=base64.b64decode(material["server_key"]),
    )
    async with raw(server.ws_url) as c:
        _, answer = await exchange(c, client)
        assert answer["scram_type"] == "SERVER_FINAL_RESPONSE" and client.verify(answer["rfc_str"])
    # The material is not shown again.
    async with raw(server.ws_url, "root", server.password) as c:
        listed = await c.call("api_key.query", [["id", "=", key["id"]]])
    assert "client_material" not in listed[0] and "key" not in listed[0]


async def test_wrong_unknown_key_and_unknown_user_look_the_same(server: ServerProc) -> None:
    key = await new_key(server, "victim")
    kid, _, secret = key["key"].partition("-")
    wrong = f"{kid}-{'A' * len(secret)}"
    shapes = []
    for username, raw_key in (
        ("root", wrong),  # the right key id, a wrong key
        ("root", f"99999-{secret}"),  # no such key
        ("nobody-here", key["key"]),  # no such user
    ):
        async with raw(server.ws_url) as c:
            client = TrueNasScram.from_key(username, raw_key)
            server_first, answer = await exchange(c, client)
            assert server_first["scram_type"] == "SERVER_FIRST_RESPONSE"
            assert answer == {"response_type": "AUTH_ERR"}
            assert (await c.error("auth.me"))["data"]["errname"] == "ENOTAUTHENTICATED"
            fields = dict(p.split("=", 1) for p in server_first["rfc_str"].split(","))
            shapes.append((len(fields["s"]), fields["i"]))
    assert len(set(shapes)) == 1, shapes
    # An unknown name's salt does not change between attempts, as a real key's does not.
    salts = []
    for _ in range(2):
        async with raw(server.ws_url) as c:
            answer = await first(c, TrueNasScram.from_key("ghost", "7-abc").first())
            salts.append(answer["rfc_str"].split(",")[1])
    assert salts[0] == salts[1]


async def test_replayed_and_truncated_exchanges_are_refused(server: ServerProc) -> None:
    key = await new_key(server, "replay")
    async with raw(server.ws_url) as c:
        client = TrueNasScram.from_key("root", key["key"])
        server_first = await first(c, client.first())
        message = client.final(server_first["rfc_str"])
        assert (await final(c, message))["scram_type"] == "SERVER_FINAL_RESPONSE"
        await c.call("auth.logout")
        # The same final message again, on the same connection: the exchange has ended.
        assert (await final(c, message)) == {"response_type": "AUTH_ERR"}
    async with raw(server.ws_url) as c:
        # ... and on another connection, with a first message of its own (a new nonce).
        await first(c, TrueNasScram.from_key("root", key["key"]).first())
        assert (await final(c, message)) == {"response_type": "AUTH_ERR"}
        # A final message with no exchange under way; garbage; a cut first message.
        assert (await final(c, message)) == {"response_type": "AUTH_ERR"}
        for bad in ("", "n,,", "n,,n=root:1", "x,,n=root:1,r=abcdefgh", "n,a=b,n=root:1,r=x"):
            assert (await first(c, bad)) == {"response_type": "AUTH_ERR"}, bad
        assert (await c.error("auth.me"))["data"]["errname"] == "ENOTAUTHENTICATED"


async def test_failed_exchanges_count_against_the_throttle(
    make_server: Callable[..., ServerProc],
) -> None:
    server = make_server("--login-max-failures", "3")
    async with raw(server.ws_url) as c:
        for _ in range(3):
            _, answer = await exchange(c, TrueNasScram.from_key("root", "1-nope"))
            assert answer == {"response_type": "AUTH_ERR"}
        refused = await c.error(
            "auth.login_ex",
            {"mechanism": SCRAM, "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": "n,,n=a:1,r=x"},
        )
    assert refused["data"]["errname"] == "EBUSY", refused


async def test_scramps_standard_client_logs_in(server: ServerProc, tls_server: ServerProc) -> None:
    """An independent implementation (RFC 5802 nonces joined as text), unbound and bound."""
    for srv, ctx in ((server, None), (tls_server, tls_context(tls_server))):
        extra: dict[str, Any] = {"ssl": ctx} if ctx else {}
        key = await new_key(srv, "scramp", **extra)
        kid, _, secret = key["key"].partition("-")
        async with raw(srv.ws_url, **extra) as c:
            if ctx is None:
                client = scramp.ScramClient(["SCRAM-SHA-512"], f"root:{kid}", secret)
            else:
                binding = ("tls-server-end-point", end_point(peer_certificate(c)))
                client = scramp.ScramClient(
                    ["SCRAM-SHA-512-PLUS"], f"root:{kid}", secret, channel_binding=binding
                )
            answer = await first(c, client.get_client_first())
            client.set_server_first(answer["rfc_str"])
            answer = await final(c, client.get_client_final())
            assert answer["scram_type"] == "SERVER_FINAL_RESPONSE", answer
            client.set_server_final(answer["rfc_str"])  # raises when the signature is wrong
            assert (await c.call("auth.me"))["pw_name"] == "root"


async def test_a_key_made_before_scram_gets_it_at_its_next_plain_login(
    make_server: Callable[..., ServerProc],
) -> None:
    server = make_server()
    key = await new_key(server, "old")
    server.stop()
    # As a database from before SCRAM holds it: no SCRAM secrets.
    with sqlite3.connect(server.data_dir / "middlewared.db") as db:
        db.execute("UPDATE api_keys SET scram = NULL")
    server = make_server(data_dir=server.data_dir)
    async with raw(server.ws_url) as c:
        _, answer = await exchange(c, TrueNasScram.from_key("root", key["key"]))
        assert answer == {"response_type": "AUTH_ERR"}
        assert await c.call("auth.login_with_api_key", key["key"]) is True
    async with raw(server.ws_url) as c:
        client = TrueNasScram.from_key("root", key["key"])
        _, answer = await exchange(c, client)
        assert answer["scram_type"] == "SERVER_FINAL_RESPONSE" and client.verify(answer["rfc_str"])
    with sqlite3.connect(server.data_dir / "middlewared.db") as db:
        (stored,) = db.execute("SELECT scram FROM api_keys").fetchone()
    assert key["key"].split("-", 1)[1] not in stored and "stored_key" in stored
