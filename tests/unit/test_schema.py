"""Tests of the compiled JSON Schema subset and of the params binder."""

from __future__ import annotations

import errno
import importlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from middlewared.errors import ValidationErrors
from middlewared.registry import Param
from middlewared.rpc.schema import (
    REDACTED,
    ParamsBinder,
    compile_schema,
    redact,
    schema_for_docs,
)

E = errno.EINVAL
Case = tuple[dict[str, Any] | bool, Any, list[tuple[str, str]]]


def errors_of(schema: dict[str, Any] | bool, value: Any, path: str = "p") -> list[tuple[str, str]]:
    found = compile_schema(schema).validate(value, path)
    assert all(code == E for _, _, code in found)
    return [(field, message) for field, message, _ in found]


OK: list[tuple[str, str]] = []

TYPE_CASES: list[Case] = [
    ({"type": "string"}, "x", OK),
    ({"type": "string"}, "", OK),
    ({"type": "string"}, 1, [("p", "Not a valid string")]),
    ({"type": "string"}, None, [("p", "Not a valid string")]),
    ({"type": "integer"}, 0, OK),
    ({"type": "integer"}, -(2**70), OK),
    ({"type": "integer"}, True, [("p", "Not a valid integer")]),
    ({"type": "integer"}, False, [("p", "Not a valid integer")]),
    ({"type": "integer"}, 1.5, [("p", "Not a valid integer")]),
    ({"type": "integer"}, 1.0, [("p", "Not a valid integer")]),
    ({"type": "integer"}, "1", [("p", "Not a valid integer")]),
    ({"type": "number"}, 1, OK),
    ({"type": "number"}, 1.5, OK),
    ({"type": "number"}, True, [("p", "Not a valid number")]),
    ({"type": "number"}, "1.5", [("p", "Not a valid number")]),
    ({"type": "boolean"}, True, OK),
    ({"type": "boolean"}, False, OK),
    ({"type": "boolean"}, 0, [("p", "Not a valid boolean")]),
    ({"type": "boolean"}, 1, [("p", "Not a valid boolean")]),
    ({"type": "null"}, None, OK),
    ({"type": "null"}, 0, [("p", "Must be null")]),
    ({"type": "object"}, {}, OK),
    ({"type": "object"}, [], [("p", "Not a valid object")]),
    ({"type": "array"}, [], OK),
    ({"type": "array"}, (), [("p", "Not a valid array")]),
    ({"type": "array"}, {}, [("p", "Not a valid array")]),
    ({"type": ["string", "null"]}, None, OK),
    ({"type": ["string", "null"]}, "x", OK),
    ({"type": ["string", "null"]}, 1, [("p", "Not a valid string or null")]),
    ({"type": ["integer", "boolean"]}, True, OK),
    ({"type": ["integer", "boolean"]}, 1, OK),
    ({"type": ["integer", "boolean"]}, 1.5, [("p", "Not a valid integer or boolean")]),
    ({"type": ["number", "string"]}, False, [("p", "Not a valid number or string")]),
    ({}, object(), OK),
    (True, object(), OK),
    (False, None, [("p", "Not allowed")]),
]

