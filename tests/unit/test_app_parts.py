"""Apps without a server: manifests checked field by field, cozy's trigger strings made
ours, and cozy's permissions translated into the methods and collections they grant."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from middlewared import jsonc
from middlewared.apps.files import Limits, copy_in, read_manifest
from middlewared.apps.manager import fitted
from middlewared.apps.manifest import parse_manifest, parse_trigger
from middlewared.apps.permissions import Catalog, beyond, translate
from middlewared.errors import ValidationErrors
from middlewared.registry import Access
from middlewared.roots import Roots

CATALOG = Catalog(
    {
        "filesystem.stat": Access.USER,
        "filesystem.listdir": Access.USER,
        "filesystem.get": Access.USER,
        "filesystem.put": Access.USER,
        "filesystem.copy": Access.USER,
        "filesystem.watch_status": Access.ADMIN,
        "archive.zip": Access.USER,
        "archive.internal": Access.PRIVATE,
        "user.query": Access.ADMIN,
        "user.create": Access.ADMIN,
        "user.update": Access.ADMIN,
        "user.delete": Access.ADMIN,
        "user.twofactor.get": Access.ADMIN,
    },
    ("filesystem.files", "core.get_jobs", "trigger.query"),
)


def manifest(**changes: Any) -> dict[str, Any]:
    return {
        "slug": "banks",
        "version": "1.2.3",
        "permissions": {
            "zip": {
                "type": "jobs",
                "verbs": ["POST"],
                "selector": "worker",
                "values": ["archive.zip"],
            }
        },
        "services": {
            "onOperationCreate": {
                "type": "node",
                "file": "services/onOperationCreate.js",
                "trigger": "@event io.cozy.files:CREATED",
                "debounce": "3m",
            }
        },
        **changes,
    }


def refusal(raw: Any) -> tuple[str, str]:
    with pytest.raises(ValidationErrors) as info:
        parse_manifest(raw)
    field, message, _ = info.value.errors[0]
    return field, message


def test_a_cozy_manifest_is_read_with_its_trigger_made_ours() -> None:
    parsed = parse_manifest(manifest())
    assert (parsed.slug, parsed.version, parsed.name) == ("banks", "1.2.3", "banks")
    service = parsed.services["onOperationCreate"]
    assert (service.trigger_type, service.arguments) == ("@event", "filesystem.files:CREATED")
    assert service.debounce == "3m" and service.file == "services/onOperationCreate.js"
    assert service.record()["trigger"] == "@event io.cozy.files:CREATED"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "@event io.cozy.files:CREATED:text/csv:mime",
            ("@event", "filesystem.files:CREATED:text/csv:mime"),
        ),
        (
            "@event io.cozy.jobs:UPDATED:FAILED:state trigger.query",
            ("@event", "core.get_jobs:UPDATED:FAILED:state trigger.query"),
        ),
        ("@cron 0 0 3 * * *", ("@cron", "0 0 3 * * *")),
        ("@every 1h", ("@every", "1h")),
        ("@daily between 8am and 6pm", ("@daily", "between 8am and 6pm")),
        ("@webhook", ("@webhook", "")),
        ("  @client  ", ("@client", "")),
    ],
)
def test_cozy_trigger_strings(text: str, expected: tuple[str, str]) -> None:
    assert parse_trigger(text, "t") == expected


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"slug": "Banks"}, "manifest.slug", "lowercase"),
        ({"slug": "-x"}, "manifest.slug", "lowercase"),
        ({"version": 2}, "manifest.version", "non-empty string"),
        ({"permissions": "all"}, "manifest.permissions", "object of named rules"),
        ({"permissions": {"a": ["GET"]}}, "manifest.permissions.a", "type and verbs"),
        ({"services": []}, "manifest.services", "Services are an object"),
        ({"services": {"bad name": {}}}, "manifest.services.bad name", "service name"),
    ],
)
def test_bad_manifests_name_their_field(changes: dict[str, Any], field: str, words: str) -> None:
    got_field, message = refusal(manifest(**changes))
    assert got_field == field and words in message


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"type": "ruby"}, "type", "node, python, exec"),
        ({"file": "/etc/passwd"}, "file", "not a path inside"),
        ({"file": "a/../../x.js"}, "file", "not a path inside"),
        ({"file": "."}, "file", "not a path inside"),
        ({"trigger": ""}, "trigger", "A trigger is a string"),
        ({"trigger": "@hourlyish"}, "trigger", "Unknown trigger type"),
        ({"trigger": "@event"}, "trigger", "names what it listens to"),
        ({"debounce": "soon"}, "debounce", "not a duration"),
        ({"debounce": 5}, "debounce", "a duration such as"),
        ({"trigger": "@every 1h"}, "debounce", "Only @event and @webhook"),
        ({"timeout": 5}, "timeout", "Unknown field"),
    ],
)
def test_bad_services_name_their_field(changes: dict[str, Any], field: str, words: str) -> None:
    spec = {**manifest()["services"]["onOperationCreate"], **changes}
    got_field, message = refusal(manifest(services={"svc": spec}))
    assert got_field == f"manifest.services.svc.{field}" and words in message, message


def test_a_service_file_is_normalised() -> None:
    spec = {"type": "exec", "file": "./bin//run.sh", "trigger": "@client"}
    assert parse_manifest(manifest(services={"s": spec})).services["s"].file == "bin/run.sh"


def grant(*rules: dict[str, Any]) -> tuple[str, ...]:
    return translate({str(i): r for i, r in enumerate(rules)}, CATALOG)


def test_verbs_grant_the_methods_they_name_on_a_namespace() -> None:
    assert grant({"type": "io.cozy.files", "verbs": ["GET"]}) == (
        "filesystem.files",
        "filesystem.get",
        "filesystem.listdir",
        "filesystem.stat",
        "filesystem.watch_status",
    )
    assert grant({"type": "filesystem", "verbs": ["POST"]}) == ("filesystem.copy", "filesystem.put")
    assert grant({"type": "user", "verbs": ["PUT", "DELETE"]}) == ("user.delete", "user.update")
    assert grant({"type": "user", "verbs": ["PATCH"]}) == ("user.update",)
    # ALL: every method directly in the namespace (not a sub-namespace's, never a private).
    everything = grant({"type": "user"})
    assert everything == ("user.create", "user.delete", "user.query", "user.update")
    assert grant({"type": "archive", "verbs": ["ALL"]}) == ("archive.zip",)


def test_a_jobs_permission_names_the_methods_it_may_start() -> None:
    rule = {
        "type": "io.cozy.jobs",
        "verbs": ["POST"],
        "selector": "worker",
        "values": ["archive.zip", "user.create"],
    }
    assert grant(rule) == ("archive.zip", "user.create")
    assert grant({**rule, "verbs": ["ALL"]}) == ("archive.zip", "user.create")
    # cozy's worker names, as a manifest written for cozy gives them.
    assert grant({**rule, "values": ["zip", "archive.zip"]}) == ("archive.zip",)


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"type": "filesystem", "verbs": ["FETCH"]}, "verbs", "Unknown verb 'FETCH'"),
        ({"type": "filesystem", "verbs": []}, "verbs", "non-empty list"),
        ({"type": "filesystem", "verbs": "GET"}, "verbs", "non-empty list"),
        ({"verbs": ["GET"]}, "type", "names a namespace"),
        ({"type": "nothing", "verbs": ["GET"]}, "type", "No namespace 'nothing'"),
        ({"type": "archive", "verbs": ["DELETE"]}, "verbs", "grants no method of archive"),
        (
            {"type": "filesystem", "selector": "path", "values": ["/"]},
            "selector",
            "jobs permission only",
        ),
        ({"type": "filesystem", "values": ["/"]}, "values", "jobs permission only"),
        (
            {"type": "jobs", "verbs": ["POST"], "values": ["archive.zip"]},
            "selector",
            "selector 'worker'",
        ),
        ({"type": "jobs", "verbs": ["POST"], "selector": "worker"}, "values", "method names"),
        (
            {"type": "jobs", "verbs": ["POST"], "selector": "worker", "values": ["nope.x"]},
            "values",
            "No method 'nope.x'",
        ),
        (
            {
                "type": "jobs",
                "verbs": ["POST"],
                "selector": "worker",
                "values": ["archive.internal"],
            },
            "values",
            "No method",
        ),
        (
            {"type": "jobs", "verbs": ["GET"], "selector": "worker", "values": ["archive.zip"]},
            "verbs",
            "include POST",
        ),
        ({"type": "filesystem", "verb": ["GET"]}, "verb", "Unknown field"),
    ],
)
def test_bad_permissions_name_their_field(rule: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationErrors) as info:
        translate({"p": rule}, CATALOG)
    got_field, message, _ = info.value.errors[0]
    assert got_field == f"permissions.p.{field}" and words in message, message


def test_what_the_installer_may_not_use_is_named() -> None:
    granted = grant({"type": "filesystem", "verbs": ["GET"]})
    mine = {"filesystem.stat", "filesystem.get"}
    assert beyond(granted, mine.__contains__) == [
        "filesystem.files",
        "filesystem.listdir",
        "filesystem.watch_status",
    ]
    assert beyond(granted, lambda name: True) == []


def test_a_long_burst_is_cut_to_fit_the_environment() -> None:
    small = {"trigger_id": 1, "events": [{"id": "/a"}]}
    assert fitted(small) is small and fitted(None) is None and fitted({"n": 1}) == {"n": 1}
    events = [{"id": f"/f/{i:04}"} for i in range(100)]
    burst: dict[str, Any] = {
        "trigger_id": 1,
        "fired_at": None,
        "events": events,
    }
    cut = fitted(burst, budget=400)
    assert len(jsonc.dumps(cut)) <= 400
    assert cut["events"] == events[: len(cut["events"])] and cut["events"]
    assert cut["events_dropped"] == 100 - len(cut["events"])


def _zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return path


def _copy(root: Path, path: Path, limits: Limits | None = None) -> str:
    where = Roots([root]).locate("path", str(path))
    return copy_in(where, root.parent / "dest", limits or Limits())


MANIFEST = b'{"slug": "z", "version": "1"}'


def test_a_zip_of_the_app_folder_is_read_from_that_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    archive = _zip(
        root / "a.zip",
        {
            "app/": (b"", 0o40755),
            "app/manifest.json": (MANIFEST, 0o100644),
            "app/bin/run.sh": (b"#!/bin/sh\n", 0o100755),
        },
    )
    digest = _copy(root, archive)
    dest = tmp_path / "dest"
    assert read_manifest(dest) == ("manifest.json", MANIFEST)
    assert (dest / "bin" / "run.sh").stat().st_mode & 0o100
    assert not (dest / "manifest.json").stat().st_mode & 0o100
    # The same files give the same digest.
    shutil.rmtree(dest)
    assert _copy(root, archive) == digest


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"manifest.json": (MANIFEST, 0o100644), "../evil": (b"x", 0o100644)}, "outside the app"),
        ({"manifest.json": (MANIFEST, 0o100644), "/etc/evil": (b"x", 0o100644)}, "outside the app"),
        ({"manifest.json": (MANIFEST, 0o100644), "link": (b"/etc", 0o120777)}, "symbolic link"),
        ({"manifest.json": (MANIFEST, 0o100644), "big": (b"x" * 2048, 0o100644)}, "larger than"),
    ],
)
def test_a_zip_that_escapes_links_or_swells_is_refused(
    tmp_path: Path, members: dict[str, tuple[bytes, int]], words: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    archive = _zip(root / "a.zip", members)
    with pytest.raises(ValidationErrors) as info:
        _copy(root, archive, Limits(max_files=10, max_bytes=1024))
    assert words in info.value.errors[0][1]


def test_a_folder_with_too_many_files_or_a_fifo_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    app = root / "app"
    app.mkdir(parents=True)
    for i in range(3):
        (app / f"f{i}").write_text("x")
    with pytest.raises(ValidationErrors) as info:
        _copy(root, app, Limits(max_files=2))
    assert "more than 2 files" in info.value.errors[0][1]
    shutil.rmtree(tmp_path / "dest")
    os.mkfifo(app / "pipe")
    with pytest.raises(ValidationErrors) as info:
        _copy(root, app)
    assert "not a regular file" in info.value.errors[0][1]
