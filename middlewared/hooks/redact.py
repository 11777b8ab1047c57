"""What ``on.<method>`` scripts are shown of a call: its params as given, with what the
method declares secret hidden (even when they did not bind), and its result with what the
returns schema marks ``writeOnly`` hidden (a token, a new API key: the caller sees it once;
logs and scripts never do)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from middlewared.registry import Param
from middlewared.rpc.schema import REDACTED


def shown_params(params: Any, declared: Sequence[Param]) -> Any:
    """``params`` (an array, an object, anything a client sent) with secrets hidden: by
    position or by name; what matches no declared param is hidden too when the method has
    secrets (it may be one, misplaced)."""
    if not any(p.hidden for p in declared):
        return params
    if params is None:
        return None
    if isinstance(params, list):
        shown = [_shown(v, p) for v, p in zip(params, declared, strict=False)]
        return shown + [REDACTED] * (len(params) - len(shown))
    if isinstance(params, dict):
        by_name = {p.name: p for p in declared}
        return {k: _shown(v, by_name[k]) if k in by_name else REDACTED for k, v in params.items()}
    return REDACTED


def _shown(value: Any, param: Param) -> Any:
    if param.secret:
        return REDACTED
    if param.redact is not None:
        try:
            return param.redact(value)
        except Exception:
            # A value that did not validate may not have the shape its redaction expects.
            return REDACTED
    return value


def shown_result(value: Any, schema: Any) -> Any:
    """``value`` with the parts its schema marks ``writeOnly`` hidden (through
    ``properties``, ``items``, ``prefixItems`` and ``additionalProperties``)."""
    if not isinstance(schema, dict) or not schema:
        return value
    if schema.get("writeOnly"):
        return REDACTED
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties", {})
        return {k: shown_result(v, props.get(k, extra)) for k, v in value.items()}
    if isinstance(value, list):
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        return [
            shown_result(v, prefix[i] if i < len(prefix) else items) for i, v in enumerate(value)
        ]
    return value