ENUM_CONST_CASES: list[Case] = [
    ({"enum": ["a", "b"]}, "a", OK),
    ({"enum": ["a", "b"]}, "c", [("p", "Must be one of: a, b")]),
    ({"enum": ["a", "b"]}, ["a"], [("p", "Must be one of: a, b")]),
    ({"enum": ["a", 1, None]}, None, OK),
    ({"enum": ["a", 1, None]}, 1.0, OK),
    ({"enum": ["a", 1, None]}, True, [("p", "Must be one of: a, 1, null")]),
    ({"enum": [True]}, 1, [("p", "Must be one of: true")]),
    ({"enum": [[1, 2], {"k": "v"}]}, [1, 2], OK),
    ({"enum": [[1, 2], {"k": "v"}]}, [2, 1], [("p", 'Must be one of: [1, 2], {"k": "v"}')]),
    ({"enum": [[1, 2], {"k": "v"}]}, {"k": "v"}, OK),
    ({"enum": [[1, 2], {"k": "v"}]}, [True, 2], [("p", 'Must be one of: [1, 2], {"k": "v"}')]),
    ({"enum": [(1, 2)]}, [1, 2], OK),
    ({"const": "x"}, "x", OK),
    ({"const": "x"}, "y", [("p", "Must be x")]),
    ({"const": 0}, False, [("p", "Must be 0")]),
    ({"const": 0}, 0.0, OK),
    ({"const": None}, None, OK),
    ({"const": {"a": [1]}}, {"a": [1]}, OK),
    ({"const": {"a": [1]}}, {"a": [1], "b": 2}, [("p", 'Must be {"a": [1]}')]),
]

OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "limit": {"type": "integer", "minimum": 0},
        "inner": {
            "type": "object",
            "properties": {"flag": {"type": "boolean"}},
            "required": ["flag"],
            "additionalProperties": False,
        },
    },
    "required": ["name"],
}

OBJECT_CASES: list[Case] = [
    (OBJECT_SCHEMA, {"name": "n"}, OK),
    (OBJECT_SCHEMA, {"name": "n", "other": [1]}, OK),
    (OBJECT_SCHEMA, {}, [("p.name", "Field is required")]),
    (OBJECT_SCHEMA, {"name": "n", "limit": -1}, [("p.limit", "Must be at least 0")]),
    (OBJECT_SCHEMA, {"name": "n", "limit": True}, [("p.limit", "Not a valid integer")]),
    (
        OBJECT_SCHEMA,
        {"name": "", "limit": "x", "inner": {"bad": 1}},
        [
            ("p.name", "Must be at least 1 character long"),
            ("p.limit", "Not a valid integer"),
            ("p.inner.bad", "Unexpected field"),
            ("p.inner.flag", "Field is required"),
        ],
    ),
    (OBJECT_SCHEMA, {"name": "n", "inner": {"flag": 1}}, [("p.inner.flag", "Not a valid boolean")]),
    ({"required": ["a"]}, {}, [("p.a", "Field is required")]),
    ({"required": ["a"]}, "not an object", OK),
    ({"properties": {"a": {"type": "string"}}}, [1], OK),
    ({"additionalProperties": False}, {}, OK),
    ({"additionalProperties": False}, {"x": 1}, [("p.x", "Unexpected field")]),
    ({"additionalProperties": True}, {"x": 1}, OK),
    (
        {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
        {"a": "s", "b": 1, "c": "s"},
        [("p.c", "Not a valid integer")],
    ),
    ({"additionalProperties": {"type": "integer"}}, {1: "s"}, [("p.1", "Not a valid integer")]),
]

ARRAY_CASES: list[Case] = [
    ({"items": {"type": "integer"}}, [1, 2], OK),
    (
        {"items": {"type": "integer"}},
        [1, "a", 2, None],
        [("p.1", "Not a valid integer"), ("p.3", "Not a valid integer")],
    ),
    ({"items": {"type": "integer"}}, "not an array", OK),
    ({"items": False}, [], OK),
    ({"items": False}, [1], [("p.0", "Not allowed")]),
    ({"minItems": 1}, [], [("p", "Must have at least 1 item")]),
    ({"minItems": 2}, [1], [("p", "Must have at least 2 items")]),
    ({"minItems": 2}, [1, 2], OK),
    ({"minItems": 2}, "x", OK),
    ({"maxItems": 1}, [1, 2], [("p", "Must have at most 1 item")]),
    ({"maxItems": 1}, [1], OK),
    ({"uniqueItems": True}, [1, 2], OK),
    ({"uniqueItems": True}, [1, 1.0], [("p", "Items must be unique")]),
    ({"uniqueItems": True}, [1, True], OK),
    ({"uniqueItems": True}, [0, False, None, "", [], {}], OK),
    ({"uniqueItems": True}, [{"a": [1]}, {"a": [1]}], [("p", "Items must be unique")]),
    ({"uniqueItems": True}, [[1, 2], [2, 1]], OK),
    ({"uniqueItems": False}, [1, 1], OK),
    (
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "tags": {"items": {"enum": ["x"]}}},
                "required": ["path"],
            },
        },
        [{"path": "/a"}, {"tags": ["x", "y"]}, {"path": 3}],
        [
            ("p.1.tags.1", "Must be one of: x"),
            ("p.1.path", "Field is required"),
            ("p.2.path", "Not a valid string"),
        ],
    ),
]

