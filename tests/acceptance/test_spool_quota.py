"""The spool quota with the real curl: buffered downloads and uploads past a user's share or
past the total are refused with the reason, and the space comes back with the spool file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.acceptance.test_files import curl, random_file, status_and_body, upload_args
from tests.rpcsync import Rpc, wait_ended, wait_for
from tests.serverproc import ServerProc

MIB = 1024 * 1024


def spool_bytes(rpc: Rpc) -> int:
    used: int = rpc.stats()["spool_bytes"]
    return used


def buffered(rpc: Rpc, path: Path) -> tuple[dict[str, Any], str]:
    """A buffered download of ``path``, run to its end: (the job's record, its URL)."""
    job_id, url = rpc.result("core.download", "filesystem.get", [str(path)], path.name, True)
    return wait_ended(rpc, [job_id])[0], url


def test_buffered_output_past_a_users_share_fails_with_edquot(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    srv = make_server("--spool-quota-per-user", str(3 * MIB), "--spool-quota", str(100 * MIB))
    src = random_file(srv.data_dir / "files" / "two.bin", 2 * MIB)
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        first, url = buffered(rpc, src)
        assert first["state"] == "SUCCESS" and spool_bytes(rpc) == 2 * MIB
        refused, _ = buffered(rpc, src)
        assert refused["state"] == "FAILED", refused
        assert refused["exc_info"]["errname"] == "EDQUOT"
        assert "Spool quota exceeded: root holds" in refused["error"]
        assert "of 3145728 bytes in uploads and buffered downloads" in refused["error"]
        # What the failed job had spooled is given back at once.
        assert spool_bytes(rpc) == 2 * MIB
        # Another user has a share of their own.
        rpc.result(
            "user.create",
            {"username": "alice", "password": "alice-pass", "allowlist": ["filesystem.get"]},
        )
        alice = Rpc(srv.ws_url)
        assert alice.result("auth.login", "alice", "alice-pass") is True
        job_id, _ = alice.result("core.download", "filesystem.get", [str(src)], "a", True)
        assert wait_ended(rpc, [job_id])[0]["state"] == "SUCCESS"
        alice.close()
        assert spool_bytes(rpc) == 4 * MIB
        # Fetching the whole file spends the token and removes the spool: room again.
        curl("-o", str(tmp_path / "got"), srv.url + url)
        assert (tmp_path / "got").read_bytes() == src.read_bytes()
        wait_for(lambda: spool_bytes(rpc) == 2 * MIB, "the spool given back")
        again, _ = buffered(rpc, src)
        assert again["state"] == "SUCCESS"
    finally:
        rpc.close()


def test_past_the_total_fails_with_enospc(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server("--spool-quota-per-user", str(100 * MIB), "--spool-quota", str(3 * MIB))
    src = random_file(srv.data_dir / "files" / "two.bin", 2 * MIB)
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        assert buffered(rpc, src)[0]["state"] == "SUCCESS"
        refused, _ = buffered(rpc, src)
        assert (refused["state"], refused["exc_info"]["errname"]) == ("FAILED", "ENOSPC")
        assert "Spool full" in refused["error"]
    finally:
        rpc.close()


def test_an_upload_past_the_quota_gets_507_and_gives_the_space_back(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    srv = make_server("--spool-quota-per-user", str(6 * MIB))
    big = random_file(tmp_path / "big.bin", 5 * MIB)
    rpc = Rpc(srv.ws_url, srv.password)

    def upload(gate: str) -> tuple[int, Any]:
        # The job reads nothing until its gate opens: the upload is spooled meanwhile.
        return status_and_body(*upload_args(srv, "test.late_reader", [gate], big))

    def finish(gate: str, job_id: int) -> dict[str, Any]:
        assert rpc.result("test.open_gate", gate) is True
        return wait_ended(rpc, [job_id])[0]

    try:
        code, held = upload("held")
        assert code == 200 and spool_bytes(rpc) == 5 * MIB, held
        code, body = upload("refused")
        assert code == 507, body
        assert body["errname"] == "EDQUOT" and "Spool quota exceeded" in body["error"], body
        assert spool_bytes(rpc) == 5 * MIB
        refused = rpc.result("core.get_jobs", [["method", "=", "test.late_reader"]])[-1]
        ended = finish("refused", refused["id"])
        assert ended["state"] == "FAILED" and "Spool quota exceeded" in ended["error"], ended
        # The held upload's job reads it and ends: its spool file goes, and its space.
        assert finish("held", held["job_id"])["result"] == 5 * MIB
        wait_for(lambda: spool_bytes(rpc) == 0, "the upload's spool given back")
        code, body = upload("again")
        assert code == 200, body
        assert finish("again", body["job_id"])["result"] == 5 * MIB
    finally:
        rpc.close()


def test_the_quota_options_are_documented() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "middlewared", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--spool-quota-per-user" in out and "default 4 GiB" in out
    assert "--spool-quota " in out and "default 16 GiB" in out
