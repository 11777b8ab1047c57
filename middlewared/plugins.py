"""Finding and mounting plugins: the core services, the built-in plugins (a missing optional
dependency disables one with a warning instead of stopping the server) and the user's
``--plugins-dir`` folders."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from middlewared.registry import Registry

if TYPE_CHECKING:
    from middlewared.app import Middleware

log = logging.getLogger(__name__)

CORE_SERVICES = (
    "core",
    "files",
    "auth",
    "users",
    "api_keys",
    "discover",
    "settings",
    "notifiers",
    "triggers",
    "commands",
    "http_jobs",
    "cronjobs",
    "twofactor",
    "hooks",
    "workers",
    "apps",
)


BUILTIN_PACKAGE = "middlewared_plugins"


class PluginLoader:
    def __init__(self, app: Middleware, builtin_package: str = BUILTIN_PACKAGE) -> None:
        self.app = app
        self.builtin_package = builtin_package
        # Built-in plugins left out, with the reason (core.stats shows them).
        self.disabled: dict[str, str] = {}

    def load_all(self) -> None:
        for name in CORE_SERVICES:
            self._mount(importlib.import_module(f"middlewared.services.{name}"), trusted=True)
        if self.app.config.builtin_plugins:
            builtin = importlib.import_module(self.builtin_package)
            for info in pkgutil.iter_modules(builtin.__path__):
                self._load_builtin(info.name)
        for folder in self.app.config.plugin_dirs:
            for path in sorted(folder.glob("*.py")):
                # Not trusted: their internal calls carry the caller's credentials.
                self._mount(load_file(path), trusted=False)

    def _load_builtin(self, name: str) -> None:
        try:
            module = importlib.import_module(f"{self.builtin_package}.{name}")
        except ImportError as e:
            missing = e.name or str(e)
            self.disabled[name] = f"needs {missing}"
            log.warning(
                "built-in plugin %s disabled: %s is not installed (install the extra that "
                "provides it)",
                name,
                missing,
            )
            return
        self._mount(module, trusted=True)

    def _mount(self, module: ModuleType, trusted: bool) -> None:
        found = getattr(module, "registries", None) or [getattr(module, "registry", None)]
        for registry in found:
            if isinstance(registry, Registry):
                self.app.mount(registry, trusted=trusted and registry.trusted)


def load_file(path: Path) -> ModuleType:
    name = f"middlewared_user_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
