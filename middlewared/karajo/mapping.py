"""karajo's sections as middlewared's declared objects (README "For karajo users"):

- ``[job "NAME"]`` → command ``NAME`` (``command`` lines, ``description``, ``log_retention``,
  ``notif_on_success``, ``notif_on_failed``), plus a trigger ``karajo/job/NAME/timer``
  (``schedule`` → ``@schedule``, else ``interval`` → ``@interval``) and a trigger
  ``karajo/job/NAME/hook`` (``path`` → ``@webhook`` at ``/hooks/<path>``, signed as
  ``auth_kind`` says with ``secret`` or [karajo]'s, in ``header_sign`` or ``X-Karajo-Sign``);
- ``[job.http "NAME"]`` → trigger ``karajo/job.http/NAME`` starting ``http.request``;
- ``[notif "NAME"]`` → mail notifier ``NAME`` with its own SMTP server;
- ``[karajo]`` → ``max_job_running``, ``secret`` and ``http_timeout`` are used; the rest
  (``name``, ``listen_address``, ``dir_base``, ``dir_public``, ``is_development``) has no
  meaning here and is logged as ignored.

Any other section or key is refused with its file and line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from middlewared.configfile import ConfigError
from middlewared.declarations import Declarations, Item
from middlewared.errors import ValidationErrors
from middlewared.karajo import ini
from middlewared.triggers.durations import parse_duration
from middlewared.triggers.karajo import karajo_crons, parse_interval

log = logging.getLogger(__name__)

KARAJO_KEYS = frozenset(
    {"name", "listen_address", "http_timeout", "dir_base", "dir_public", "secret"}
    | {"max_job_running", "is_development"}
)
# Known to karajo, meaningless here: why each is left.
IGNORED = {
    "name": "the title of karajo's web pages and its log prefix",
    "listen_address": "the server listens where --host and --port say",
    "dir_base": "state and logs live under --data-dir",
    "dir_public": "no public directory is served",
    "is_development": "karajo's own development switch",
}
BASE_KEYS = frozenset(
    {"description", "schedule", "interval", "log_retention", "notif_on_success", "notif_on_failed"}
)
JOB_KEYS = BASE_KEYS | {"path", "auth_kind", "header_sign", "secret", "command"}
HTTP_KEYS = BASE_KEYS | {"secret", "header_sign", "http_method", "http_url"}
HTTP_KEYS |= {"http_request_type", "http_header", "http_timeout", "http_insecure"}
NOTIF_KEYS = frozenset(
    {"kind", "smtp_server", "smtp_user", "smtp_password", "from", "to", "smtp_insecure"}
)
REPEATABLE = frozenset({"command", "http_header", "to", "notif_on_success", "notif_on_failed"})
SECTIONS = {"karajo": KARAJO_KEYS, "job": JOB_KEYS, "job.http": HTTP_KEYS, "notif": NOTIF_KEYS}
AUTH_KINDS = ("hmac-sha256", "github", "sourcehut")
HEADER_SIGN = "X-Karajo-Sign"
# karajo's URL of a [job] with a path, served as an alias of /hooks/<path> (only for the
# webhooks of karajo's jobs, whose declared names begin with KARAJO_HOOKS).
KARAJO_RUN = "/karajo/api/job_exec/run"
KARAJO_HOOKS = "karajo/job/"
# karajo's HTTP client timeout when neither the job nor [karajo] sets one.
HTTP_TIMEOUT = 300.0
# http.request's longest timeout: what karajo's "no timeout" (a negative one) becomes.
MAX_HTTP_TIMEOUT = 3600.0


class _Keys:
    """A section's entries by key: each written once, but for the repeatable ones."""

    def __init__(self, file: ini.IniFile, section: ini.Section, known: frozenset[str]) -> None:
        self.file = file
        self.section = section
        self.values: dict[str, list[ini.Entry]] = {}
        for entry in section.entries:
            if entry.key not in known:
                raise file.error(entry.line, f'unknown key "{entry.key}" in {section.title}')
            seen = self.values.setdefault(entry.key, [])
            if seen and entry.key not in REPEATABLE:
                reason = f"{entry.key} is written twice in {section.title} (first at line "
                raise file.error(entry.line, f"{reason}{seen[0].line})")
            seen.append(entry)

    def get(self, key: str) -> ini.Entry | None:
        found = self.values.get(key)
        return found[0] if found and found[0].value != "" else None

    def text(self, key: str, default: str = "") -> str:
        entry = self.get(key)
        return entry.value if entry is not None else default

    def all(self, key: str) -> list[str]:
        return [e.value for e in self.values.get(key, []) if e.value != ""]

    def line(self, key: str) -> int:
        entry = self.get(key)
        return entry.line if entry is not None else self.section.line

    def fail(self, key: str, reason: str) -> ConfigError:
        return self.file.error(self.line(key), f"{self.section.title}: {key}: {reason}")

    def ignore(self, key: str, why: str) -> None:
        """Known to karajo, meaningless here: said once in the log, never silently."""
        if self.get(key) is not None:
            where = f"{self.file.path}:{self.line(key)}"
            log.info("%s: %s %s ignored: %s", where, self.section.title, key, why)

    def check(self, key: str, parse: Callable[[str], Any]) -> Any:
        """``parse(value)``, its refusal pointing at the key's line (the value unquoted)."""
        entry = self.get(key)
        if entry is None:
            return None
        try:
            return parse(entry.value)
        except ValidationErrors as e:
            raise self.fail(key, e.errors[0][1]) from None
        except ValueError as e:
            raise self.fail(key, str(e)) from None


