"""JSON Schemas shared by several core services."""

from __future__ import annotations

from typing import Any

from middlewared.registry import Param

FILTERS: dict[str, Any] = {"type": "array", "description": "Query filters (PROTOCOL.md section 4)"}
OPTIONS: dict[str, Any] = {"type": "object", "description": "Query options: order_by, limit..."}
QUERY_PARAMS = (
    Param("filters", FILTERS, required=False, default=[]),
    Param("options", OPTIONS, required=False, default={}),
)
ALLOWLIST: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
JOB_ID: dict[str, Any] = {"type": "integer", "minimum": 1}
