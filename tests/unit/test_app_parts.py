"""Apps without a server: manifests checked field by field, cozy's trigger strings made
ours, and cozy's permissions translated into the methods and collections they grant."""

from __future__ import annotations

from typing import Any

import pytest

from middlewared.apps.manifest import parse_manifest, parse_trigger
from middlewared.apps.permissions import Catalog, beyond, translate
from middlewared.errors import ValidationErrors
from middlewared.registry import Access

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
