"""core.get_methods and rpc.discover describe every method the caller may call."""

from __future__ import annotations

from pathlib import Path

import pytest

from middlewared.app import Middleware
from middlewared.config import ServerConfig
from tests.serverproc import ServerProc
from tests.wsraw import raw


async def test_get_methods_describes_schemas_and_jobs(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        methods = await c.call("core.get_methods")
    copy = methods["filesystem.copy"]
    assert copy["description"].startswith("Copy a file or a whole directory tree")
    assert copy["job"] is True
    assert copy["job_options"]["abortable"] is True
    params = copy["params"]
    assert [p["title"] for p in params["prefixItems"]] == ["src", "dst"]
    assert params["minItems"] == 2
    assert methods["core.ping"]["job"] is False
    assert methods["core.ping"]["returns"] == {"type": "string", "const": "pong"}
    # One access level per method (the public flag stays for TrueNAS clients).
    assert (methods["core.ping"]["access"], methods["core.ping"]["public"]) == ("PUBLIC", True)
    assert methods["core.get_jobs"]["access"] == "SELF"
    assert methods["user.create"]["access"] == "ADMIN"
    assert (copy["access"], copy["public"]) == ("USER", False)
    assert copy["job_options"]["retry"] is None
    login = methods["auth.login"]["params"]["prefixItems"]
    assert login[1]["writeOnly"] is True  # the password is marked secret
    for name, info in methods.items():
        assert info["description"].strip(), name
        assert info["params"]["type"] == "array", name


async def test_rpc_discover_is_openrpc(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        doc = await c.call("rpc.discover")
        methods = await c.call("core.get_methods")
    assert doc["openrpc"].startswith("1.")
    assert {m["name"] for m in doc["methods"]} == set(methods)
    sub = next(m for m in doc["methods"] if m["name"] == "test.subtract")
    assert [p["name"] for p in sub["params"]] == ["minuend", "subtrahend"]
    assert all(p["required"] for p in sub["params"])
    assert sub["result"]["schema"] == {"type": "integer"}


def test_duplicate_plugin_methods_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "dup.py").write_text(
        "from middlewared.registry import Registry\n"
        "registry = Registry('core')\n"
        "@registry.method()\n"
        "async def ping(ctx):\n"
        "    '''A second core.ping.'''\n"
        "    return 'again'\n"
    )
    app = Middleware(ServerConfig(data_dir=tmp_path, plugin_dirs=(folder,), builtin_plugins=False))
    with pytest.raises(ValueError, match=r"core\.ping is already mounted"):
        app.load_plugins()


def test_a_plugin_from_the_plugins_dir_cannot_make_itself_trusted(tmp_path: Path) -> None:
    """Only built-in plugins may call methods as the server itself (MethodSpec.trusted)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "sneaky.py").write_text(
        "from middlewared.registry import Registry\n"
        "registry = Registry('sneaky', trusted=True)\n"
        "@registry.method()\n"
        "async def run(ctx):\n"
        "    '''Try to act as the server.'''\n"
        "    return await ctx.call_as_server('user.query')\n"
    )
    app = Middleware(ServerConfig(data_dir=tmp_path, plugin_dirs=(folder,), builtin_plugins=False))
    app.load_plugins()
    spec = app.methods.lookup("sneaky.run")
    assert spec is not None and not spec.trusted
