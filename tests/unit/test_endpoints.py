"""Where the client connects: ws+unix:// URLs and midclt's default (TrueNAS's socket when
it is there)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from middlewared_client import midclt
from middlewared_client.endpoints import Endpoint
from middlewared_client.options import DEFAULT_URL
from middlewared_client.transfers import http_base


def test_unix_urls() -> None:
    e = Endpoint.parse("ws+unix:///run/middleware/middlewared.sock")
    assert e.unix_path == "/run/middleware/middlewared.sock"
    assert e.ws_url == "ws://localhost/api/current" and not e.secure
    assert http_base(e.url) == "http://localhost"
    assert Endpoint.parse("wss://nas:6000/api/current").secure
    with pytest.raises(ValueError, match="no socket path"):
        Endpoint.parse("ws+unix://")


def test_midclt_defaults_to_truenas_socket_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "middlewared.sock"
    monkeypatch.setattr(midclt, "TRUENAS_SOCKET", str(path))
    assert midclt.default_url() == DEFAULT_URL
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert midclt.default_url() == f"ws+unix://{path}"
