"""Shared fixtures: the real server on a free port, in a temporary data dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProc

PLUGINS = Path(__file__).parent / "plugins"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long", action="store_true", help="run the long forms of the fault and load tests"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long forms (a 5-minute soak, 100 kills) run past the per-test timeout of 300 s."""
    if config.getoption("--long"):
        for item in items:
            item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True with --long: the kill loop and soak run their long forms."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server shared by the tests that do not restart it."""
    data = tmp_path_factory.mktemp("data")
    files = data / "files"
    files.mkdir()
    proc = ServerProc(
        data_dir=data,
        # Tests of failed logins share 127.0.0.1: the throttle has tests of its own.
        args=[
            "--fs-root",
            str(files),
            "--plugins-dir",
            str(PLUGINS),
            "--login-max-failures",
            "1000",
        ],
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    """Start servers of the test's own (extra command-line args allowed); killed at the end."""
    started: list[ServerProc] = []

    def make(
        *args: str, data_dir: Path | None = None, preexec: Callable[[], None] | None = None
    ) -> ServerProc:
        data = data_dir or tmp_path / f"data{len(started)}"
        files = data / "files"
        files.mkdir(parents=True, exist_ok=True)
        proc = ServerProc(
            data_dir=data,
            args=["--fs-root", str(files), "--plugins-dir", str(PLUGINS), *args],
            preexec=preexec,
        )
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()
