"""Built-in plugins whose optional dependency is missing are left out with one warning; the
others load, trusted only when they say so."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from middlewared.app import Middleware
from middlewared.config import ServerConfig
from middlewared.plugins import PluginLoader

GOOD = '''
from middlewared.registry import Registry

registry = Registry("fine", trusted=True)


@registry.method()
async def hello(ctx):
    """Say hello."""
    return "hello"
'''
NEEDS = """
import a_package_nobody_installed  # noqa: F401
from middlewared.registry import Registry

registry = Registry("fancy")
"""


@pytest.fixture
def package(tmp_path: Path) -> Iterator[str]:
    name = "fake_builtin_plugins"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "fine.py").write_text(GOOD)
    (folder / "fancy.py").write_text(NEEDS)
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_a_missing_optional_dependency_disables_only_that_plugin(
    package: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = Middleware(ServerConfig(data_dir=tmp_path / "data"))
    loader = PluginLoader(app, builtin_package=package)
    with caplog.at_level(logging.WARNING):
        loader.load_all()
    assert loader.disabled == {"fancy": "needs a_package_nobody_installed"}
    warnings = [r.getMessage() for r in caplog.records if "fancy" in r.getMessage()]
    assert len(warnings) == 1 and "a_package_nobody_installed" in warnings[0]
    spec = app.methods.lookup("fine.hello")
    assert spec is not None and spec.trusted
    assert app.methods.lookup("core.ping") is not None