STRING_CASES: list[Case] = [
    ({"minLength": 2}, "ab", OK),
    ({"minLength": 2}, "a", [("p", "Must be at least 2 characters long")]),
    ({"minLength": 2}, 1, OK),
    ({"maxLength": 2}, "abc", [("p", "Must be at most 2 characters long")]),
    ({"maxLength": 1}, "é", OK),
    ({"maxLength": 1}, "\U0001f600", OK),
    ({"maxLength": 2}, ["a", "b", "c"], OK),
    ({"pattern": "^[a-z]+$"}, "abc", OK),
    ({"pattern": "^[a-z]+$"}, "abc1", [("p", "Does not match pattern ^[a-z]+$")]),
    ({"pattern": "b"}, "abc", OK),
    ({"pattern": "^b"}, "abc", [("p", "Does not match pattern ^b")]),
    ({"pattern": "^b"}, 5, OK),
    ({"format": "date-time"}, "not a date", OK),
]

NUMBER_CASES: list[Case] = [
    ({"minimum": 0}, 0, OK),
    ({"minimum": 0}, -1, [("p", "Must be at least 0")]),
    ({"minimum": 0}, -0.5, [("p", "Must be at least 0")]),
    ({"minimum": 0.5}, 0, [("p", "Must be at least 0.5")]),
    ({"minimum": 1}, True, OK),
    ({"minimum": 1}, "0", OK),
    ({"maximum": 10}, 10, OK),
    ({"maximum": 10}, 10.01, [("p", "Must be at most 10")]),
    ({"exclusiveMinimum": 0}, 0, [("p", "Must be greater than 0")]),
    ({"exclusiveMinimum": 0}, 1e-9, OK),
    ({"exclusiveMaximum": 5}, 5, [("p", "Must be less than 5")]),
    ({"exclusiveMaximum": 5}, 4, OK),
    ({"maximum": 2**64}, 2**64 + 1, [("p", "Must be at most 18446744073709551616")]),
    (
        {"type": "integer", "minimum": 1, "maximum": 0},
        5,
        [("p", "Must be at most 0")],
    ),
    ({"type": "integer", "minimum": 0}, "x", [("p", "Not a valid integer")]),
]

COMBINATOR_CASES: list[Case] = [
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "x", OK),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, 1, OK),
    (
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        1.5,
        [("p", "Does not match any of the allowed schemas")],
    ),
    (
        {"anyOf": [{"type": "null"}, OBJECT_SCHEMA]},
        {"name": 1},
        [("p.name", "Not a valid string")],
    ),
    ({"anyOf": [{"type": "null"}, OBJECT_SCHEMA]}, None, OK),
    (
        {"anyOf": [{"type": "string", "minLength": 3}, {"type": "string", "pattern": "^x"}]},
        "ab",
        [("p", "Does not match any of the allowed schemas")],
    ),
    (
        {"anyOf": [{"type": "null"}, {"enum": ["a"]}]},
        "b",
        [("p", "Must be one of: a")],
    ),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, 1, OK),
    (
        {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        1,
        [("p", "Matches more than one of the allowed schemas")],
    ),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1.5, OK),
    (
        {"oneOf": [{"type": "integer"}, {"type": "null"}]},
        "x",
        [("p", "Does not match any of the allowed schemas")],
    ),
    (
        {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        -1,
        [("p", "Must be at least 0")],
    ),
    (
        {"type": ["array", "null"], "items": {"anyOf": [{"const": 1}, {"const": "one"}]}},
        [1, "one", 2],
        [("p.2", "Does not match any of the allowed schemas")],
    ),
]

