"""A command as stored and as shown: its schema, its checks, its row and its record (secret
env values never shown), and the environment a run gets."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field, replace
from typing import Any

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.rpc.schema import REDACTED

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names the server sets for every run.
RESERVED_PREFIX = "MIDDLEWARED_"
DEFAULT_LOG_RETENTION = 5  # karajo's default

NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 32}
ENV_VALUE = {
    "anyOf": [
        {"type": "string", "maxLength": 65536},
        {
            "type": "object",
            "properties": {
                "value": {"type": "string", "maxLength": 65536},
                "secret": {"type": "boolean"},
            },
            "required": ["value"],
            "additionalProperties": False,
        },
    ]
}
# ``{"NAME": "value"}`` or ``{"NAME": {"value": "...", "secret": true}}``.
ENV = {"type": "object", "additionalProperties": ENV_VALUE}
MAX_ENV = 256
FIELDS: dict[str, Any] = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "description": {"type": "string", "maxLength": 1024},
    "commands": {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 65536},
        "minItems": 1,
        "maxItems": 256,
    },
    "env": ENV,
    "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "log_retention": {"type": "integer", "minimum": 1, "maximum": 1000},
    "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 1000},
    "allow": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 256},
    "notify_on_success": NAMES,
    "notify_on_failure": NAMES,
}
CREATE: dict[str, Any] = {
    "type": "object",
    "properties": FIELDS,
    "required": ["name", "commands"],
    "additionalProperties": False,
}
UPDATE: dict[str, Any] = {"type": "object", "properties": FIELDS, "additionalProperties": False}


@dataclass(frozen=True)
class EnvValue:
    value: str = field(repr=False)
    secret: bool = False


Env = dict[str, EnvValue]


def parse_env(raw: dict[str, Any], where: str, old: Env | None = None) -> Env:
    """Env as given (plain strings or ``{"value", "secret"}``), checked; a secret given as
    ``"********"`` (what queries show) keeps the value it had in ``old``."""
    if len(raw) > MAX_ENV:
        raise ValidationErrors([(where, f"At most {MAX_ENV} variables", errno.EINVAL)])
    env: Env = {}
    for name, given in raw.items():
        if not ENV_NAME.match(name):
            raise ValidationErrors([(f"{where}.{name}", "Not a variable name", errno.EINVAL)])
        if name.startswith(RESERVED_PREFIX):
            reason = f"{RESERVED_PREFIX}* names are set by the server"
            raise ValidationErrors([(f"{where}.{name}", reason, errno.EINVAL)])
        value = EnvValue(given) if isinstance(given, str) else EnvValue(**given)
        if value.secret and value.value == REDACTED and old is not None and name in old:
            value = EnvValue(old[name].value, True)
        if "\0" in value.value:
            reason = "A value cannot hold a NUL character"
            raise ValidationErrors([(f"{where}.{name}", reason, errno.EINVAL)])
        env[name] = value
    return env


def show_env(env: Env) -> dict[str, Any]:
    """As queries show it: secret values redacted."""
    return {
        name: {"value": REDACTED, "secret": True} if v.secret else v.value
        for name, v in env.items()
    }


def redact_env(raw: Any) -> Any:
    """A ``command.run`` env argument as the job record shows it."""
    if not isinstance(raw, dict):
        return raw
    return {
        name: {**given, "value": REDACTED}
        if isinstance(given, dict) and given.get("secret")
        else given
        for name, given in raw.items()
    }


@dataclass(frozen=True)
class Command:
    name: str
    commands: tuple[str, ...]
    env: Env = field(default_factory=dict)
    description: str = ""
    timeout: float | None = None
    log_retention: int = DEFAULT_LOG_RETENTION
    max_concurrency: int = 1
    allow: tuple[str, ...] = ()
    notify_on_success: tuple[str, ...] = ()
    notify_on_failure: tuple[str, ...] = ()
    created: int = 0
    runs: int = 0
    # Where a file declares it (karajo's [job], jobs.d): changed there, not through the API.
    declared: str | None = None

    @classmethod
    def create(cls, data: dict[str, Any], created: int, declared: str | None = None) -> Command:
        return cls(data["name"], (), created=created, declared=declared).with_changes(data)

    def with_changes(self, data: dict[str, Any]) -> Command:
        """This command with ``data`` (create's or update's fields) applied and checked."""
        if "name" in data and data["name"] != self.name and self.commands:
            raise ValidationErrors([("name", "A command cannot be renamed", errno.EINVAL)])
        changes: dict[str, Any] = {}
        for key in ("description", "timeout", "log_retention", "max_concurrency"):
            if key in data:
                changes[key] = data[key]
        for key in ("commands", "allow", "notify_on_success", "notify_on_failure"):
            if key in data:
                changes[key] = tuple(data[key])
        if "env" in data:
            changes["env"] = parse_env(data["env"], "env", self.env)
        for number, line in enumerate(changes.get("commands", ()), 1):
            if "\0" in line:
                reason = "A line cannot hold a NUL character"
                raise ValidationErrors([(f"commands.{number - 1}", reason, errno.EINVAL)])
        return replace(self, **changes)

    @property
    def secrets(self) -> list[str]:
        return [v.value for v in self.env.values() if v.secret]

    def _data(self, env: dict[str, Any]) -> dict[str, Any]:
        """The fields create and update take (but the name), with ``env`` as given."""
        return {
            "description": self.description,
            "commands": list(self.commands),
            "env": env,
            "timeout": self.timeout,
            "log_retention": self.log_retention,
            "max_concurrency": self.max_concurrency,
            "allow": list(self.allow),
            "notify_on_success": list(self.notify_on_success),
            "notify_on_failure": list(self.notify_on_failure),
        }

    def record(self) -> dict[str, Any]:
        """What ``command.query`` shows: secret env values redacted."""
        return {
            "name": self.name,
            **self._data(show_env(self.env)),
            "created": {"$date": self.created},
            "runs": self.runs,
            "declared": self.declared,
        }

    def row(self) -> dict[str, Any]:
        env = {n: {"value": v.value, "secret": v.secret} for n, v in self.env.items()}
        return {
            "name": self.name,
            "record": jsonc.dumps({**self._data(env), "declared": self.declared}),
            "runs": self.runs,
            "created": self.created,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Command:
        data = jsonc.loads(row["record"])
        blank = cls(
            row["name"],
            (),
            created=int(row["created"]),
            runs=int(row["runs"]),
            declared=data.get("declared"),
        )
        return blank.with_changes({k: v for k, v in data.items() if k in FIELDS})
