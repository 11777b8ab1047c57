"""TLS and the local UNIX socket (PROTOCOL.md section 12), over the wire: the Python client,
midclt and curl over wss:// and https://, a command calling back over TLS, root by SO_PEERCRED
on the socket, another uid that must log in (a real process under setpriv), the socket's
mode, a stale socket after kill -9, and the refusals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from middlewared.http.tls import make_self_signed
from middlewared_client import AsyncClient, ClientOptions, ValidationErrors
from middlewared_client.errors import ConnectFailed
from tests.midcltproc import SETPRIV, midclt
from tests.serverproc import ServerProc

CURL = shutil.which("curl")
NOBODY = 65534


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def start_server(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A server that is expected to refuse to start."""
    return sh(
        sys.executable, "-m", "middlewared", "--port", "0", "--data-dir", str(data_dir), *args
    )


def certificate(server: ServerProc) -> Path:
    return server.data_dir / "tls" / "self-signed.crt"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder every uid can reach (pytest's own tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="mw-sock-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- TLS -----------------------------------------------------------------------------------
async def test_self_signed_tls_with_the_client_midclt_and_curl(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    server = make_server("--tls-self-signed")
    assert server.scheme == "https" and server.ws_url.startswith("wss://")
    cert = certificate(server)
    key = cert.with_suffix(".key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    printed = [line for line in server.output if "SHA-256 fingerprint" in line]
    assert printed and len(printed[0].split()[-1].split(":")) == 32

    options = ClientOptions(cafile=str(cert), reconnect=False)
    async with AsyncClient.connect(
        server.ws_url, username="root", password=server.password, options=options
    ) as c:
        assert await c.call("core.ping") == "pong"
        # Files over https:// with the same verification.
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(300_000))
        target = server.data_dir / "files" / "tls.bin"
        handle = await c.upload("filesystem.put", [str(target)], [src])
        await handle.result()
        back = tmp_path / "back.bin"
        await c.download("filesystem.get", [str(target)], "tls.bin", back)
        assert back.read_bytes() == src.read_bytes()
        _, url = await c.call("core.download", "filesystem.get", [str(target)], "tls.bin")

    # curl with the certificate as its CA, and without it (refused).
    if CURL is not None:
        fetched = tmp_path / "curl.bin"
        done = await asyncio.to_thread(
            sh, CURL, "-sS", "--cacert", str(cert), "-o", str(fetched), server.url + url
        )
        assert done.returncode == 0, done.stderr
        assert fetched.read_bytes() == src.read_bytes()
        unverified = sh(CURL, "-sS", server.url + "/_download/1")
        assert unverified.returncode == 60  # peer certificate cannot be authenticated
        # HTTP answers only over TLS.
        plain = sh(CURL, "-sS", f"http://127.0.0.1:{server.port}/_download/1")
        assert plain.returncode != 0 or "400" in plain.stdout, plain

    ok = midclt(
        "-u", server.ws_url, "--cafile", str(cert), "-P", server.password, "call", "core.ping"
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "pong", ok
    by_env = midclt(
        "-u",
        server.ws_url,
        "-P",
        server.password,
        "call",
        "core.ping",
        env={"MIDDLEWARED_CAFILE": str(cert)},
    )
    assert by_env.returncode == 0, by_env
    refused = midclt("-u", server.ws_url, "-P", server.password, "call", "core.ping")
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused


async def test_the_client_refuses_an_unknown_certificate(
    make_server: Callable[..., ServerProc],
) -> None:
    server = make_server("--tls-self-signed")
    with pytest.raises(ConnectFailed, match="certificate verify failed"):
        await AsyncClient.connect(
            server.ws_url, username="root", password=server.password, reconnect=False
        )


async def test_the_self_signed_certificate_is_kept_across_restarts(
    make_server: Callable[..., ServerProc],
) -> None:
    first = make_server("--tls-self-signed")
    fingerprint = next(line for line in first.output if "fingerprint" in line).split()[-1]
    first.stop()
    second = make_server("--tls-self-signed", data_dir=first.data_dir)
    assert any(line.split()[-1] == fingerprint for line in second.output if "fingerprint" in line)


async def test_a_command_calls_back_over_tls(make_server: Callable[..., ServerProc]) -> None:
    server = make_server("--tls-self-signed")
    options = ClientOptions(cafile=str(certificate(server)), reconnect=False)
    async with AsyncClient.connect(
        server.ws_url, username="root", password=server.password, options=options
    ) as c:
        await c.call(
            "command.create",
            {"name": "tls-back", "allow": ["core.ping"], "commands": ["midclt call core.ping"]},
        )
        handle = await c.call("command.run", "tls-back", job=True)
        await handle.result()
        log = await c.call("command.log", "tls-back", 1)
    assert 'stdout: "pong"' in log or "stdout: pong" in log, log


async def test_given_certificate_and_key(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    make_self_signed(cert, key, "middlewared.test")
    server = make_server("--tls-cert", str(cert), "--tls-key", str(key))
    options = ClientOptions(cafile=str(cert), reconnect=False)
    async with AsyncClient.connect(
        server.ws_url, username="root", password=server.password, options=options
    ) as c:
        assert await c.call("core.ping") == "pong"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--tls-cert", "/nonexistent.crt"], 2, "--tls-cert and --tls-key go together"),
        (["--tls-cert", "C", "--tls-key", "K", "--tls-self-signed"], 2, "not both"),
        (["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"], 1, "no such file"),
        (["--unix-socket-mode", "0999"], 2, "not an octal mode"),
    ],
)
def test_bad_transport_options_are_refused(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    done = start_server(tmp_path, *args)
    assert done.returncode == code and says in done.stderr, done


# -- the UNIX socket ---------------------------------------------------------------------------
def socket_url(path: Path) -> str:
    return f"ws+unix://{path}"


async def test_root_by_peer_credentials_without_a_login(
    make_server: Callable[..., ServerProc], public_dir: Path, tmp_path: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    server = make_server("--unix-socket", str(sock))
    assert any(f"listening on unix:{sock}" in line for line in server.output)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    async with AsyncClient.connect(socket_url(sock), reconnect=False) as c:
        me = await c.call("auth.me")
        assert me["pw_name"] == "root" and me["credentials"]["type"] == "UNIX_SOCKET", me
        # Files through the socket too.
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(100_000))
        target = server.data_dir / "files" / "sock.bin"
        await (await c.upload("filesystem.put", [str(target)], [src])).result()
        back = tmp_path / "back.bin"
        await c.download("filesystem.get", [str(target)], "sock.bin", back)
        assert back.read_bytes() == src.read_bytes()
    done = midclt("-u", socket_url(sock), "call", "auth.me")
    assert done.returncode == 0 and json.loads(done.stdout)["pw_name"] == "root", done
    # TCP still needs a login.
    tcp = midclt("-u", server.ws_url, "call", "auth.me")
    assert tcp.returncode == 1, tcp
    if CURL is not None:
        http = sh(CURL, "-sS", "--unix-socket", str(sock), "http://localhost/_download/999")
        # Authenticated by the socket: the refusal is about the job, not the caller.
        assert "No credentials" not in http.stdout and "error" in http.stdout, http


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
async def test_another_uid_must_log_in_and_is_throttled_on_its_own(
    make_server: Callable[..., ServerProc], public_dir: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    server = make_server(
        "--unix-socket", str(sock), "--unix-socket-mode", "0666", "--login-max-failures", "2"
    )
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666
    anon = midclt("-u", socket_url(sock), "call", "auth.me", as_uid=NOBODY)
    assert anon.returncode == 1 and "ENOTAUTHENTICATED" in anon.stderr, anon
    for _ in range(2):
        wrong = midclt("-u", socket_url(sock), "-P", "wrong", "call", "auth.me", as_uid=NOBODY)
        assert wrong.returncode == 1
    throttled = midclt(
        "-u", socket_url(sock), "-P", server.password, "call", "auth.me", as_uid=NOBODY
    )
    assert throttled.returncode == 1, throttled
    assert any("unix:uid=65534" in line for line in server.output)
    # The throttle counted uid 65534, not the socket: root's peers and TCP logins still work.
    tcp = midclt("-u", server.ws_url, "-P", server.password, "call", "auth.me")
    assert tcp.returncode == 0, tcp
    root = midclt("-u", socket_url(sock), "call", "auth.me")
    assert root.returncode == 0, root


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
async def test_a_0600_socket_keeps_other_uids_out(
    make_server: Callable[..., ServerProc], public_dir: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    make_server("--unix-socket", str(sock))
    done = midclt("-u", socket_url(sock), "call", "core.ping", as_uid=NOBODY)
    assert done.returncode == 1 and "Permission denied" in done.stderr, done


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
async def test_unix_socket_users_maps_a_system_user_by_name(
    make_server: Callable[..., ServerProc], public_dir: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    server = make_server(
        "--unix-socket", str(sock), "--unix-socket-mode", "0666", "--unix-socket-users"
    )
    name = sh("id", "-nu", str(NOBODY)).stdout.strip()
    async with AsyncClient.connect(
        server.ws_url, username="root", password=server.password, reconnect=False
    ) as c:
        await c.call(
            "user.create",
            {"username": name, "password": "a-long-password-1", "full_name": "Nobody"},
        )
    me = midclt("-u", socket_url(sock), "call", "auth.me", as_uid=NOBODY)
    assert me.returncode == 0, me
    assert json.loads(me.stdout)["pw_name"] == name
    refused = midclt("-u", socket_url(sock), "call", "user.query", as_uid=NOBODY)
    assert refused.returncode == 1, refused  # not an admin: the mapping gives no more


async def test_a_stale_socket_is_replaced_and_a_live_one_refused(
    make_server: Callable[..., ServerProc], public_dir: Path, tmp_path: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    first = make_server("--unix-socket", str(sock))
    # Another server (its own data dir) on the same socket: refused, the first serves on.
    other = start_server(tmp_path / "o", "--unix-socket", str(sock))
    assert other.returncode == 1 and "another server is listening" in other.stderr, other
    first.kill()
    assert sock.exists()  # left by kill -9
    second = make_server("--unix-socket", str(sock), data_dir=first.data_dir)
    async with AsyncClient.connect(socket_url(sock), reconnect=False) as c:
        assert await c.call("core.ping") == "pong"
    second.stop()
    assert not sock.exists()  # a clean stop removes it


def test_a_file_in_the_sockets_place_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    done = start_server(tmp_path / "d", "--unix-socket", str(path))
    assert done.returncode == 1 and "exists and is not a socket" in done.stderr, done
    assert path.read_text() == "data"


async def test_truenas_backup_tools_call_over_wss_and_fetch_over_https(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    """What backup tools written for TrueNAS do: TrueNAS's options, the URL over https."""
    server = make_server("--tls-self-signed")
    cert = certificate(server)
    options = ClientOptions(cafile=str(cert), reconnect=False)
    async with AsyncClient.connect(
        server.ws_url, username="root", password=server.password, options=options
    ) as c:
        with pytest.raises(ValidationErrors, match="not_truenas"):
            await c.call("core.download", "config.save", [{"not_truenas": True}], "b", False)
        job_id, url = await c.call(
            "core.download", "config.save", [{"secretseed": True, "pool_keys": True}], "b", False
        )
        backup = tmp_path / "backup.db"
        fetch = [CURL or "curl", "-sS", "--cacert", str(cert), "-o", str(backup)]
        done = await asyncio.to_thread(sh, *fetch, server.url + url)
        assert done.returncode == 0, done.stderr
        assert backup.read_bytes()[:16] == b"SQLite format 3\x00"
        (job,) = await c.call("core.get_jobs", [["id", "=", job_id]])
        for _ in range(100):
            if job["state"] in ("SUCCESS", "FAILED"):
                break
            await asyncio.sleep(0.05)
            (job,) = await c.call("core.get_jobs", [["id", "=", job_id]])
        assert job["state"] == "SUCCESS", job


async def test_the_socket_group_and_mode(
    make_server: Callable[..., ServerProc], public_dir: Path
) -> None:
    sock = public_dir / "middlewared.sock"
    make_server(
        "--unix-socket", str(sock), "--unix-socket-group", "nogroup", "--unix-socket-mode", "0660"
    )
    st = sock.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, NOBODY)
    refused = start_server(
        public_dir / "d", "--unix-socket", str(public_dir / "s2"), "--unix-socket-group", "no-such"
    )
    assert refused.returncode == 1 and "no such group" in refused.stderr, refused
