"""The API on a local UNIX socket (``--unix-socket``), TrueNAS's way: the socket is made
with the mode asked (0600 unless told otherwise) before anyone can connect, and a peer is
known by its uid (SO_PEERCRED): uid 0 and the server's own uid are root from the start,
as TrueNAS's ``midclt`` expects; with ``--unix-socket-users`` a peer whose system user name
is a middlewared user's is that user; any other peer must log in."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from middlewared.auth.credentials import CredentialKind, Identity
from middlewared.auth.directory import Directory
from middlewared.config import Transports
from middlewared.errors import MiddlewareError

# struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")


async def listen(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    transports: Transports,
) -> asyncio.AbstractServer:
    """Serve ``factory`` on the socket path; a stale socket left by a crash is replaced, any
    other file at that path is refused."""
    path = transports.unix_socket
    assert path is not None
    sock = bind(path, transports.unix_socket_mode, transports.unix_socket_group)
    return await loop.create_unix_server(factory, sock=sock, backlog=128)


def bind(path: Path, mode: int, group: str | None) -> socket.socket:
    gid = _group_id(group) if group is not None else -1
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The socket file is born with no permission for anyone but us, then given its mode:
        # no moment where another user could connect before the mode is set.
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        if gid != -1:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise MiddlewareError(f"--unix-socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: left by a crash
        return
    finally:
        probe.close()
    raise MiddlewareError(f"--unix-socket {path}: another server is listening on it")


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise MiddlewareError(f"--unix-socket-group {group}: no such group") from None


def peer_uid(transport: asyncio.BaseTransport | None) -> int | None:
    """The uid of the process at the other end of a UNIX socket (None on TCP)."""
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    with contextlib.suppress(OSError):
        _pid, uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return int(uid)
    return None


def peer_identity(
    directory: Directory, transports: Transports, transport: asyncio.BaseTransport | None
) -> Identity | None:
    """Who a UNIX socket peer is before any login: root for uid 0 and the server's own uid,
    the middlewared user of its system user's name when ``--unix-socket-users`` says so;
    None for anyone else (and on TCP)."""
    uid = peer_uid(transport)
    if uid is None:
        return None
    if uid in (0, os.geteuid()):
        name: str | None = "root"
    elif transports.unix_socket_users:
        name = system_user(uid)
    else:
        return None
    user = directory.by_name(name) if name is not None else None
    if user is None or user.locked:
        return None
    return Identity(CredentialKind.UNIX_SOCKET, user.id)


def address(transport: asyncio.BaseTransport | None) -> str | None:
    """``unix:uid=N`` for a UNIX socket peer (the login throttle's key), None on TCP."""
    uid = peer_uid(transport)
    return None if uid is None else f"unix:uid={uid}"


def system_user(uid: int) -> str | None:
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return None


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
