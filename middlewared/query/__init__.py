"""Query filters and options (PROTOCOL.md section 4): parsed once, run in Python or as SQL."""

from __future__ import annotations

from middlewared.query.filters import Cond, Filter, Node, Or, parse_filters
from middlewared.query.inmemory import query
from middlewared.query.options import (
    OrderKey,
    QueryOptions,
    SelectField,
    apply_options,
    parse_options,
)
from middlewared.query.sql import (
    POSTGRES,
    SQLITE,
    Column,
    CompiledWhere,
    Dialect,
    Fields,
    compile_filter,
    compile_order,
    compile_where,
)

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Column",
    "CompiledWhere",
    "Cond",
    "Dialect",
    "Fields",
    "Filter",
    "Node",
    "Or",
    "OrderKey",
    "QueryOptions",
    "SelectField",
    "apply_options",
    "compile_filter",
    "compile_order",
    "compile_where",
    "parse_filters",
    "parse_options",
    "query",
]
