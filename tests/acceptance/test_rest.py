"""The REST facade ``/api/v2.0/`` over the wire: TrueNAS's routes, credentials, statuses, the
OpenAPI document, the README's curl block, and schemathesis over every route it may fuzz."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.serverproc import ServerProc
from tests.wsraw import raw

# Examples per route and mode: about 30 s for the whole run on a loaded 2-core machine.
EXAMPLES = 5
README = Path(__file__).resolve().parents[2] / "README.md"
API = "/api/v2.0"

Reply = tuple[int, Any, dict[str, str]]


async def rest(
    server: ServerProc,
    verb: str,
    path: str,
    body: Any = None,
    *,
    auth: tuple[str, str] | None = ("root", ""),
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Reply:
    """One request; ``auth`` ("root", "") means root's password."""
    headers = dict(headers or {})
    if auth is not None:
        headers["Authorization"] = basic(auth[0], auth[1] or server.password)
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            verb,
            f"{server.url}{API}{path}",
            json=body if data is None and body is not None else None,
            data=data,
            headers=headers,
        ) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def name() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


async def test_query_filters_limit_offset_sort(server: ServerProc) -> None:
    prefix = name()
    for n in range(4):
        status, user, _ = await rest(server, "POST", "/user", {"username": f"{prefix}{n}"})
        assert status == 200 and user["username"] == f"{prefix}{n}"
    status, users, _ = await rest(
        server, "GET", f"/user?username__startswith={prefix}&sort=-username&limit=2&offset=1"
    )
    assert status == 200
    assert [u["username"] for u in users] == [f"{prefix}2", f"{prefix}1"]
    # Equality, and a value read as JSON (the id is a number) or a list for __in.
    _, one, _ = await rest(server, "GET", f"/user?username={prefix}3")
    assert [u["username"] for u in one] == [f"{prefix}3"]
    _, root, _ = await rest(server, "GET", "/user?id=1")
    assert [u["username"] for u in root] == ["root"]
    _, two, _ = await rest(server, "GET", f"/user?username__in={prefix}0,{prefix}2&sort=id")
    assert [u["username"] for u in two] == [f"{prefix}0", f"{prefix}2"]
    # The same query is also GET /user/query, and any filterable method takes filters.
    _, same, _ = await rest(server, "GET", f"/user/query?username={prefix}3")
    assert same == one
    status, err, _ = await rest(server, "GET", "/user?limit=many")
    assert status == 422 and err["extra"][0][0] == "options.limit"
    status, err, _ = await rest(server, "GET", "/user?name__zz=1&name__regex=(")
    assert status == 422 and err["errname"] == "EINVAL"


async def test_get_instance_put_delete(server: ServerProc) -> None:
    status, root, _ = await rest(server, "GET", "/user/id/1")
    assert status == 200 and root["username"] == "root"
    status, err, _ = await rest(server, "GET", "/user/id/987654")
    assert status == 404 and err["errname"] == "ENOENT"
    assert set(err) == {"error", "errname", "reason", "extra", "trace", "status"}
    # A namespace with its own get_instance method uses it.
    status, err, _ = await rest(server, "GET", "/trigger/id/987654")
    assert status == 404 and err["errname"] == "ENOENT"
    # Any id is matched, one with a newline or a slash too (found by schemathesis).
    for ident in ("a%0Ab", "a%2Fb"):
        status, err, _ = await rest(server, "GET", f"/command/id/{ident}")
        assert status == 404 and err["errname"] == "ENOENT", ident
    _, user, _ = await rest(server, "POST", "/user", {"username": name()})
    status, changed, _ = await rest(
        server, "PUT", f"/user/id/{user['id']}", {"full_name": "Changed"}
    )
    assert status == 200 and changed["full_name"] == "Changed"
    status, done, _ = await rest(server, "DELETE", f"/user/id/{user['id']}")
    assert (status, done) == (200, True)
    status, _, _ = await rest(server, "GET", f"/user/id/{user['id']}")
    assert status == 404


async def test_post_calls_a_method(server: ServerProc) -> None:
    # Several params: an array, or an object by name; one param: the body is its value.
    assert (await rest(server, "POST", "/test/sum", [2, 3]))[:2] == (200, 5)
    assert (await rest(server, "POST", "/test/sum", {"a": 2, "b": 3, "c": 4}))[:2] == (200, 9)
    assert (await rest(server, "POST", "/test/echo", {"a": [1]}))[:2] == (200, {"a": [1]})
    assert (await rest(server, "POST", "/test/echo", [1, 2]))[:2] == (200, [1, 2])
    # A method without params answers GET too, as TrueNAS's REST does.
    assert (await rest(server, "GET", "/core/ping"))[:2] == (200, "pong")
    status, me, _ = await rest(server, "GET", "/auth/me")
    assert status == 200 and me["username"] == "root"


