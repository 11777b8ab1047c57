"""The JSON codec used on the wire and in the store: orjson (measured faster on the hot path),
and the standard library for what orjson refuses.

Names from the filesystem are str decoded with surrogateescape, so bytes that are not UTF-8
are lone surrogates (U+DC80..U+DCFF). orjson refuses them both ways; here they are written as
``\\udcXX`` escapes (the text stays plain ASCII, valid UTF-8 for any socket or database) and
read back from them, so a client can pass such a name back unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# The base class: orjson's JSONDecodeError derives from it, and so do the errors read here.
JSONDecodeError = json.JSONDecodeError


_SURROGATE = re.compile("[\ud800-\udfff]")


class EncodeError(ValueError):
    """A value JSON has no form for: a non-JSON type, NaN, nesting past the limit."""


def dumps(obj: Any) -> str:
    """Compact JSON text, always valid UTF-8. Raises EncodeError with the reason."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses lone surrogates, integers past 64 bits and nesting past 254 levels.
        pass
    try:
        # ensure_ascii writes lone surrogates (and all non-ASCII) as \u escapes.
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except RecursionError:
        raise EncodeError("nested too deep") from None
    except (TypeError, ValueError) as e:
        raise EncodeError(str(e)) from None


def dumpb(obj: Any) -> bytes:
    """dumps() as UTF-8 bytes."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return dumps(obj).encode()


def loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if "surrogate" not in str(e):
            raise
    return loads_exact(data)


def loads_exact(data: str | bytes) -> Any:
    """The standard library's reading: lone surrogates kept, integers past 64 bits exact.
    As with orjson, NaN and Infinity are refused and too deep a nesting is a decode error."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise JSONDecodeError(f"not UTF-8: {e.reason}", "", e.start) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONDecodeError("nested too deep", "", 0) from None


def _refuse_constant(name: str) -> Any:
    raise JSONDecodeError(f"{name} is not a JSON value", "", 0)


def has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """``text`` fit for what must be UTF-8 (a database column, a header): U+FFFD in place
    of each lone surrogate."""
    return _SURROGATE.sub("\ufffd", text) if has_surrogates(text) else text
