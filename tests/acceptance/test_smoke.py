"""The seed's flows over a real socket: ping, login, the filesystem.copy job event by event."""

from __future__ import annotations

from tests.serverproc import ServerProc
from tests.wsraw import raw


async def test_ping_before_login(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        assert await c.call("core.ping") == "pong"


async def test_refused_before_login(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        err = await c.error("core.get_jobs")
        assert err["code"] == -32001
        assert err["data"]["error"] == 207
        assert err["data"]["errname"] == "ENOTAUTHENTICATED"
        assert set(err["data"]) == {"error", "errname", "reason", "extra", "trace"}


async def test_filesystem_copy_seed_flow(server: ServerProc) -> None:
    root = server.data_dir / "files"
    src = root / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 3_000_000)
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_text("hello")
    dst = root / "dst"
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call_id = "6841f242-840a-11e6-a437-00e04d680384"
        await c.send(
            {
                "jsonrpc": "2.0",
                "id": call_id,
                "method": "filesystem.copy",
                "params": [str(src), str(dst)],
            }
        )
        added = await c.notification(lambda n: n["params"]["msg"] == "added")
        job_id = added["params"]["id"]
        assert added["params"]["collection"] == "core.get_jobs"
        assert added["params"]["fields"]["id"] == job_id
        assert added["params"]["fields"]["message_ids"] == [call_id]
        reply = await c.reply(call_id)
        assert reply == {"jsonrpc": "2.0", "id": call_id, "result": True}
        changes = [n["params"] for n in c.notifications if n["params"]["id"] == job_id]
        assert changes, "no CHANGED events"
        assert all(ch["msg"] == "changed" for ch in changes)
        descriptions = [ch["fields"]["progress"]["description"] for ch in changes]
        assert any(d and d.startswith("Copied ") and " of 3000005 bytes" in d for d in descriptions)
        assert changes[-1]["fields"]["state"] == "SUCCESS"
        assert changes[-1]["fields"]["progress"]["percent"] == 100
    assert (dst / "a.bin").read_bytes() == b"x" * 3_000_000
    assert (dst / "sub" / "b.txt").read_text() == "hello"
