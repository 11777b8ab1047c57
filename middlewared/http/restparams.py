"""How a REST request becomes a method's params: the JSON body, the path's id, or the query
string as filters and options.

Values in a query string or a path are text: each is read as JSON when it parses as JSON
(``5``, ``true``, ``null``, ``"5"``), else taken as the text itself; an id whose schema is a
string is always taken as the text.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

from multidict import MultiMapping

from middlewared import jsonc
from middlewared.errors import ParseError, ValidationErrors
from middlewared.http.restmap import Kind, Operation
from middlewared.registry import Schema

# ``?field__gt=5`` as TrueNAS's REST spells operators; a plain ``?field=v`` is equality.
OPERATORS: Mapping[str, str] = {
    "eq": "=",
    "neq": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "regex": "~",
    "in": "in",
    "nin": "nin",
    "rin": "rin",
    "rnin": "rnin",
    "startswith": "^",
    "endswith": "$",
}
# Query-string keys that are options, not filters (``auth_token`` is a credential).
OPTION_KEYS = ("limit", "offset", "sort")
RESERVED_KEYS = frozenset({"auth_token"})
BODY_SHAPE = "the body must be an array of the params, or an object of them by name"


def scalar(text: str) -> Any:
    """A query-string or path value: its JSON value if it is JSON, else the text."""
    try:
        return jsonc.loads(text)
    except (jsonc.JSONDecodeError, ValueError):
        return text


def coerce_id(text: str, schema: Schema | None) -> Any:
    kind = (schema or {}).get("type")
    return text if kind in ("string", ["string"]) else scalar(text)


def _field_op(key: str) -> tuple[str, str]:
    field, _, suffix = key.rpartition("__")
    if field and suffix in OPERATORS:
        return field, OPERATORS[suffix]
    return key, "="


def _option(key: str, text: str) -> dict[str, Any]:
    if key == "sort":
        return {"order_by": [f.strip() for f in text.split(",") if f.strip()]}
    return {key: scalar(text)}


def query_params(query: MultiMapping[str]) -> list[Any]:
    """``[filters, options]`` from ``?field=v&field__op=v&limit=&offset=&sort=a,-b``."""
    filters: list[Any] = []
    options: dict[str, Any] = {}
    for key in dict.fromkeys(query.keys()):
        values = query.getall(key)
        if key in RESERVED_KEYS:
            continue
        if key in OPTION_KEYS:
            if len(values) > 1:
                raise ValidationErrors([(key, "given more than once", errno.EINVAL)])
            options.update(_option(key, values[0]))
            continue
        field, op = _field_op(key)
        for text in values:
            value = scalar(text)
            if op in ("in", "nin") and isinstance(value, str):
                value = value.split(",")
            filters.append([field, op, value])
    return [filters, options]


def _body_values(op: Operation, body: bytes) -> list[Any] | dict[str, Any]:
    """One param: the body is its value. Several (or none): an array, or an object by name."""
    if not body.strip():
        return []
    try:
        value = jsonc.loads(body)
    except (jsonc.JSONDecodeError, ValueError) as e:
        raise ParseError(f"The body is not valid JSON: {e}") from None
    if len(op.body_params) == 1:
        return [value]
    if isinstance(value, list | dict):
        return value
    raise ValidationErrors([("body", BODY_SHAPE, errno.EINVAL)])


def request_params(
    op: Operation, ident: str | None, query: MultiMapping[str], body: bytes
) -> list[Any] | dict[str, Any]:
    """The params to call ``op.method`` with (positional, or by name)."""
    if op.kind is Kind.FILTERS:
        return query_params(query)
    assert ident is not None or op.id_name is None
    if op.kind is Kind.LOOKUP:
        assert ident is not None and op.id_name is not None
        return [[[op.id_name, "=", coerce_id(ident, op.id_schema)]], {"get": True}]
    values = _body_values(op, body)
    if op.id_name is None or ident is None:
        return values
    key = coerce_id(ident, op.id_schema)
    if isinstance(values, dict):
        if op.id_name in values:
            raise ValidationErrors([(op.id_name, "given in the path already", errno.EINVAL)])
        return {op.id_name: key, **values}
    return [key, *values]