async def test_a_job_method_answers_its_job_id_and_the_job_runs(server: ServerProc) -> None:
    status, job_id, _ = await rest(server, "POST", "/test/echo_job", {"x": 1})
    assert status == 200 and isinstance(job_id, int)
    async with raw(server.ws_url, "root", server.password) as ws:
        assert await ws.call("core.job_wait", job_id) == {"x": 1}
    _, jobs, _ = await rest(server, "GET", f"/core/get_jobs?id={job_id}")
    assert [(j["state"], j["result"], j["origin"]) for j in jobs] == [("SUCCESS", {"x": 1}, "rest")]


async def test_basic_bearer_and_token(server: ServerProc) -> None:
    _, key, _ = await rest(server, "POST", "/api_key", {"name": name()})
    bearer = {"Authorization": f"Bearer {key['key']}"}
    status, me, _ = await rest(server, "GET", "/auth/me", auth=None, headers=bearer)
    assert status == 200 and me["credentials"]["type"] == "API_KEY"
    _, token, _ = await rest(server, "POST", "/auth/generate_token", [600])
    status, me, _ = await rest(server, "GET", f"/auth/me?auth_token={token}", auth=None)
    assert status == 200 and me["username"] == "root"


async def test_401_without_or_with_wrong_credentials(server: ServerProc) -> None:
    for auth in (None, ("root", "wrong")):
        # Unknown paths too: nothing is said of what exists before authentication.
        for path in ("/user", "/no/such/thing"):
            status, err, headers = await rest(server, "GET", path, auth=auth)
            assert status == 401, (auth, path)
            assert err["errname"] == "ENOTAUTHENTICATED" and err["error"] == 207
            assert headers["WWW-Authenticate"].startswith("Basic")
    status, _, _ = await rest(server, "GET", "/openapi.json", auth=None)
    assert status == 401


async def test_403_for_a_restricted_key(server: ServerProc) -> None:
    _, key, _ = await rest(server, "POST", "/api_key", {"name": name(), "allowlist": ["test.sum"]})
    bearer = {"Authorization": f"Bearer {key['key']}"}
    assert (await rest(server, "POST", "/test/sum", [1, 1], auth=None, headers=bearer))[:2] == (
        200,
        2,
    )
    for verb, path, body in (
        ("GET", "/user", None),
        ("POST", "/test/echo", 1),
        ("GET", "/user/id/1", None),
        ("DELETE", "/user/id/1", None),
        # Refused before its params are read: 403, not 422.
        ("POST", "/test/echo", None),
    ):
        status, err, _ = await rest(server, verb, path, body, auth=None, headers=bearer)
        assert (status, err["errname"]) == (403, "EACCES"), (verb, path)
    # Its OpenAPI document has only what it may call.
    _, doc, _ = await rest(server, "GET", "/openapi.json", auth=None, headers=bearer)
    methods = {op["x-method"] for ops in doc["paths"].values() for op in ops.values()}
    assert "test.sum" in methods and "core.ping" in methods
    assert "user.query" not in methods and "test.echo" not in methods


async def test_bad_requests(server: ServerProc) -> None:
    status, err, _ = await rest(server, "POST", "/test/sum", ["two"])
    assert status == 422 and err["extra"] == [["a", "Not a valid integer", 22]]
    status, err, _ = await rest(server, "POST", "/test/sum", 7)
    assert status == 422 and err["extra"][0][0] == "body"
    status, err, _ = await rest(server, "POST", "/test/sum", data=b"[2,")
    assert status == 400 and err["reason"].startswith("The body is not valid JSON")
    status, err, _ = await rest(server, "POST", "/test/no_such_method", [])
    assert status == 404 and err["errname"] == "ENOMETHOD"
    status, err, headers = await rest(server, "DELETE", "/test/sum")
    assert status == 405 and headers["Allow"] == "POST"
    # A job method that failed: its id, and the job says why.
    status, job_id, _ = await rest(server, "POST", "/test/fail", "broken")
    assert status == 200
    async with raw(server.ws_url, "root", server.password) as ws:
        err = await ws.error("core.job_wait", job_id)
    assert "broken" in err["data"]["reason"]
    # A page of another site cannot make the browser POST with its cached credentials.
    evil = {"Origin": "http://evil.example"}
    status, err, _ = await rest(server, "POST", "/test/sum", [1, 2], headers=evil)
    assert (status, err["reason"]) == (403, "Cross-origin request refused")
    here = {"Origin": server.url}
    assert (await rest(server, "POST", "/test/sum", [1, 2], headers=here))[:2] == (200, 3)
    # Methods bound to a connection, and jobs with pipes, are not routed.
    for path in ("/auth/login", "/core/subscribe", "/filesystem/put", "/config/upload"):
        assert (await rest(server, "POST", path, []))[0] == 404, path