ANNOTATION_CASES: list[Case] = [
    (
        {
            "title": "t",
            "description": "d",
            "examples": [1],
            "default": 1,
            "$comment": "c",
            "format": "uri",
            "readOnly": False,
            "writeOnly": True,
            "deprecated": True,
        },
        "anything",
        OK,
    ),
]


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    TYPE_CASES
    + ENUM_CONST_CASES
    + OBJECT_CASES
    + ARRAY_CASES
    + STRING_CASES
    + NUMBER_CASES
    + COMBINATOR_CASES
    + ANNOTATION_CASES,
)
def test_keyword(
    schema: dict[str, Any] | bool, value: Any, expected: list[tuple[str, str]]
) -> None:
    assert errors_of(schema, value) == expected


def test_root_path_is_empty_by_default() -> None:
    validator = compile_schema(OBJECT_SCHEMA)
    assert validator.validate({"limit": -1}) == [
        ("limit", "Must be at least 0", E),
        ("name", "Field is required", E),
    ]
    assert validator.validate(1) == [("", "Not a valid object", E)]
    assert validator.is_valid({"name": "x"})
    assert not validator.is_valid({})


def test_validator_is_reusable() -> None:
    validator = compile_schema({"type": "integer"})
    assert validator.validate("x", "a") == [("a", "Not a valid integer", E)]
    assert validator.validate(1, "a") == []
    assert validator.validate("x", "b") == [("b", "Not a valid integer", E)]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"minlength": 1}, "unknown keyword(s): minlength"),
        ({"properties": {"a": {"tpye": "string"}}}, "#/properties/a: unknown keyword(s): tpye"),
        ({"items": {"items": {"nullable": True}}}, "#/items/items: unknown keyword(s): nullable"),
        ({"anyOf": [{}, {"$ref": "#/x"}]}, "#/anyOf/1: unknown keyword(s): $ref"),
        ({"allOf": [{}]}, "unknown keyword(s): allOf"),
        ({"type": "int"}, "bad type 'int'"),
        ({"type": []}, "bad type []"),
        ({"type": ["string", "string"]}, "bad type"),
        ({"type": 1}, "bad type"),
        ({"minLength": -1}, "non-negative integer"),
        ({"minItems": 1.0}, "non-negative integer"),
        ({"maxItems": True}, "non-negative integer"),
        ({"minimum": "0"}, "must be a number"),
        ({"maximum": False}, "must be a number"),
        ({"pattern": "("}, "bad regular expression"),
        ({"pattern": 1}, "must be a string"),
        ({"enum": []}, "non-empty list"),
        ({"enum": "ab"}, "non-empty list"),
        ({"enum": [object()]}, "not a JSON value"),
        ({"const": {1, 2}}, "not a JSON value"),
        ({"required": "a"}, "distinct strings"),
        ({"required": ["a", "a"]}, "distinct strings"),
        ({"properties": []}, "object of schemas"),
        ({"properties": {"a": 1}}, "must be an object or a boolean"),
        ({"additionalProperties": 1}, "must be an object or a boolean"),
        ({"items": [{}]}, "tuple form is not supported"),
        ({"uniqueItems": 1}, "must be a boolean"),
        ({"anyOf": []}, "non-empty list of schemas"),
        ({"oneOf": {}}, "non-empty list of schemas"),
        ({"oneOf": [{"type": "nil"}]}, "bad type"),
    ],
)
def test_compile_time_rejection(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match="schema at ") as info:
        compile_schema(schema)
    assert fragment in str(info.value)


# --- ParamsBinder ---------------------------------------------------------------------------

