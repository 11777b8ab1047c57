"""The IANA time zone a schedule is computed in: a trigger's ``options.timezone``, or the
server's own zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

from middlewared.errors import validation_error

FIELD = "options.timezone"
UTC = ZoneInfo("UTC")
# The longest IANA name is about 30 characters.
_MAX_NAME = 100


def local_zone() -> ZoneInfo:
    """The server's zone (TZ, /etc/localtime ...), as tzlocal finds it; UTC when it cannot
    name one. Looked up on each call, so a restart after the host's zone changed follows it."""
    try:
        return tzlocal.get_localzone()
    except (ZoneInfoNotFoundError, ValueError, OSError, LookupError):
        return UTC


def resolve_timezone(name: object, *, default: ZoneInfo | None = None) -> ZoneInfo:
    """The zone named ``name``; ``default`` (else the server's zone) when it is None.

    Raises ValidationErrors on ``options.timezone``: "unknown timezone 'Mars/Olympus'".
    """
    if name is None:
        return default if default is not None else local_zone()
    if not isinstance(name, str):
        raise validation_error(
            FIELD, f"a timezone is an IANA name such as 'Europe/Paris', not {type(name).__name__}"
        )
    if not name or len(name) > _MAX_NAME:
        raise validation_error(FIELD, f"unknown timezone {name[:_MAX_NAME]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a relative key (absolute, "..", NUL) or not a zone file;
        # OSError: a directory of zones ("Europe").
        raise validation_error(
            FIELD, f"unknown timezone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
