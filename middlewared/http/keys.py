"""Typed keys under which the aiohttp application holds the server's objects."""

from __future__ import annotations

from aiohttp import web

from middlewared.app import Middleware
from middlewared.http.admission import Admission
from middlewared.ws.session import Session

MIDDLEWARE = web.AppKey("middleware", Middleware)
SESSIONS: web.AppKey[set[Session]] = web.AppKey("sessions")
ADMISSION = web.AppKey("admission", Admission)