PARAMS = (
    Param("id", {"type": "integer"}),
    Param("options", {"type": "object", "properties": {"force": {"type": "boolean"}}}, False, {}),
    Param("tags", {"type": "array", "items": {"type": "string"}}, False, ["default"]),
)


def bind_errors(binder: ParamsBinder, params: Any) -> list[tuple[str, str, int]]:
    with pytest.raises(ValidationErrors) as info:
        binder.bind(params)
    assert info.value.errno == E
    return info.value.errors


def test_bind_positional() -> None:
    binder = ParamsBinder(PARAMS)
    assert binder.bind([1, {"force": True}, ["x"]]) == [1, {"force": True}, ["x"]]
    assert binder.bind([1, {"force": True}]) == [1, {"force": True}, ["default"]]
    assert binder.bind([1]) == [1, {}, ["default"]]


def test_bind_by_name() -> None:
    binder = ParamsBinder(PARAMS)
    assert binder.bind({"id": 1}) == [1, {}, ["default"]]
    assert binder.bind({"tags": [], "id": 2}) == [2, {}, []]
    assert binder.bind({"id": 3, "options": {}, "tags": ["a"]}) == [3, {}, ["a"]]


def test_bind_missing_required() -> None:
    binder = ParamsBinder(PARAMS)
    cases: list[Any] = [None, [], {}, {"tags": []}]
    for params in cases:
        assert bind_errors(binder, params) == [("id", "Field is required", E)]


def test_bind_too_many_positional() -> None:
    binder = ParamsBinder(PARAMS)
    assert bind_errors(binder, [1, {}, [], 4]) == [
        ("params", "Too many arguments: expected at most 3", E)
    ]


def test_bind_unknown_name() -> None:
    binder = ParamsBinder(PARAMS)
    assert bind_errors(binder, {"id": 1, "force": True}) == [("force", "Unknown parameter", E)]


def test_bind_collects_all_errors() -> None:
    binder = ParamsBinder(PARAMS)
    errors = bind_errors(binder, ["x", {"force": 1}, ["a", 2], None])
    assert errors == [
        ("params", "Too many arguments: expected at most 3", E),
        ("id", "Not a valid integer", E),
        ("options.force", "Not a valid boolean", E),
        ("tags.1", "Not a valid string", E),
    ]
    errors = bind_errors(binder, {"bogus": 1, "tags": [3]})
    assert errors == [
        ("bogus", "Unknown parameter", E),
        ("id", "Field is required", E),
        ("tags.0", "Not a valid string", E),
    ]


def test_bind_error_is_one_validation_errors() -> None:
    binder = ParamsBinder(PARAMS)
    with pytest.raises(ValidationErrors) as info:
        binder.bind(["x", {"force": 1}])
    assert info.value.extra == [
        ["id", "Not a valid integer", E],
        ["options.force", "Not a valid boolean", E],
    ]


def test_bind_rejects_other_params_shapes() -> None:
    binder = ParamsBinder(PARAMS)
    assert bind_errors(binder, "x") == [("params", "Must be an array or an object", E)]


def test_defaults_are_deep_copies() -> None:
    default = {"nested": {"list": [1]}}
    binder = ParamsBinder((Param("o", {"type": "object"}, False, default),))
    first = binder.bind([])[0]
    first["nested"]["list"].append(2)
    second = binder.bind({})[0]
    assert second == {"nested": {"list": [1]}}
    assert second is not first
    assert default == {"nested": {"list": [1]}}


def test_atomic_default_and_none() -> None:
    binder = ParamsBinder((Param("a", {"type": "string"}, False, "x"), Param("b", required=False)))
    assert binder.bind(None) == ["x", None]


def test_defaults_are_not_validated_but_given_values_are() -> None:
    binder = ParamsBinder((Param("name", {"type": "string"}, required=False),))
    assert binder.bind([]) == [None]
    assert bind_errors(binder, [None]) == [("name", "Not a valid string", E)]