def load(path: Path, into: Declarations) -> None:
    """The INI file's sections added to ``into``; ConfigError on the first fault."""
    file = ini.read(path)
    globals_ = _Globals()
    kinds: dict[str, list[ini.Section]] = {}
    for section in file.sections:
        if section.name not in SECTIONS:
            names = ", ".join(f"[{n}]" for n in SECTIONS)
            raise file.error(section.line, f"unknown section {section.title}: karajo has {names}")
        if (section.name == "karajo") != (section.sub is None):
            form = "[karajo]" if section.name == "karajo" else f'[{section.name} "name"]'
            raise file.error(section.line, f"{section.title}: write it {form}")
        kinds.setdefault(section.name, []).append(section)
    for section in kinds.get("karajo", []):
        globals_.read(_Keys(file, section, KARAJO_KEYS), into)
    notifs = {s.sub for s in kinds.get("notif", [])}
    for section in kinds.get("notif", []):
        into.add(_notif(_Keys(file, section, NOTIF_KEYS)))
    for section in kinds.get("job", []):
        _job(_Keys(file, section, JOB_KEYS), globals_, notifs, into)
    for section in kinds.get("job.http", []):
        _http_job(_Keys(file, section, HTTP_KEYS), globals_, notifs, into)


class _Globals:
    secret: str | None = None
    http_timeout: float = HTTP_TIMEOUT

    def read(self, keys: _Keys, into: Declarations) -> None:
        for key, why in IGNORED.items():
            keys.ignore(key, why)
        self.secret = keys.text("secret") or None
        timeout = keys.check("http_timeout", _timeout)
        if timeout is not None:
            self.http_timeout = timeout
        into.max_running = keys.check("max_job_running", _positive)


def _job(keys: _Keys, globals_: _Globals, notifs: set[str | None], into: Declarations) -> None:
    name = keys.section.sub
    assert name is not None
    file, title = keys.file, keys.section.title
    lines = keys.all("command")
    if not lines:
        raise file.error(keys.section.line, f"{title}: a job needs at least one command")
    command: dict[str, Any] = {"name": name, "commands": lines}
    command.update(_base(keys, notifs))
    into.add(Item("command", name, command, file.path, keys.section.line))
    timer = _timer(keys)
    if timer is not None:
        data = {**timer, "method": "command.run", "params": [name]}
        data["description"] = f"karajo job {name}"
        into.add(Item("trigger", f"karajo/job/{name}/timer", data, file.path, _timer_line(keys)))
    if keys.get("path") is not None:
        hook = {
            "type": "@webhook",
            "method": "command.run",
            "params": [name, {}],
            # The request reaches the command as MIDDLEWARED_FIELDS.
            "pass_event": True,
            "description": f"karajo job {name} (webhook)",
            "auth": _auth(keys, globals_),
        }
        into.add(Item("trigger", f"karajo/job/{name}/hook", hook, file.path, keys.line("path")))
    else:
        for key in ("auth_kind", "header_sign", "secret"):
            keys.ignore(key, "the job has no path")


def _http_job(keys: _Keys, globals_: _Globals, notifs: set[str | None], into: Declarations) -> None:
    name = keys.section.sub
    file, title = keys.file, keys.section.title
    url = keys.get("http_url")
    if url is None:
        raise file.error(keys.section.line, f"{title}: http_url is required")
    method = keys.text("http_method", "GET").upper()
    if method not in ("GET", "POST", "PUT", "DELETE"):
        raise keys.fail("http_method", "one of GET, POST, PUT or DELETE")
    kind = keys.text("http_request_type", "query").lower()
    if kind not in ("query", "form", "json"):
        raise keys.fail("http_request_type", "one of query, form or json")
    options: dict[str, Any] = {"method": method, "url": url.value, "request_type": kind}
    headers = keys.all("http_header")
    if headers:
        options["headers"] = headers
    timeout = keys.check("http_timeout", _timeout)
    options["timeout"] = globals_.http_timeout if timeout is None else timeout
    insecure = keys.get("http_insecure")
    if insecure is not None:
        options["insecure"] = ini.boolean(insecure, file.path)
    if keys.get("secret") is not None:
        options["secret"] = keys.text("secret")
        options["header_sign"] = keys.text("header_sign", HEADER_SIGN)
    base = _base(keys, notifs)
    keys.ignore("log_retention", "an HTTP job's runs are jobs, kept as every job is")
    data: dict[str, Any] = _timer(keys) or {"type": "@client"}
    data.update(method="http.request", params=[options])
    data["description"] = base.get("description") or f"karajo HTTP job {name}"
    for ours in ("notify_on_success", "notify_on_failure"):
        if ours in base:
            data[ours] = base[ours]
    into.add(Item("trigger", f"karajo/job.http/{name}", data, file.path, _timer_line(keys)))


