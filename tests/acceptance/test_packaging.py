"""The README's quick start, the CI entry point and the systemd unit say what they do."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wsraw import raw

ROOT = Path(__file__).resolve().parents[2]


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quick_start_is_two_commands() -> None:
    commands = quick_start()
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    assert commands[1] == "./scripts/check"
    assert "./scripts/check" in (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / "scripts" / "check", os.X_OK)
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def _spawn(argv: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str, int]:
    """Start the server; read its output until it says its password and port."""
    env = {**os.environ, "MIDDLEWARED_ROOT_PASSWORD": ""}
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    password = ""
    for line in proc.stdout:
        m = re.search(r"Created user root with password (\S+)", line)
        if m:
            password = m.group(1)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, password, int(m.group(1))
    raise AssertionError("the server did not start")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_quick_start_server_command_starts_the_server(tmp_path: Path) -> None:
    """The first command's last step, run as written (in the venv we are in), serves."""
    serve = quick_start()[0].split("&&")[-1].strip()
    assert serve == ".venv/bin/middlewared --data-dir ./data"
    argv = [sys.executable, "-m", "middlewared", *serve.split()[1:], "--port", "0"]
    proc, password, port = await asyncio.to_thread(_spawn, argv, tmp_path)
    try:
        assert password, "no generated password was printed"
        stored = tmp_path / "data" / "root.password"
        assert stored.read_text().strip() == password
        assert stored.stat().st_mode & 0o777 == 0o600
        async with raw(f"ws://127.0.0.1:{port}/api/current", "root", password) as c:
            assert await c.call("core.ping") == "pong"
    finally:
        await asyncio.to_thread(_stop, proc)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed on this machine",
)
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "middlewared.service").read_text()
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    assert "StateDirectory=middlewared" in unit
    # verify checks that ExecStart exists: point it at this venv's entry point.
    exe = Path(sys.executable).parent / "middlewared"
    local = tmp_path / "middlewared.service"
    local.write_text(unit.replace("/usr/local/bin/middlewared", str(exe)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "middlewared.service" not in out.stderr, out.stderr


def test_the_wheel_installs_and_serves(tmp_path: Path) -> None:
    """Build the wheel, install it in a fresh venv, start the server from it outside the
    source tree: every package and data file (SQL migrations and queries, py.typed) must
    be in the wheel, or this fails."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = dist.glob("middlewared-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = venv / "bin" / "pip"
    subprocess.run(
        [str(pip), "install", "--quiet", str(wheel)], check=True, timeout=600, capture_output=True
    )
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import middlewared, middlewared_plugins,"
            " middlewared_client; print(middlewared.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    ).stdout
    assert str(venv) in site, site
    work = tmp_path / "run"
    work.mkdir()
    argv = [str(venv / "bin" / "middlewared"), "--data-dir", "./data", "--port", "0"]
    proc, password, port = _spawn(argv, work)
    try:

        async def check() -> None:
            async with raw(f"ws://127.0.0.1:{port}/api/current", "root", password) as c:
                assert await c.call("core.ping") == "pong"
                methods = await c.call("core.get_methods")
                assert "filesystem.stat" in methods and "config.save" in methods
                assert await c.call("core.bulk", "core.ping", [[]]) == [
                    {"job_id": None, "result": "pong", "error": None}
                ]

        asyncio.run(check())
    finally:
        _stop(proc)
