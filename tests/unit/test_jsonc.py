"""The codec: names that are not UTF-8 (lone surrogates) both ways; what has no JSON form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from middlewared import jsonc

NAME = "caf\udce9.txt"  # os.fsdecode(b"caf\xe9.txt")


@pytest.mark.parametrize(
    "value",
    [NAME, {NAME: [NAME, "é☃"]}, [2**70, NAME], "\udc80\udcff", {"deep": [[[[NAME]]]]}],
)
def test_lone_surrogates_are_written_as_escapes_and_read_back(value: Any) -> None:
    text = jsonc.dumps(value)
    assert text.isascii()
    assert text.encode() == jsonc.dumpb(value)
    assert jsonc.loads(text) == value
    assert jsonc.loads(text.encode()) == value


def test_plain_values_keep_their_unicode_as_it_is() -> None:
    assert jsonc.dumps({"a": "é☃"}) == '{"a":"é☃"}'


def test_a_client_escape_reads_as_the_name() -> None:
    assert jsonc.loads(json.dumps({"path": NAME})) == {"path": NAME}


@pytest.mark.parametrize(
    "text",
    [
        '["\\udce9", NaN]',
        '["\\udce9", Infinity]',
        '["\\udce9", -Infinity]',
        '["\\udce9"' + "[" * 5000 + "]" * 5000 + "]",
        '["\\udce9", ',
        b'["\\udce9", "\xff"]',
    ],
)
def test_the_fallback_refuses_what_orjson_refuses(text: str | bytes) -> None:
    with pytest.raises(jsonc.JSONDecodeError):
        jsonc.loads(text)


def test_loads_exact_keeps_big_integers_and_reports_deep_nesting() -> None:
    assert jsonc.loads_exact('{"id": 18446744073709551616}') == {"id": 2**64}
    with pytest.raises(jsonc.JSONDecodeError, match="nested too deep"):
        jsonc.loads_exact("[" * 5000 + "]" * 5000)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1, 2}, "not JSON serializable"),
        ([NAME, float("nan")], "Out of range float"),
        (object(), "not JSON serializable"),
    ],
)
def test_what_has_no_json_form_is_an_encode_error(value: Any, reason: str) -> None:
    with pytest.raises(jsonc.EncodeError, match=reason):
        jsonc.dumps(value)


def test_nesting_past_the_limit_is_an_encode_error() -> None:
    deep: Any = NAME
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(jsonc.EncodeError, match="nested too deep"):
        jsonc.dumps(deep)
