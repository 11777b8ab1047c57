"""Mails to a local SMTP sink, one after another: ``mail.send`` over the WebSocket (as a user
with an email, after the admin pointed the server at the sink and lifted mail.send's hourly
rate); or aiosmtplib in a bare loop in this process, one connection per mail
(``per_connection``) or one connection for every mail (``reuse``)."""

from __future__ import annotations

import time
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from bench.loads.common import CpuWindow, auth, level_metrics, ws_url
from bench.loads.fastws import Conn, close_all, open_many

CASE = "one mail at a time"
FROM = "middlewared@example.com"
USER_EMAIL = "bench@example.org"
TO = "someone@example.net"
SUBJECT = "Bench mail"
BODY = "Hello,\n\n" + "This is a short mail of the bench, about a kilobyte long. " * 16 + "\n"
HOST = "127.0.0.1"


def message() -> EmailMessage:
    """The mail the server composes for mail.send's ``from`` mode, built the plain way."""
    msg = EmailMessage()
    msg["From"] = f"bench <{FROM}>"
    msg["To"] = TO
    msg["Reply-To"] = USER_EMAIL
    msg["Subject"] = SUBJECT
    msg.set_content(BODY)
    return msg


async def bare(port: int, reuse: bool, seconds: float) -> list[float]:
    lat: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    if reuse:
        client = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False)
        async with client:
            while (t0 := clock()) < deadline:
                await client.send_message(message())
                lat.append(clock() - t0)
        return lat
    while (t0 := clock()) < deadline:
        await aiosmtplib.send(message(), hostname=HOST, port=port, start_tls=False)
        lat.append(clock() - t0)
    return lat


async def setup(spec: dict[str, Any]) -> dict[str, str]:
    """As the admin: the server's SMTP settings, a user with an email allowed mail.send, and
    mail.send's rate lifted (cozy's default is 200 an hour per user). Returns its login."""
    (admin,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        settings = {"host": HOST, "port": spec["smtp_port"], "security": "PLAIN"}
        settings |= {"from_email": FROM, "username": "", "password": ""}
        await admin.call("mail.update", settings)
        login = {"user": "benchmail", "password": "bench-mail-password"}
        await admin.call(
            "user.create",
            {
                "username": login["user"],
                "password": login["password"],
                "full_name": "bench",
                "email": USER_EMAIL,
                "allowlist": ["mail.send"],
            },
        )
        await admin.call("worker.update", "mail.send", {"rate": None})
        return login
    finally:
        await close_all([admin])


async def calls(conn: Conn, seconds: float) -> list[float]:
    options = {
        "mode": "from",
        "to": [{"email": TO}],
        "subject": SUBJECT,
        "parts": [{"type": "text/plain", "body": BODY}],
    }
    lat: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while (t0 := clock()) < deadline:
        await conn.call("mail.send", options)
        lat.append(clock() - t0)
    return lat


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: mode (server, per_connection or reuse), smtp_port, sink_pid, warmup and seconds; url,
    auth (the admin's) and server_pid for the server."""
    mode: str = spec["mode"]
    conns: list[Conn] = []
    if mode == "server":
        conns = await open_many(ws_url(spec), 1, await setup(spec))

    async def measure(seconds: float) -> list[float]:
        if conns:
            return await calls(conns[0], seconds)
        return await bare(spec["smtp_port"], mode == "reuse", seconds)

    try:
        await measure(spec["warmup"])
        cpu, sink = CpuWindow(spec.get("server_pid")), CpuWindow(spec["sink_pid"])
        cpu.start()
        sink.start()
        lat = await measure(spec["seconds"])
        sink.stop()
        cpu.stop()
    finally:
        await close_all(conns)
    metrics = level_metrics(lat, cpu)
    metrics["sink_busy"] = sink.server / sink.wall if sink.wall else 0.0
    return {"cases": {CASE: {"mails_per_s": metrics.pop("jobs_per_s"), **metrics}}}
