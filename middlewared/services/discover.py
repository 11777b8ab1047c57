"""rpc.discover: an OpenRPC document of the methods the caller may call."""

from __future__ import annotations

from typing import Any

from middlewared import __version__
from middlewared.context import CallContext
from middlewared.registry import Access, Registry
from middlewared.services.core import get_methods

registry = Registry("rpc", "Introspection")


@registry.method(returns={"type": "object"}, access=Access.SELF)
async def discover(ctx: CallContext) -> dict[str, Any]:
    """The OpenRPC 1.2 document of every method the caller may call."""
    methods = []
    for name, info in (await get_methods(ctx)).items():
        items = info["params"].get("prefixItems", [])
        methods.append(
            {
                "name": name,
                "description": info["description"],
                "paramStructure": "either",
                "params": [
                    {
                        "name": p.get("title", f"arg{i}"),
                        "schema": p,
                        "required": i < info["params"].get("minItems", 0),
                    }
                    for i, p in enumerate(items)
                ],
                "result": {"name": "result", "schema": info["returns"]},
                "x-job": info["job_options"],
            }
        )
    return {
        "openrpc": "1.2.6",
        "info": {"title": "middlewared", "version": __version__},
        "methods": methods,
    }
