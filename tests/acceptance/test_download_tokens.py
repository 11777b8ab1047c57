"""A buffered download's token with the real curl: one request at a time; spent once the
file's last byte has gone out, or by a request that does not continue where the previous
one stopped (README, "Files in and out of jobs")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.acceptance.test_files import CURL, curl, random_file, status_and_body
from tests.rpcsync import Rpc, wait_ended
from tests.serverproc import ServerProc

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")

SIZE = 1_000_000


@pytest.fixture
def rpc(server: ServerProc) -> Iterator[Rpc]:
    conn = Rpc(server.ws_url, server.password)
    yield conn
    conn.close()


def buffered(server: ServerProc, rpc: Rpc, src: Path) -> str:
    """The URL of a buffered download of ``src`` whose job has ended."""
    job_id, url = rpc.result("core.download", "filesystem.get", [str(src)], src.name, True)
    assert wait_ended(rpc, [job_id])[0]["state"] == "SUCCESS"
    return f"{server.url}{url}"


def ranged(url: str, first: int, last: int) -> tuple[int, bytes]:
    """curl -r first-last: the status and the bytes."""
    out = curl("-r", f"{first}-{last}", "-w", "\n%{http_code}", url, check=False).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def spent(url: str) -> bool:
    code, body = status_and_body(url)
    return code == 401 and "used" in body["error"]


def test_ranges_stopping_one_byte_short_spend_the_token(
    server: ServerProc, rpc: Rpc, tmp_path: Path
) -> None:
    src = random_file(server.data_dir / "files" / "short.bin", SIZE)
    url = buffered(server, rpc, src)
    assert ranged(url, 0, SIZE - 2) == (206, src.read_bytes()[:-1])
    # Asks for nothing past where the previous request stopped: served, and the last use.
    assert ranged(url, 0, SIZE - 2) == (206, src.read_bytes()[:-1])
    assert spent(url)


def test_resuming_one_byte_short_with_curl_c(server: ServerProc, rpc: Rpc, tmp_path: Path) -> None:
    src = random_file(server.data_dir / "files" / "resume.bin", SIZE)
    url = buffered(server, rpc, src)
    part = tmp_path / "part"
    curl("-r", f"0-{SIZE - 2}", "-o", str(part), url)
    assert part.stat().st_size == SIZE - 1
    curl("-C", "-", "-o", str(part), url)
    assert part.read_bytes() == src.read_bytes()
    assert spent(url)


def test_a_request_that_jumps_ahead_is_the_last(
    server: ServerProc, rpc: Rpc, tmp_path: Path
) -> None:
    src = random_file(server.data_dir / "files" / "jump.bin", SIZE)
    data = src.read_bytes()
    url = buffered(server, rpc, src)
    assert ranged(url, 0, 99) == (206, data[:100])
    assert ranged(url, 100, 199) == (206, data[100:200])  # continues: the token lives
    assert ranged(url, 150, 249) == (206, data[150:250])  # starts before the stop: too
    assert ranged(url, 400, 499) == (206, data[400:500])  # skips bytes: served, the last
    assert spent(url)


def test_concurrent_curls_get_one_full_download(server: ServerProc, rpc: Rpc) -> None:
    src = random_file(server.data_dir / "files" / "many.bin", 8 * SIZE)
    url = buffered(server, rpc, src)
    with ThreadPoolExecutor(5) as pool:
        results = list(
            pool.map(lambda _: curl("-w", "\n%{http_code}", url, check=False).stdout, range(5))
        )
    codes = [int(r.rpartition(b"\n")[2]) for r in results]
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 401, 409}, codes
    assert [r.rpartition(b"\n")[0] for r in results if r.endswith(b"200")] == [src.read_bytes()]
    assert spent(url)


def test_one_request_at_a_time(server: ServerProc, rpc: Rpc, tmp_path: Path) -> None:
    """A download held open by a reader that takes nothing: other requests get 409."""
    src = random_file(server.data_dir / "files" / "held.bin", 16 * SIZE)
    url = buffered(server, rpc, src)
    with socket.socket() as holder:
        # A small receive buffer: the server cannot get the file out while nobody reads.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        holder.connect((server.host, server.port))
        path = url.removeprefix(server.url)
        holder.sendall(f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += holder.recv(4096)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        for _ in range(3):
            code, refusal = status_and_body(url)
            assert code == 409 and "one request at a time" in refusal["error"], refusal
        part = tmp_path / "part"
        part.write_bytes(src.read_bytes()[:1000])
        resumed = curl("-C", "-", "-o", str(part), "-w", "%{http_code}", url, check=False)
        assert resumed.stdout == b"409"  # a resume, but not while the first is sending
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        while len(body) < 16 * SIZE:
            chunk = holder.recv(1 << 20)
            assert chunk, len(body)
            body += chunk
    assert body == src.read_bytes()
    assert spent(url)