async def test_openapi_document(server: ServerProc) -> None:
    status, doc, _ = await rest(server, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["servers"] == [{"url": API}]
    assert doc["components"]["securitySchemes"]["basic"] == {"type": "http", "scheme": "basic"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    sub = doc["paths"]["/test/subtract"]["post"]
    assert sub["x-method"] == "test.subtract"
    assert sub["summary"] == "minuend - subtrahend (the JSON-RPC specification's example)."
    array, by_name = sub["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [p["title"] for p in array["prefixItems"]] == ["minuend", "subtrahend"]
    assert by_name["required"] == ["minuend", "subtrahend"]
    assert sub["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "integer"}
    job = doc["paths"]["/test/echo_job"]["post"]["responses"]["200"]
    assert job["content"]["application/json"]["schema"]["type"] == "integer"
    query = doc["paths"]["/user"]["get"]
    assert query["x-method"] == "user.query"
    assert {p["name"] for p in query["parameters"]} == {"limit", "offset", "sort", "filters"}
    assert doc["paths"]["/user/id/{id}"].keys() == {"get", "put", "delete"}
    assert doc["paths"]["/user"].keys() == {"get", "post"}
    assert doc["paths"]["/mail"].keys() == {"get", "put"}
    assert doc["paths"]["/trigger/id/{id}/launch"]["post"]["x-method"] == "trigger.launch"
    assert doc["paths"]["/command/id/{id}/run"]["post"]["x-method"] == "command.run"
    assert "/auth/login" not in doc["paths"]


def _readme_block() -> str:
    """The sh block that follows the REST facade's marker in the README."""
    text = README.read_text()
    start = text.index("```sh\n", text.index("### REST facade")) + 6
    return text[start : text.index("```", start)]


def test_the_readme_curl_block_runs(server: ServerProc, tmp_path: Path) -> None:
    block = _readme_block()
    assert "curl" in block and "/api/v2.0/" in block
    env = dict(os.environ, URL=server.url, PW=server.password)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"username":"root"' in out
    assert "\n401\n" in f"\n{out}"
    assert '"credentials":{"type":"API_KEY"' in out
    assert '"status":422' in out
    assert '"method":"command.run"' in out
    assert json.loads((tmp_path / "openapi.json").read_text())["openapi"] == "3.1.0"


# The routes schemathesis does not call, and why: they run shell lines, HTTP requests or
# methods the body names (a fuzzer would run random code), or change who can log in (it
# could lock root out mid-run), or write files (data.export copies every file under the
# roots, once per call). Everything else, reads and writes, is fuzzed as root.
NOT_FUZZED = frozenset(
    {
        "command.create",
        "command.update",
        "command.run",
        "cronjob.create",
        "cronjob.update",
        "cronjob.run",
        "trigger.create",
        "trigger.update",
        "trigger.launch",
        "trigger.resume",
        "http.request",
        "notifier.create",
        "notifier.update",
        "core.bulk",
        "user.create",
        "user.update",
        "user.delete",
        "filesystem.copy",
        # Reach out over the network (a push service, an SMTP server): DNS lookups and
        # connections a CI machine may not answer.
        "push.subscribe",
        "push.send",
        "mail.send",
        # Could disable or throttle the methods fuzzed after it, for the rest of the run.
        "worker.update",
        # Copies every file under the roots at each call.
        "data.export",
    }
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The product's methods only (no test plugins), the throttle out of the way of
    schemathesis's wrong-credential probes."""
    data = tmp_path_factory.mktemp("rest")
    (data / "files").mkdir()
    proc = ServerProc(
        data_dir=data,
        args=["--fs-root", str(data / "files"), "--login-max-failures", "1000000"],
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rest_schema(fuzzed_server: ServerProc) -> Any:
    schema = schemathesis.openapi.from_url(
        f"{fuzzed_server.url}{API}/openapi.json",
        headers={"Authorization": basic("root", fuzzed_server.password)},
    )
    return schema.exclude(func=lambda ctx: ctx.operation.definition.raw["x-method"] in NOT_FUZZED)


def test_schemathesis(rest_schema: Any, fuzzed_server: ServerProc) -> None:
    """Every route, with valid and invalid data: no 5xx, every response as documented.
    Schema-valid params can still be refused (no such user, no such job), so
    positive_data_acceptance is not checked. Failures of all routes are reported at once."""
    operations = [result.ok() for result in rest_schema.get_all_operations()]
    assert len(operations) > 50
    failures = []
    for operation in operations:
        raw = operation.definition.raw
        # A route that takes nothing has nothing to send wrong but headers.
        takes = "requestBody" in raw or "parameters" in raw
        for mode in [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * takes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                # The same examples each run: CI fails for a change, not for a new draw.
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(
                    auth=("root", fuzzed_server.password),
                    excluded_checks=[positive_data_acceptance],
                )

            try:
                check()
            except Exception as e:
                failures.append(f"{operation.label} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)