def test_no_params() -> None:
    binder = ParamsBinder(())
    assert binder.bind(None) == []
    assert binder.bind([]) == []
    assert binder.bind({}) == []
    assert bind_errors(binder, [1]) == [("params", "Too many arguments: expected at most 0", E)]
    assert bind_errors(binder, {"x": 1}) == [("x", "Unknown parameter", E)]


def test_bind_does_not_copy_given_values() -> None:
    options = {"force": True}
    assert ParamsBinder(PARAMS).bind([1, options])[1] is options


def test_binder_rejects_bad_declarations() -> None:
    with pytest.raises(ValueError, match="declared twice: a"):
        ParamsBinder((Param("a"), Param("a")))
    with pytest.raises(ValueError, match=r"param 'b': schema at #/properties/x: unknown"):
        ParamsBinder((Param("b", {"properties": {"x": {"bogus": 1}}}),))


def test_redact() -> None:
    params = (Param("user"), Param("password", secret=True), Param("otp", secret=True))
    assert redact(["root", "hunter2", "123"], params) == ["root", REDACTED, REDACTED]
    assert redact(["root"], params) == ["root"]
    args = ["root", "hunter2"]
    assert ParamsBinder(params[:2]).redact(args) == ["root", REDACTED]
    assert args == ["root", "hunter2"]


def test_schema_for_docs() -> None:
    params = (
        Param("id", {"type": "integer"}, description="The id"),
        Param("password", {"type": "string", "description": "kept"}, secret=True),
        Param("options", {"type": "object"}, False, {"a": [1]}),
    )
    doc = schema_for_docs(params)
    assert doc == {
        "type": "array",
        "prefixItems": [
            {"type": "integer", "title": "id", "description": "The id"},
            {"type": "string", "title": "password", "description": "kept", "writeOnly": True},
            {"type": "object", "title": "options", "default": {"a": [1]}},
        ],
        "items": False,
        "minItems": 2,
        "maxItems": 3,
    }
    doc["prefixItems"][2]["default"]["a"].append(2)
    assert params[2].default == {"a": [1]}
    assert "title" not in params[0].schema
    assert ParamsBinder(params).schema() == schema_for_docs(params)
    assert schema_for_docs(())["minItems"] == 0


def test_schema_for_docs_min_items_follows_last_required() -> None:
    params = (Param("a", required=False), Param("b"), Param("c", required=False))
    assert schema_for_docs(params)["minItems"] == 2


# --- agreement with the jsonschema library --------------------------------------------------

ORACLE_SCHEMAS: list[dict[str, Any]] = [
    OBJECT_SCHEMA,
    {
        "type": ["object", "null"],
        "properties": {
            "a": {"type": "integer", "exclusiveMinimum": -2, "maximum": 3},
            "b": {"type": ["string", "null"], "maxLength": 2, "pattern": "^[ab]"},
            "c": {"type": "array", "items": {"enum": [1, "a", None, True]}, "uniqueItems": True},
        },
        "additionalProperties": {"type": "number", "minimum": 0, "exclusiveMaximum": 2.5},
    },
    {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "items": {
            "anyOf": [
                {"type": "boolean"},
                {
                    "type": "object",
                    "properties": {"a": {}},
                    "required": ["a"],
                    "additionalProperties": False,
                },
                {"const": [1, {"b": None}]},
            ]
        },
    },
    {
        "oneOf": [
            {"type": "number", "minimum": 0},
            {"type": "integer", "maximum": 1},
            {"type": "string", "minLength": 1},
            {"type": "array", "uniqueItems": True},
        ]
    },
]

