"""Typed keys under which the aiohttp application holds the server's objects."""

from __future__ import annotations

from aiohttp import web

from middlewared.app import Middleware

MIDDLEWARE = web.AppKey("middleware", Middleware)
