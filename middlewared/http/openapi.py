"""The OpenAPI 3.1 document of the REST facade, made from what ``core.get_methods`` shows the
caller: the same param and result schemas, the same docstrings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from middlewared import __version__
from middlewared.http.restmap import PREFIX, Kind, Operation
from middlewared.registry import Schema

JOB_ID: Schema = {
    "type": "integer",
    "minimum": 1,
    "description": "The id of the job the call started (follow it with core.get_jobs)",
}
ERROR: Schema = {
    "type": "object",
    "description": "The JSON-RPC error.data of the refusal, and the HTTP status",
    "required": ["error", "errname", "reason", "extra", "trace", "status"],
    "properties": {
        "error": {"type": "integer", "description": "errno"},
        "errname": {"type": "string"},
        "reason": {"type": "string"},
        "extra": {"type": ["array", "null"]},
        "trace": {"type": ["object", "null"]},
        "status": {"type": "integer"},
    },
}
ERRORS = {
    "400": "The body is not JSON",
    "401": "No credentials, or wrong ones",
    "403": "The caller may not call this method",
    "404": "No such route, or no such item",
    "409": "Busy: a lock, a limit of live jobs, an item in use",
    "413": "The body is too large",
    "422": "Invalid params (extra lists [field, message, errno]), or the call failed",
    "429": "Too many failed logins from this address",
}
QUERY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "At most this many items (0: all)",
    },
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": "Skip this many items first",
    },
    {
        "name": "sort",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Fields to order by, comma-separated; -field for descending",
    },
    {
        "name": "filters",
        "in": "query",
        "style": "form",
        "explode": True,
        # Every value is text on the wire (read as JSON when it is JSON): any object goes.
        "schema": {"type": "object"},
        "description": "field=value for equality, field__op=value for another operator "
        "(eq neq gt gte lt lte regex in nin rin rnin startswith endswith); a value is "
        "read as JSON when it is JSON, else as text",
    },
]
SECURITY_SCHEMES = {
    "basic": {"type": "http", "scheme": "basic"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key"},
    "token": {"type": "apiKey", "in": "query", "name": "auth_token"},
}


def summary(doc: str) -> str:
    """The docstring's first sentence (a period then a capital ends it: "e.g. a" does not)."""
    first = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z`(])", first, maxsplit=1)[0]


def _body(docs: Sequence[Schema], required: bool) -> dict[str, Any]:
    """One param: the body is its value; several: an array of them, or an object by name."""
    if len(docs) == 1:
        schema = docs[0]
    else:
        names = [d["title"] for d in docs]
        needed = [d["title"] for d in docs if "default" not in d]
        least = max((i + 1 for i, d in enumerate(docs) if "default" not in d), default=0)
        schema = {
            "anyOf": [
                {
                    "type": "array",
                    "prefixItems": list(docs),
                    "items": False,
                    "minItems": least,
                },
                {
                    "type": "object",
                    "properties": dict(zip(names, docs, strict=True)),
                    "required": needed,
                    "additionalProperties": False,
                },
            ]
        }
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _id_parameter(op: Operation) -> dict[str, Any]:
    schema = dict(op.id_schema or {})
    if "string" in (schema.get("type") or ()):
        schema.setdefault("minLength", 1)
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": schema,
        "description": f"The item's {op.id_name}",
    }


def _readable(schema: Any) -> Any:
    """A result's schema without ``writeOnly``: there it marks a secret the caller alone
    sees (kept out of logs and hook scripts), while OpenAPI reads it as "never in a
    response"."""
    if isinstance(schema, dict):
        return {k: _readable(v) for k, v in schema.items() if k != "writeOnly"}
    if isinstance(schema, list):
        return [_readable(v) for v in schema]
    return schema


def _operation(op: Operation, info: dict[str, Any]) -> dict[str, Any]:
    result = JOB_ID if info["job"] else _readable(info["returns"])
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": summary(info["description"]),
        "description": info["description"],
        "tags": [op.spec.namespace],
        "x-method": op.method,
        "x-job": info["job"],
    }
    parameters = [_id_parameter(op)] if op.id_name is not None else []
    if op.kind is Kind.FILTERS:
        parameters += QUERY_PARAMETERS
    if parameters:
        out["parameters"] = parameters
    if op.body_params:
        docs = info["params"]["prefixItems"][len(op.spec.params) - len(op.body_params) :]
        out["requestBody"] = _body(docs, any(p.required for p in op.body_params))
    ok = "The job's id" if info["job"] else "The method's result"
    out["responses"] = {
        "200": {"description": ok, "content": {"application/json": {"schema": result}}},
        **{code: {"$ref": f"#/components/responses/E{code}"} for code in ERRORS},
    }
    return out


def document(operations: Iterable[Operation], methods: dict[str, Any]) -> dict[str, Any]:
    """The document of the operations whose method is in ``methods`` (those the caller may
    call, as ``core.get_methods`` lists them)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        info = methods.get(op.method)
        if info is not None:
            paths.setdefault(op.path, {})[op.verb.lower()] = _operation(op, info)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "middlewared REST",
            "version": __version__,
            "description": "TrueNAS's v2.0 REST over middlewared's methods. The same calls "
            "are JSON-RPC 2.0 over the WebSocket at /api/current.",
        },
        "servers": [{"url": PREFIX}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR},
            "responses": {
                f"E{code}": {"description": text, "content": error} for code, text in ERRORS.items()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
        "security": [{name: []} for name in SECURITY_SCHEMES],
    }
