"""Plugin settings: one JSON object per namespace, validated by the schema the plugin
declared, kept in the store (so ``config.save`` carries them)."""

from __future__ import annotations

import copy
import errno
from typing import Any

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.registry import SettingsSpec
from middlewared.rpc.schema import Validator, compile_schema
from middlewared.store.base import Op, Store


class Settings:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._specs: dict[str, tuple[SettingsSpec, Validator]] = {}
        self._values: dict[str, dict[str, Any]] = {}
        # Changes at each update and load: what caches derived from settings compare.
        self.revision = 0

    def declare(self, spec: SettingsSpec) -> None:
        if spec.namespace in self._specs:
            raise ValueError(f"settings of {spec.namespace} declared twice")
        validator = compile_schema({**spec.schema, "type": "object"})
        errors = validator.validate(spec.defaults)
        if errors:
            raise ValueError(f"settings of {spec.namespace}: bad defaults: {errors}")
        self._specs[spec.namespace] = (spec, validator)

    def schemas(self) -> dict[str, Any]:
        return {name: spec.schema for name, (spec, _) in sorted(self._specs.items())}

    async def load(self) -> None:
        """(Re)read every namespace's stored values (after start, after a restore)."""
        self.revision += 1
        self._values = {
            row["namespace"]: jsonc.loads(row["value"])
            for row in await self.store.fetch("all_settings")
        }

    def readable(self, namespace: str) -> dict[str, Any]:
        """What a read method may show: the settings without their write-only fields (a
        password declared ``"writeOnly": true`` is never returned)."""
        spec, _ = self._spec(namespace)
        hidden = {
            name
            for name, prop in spec.schema.get("properties", {}).items()
            if isinstance(prop, dict) and prop.get("writeOnly")
        }
        return {k: v for k, v in self.get(namespace).items() if k not in hidden}

    def get(self, namespace: str) -> dict[str, Any]:
        """The namespace's settings: its defaults, overlaid with what was stored."""
        spec, _ = self._spec(namespace)
        stored = self._values.get(namespace, {})
        return copy.deepcopy({**spec.defaults, **stored})

    async def update(self, namespace: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (validated as a whole, with the defaults, against the schema)."""
        _, validator = self._spec(namespace)
        new = {**self.get(namespace), **changes}
        errors = validator.validate(new)
        if errors:
            raise ValidationErrors(errors)
        await self.store.write(
            [Op("set_settings", {"namespace": namespace, "value": jsonc.dumps(new)})]
        )
        self._values[namespace] = new
        self.revision += 1
        return copy.deepcopy(new)

    def _spec(self, namespace: str) -> tuple[SettingsSpec, Validator]:
        found = self._specs.get(namespace)
        if found is None:
            raise ValidationErrors(
                [("namespace", f"No settings named {namespace!r}", errno.ENOENT)]
            )
        return found
