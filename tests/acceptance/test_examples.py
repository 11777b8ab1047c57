"""The scripts in examples/, run as a user runs them, against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.serverproc import ServerProc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MIB = 1024 * 1024


def run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )


def server_env(server: ServerProc) -> dict[str, str]:
    return {
        "MIDDLEWARED_URL": server.ws_url,
        "MIDDLEWARED_USER": "root",
        "MIDDLEWARED_PASSWORD": server.password,
    }


def fresh(server: ServerProc, name: str) -> Path:
    return server.data_dir / "files" / f"{uuid.uuid4().hex[:8]}-{name}"


def test_copy_with_progress_from_the_environment(server: ServerProc) -> None:
    src = fresh(server, "src.bin")
    src.write_bytes(os.urandom(8 * MIB))
    dst = fresh(server, "dst.bin")
    done = run("copy_with_progress.py", str(src), str(dst), env=server_env(server))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "result: True"
    progress = lines[:-1]
    assert progress and all(line.endswith(" bytes") for line in progress)
    assert progress[-1] == f"100.0% Copied {8 * MIB} of {8 * MIB} bytes"
    assert dst.read_bytes() == src.read_bytes()


def test_copy_with_progress_from_argv_reports_errors(server: ServerProc) -> None:
    src = fresh(server, "absent")
    creds = ["--url", server.ws_url, "--user", "root", "--password", server.password]
    done = run("copy_with_progress.py", str(src), str(fresh(server, "x")), *creds)
    assert done.returncode == 1
    assert done.stderr.startswith("error: [EINVAL] src: ")
    done = run("copy_with_progress.py", "a", "b")
    assert done.returncode == 2 and "MIDDLEWARED_PASSWORD" in done.stderr


def test_upload_download_round_trip(server: ServerProc, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(3 * MIB + 5))
    target = fresh(server, "round.bin")
    done = run("upload_download.py", str(local), str(target), env=server_env(server))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("uploaded by job ") and lines[0].endswith(f"['{target}']")
    assert lines[1:] == [f"downloaded {3 * MIB + 5} bytes", "identical"]
    assert target.read_bytes() == local.read_bytes()
    # The remote path exists now: the upload job fails and the script says why.
    done = run("upload_download.py", str(local), str(target), env=server_env(server))
    assert done.returncode == 1
    assert "already exists" in done.stderr


def test_command_hello_runs_as_the_readme_shows(server: ServerProc) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDDLEWARED_", "MIDCLT_"))}
    env.update(MIDCLT_URL=server.ws_url, MIDCLT_USER="root", MIDCLT_PASSWORD=server.password)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["sh", str(EXAMPLES / "command_hello.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].endswith("stdout: hello from run 1")
    assert lines[-2].endswith("stdout: pong")
    (run,) = json.loads(lines[-1])
    assert (run["counter"], run["status"]) == (1, "success")
    assert "halfway" in done.stderr  # the progress bar