def _base(keys: _Keys, notifs: set[str | None]) -> dict[str, Any]:
    """JobBase's keys as a command's fields."""
    found: dict[str, Any] = {}
    if keys.get("description") is not None:
        found["description"] = keys.text("description")
    retention = keys.check("log_retention", _positive)
    if retention is not None:
        found["log_retention"] = retention
    for theirs, ours in (
        ("notif_on_success", "notify_on_success"),
        ("notif_on_failed", "notify_on_failure"),
    ):
        names = keys.all(theirs)
        for entry in keys.values.get(theirs, []):
            if entry.value and entry.value not in notifs:
                reason = f'{keys.section.title}: {theirs}: no [notif "{entry.value}"] in this file'
                raise keys.file.error(entry.line, reason)
        if names:
            found[ours] = names
    return found


def _timer(keys: _Keys) -> dict[str, Any] | None:
    """``schedule`` (which wins, as in karajo) or ``interval`` as a trigger's type."""
    schedule = keys.get("schedule")
    if schedule is not None:
        keys.check("schedule", karajo_crons)
        if keys.get("interval") is not None:
            log.warning(
                "%s:%d: %s interval ignored: schedule wins, as in karajo",
                keys.file.path,
                keys.line("interval"),
                keys.section.title,
            )
        return {"type": "@schedule", "arguments": schedule.value}
    interval = keys.get("interval")
    if interval is not None:
        keys.check("interval", parse_interval)
        return {"type": "@interval", "arguments": interval.value}
    return None


def _timer_line(keys: _Keys) -> int:
    return keys.line("schedule") if keys.get("schedule") is not None else keys.line("interval")


def _auth(keys: _Keys, globals_: _Globals) -> dict[str, Any]:
    kind = keys.text("auth_kind", "hmac-sha256").lower()
    if kind not in AUTH_KINDS:
        # karajo falls back to hmac-sha256 without a word; a typo here is refused.
        raise keys.fail("auth_kind", f"one of {', '.join(AUTH_KINDS)}")
    auth: dict[str, Any] = {"kind": kind, "path": keys.text("path").strip("/")}
    if kind == "sourcehut":
        return auth
    secret = keys.text("secret") or globals_.secret
    if not secret:
        reason = "a signed webhook needs a secret: set secret here or in [karajo]"
        raise keys.fail("path", reason)
    auth["secret"] = secret
    if kind == "hmac-sha256":
        auth["header"] = keys.text("header_sign", HEADER_SIGN)
    return auth


def _notif(keys: _Keys) -> Item:
    name = keys.section.sub
    assert name is not None
    kind = keys.text("kind").lower()
    if kind != "email":
        raise keys.fail("kind", "karajo's notifications are of kind email")
    server = keys.get("smtp_server")
    if server is None:
        raise keys.fail("smtp_server", "required: smtps://host[:port] or smtp://host[:port]")
    sender = keys.check("from", _address)
    if sender is None:
        raise keys.fail("from", "required: the sender's address")
    to = []
    for entry in keys.values.get("to", []):
        try:
            to.append(_address(entry.value))
        except ValueError as e:
            raise keys.file.error(entry.line, f"{keys.section.title}: to: {e}") from None
    smtp: dict[str, Any] = {"server": server.value, "from": sender}
    if keys.get("smtp_user") is not None:
        smtp["user"] = keys.text("smtp_user")
    if keys.get("smtp_password") is not None:
        smtp["password"] = keys.text("smtp_password")
    insecure = keys.get("smtp_insecure")
    if insecure is not None:
        smtp["insecure"] = ini.boolean(insecure, keys.file.path)
    data = {"name": name, "kind": "mail", "to": to, "smtp": smtp}
    return Item("notifier", name, data, keys.file.path, keys.section.line)


def _address(text: str) -> str:
    """``John <john@example.com>`` or ``john@example.com`` → the address."""
    _, address = parseaddr(text)
    if "@" not in address:
        raise ValueError("not a mail address")
    return address


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError("a whole number of at least 1")
    return int(text)


def _timeout(text: str) -> float:
    """A Go duration (``30s``, ``5m``); a negative one is karajo's "no timeout", which is
    http.request's longest."""
    if text.startswith("-"):
        return MAX_HTTP_TIMEOUT
    seconds = parse_duration(text, field="http_timeout").total_seconds()
    if seconds > MAX_HTTP_TIMEOUT:
        raise ValueError(f"at most {MAX_HTTP_TIMEOUT:g} s (1h)")
    return seconds
