"""Shared fixtures: the real server on a free port, in a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProc


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server shared by the tests that do not restart it."""
    data = tmp_path_factory.mktemp("data")
    files = data / "files"
    files.mkdir()
    proc = ServerProc(data_dir=data, args=["--fs-root", str(files), "--plugins-dir",
                                           str(Path(__file__).parent / "plugins")])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProc]:
    """A server of the test's own, for tests that restart or kill it."""
    files = tmp_path / "files"
    files.mkdir()
    proc = ServerProc(data_dir=tmp_path / "data", args=["--fs-root", str(files), "--plugins-dir",
                                                        str(Path(__file__).parent / "plugins")])
    proc.start()
    yield proc
    proc.kill()
