"""data.export's pure parts: packing entries into parts whose zips stay within parts_size
(written for real, incompressible data), the secrets mask, who exports which collections,
and the store of exports on a clock the test moves."""

from __future__ import annotations

import os
import random
import threading
import zipfile
from pathlib import Path

from middlewared_plugins import exportparts
from middlewared_plugins.exportstore import Export, ExportStore
from middlewared_plugins.exportwrite import Entry, PartWriter, split

PARTS_SIZE = exportparts.MIN_PARTS_SIZE


def write(tmp_path: Path, entries: list[Entry]) -> list[tuple[Path, list[str]]]:
    parts = split(entries, PARTS_SIZE)
    writer = PartWriter(tmp_path, lambda _: None, threading.Event())
    written = writer.write_all(parts, PARTS_SIZE)
    assert writer.done == sum(e.size for e in entries)
    return [(w.path, [e.name for e in p]) for w, p in zip(written, parts, strict=True)]


def test_parts_stay_within_parts_size_whatever_the_data(tmp_path: Path) -> None:
    rng = random.Random(14)
    entries = [
        Entry(f"data/é{i}-{'x' * rng.randrange(0, 200)}.bin", os.urandom(rng.randrange(0, 40_000)))
        for i in range(60)
    ]
    names: list[str] = []
    written = write(tmp_path, entries)
    assert len(written) > 10
    for path, expected in written:
        assert path.stat().st_size <= PARTS_SIZE
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None
            assert z.namelist() == expected
            names += expected
    # Every entry once, in order.
    assert names == [e.name for e in entries]


def test_an_entry_larger_than_a_part_has_one_of_its_own(tmp_path: Path) -> None:
    entries = [
        Entry("a", b"a" * 10),
        Entry("big", os.urandom(PARTS_SIZE)),
        Entry("b", b"b" * 10),
        Entry("c", os.urandom(PARTS_SIZE // 2)),
    ]
    written = write(tmp_path, entries)
    assert [names for _, names in written] == [["a"], ["big"], ["b", "c"]]
    assert written[1][0].stat().st_size > PARTS_SIZE
    assert written[2][0].stat().st_size <= PARTS_SIZE


def test_pack_fills_a_part_before_starting_the_next() -> None:
    item = exportparts.Item("n", 1000)
    per_part = (PARTS_SIZE - exportparts.END_OVERHEAD) // exportparts.entry_cost("n", 1000)
    parts = exportparts.pack([item] * (per_part * 2 + 1), PARTS_SIZE)
    assert [len(p) for p in parts] == [per_part, per_part, 1]
    assert exportparts.pack([], PARTS_SIZE) == []


def test_secrets_are_masked_at_any_depth() -> None:
    record = {
        "username": "ada",
        "password_hash": "scrypt$1$2",
        "twofactor_secret": None,
        "env": {"TOKEN": {"value": "********", "secret": True}, "PLAIN": "shown"},
        "auth": {"kind": "hmac-sha256", "secret": "s3cr3t-s3cr3t-s3cr3t"},
        "jobs": [{"result": {"url": "/_download/7?auth_token=abc&x=1", "Token": "tok"}}],
    }
    assert exportparts.scrub(record) == {
        "username": "ada",
        "password_hash": "********",
        "twofactor_secret": None,
        "env": {"TOKEN": {"value": "********", "secret": True}, "PLAIN": "shown"},
        "auth": {"kind": "hmac-sha256", "secret": "********"},
        "jobs": [{"result": {"url": "/_download/7?auth_token=********&x=1", "Token": "********"}}],
    }


def test_who_exports_which_collections() -> None:
    assert exportparts.collections_for(None, admin=True) == list(exportparts.COLLECTIONS)
    assert exportparts.collections_for([], admin=False) == ["jobs", "users", "triggers"]
    assert exportparts.collections_for(["users"], admin=False) == ["users"]
    assert exportparts.refused_collections(["jobs", "settings", "commands"], admin=False) == [
        "settings",
        "commands",
    ]
    assert exportparts.refused_collections(["settings"], admin=True) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def export(export_id: str, owner: str, expires: float) -> Export:
    return Export(export_id, owner, Path("/nonexistent") / export_id, expires)


def test_exports_expire_on_the_clock() -> None:
    clock = Clock()
    store = ExportStore(5, clock)
    assert store.add(export("a", "ada", 1010.0)) == []
    assert store.add(export("b", "ada", 1020.0)) == []
    assert store.next_expiry() == 1010.0
    assert store.get("a")[0] is not None and store.get("zzz") == (None, None)
    clock.now = 1010.0
    # Unusable the moment its time is up, even before the timer removes it.
    assert store.get("a") == (None, "expired")
    assert [e.export_id for e in store.expire_due()] == ["a"]
    assert store.get("a") == (None, "expired")
    assert store.expire_due() == [] and len(store) == 1
    assert store.next_expiry() == 1020.0
    clock.now = 1100.0
    assert [e.export_id for e in store.expire_due()] == ["b"]
    assert store.next_expiry() is None


def test_a_user_keeps_at_most_so_many_exports() -> None:
    clock = Clock()
    store = ExportStore(2, clock)
    store.add(export("a1", "ada", 2000.0))
    store.add(export("b1", "bob", 2000.0))
    store.add(export("a2", "ada", 2000.0))
    gone = store.add(export("a3", "ada", 2000.0))
    assert [e.export_id for e in gone] == ["a1"]
    assert store.get("a1") == (None, "replaced by a newer export of ada")
    assert store.get("b1")[0] is not None and store.get("a3")[0] is not None
    # The expired ones go when another export comes.
    clock.now = 3000.0
    assert {e.export_id for e in store.add(export("b2", "bob", 4000.0))} == {"b1", "a2", "a3"}
    assert len(store) == 1