KEYS = st.sampled_from(["a", "b", "c", "d", "name", "limit", "inner", "flag"])
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-4, max_value=4)
    | st.sampled_from([0.0, 1.0, -1.5, 0.5, 2.5, 3.0, 1e300])
    | st.text(alphabet="abx1é", max_size=3)
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def _oracles() -> list[Any] | None:
    """jsonschema validators of ORACLE_SCHEMAS, or None when the library is absent."""
    try:
        jsonschema = importlib.import_module("jsonschema")
    except ImportError:
        return None
    base = jsonschema.Draft202012Validator
    # Documented divergence: "integer" does not accept floats such as 1.0.
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    )
    equal = importlib.import_module("jsonschema._utils").equal

    def unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Any:
        """jsonschema's own check sorts the items first and its sort takes True for 1, so
        it passes [[1, 0, False], [True, False, False], [1, 0, False]]: compare each pair."""
        if unique and validator.is_type(instance, "array"):
            for i, item in enumerate(instance):
                if any(equal(item, other) for other in instance[i + 1 :]):
                    yield jsonschema.ValidationError(f"{instance!r} has non-unique elements")
                    return

    oracle_class = jsonschema.validators.extend(
        base, validators={"uniqueItems": unique_items}, type_checker=checker
    )
    return [oracle_class(schema) for schema in ORACLE_SCHEMAS]


TYPED_LEAVES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(alphabet="abx1é", max_size=3),
    "integer": st.integers(min_value=-4, max_value=4),
    "number": st.integers(min_value=-4, max_value=4) | st.sampled_from([0.5, 2.5, -1.5]),
    "boolean": st.booleans(),
    "null": st.none(),
}


def near(schema: Any) -> st.SearchStrategy[Any]:
    """Values shaped like ``schema`` wants them, so that many (not all) are valid."""
    if not isinstance(schema, dict):
        return LEAVES
    names = schema.get("type", [])
    names = [names] if isinstance(names, str) else names
    options = [TYPED_LEAVES[name] for name in names if name in TYPED_LEAVES]
    options += [] if names else [LEAVES]
    options += [st.sampled_from(schema["enum"])] if "enum" in schema else []
    options += [st.just(schema["const"])] if "const" in schema else []
    options += [near(branch) for branch in schema.get("anyOf", []) + schema.get("oneOf", [])]
    if "properties" in schema or "required" in schema:
        props = {key: near(sub) for key, sub in schema.get("properties", {}).items()}
        required = {key: props.pop(key, LEAVES) for key in schema.get("required", [])}
        extra: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
            KEYS, LEAVES, max_size=1
        )
        shaped = st.fixed_dictionaries(required, optional=props)
        options.append(st.tuples(shaped, extra).map(lambda pair: {**pair[1], **pair[0]}))
    if "items" in schema or "array" in names:
        options.append(st.lists(near(schema.get("items", {})), max_size=4))
    return st.one_of(options)


ORACLES = _oracles()
COMPILED = [compile_schema(schema) for schema in ORACLE_SCHEMAS]
NEAR = [JSON_VALUES | near(schema) for schema in ORACLE_SCHEMAS]


@pytest.mark.skipif(ORACLES is None, reason="jsonschema is not installed")
@pytest.mark.parametrize("index", range(len(ORACLE_SCHEMAS)))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_with_jsonschema(index: int, data: st.DataObject) -> None:
    assert ORACLES is not None
    value = data.draw(NEAR[index])
    ours = COMPILED[index]
    assert ours.is_valid(value) == ORACLES[index].is_valid(value), ours.validate(value)


def test_integral_float_is_not_an_integer_unlike_jsonschema() -> None:
    # The one documented divergence from JSON Schema, which treats 1.0 as an integer.
    assert not compile_schema({"type": "integer"}).is_valid(1.0)
    assert compile_schema({"type": "number"}).is_valid(1.0)


def test_unique_items_with_booleans_beside_numbers() -> None:
    """The case jsonschema's sorted check misses (found by the oracle test): a repeat
    separated by an item that sorts equal to it (True == 1 in Python, not in JSON)."""
    value = [[1, 0, False], [True, False, False], [1, 0, False]]
    validator = compile_schema({"type": "array", "uniqueItems": True})
    assert not validator.is_valid(value)
    assert validator.is_valid([[1, 0, False], [True, False, False]])
