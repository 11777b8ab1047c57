"""The store contract, run against every backend: what the server may rely on from a store
(its named queries and their semantics, writes, snapshots). A new backend (PostgreSQL)
only has to pass this class."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from middlewared import jsonc
from middlewared.errors import CallError
from middlewared.store import Store, open_store
from middlewared.store.base import Op
from middlewared.store.queries import SCHEMA_VERSION

BACKENDS = ["sqlite", "memory"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite://{tmp_path / 'store.db'}" if request.param == "sqlite" else "memory://"
    s = open_store(url)
    await s.open()
    yield s
    await s.close()


def job_row(
    job_id: int, state: str = "SUCCESS", owner_id: int | None = 1, **extra: Any
) -> dict[str, Any]:
    finished = extra.pop(
        "time_finished", 1000 + job_id if state in ("SUCCESS", "FAILED", "ABORTED") else None
    )
    record = {
        "id": job_id,
        "method": extra.get("method", "t.m"),
        "state": state,
        "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "u"}},
    }
    return {
        "id": job_id,
        "method": extra.get("method", "t.m"),
        "state": state,
        "owner": "u",
        "owner_id": owner_id,
        "api_key_id": extra.get("api_key_id"),
        "origin": "call",
        "lock_key": None,
        "attempt": 1,
        "run_after": None,
        "description": None,
        "time_started": 1,
        "time_finished": finished,
        "progress_percent": None,
        "error": None,
        "retry_on_restart": int(extra.get("retry", False)),
        "record": jsonc.dumps(record),
    }


def notifier_row(nid: int, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": nid,
        "name": name,
        "kind": extra.get("kind", "mail"),
        "recipients": extra.get("recipients", '["ops@example.com"]'),
        "url": extra.get("url"),
        "secret": extra.get("secret"),
        "created": 5,
        "extra": extra.get("extra", "{}"),
    }


def command_row(name: str) -> dict[str, Any]:
    return {"name": name, "record": '{"commands":["true"]}', "runs": 0, "created": 3}


def user_row(uid: int, username: str, admin: bool = True) -> dict[str, Any]:
    return {
        "id": uid,
        "username": username,
        "full_name": "",
        "password_hash": "scrypt$16384$8$1$AAAA$BBBB",
        "admin": int(admin),
        "locked": 0,
        "allowlist": "[]",
        "created": 5,
        "twofactor": None,
        "email": "",
    }


class TestStoreContract:
    async def test_counters_only_rise(self, store: Store) -> None:
        assert await store.fetch_one("get_counter", name="jobs") == {"value": 0}
        await store.write([Op("raise_counter", {"name": "jobs", "value": 7})])
        await store.write([Op("raise_counter", {"name": "jobs", "value": 3})])
        assert await store.fetch_one("get_counter", name="jobs") == {"value": 7}

    async def test_jobs_in_and_out(self, store: Store) -> None:
        await store.write([Op("insert_job", job_row(1, "RUNNING", retry=True))])
        assert jsonc.loads((await store.fetch_one("get_job", id=1) or {})["record"])["id"] == 1
        pending = await store.fetch("unfinished_jobs")
        assert [
            (jsonc.loads(r["record"])["id"], r["retry_on_restart"], r["owner_id"]) for r in pending
        ] == [(1, 1, 1)]
        await store.write([Op("update_job", job_row(1, "SUCCESS"))])
        assert await store.fetch("unfinished_jobs") == []
        assert await store.fetch_one("job_ref", id=1) == {
            "owner_id": 1,
            "method": "t.m",
            "api_key_id": None,
        }
        finished = await store.fetch("finished_job_records")
        assert [r["owner_id"] for r in finished] == [1]
        await store.write([Op("delete_job", {"id": 1})])
        assert await store.fetch_one("get_job", id=1) is None

    async def test_a_write_is_all_or_nothing(self, store: Store) -> None:
        await store.write([Op("insert_job", job_row(1))])
        with pytest.raises(CallError):
            await store.write([Op("insert_job", job_row(2)), Op("insert_job", job_row(1))])
        assert await store.fetch_one("get_job", id=2) is None
        # The failed write failed alone: the next one goes through.
        await store.write([Op("insert_job", job_row(3))])
        assert await store.fetch_one("get_job", id=3) is not None

    async def test_writes_apply_in_order_and_resolve_in_order(self, store: Store) -> None:
        done: list[int] = []
        futures = []
        for i in range(1, 6):
            fut = store.write([Op("insert_job", job_row(i, "RUNNING"))])
            fut.add_done_callback(functools.partial(lambda n, _f: done.append(n), i))
            futures.append(fut)
        futures.append(store.write([Op("update_job", job_row(3, "FAILED"))]))
        await asyncio.gather(*futures)
        assert done == [1, 2, 3, 4, 5]
        assert (
            jsonc.loads((await store.fetch_one("get_job", id=3) or {})["record"])["state"]
            == "FAILED"
        )

    async def test_a_keyed_write_is_replaced_by_a_later_one(self, store: Store) -> None:
        """Writes queued together may be committed together; a keyed op a later op with the
        same key replaces may be left out, and every write still resolves, in order."""
        await store.write([Op("insert_job", job_row(1, "WAITING"))])
        key = ("job", 1)
        running = store.write([Op("update_job", job_row(1, "RUNNING"), key)])
        other = store.write([Op("insert_job", job_row(2))])
        ended = store.write([Op("update_job", job_row(1, "FAILED"), key)])
        await asyncio.gather(running, other, ended)
        record = jsonc.loads((await store.fetch_one("get_job", id=1) or {})["record"])
        assert record["state"] == "FAILED"
        assert await store.fetch_one("get_job", id=2) is not None

    async def test_retention_queries_are_per_owner(self, store: Store) -> None:
        rows = [job_row(i, owner_id=1) for i in range(1, 4)]
        rows += [job_row(i, owner_id=2) for i in range(4, 14)]
        rows += [job_row(14, owner_id=None), job_row(15, "RUNNING", owner_id=2)]
        await store.write([Op("insert_job", r) for r in rows])
        owners = [r["owner_id"] for r in await store.fetch("job_owners")]
        assert owners == [1, 2]
        beyond = await store.fetch("finished_job_ids_beyond", owner_id=2, keep=5, limit=100)
        # The five that finished last are kept: 9..13.
        assert sorted(r["id"] for r in beyond) == [4, 5, 6, 7, 8]
        assert {(r["owner_id"], r["method"]) for r in beyond} == {(2, "t.m")}
        assert await store.fetch("finished_job_ids_beyond", owner_id=1, keep=5, limit=100) == []
        assert [
            r["id"] for r in await store.fetch("finished_job_ids_beyond_no_owner", keep=0, limit=9)
        ] == [14]
        expired = await store.fetch("expired_job_ids", before=1004, limit=100)
        assert [r["id"] for r in expired] == [1, 2, 3]
        assert (await store.fetch_one("job_id_span") or {})["span"] == 15

    async def test_users_keys_settings_and_meta(self, store: Store) -> None:
        await store.write(
            [Op("insert_user", user_row(1, "root")), Op("insert_user", user_row(2, "al", False))]
        )
        with pytest.raises(CallError):
            await store.write([Op("insert_user", user_row(3, "al"))])
        await store.write([Op("update_user", {**user_row(2, "al2", False), "locked": 1})])
        users = await store.fetch("all_users")
        assert [(u["id"], u["username"], u["locked"]) for u in users] == [
            (1, "root", 0),
            (2, "al2", 1),
        ]
        key = {
            "id": 1,
            "name": "k",
            "username": "al2",
            "user_id": 2,
            "key_hash": "0" * 64,
            "allowlist": "[]",
            "created": 1,
            "expires": None,
            "scram": None,
        }
        await store.write([Op("insert_api_key", key)])
        await store.write([Op("update_api_key", {**key, "name": "k2", "expires": 9})])
        await store.write([Op("set_api_key_scram", {**key, "scram": '{"iterations":1}'})])
        (k,) = await store.fetch("all_api_keys")
        assert (k["name"], k["user_id"], k["expires"]) == ("k2", 2, 9)
        assert k["scram"] == '{"iterations":1}'
        two = {
            **user_row(2, "al2", False),
            "locked": 1,
            "twofactor": '{"secret":"S"}',
            "email": "al@example.com",
        }
        await store.write([Op("update_user", two)])
        users = await store.fetch("all_users")
        assert [u["twofactor"] for u in users] == [None, '{"secret":"S"}']
        assert [u["email"] for u in users] == ["", "al@example.com"]
        await store.write(
            [Op("delete_user", {"id": 2}), Op("delete_user_api_keys", {"user_id": 2})]
        )
        assert await store.fetch("all_api_keys") == []
        await store.write([Op("set_settings", {"namespace": "x", "value": '{"a":1}'})])
        await store.write([Op("set_settings", {"namespace": "x", "value": '{"a":2}'})])
        assert await store.fetch("all_settings") == [{"namespace": "x", "value": '{"a":2}'}]
        await store.write([Op("set_meta", {"name": "m", "value": "v"})])
        assert await store.fetch_one("get_meta", name="m") == {"value": "v"}

    async def test_notifiers_in_and_out(self, store: Store) -> None:
        assert await store.fetch_one("get_counter", name="notifiers") == {"value": 0}
        hook = notifier_row(2, "hook", kind="webhook", recipients="[]", url="http://h/", secret="s")
        await store.write(
            [
                Op("insert_notifier", notifier_row(1, "ops")),
                Op("insert_notifier", hook),
                Op("raise_counter", {"name": "notifiers", "value": 2}),
            ]
        )
        # Names are unique, on insert and on update; a refused write changes nothing.
        with pytest.raises(CallError):
            await store.write([Op("insert_notifier", notifier_row(3, "ops"))])
        with pytest.raises(CallError):
            await store.write([Op("update_notifier", {**hook, "name": "ops"})])
        await store.write([Op("update_notifier", {**hook, "name": "hook2", "secret": "t"})])
        rows = await store.fetch("all_notifiers")
        assert [(r["id"], r["name"], r["kind"], r["secret"]) for r in rows] == [
            (1, "ops", "mail", None),
            (2, "hook2", "webhook", "t"),
        ]
        assert rows[0] == notifier_row(1, "ops")
        await store.write([Op("delete_notifier", {"id": 1})])
        assert [r["id"] for r in await store.fetch("all_notifiers")] == [2]
        assert await store.fetch_one("get_counter", name="notifiers") == {"value": 2}

    async def test_commands_and_their_runs(self, store: Store) -> None:
        await store.write([Op("insert_command", command_row("nightly"))])
        with pytest.raises(CallError):
            await store.write([Op("insert_command", command_row("nightly"))])
        await store.write([Op("update_command", {**command_row("nightly"), "record": '{"a":2}'})])
        run = {"command": "nightly", "job_id": 7, "started": 1}
        await store.write(
            [
                Op("raise_command_runs", {"name": "nightly", "runs": 2}),
                Op("raise_command_runs", {"name": "nightly", "runs": 1}),
                Op("insert_command_run", {**run, "counter": 1}),
                Op("insert_command_run", {**run, "counter": 2, "job_id": 8}),
                Op(
                    "set_command_run_process",
                    {
                        "command": "nightly",
                        "counter": 2,
                        "pgid": 99,
                        "boot_id": "b",
                        "pid_start": 5,
                    },
                ),
            ]
        )
        assert await store.fetch("get_command", name="nightly") == [
            {"name": "nightly", "record": '{"a":2}', "runs": 2, "created": 3}
        ]
        assert await store.fetch("running_command_runs") == [
            {
                "command": "nightly",
                "counter": c,
                "job_id": j,
                "pgid": p,
                "boot_id": b,
                "pid_start": t,
            }
            for c, j, p, b, t in ((1, 7, None, None, None), (2, 8, 99, "b", 5))
        ]
        end = {"command": "nightly", "counter": 2, "status": "fail", "state": "FAILED"}
        await store.write([Op("end_command_run", {**end, "finished": 9})])
        runs = await store.fetch("command_runs", command="nightly")
        assert [(r["counter"], r["status"], r["state"], r["finished"]) for r in runs] == [
            (2, "fail", "FAILED", 9),
            (1, "running", None, None),
        ]
        assert [r["counter"] for r in await store.fetch("running_command_runs")] == [1]
        assert await store.fetch_one("last_command_run", command="nightly") == {"counter": 2}
        assert await store.fetch_one("last_command_run", command="x") == {"counter": None}
        await store.write([Op("delete_command_run", {"command": "nightly", "counter": 1})])
        assert len(await store.fetch("command_runs", command="nightly")) == 1
        await store.write(
            [
                Op("delete_command", {"name": "nightly"}),
                Op("delete_command_runs", {"command": "nightly"}),
            ]
        )
        assert await store.fetch("all_commands") == []
        assert await store.fetch("command_runs", command="nightly") == []

    async def test_a_snapshot_restores_into_any_backend(self, store: Store, tmp_path: Path) -> None:
        await store.write(
            [
                Op("insert_user", user_row(1, "root")),
                Op("insert_command", command_row("kept")),
                Op("insert_notifier", notifier_row(1, "kept")),
                Op("set_settings", {"namespace": "x", "value": '{"a":1}'}),
                Op("insert_job", job_row(1)),
                Op("raise_counter", {"name": "jobs", "value": 1}),
            ]
        )
        snap = tmp_path / "snap.db"
        await store.backup(snap)
        await store.write(
            [
                Op("insert_user", user_row(2, "later")),
                Op("insert_command", command_row("later")),
                Op("insert_notifier", notifier_row(2, "later")),
                Op("set_settings", {"namespace": "x", "value": '{"a":9}'}),
                Op("insert_job", job_row(2)),
                Op("raise_counter", {"name": "jobs", "value": 2}),
            ]
        )
        for target_url in (f"sqlite://{tmp_path / 'other.db'}", "memory://"):
            for target in (store, open_store(target_url)):
                if target is not store:
                    await target.open()
                    await target.write(
                        [
                            Op("insert_job", job_row(7)),
                            Op("raise_counter", {"name": "jobs", "value": 7}),
                        ]
                    )
                copy = tmp_path / f"copy-{id(target)}.db"
                copy.write_bytes(snap.read_bytes())
                assert await target.restore(copy) == SCHEMA_VERSION
                assert [u["username"] for u in await target.fetch("all_users")] == ["root"]
                assert [n["name"] for n in await target.fetch("all_notifiers")] == ["kept"]
                assert [n["name"] for n in await target.fetch("all_commands")] == ["kept"]
                assert await target.fetch("all_settings") == [
                    {"namespace": "x", "value": '{"a":1}'}
                ]
                # Jobs here are kept, the snapshot's finished ones added; counters never drop.
                assert await target.fetch_one("get_job", id=1) is not None
                counter = (await target.fetch_one("get_counter", name="jobs") or {})["value"]
                assert counter >= 2
                if target is not store:
                    assert await target.fetch_one("get_job", id=7) is not None
                    await target.close()
                else:
                    assert await target.fetch_one("get_job", id=2) is not None

    async def test_a_bad_snapshot_changes_nothing(self, store: Store, tmp_path: Path) -> None:
        await store.write([Op("insert_user", user_row(1, "root"))])
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"not a database at all")
        with pytest.raises(Exception, match="Not a SQLite database"):
            await store.restore(bad)
        assert [u["username"] for u in await store.fetch("all_users")] == ["root"]

    async def test_a_closed_store_refuses_writes(self, store: Store) -> None:
        await store.close()
        with pytest.raises(CallError):
            await store.write([Op("raise_counter", {"name": "jobs", "value": 1})])
        await store.open()
