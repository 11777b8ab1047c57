"""``midclt service run MANIFEST SERVICE [--fields JSON]``: run one service of an app once,
here, against a server, as cozy's ``cozy-konnector-dev`` does: the service's file runs
with ``MIDDLEWARED_URL``, ``MIDDLEWARED_TOKEN`` (the caller narrowed to the manifest's
permissions by ``app.service_token``) and ``MIDDLEWARED_FIELDS``; its exit status is
midclt's."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from middlewared import jsonc
from middlewared_client.aclient import AsyncClient
from middlewared_client.clitext import json_object, positive

INTERPRETERS = {"node": "node", "python": "python3"}


def add_parser(commands: Any) -> None:
    service = commands.add_parser(
        "service", help="run an app's service once, here (cozy's dev runner)"
    )
    actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run SERVICE of MANIFEST with a token of the manifest's permissions",
        epilog="example: midclt service run build/manifest.json onFileCreated "
        '--fields \'{"events": [{"id": "/data/a.csv"}]}\'',
    )
    run.add_argument("manifest", type=Path, help="the app's manifest.json")
    run.add_argument("service", help="the service's name in the manifest")
    run.add_argument(
        "--fields", type=json_object, default={}, help="MIDDLEWARED_FIELDS, a JSON object"
    )
    run.add_argument("--ttl", type=positive, default=3600, help="the token's life (seconds)")


def _fail(message: str) -> int:
    print(f"midclt: {message}", file=sys.stderr)
    return 1


def _service(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """The manifest and the service, or what is wrong with them."""
    try:
        manifest = jsonc.loads(args.manifest.read_bytes())
    except OSError as e:
        return f"{args.manifest}: {e.strerror}"
    except ValueError as e:
        return f"{args.manifest} is not JSON: {e}"
    if not isinstance(manifest, dict):
        return f"{args.manifest} is not a JSON object"
    services = manifest.get("services") or {}
    spec = services.get(args.service) if isinstance(services, dict) else None
    if not isinstance(spec, dict):
        names = ", ".join(services) if isinstance(services, dict) else ""
        return f"{args.manifest} has no service {args.service!r} (it has: {names or 'none'})"
    return manifest, spec


def _argv(spec: dict[str, Any], folder: Path) -> list[str] | str:
    kind, file = spec.get("type"), spec.get("file")
    if not isinstance(file, str) or not file:
        return "the service names no file"
    path = (folder / file).resolve()
    if not path.is_file():
        return f"the service's file {path} does not exist"
    if kind == "exec":
        return [str(path)]
    if kind not in INTERPRETERS:
        return f"unknown service type {kind!r} (node, python or exec)"
    interpreter = INTERPRETERS[kind]
    if shutil.which(interpreter) is None:
        return f"this is a {kind} service, but {interpreter} is not installed here (not in PATH)"
    return [interpreter, str(path)]


async def run(client: AsyncClient, args: argparse.Namespace) -> int:
    found = _service(args)
    if isinstance(found, str):
        return _fail(found)
    manifest, spec = found
    folder = args.manifest.resolve().parent
    argv = _argv(spec, folder)
    if isinstance(argv, str):
        return _fail(argv)
    granted = await client.call("app.service_token", manifest.get("permissions") or {}, args.ttl)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDCLT_", "MIDDLEWARED_"))}
    env.update(
        {
            "MIDDLEWARED_URL": client.url,
            "MIDDLEWARED_TOKEN": granted["token"],
            "MIDDLEWARED_FIELDS": jsonc.dumps(args.fields),
            "MIDDLEWARED_APP": str(manifest.get("slug", "")),
            "MIDDLEWARED_SERVICE": args.service,
        }
    )
    proc = await asyncio.create_subprocess_exec(*argv, cwd=folder, env=env)
    code = await proc.wait()
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's status
