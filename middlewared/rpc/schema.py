"""A JSON Schema subset compiled into closures, and the binding of JSON-RPC params to methods."""

from __future__ import annotations

import copy
import errno
import functools
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.registry import Param

# One validation error: (dotted field path, message, errno).
Error = tuple[str, str, int]
# A compiled schema: appends the errors of ``value`` (found at ``path``) to the list.
Check = Callable[[Any, str, list[Error]], None]
Predicate = Callable[[Any], bool]
Predicate2 = Callable[[Any, Any], bool]
KeywordCompiler = Callable[[Any, str], Check | None]

EINVAL = errno.EINVAL
REDACTED = "********"
FIELD_REQUIRED = "Field is required"
UNEXPECTED_FIELD = "Unexpected field"
UNKNOWN_PARAMETER = "Unknown parameter"
NO_MATCH = "Does not match any of the allowed schemas"
MANY_MATCHES = "Matches more than one of the allowed schemas"

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "format",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})

# ``bool`` is a subclass of ``int``: it is tested first and only "boolean" accepts it.
_TYPE_CLASSES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}

_ATOMIC_DEFAULTS = (type(None), bool, int, float, str, bytes)


def _bad_schema(where: str, message: str) -> ValueError:
    return ValueError(f"schema at {where}: {message}")


def _accept(value: Any, path: str, errors: list[Error]) -> None:
    """The empty schema (or ``true``): anything goes."""


def _reject(value: Any, path: str, errors: list[Error]) -> None:
    """The ``false`` schema: nothing goes."""
    errors.append((path, "Not allowed", EINVAL))


def _child(path: str) -> str:
    """The prefix of the paths below ``path``."""
    return f"{path}." if path else ""


# --- JSON equality (for enum, const, uniqueItems) ---------------------------------------------


def _canon(value: Any) -> Any:
    """A hashable key equal for JSON-equal values: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z", None)
    if isinstance(value, list):
        return ("l", tuple(map(_canon, value)))
    if isinstance(value, dict):
        return ("d", frozenset((k, _canon(v)) for k, v in value.items()))
    return ("o", id(value))


def _json_value(value: Any, where: str) -> Any:
    """``value`` as JSON would carry it (tuples become lists), or a compile-time error."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise _bad_schema(where, f"not a JSON value: {value!r}") from exc


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- type --------------------------------------------------------------------------------------


def _parse_types(schema: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    if "type" not in schema:
        return None
    raw = schema["type"]
    names = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(names, list)
        or not names
        or len(set(map(str, names))) != len(names)
        or any(name not in _TYPE_CLASSES for name in names)
    ):
        raise _bad_schema(f"{where}/type", f"bad type {raw!r}")
    return tuple(names)


def _type_classes(names: Sequence[str]) -> tuple[tuple[type, ...], bool]:
    classes = tuple({cls for name in names for cls in _TYPE_CLASSES[name]})
    return classes, "boolean" in names


def _type_predicate(names: Sequence[str]) -> Predicate:
    classes, allow_bool = _type_classes(names)

    def accepts(value: Any) -> bool:
        return allow_bool if isinstance(value, bool) else isinstance(value, classes)

    return accepts


def _type_message(names: Sequence[str]) -> str:
    if tuple(names) == ("null",):
        return "Must be null"
    return "Not a valid " + " or ".join(names)


def _typed(names: Sequence[str], rest: tuple[Check, ...]) -> Check:
    """Checks the type first; the other keywords only run on a value of the right type."""
    classes, allow_bool = _type_classes(names)
    message = _type_message(names)

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if allow_bool if isinstance(value, bool) else isinstance(value, classes):
            for keyword in rest:
                keyword(value, path, errors)
        else:
            errors.append((path, message, EINVAL))

    return check


def _in_turn(checks: tuple[Check, ...]) -> Check:
    def check(value: Any, path: str, errors: list[Error]) -> None:
        for keyword in checks:
            keyword(value, path, errors)

    return check


# --- object ------------------------------------------------------------------------------------


def _object_check(
    props: dict[str, Check], required: tuple[str, ...], extra: Check | None, closed: bool
) -> Check:
    def check(value: Any, path: str, errors: list[Error]) -> None:
        if not isinstance(value, dict):
            return
        prefix = _child(path)
        for key, item in value.items():
            sub = props.get(key)
            if sub is not None:
                sub(item, prefix + key, errors)
            elif closed:
                errors.append((f"{prefix}{key}", UNEXPECTED_FIELD, EINVAL))
            elif extra is not None:
                extra(item, f"{prefix}{key}", errors)
        for name in required:
            if name not in value:
                errors.append((prefix + name, FIELD_REQUIRED, EINVAL))

    return check


def _required(raw: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(raw, list)
        or not all(isinstance(name, str) for name in raw)
        or len(set(raw)) != len(raw)
    ):
        raise _bad_schema(f"{where}/required", "must be a list of distinct strings")
    return tuple(raw)


def _compile_object(schema: Mapping[str, Any], where: str) -> Check:
    raw_props = schema.get("properties", {})
    if not isinstance(raw_props, Mapping) or not all(isinstance(k, str) for k in raw_props):
        raise _bad_schema(f"{where}/properties", "must be an object of schemas")
    props = {k: _compile(v, f"{where}/properties/{k}") for k, v in raw_props.items()}
    required = _required(schema.get("required", []), where)
    raw_extra = schema.get("additionalProperties", True)
    extra = None
    if not isinstance(raw_extra, bool):
        extra = _compile(raw_extra, f"{where}/additionalProperties")
    return _object_check(props, required, extra, raw_extra is False)


# --- array -------------------------------------------------------------------------------------


def _compile_items(raw: Any, where: str) -> Check | None:
    if not isinstance(raw, Mapping | bool):
        raise _bad_schema(where, "must be a schema (the tuple form is not supported)")
    sub = _compile(raw, where)
    if sub is _accept:
        return None

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if isinstance(value, list):
            prefix = _child(path)
            for index, item in enumerate(value):
                sub(item, f"{prefix}{index}", errors)

    return check


def _compile_unique(raw: Any, where: str) -> Check | None:
    if not isinstance(raw, bool):
        raise _bad_schema(where, "must be a boolean")
    if not raw:
        return None

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if isinstance(value, list) and len(set(map(_canon, value))) != len(value):
            errors.append((path, "Items must be unique", EINVAL))

    return check


# --- sizes and bounds --------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _size_compiler(
    kind: type[Sized], fails: Predicate2, template: str, word: str
) -> KeywordCompiler:
    """minLength & co: ``fails(len(value), limit)`` on values of ``kind``."""

    def compile_size(raw: Any, where: str) -> Check | None:
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise _bad_schema(where, "must be a non-negative integer")
        message = template.format(_plural(raw, word))

        def check(value: Any, path: str, errors: list[Error]) -> None:
            if isinstance(value, kind) and fails(len(value), raw):
                errors.append((path, message, EINVAL))

        return check

    return compile_size


def _bound_compiler(fails: Predicate2, template: str) -> KeywordCompiler:
    """minimum & co: ``fails(value, limit)`` on numbers (never on booleans)."""

    def compile_bound(raw: Any, where: str) -> Check | None:
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise _bad_schema(where, "must be a number")
        message = template.format(raw)

        def check(value: Any, path: str, errors: list[Error]) -> None:
            if isinstance(value, int | float) and not isinstance(value, bool) and fails(value, raw):
                errors.append((path, message, EINVAL))

        return check

    return compile_bound


# --- string ------------------------------------------------------------------------------------


def _compile_pattern(raw: Any, where: str) -> Check | None:
    if not isinstance(raw, str):
        raise _bad_schema(where, "must be a string")
    try:
        search = re.compile(raw).search
    except re.error as exc:
        raise _bad_schema(where, f"bad regular expression: {exc}") from exc
    message = f"Does not match pattern {raw}"

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if isinstance(value, str) and search(value) is None:
            errors.append((path, message, EINVAL))

    return check


# --- enum, const -------------------------------------------------------------------------------


def _compile_enum(raw: Any, where: str) -> Check | None:
    if not isinstance(raw, list) or not raw:
        raise _bad_schema(where, "must be a non-empty list")
    values = _json_value(raw, where)
    message = "Must be one of: " + ", ".join(map(_show, values))
    if all(isinstance(v, str) for v in values):
        strings = frozenset(values)

        def check_strings(value: Any, path: str, errors: list[Error]) -> None:
            if not (isinstance(value, str) and value in strings):
                errors.append((path, message, EINVAL))

        return check_strings
    keys = frozenset(map(_canon, values))

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if _canon(value) not in keys:
            errors.append((path, message, EINVAL))

    return check


def _compile_const(raw: Any, where: str) -> Check | None:
    expected = _canon(_json_value(raw, where))
    message = f"Must be {_show(raw)}"

    def check(value: Any, path: str, errors: list[Error]) -> None:
        if _canon(value) != expected:
            errors.append((path, message, EINVAL))

    return check


# --- anyOf, oneOf ------------------------------------------------------------------------------


def _branches(raw: Any, where: str) -> tuple[tuple[Check, ...], tuple[Predicate | None, ...]]:
    """The compiled branches, and for each the type it declares (None: any type)."""
    if not isinstance(raw, list) or not raw:
        raise _bad_schema(where, "must be a non-empty list of schemas")
    checks = tuple(_compile(branch, f"{where}/{i}") for i, branch in enumerate(raw))
    predicates: list[Predicate | None] = []
    for i, branch in enumerate(raw):
        names = _parse_types(branch, f"{where}/{i}") if isinstance(branch, Mapping) else None
        predicates.append(None if names is None else _type_predicate(names))
    return checks, tuple(predicates)


def _no_match(
    value: Any, path: str, predicates: tuple[Predicate | None, ...], found: list[list[Error]]
) -> list[Error]:
    """The errors of the one branch whose type fits ``value``, else a generic error."""
    fitting = [
        errors
        for accepts, errors in zip(predicates, found, strict=True)
        if accepts is None or accepts(value)
    ]
    if len(fitting) == 1:
        return fitting[0]
    return [(path, NO_MATCH, EINVAL)]


def _compile_any_of(raw: Any, where: str) -> Check | None:
    branches, predicates = _branches(raw, where)

    def check(value: Any, path: str, errors: list[Error]) -> None:
        found: list[list[Error]] = []
        for branch in branches:
            branch_errors: list[Error] = []
            branch(value, path, branch_errors)
            if not branch_errors:
                return
            found.append(branch_errors)
        errors.extend(_no_match(value, path, predicates, found))

    return check


def _compile_one_of(raw: Any, where: str) -> Check | None:
    branches, predicates = _branches(raw, where)

    def check(value: Any, path: str, errors: list[Error]) -> None:
        found: list[list[Error]] = []
        for branch in branches:
            branch_errors: list[Error] = []
            branch(value, path, branch_errors)
            found.append(branch_errors)
        matches = sum(not branch_errors for branch_errors in found)
        if matches > 1:
            errors.append((path, MANY_MATCHES, EINVAL))
        elif not matches:
            errors.extend(_no_match(value, path, predicates, found))

    return check


# --- the compiler ------------------------------------------------------------------------------

_KEYWORD_COMPILERS: dict[str, KeywordCompiler] = {
    "enum": _compile_enum,
    "const": _compile_const,
    "items": _compile_items,
    "minItems": _size_compiler(list, operator.lt, "Must have at least {}", "item"),
    "maxItems": _size_compiler(list, operator.gt, "Must have at most {}", "item"),
    "uniqueItems": _compile_unique,
    "minLength": _size_compiler(str, operator.lt, "Must be at least {} long", "character"),
    "maxLength": _size_compiler(str, operator.gt, "Must be at most {} long", "character"),
    "pattern": _compile_pattern,
    "minimum": _bound_compiler(operator.lt, "Must be at least {}"),
    "maximum": _bound_compiler(operator.gt, "Must be at most {}"),
    "exclusiveMinimum": _bound_compiler(operator.le, "Must be greater than {}"),
    "exclusiveMaximum": _bound_compiler(operator.ge, "Must be less than {}"),
    "anyOf": _compile_any_of,
    "oneOf": _compile_one_of,
}
KEYWORDS = frozenset({"type", *_OBJECT_KEYWORDS, *_KEYWORD_COMPILERS})
_KNOWN = KEYWORDS | ANNOTATIONS


def _compile(schema: Any, where: str) -> Check:
    if schema is True:
        return _accept
    if schema is False:
        return _reject
    if not isinstance(schema, Mapping):
        raise _bad_schema(where, "a schema must be an object or a boolean")
    unknown = sorted(str(key) for key in schema if key not in _KNOWN)
    if unknown:
        raise _bad_schema(where, "unknown keyword(s): " + ", ".join(unknown))
    checks: list[Check] = []
    if not _OBJECT_KEYWORDS.isdisjoint(schema):
        checks.append(_compile_object(schema, where))
    for key, raw in schema.items():
        compiler = _KEYWORD_COMPILERS.get(key)
        if compiler is not None and (check := compiler(raw, f"{where}/{key}")) is not None:
            checks.append(check)
    names = _parse_types(schema, where)
    if names is not None:
        return _typed(names, tuple(checks))
    if not checks:
        return _accept
    return checks[0] if len(checks) == 1 else _in_turn(tuple(checks))


class Validator:
    """A schema compiled once; ``validate`` never looks at the schema again."""

    __slots__ = ("check", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool, where: str = "#") -> None:
        self.schema = schema
        # The raw closure, for callers collecting the errors of several values in one list.
        self.check: Check = _compile(schema, where)

    def validate(self, value: Any, path: str = "") -> list[Error]:
        """The errors of ``value`` (empty: valid); fields are dotted paths below ``path``."""
        errors: list[Error] = []
        self.check(value, path, errors)
        return errors

    def is_valid(self, value: Any) -> bool:
        return not self.validate(value)


def compile_schema(schema: Mapping[str, Any] | bool) -> Validator:
    """Compile ``schema``; an unsupported keyword or a bad keyword value raises ValueError."""
    return Validator(schema)


# --- params ------------------------------------------------------------------------------------


def _default_factory(default: Any) -> Callable[[], Any]:
    """A fresh copy of ``default`` per call, so that a mutable default is never shared."""
    if isinstance(default, _ATOMIC_DEFAULTS):
        return lambda: default
    return functools.partial(copy.deepcopy, default)


# (name, check, required, default factory): unpacked in the hot loop of ``bind``.
_Slot = tuple[str, Check, bool, Callable[[], Any]]


def _slot(param: Param) -> _Slot:
    try:
        check = _compile(param.schema, "#")
    except ValueError as exc:
        raise ValueError(f"param {param.name!r}: {exc}") from exc
    return (param.name, check, param.required, _default_factory(param.default))


class ParamsBinder:
    """Turns a JSON-RPC ``params`` (absent, array or object) into validated positional args."""

    __slots__ = ("_hides", "_index", "_slots", "_too_many", "params")

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = tuple(params)
        names = [param.name for param in self.params]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"params declared twice: {', '.join(twice)}")
        self._slots = tuple(map(_slot, self.params))
        self._index = frozenset(names)
        message = f"Too many arguments: expected at most {len(names)}"
        self._too_many: Error = ("params", message, EINVAL)
        # Whether some param is secret or redacted (else the args are shown as they are).
        self._hides = any(p.hidden for p in self.params)

    def bind(self, params: list[Any] | dict[str, Any] | None) -> list[Any]:
        """The positional args for the method, or ValidationErrors listing every problem."""
        if params is None:
            params = []
        if isinstance(params, list):
            args, errors = self._positional(params)
        elif isinstance(params, dict):
            args, errors = self._by_name(params)
        else:
            raise ValidationErrors([("params", "Must be an array or an object", EINVAL)])
        if errors:
            raise ValidationErrors(errors)
        return args

    def _positional(self, params: list[Any]) -> tuple[list[Any], list[Error]]:
        errors: list[Error] = []
        given = len(params)
        if given > len(self._slots):
            errors.append(self._too_many)
        args: list[Any] = []
        for index, (name, check, required, make_default) in enumerate(self._slots):
            if index < given:
                value = params[index]
                check(value, name, errors)
                args.append(value)
            elif required:
                errors.append((name, FIELD_REQUIRED, EINVAL))
            else:
                args.append(make_default())
        return args, errors

    def _by_name(self, params: dict[str, Any]) -> tuple[list[Any], list[Error]]:
        errors: list[Error] = [
            (str(name), UNKNOWN_PARAMETER, EINVAL) for name in params if name not in self._index
        ]
        args: list[Any] = []
        for name, check, required, make_default in self._slots:
            if name in params:
                value = params[name]
                check(value, name, errors)
                args.append(value)
            elif required:
                errors.append((name, FIELD_REQUIRED, EINVAL))
            else:
                args.append(make_default())
        return args, errors

    def redact(self, args: list[Any]) -> list[Any]:
        """``args`` as the job's record shows them: secrets hidden (``args`` itself when
        no param hides anything; neither is changed afterwards)."""
        return redact(args, self.params) if self._hides else args

    def schema(self) -> dict[str, Any]:
        return schema_for_docs(self.params)


def redact(args: Sequence[Any], params: Sequence[Param]) -> list[Any]:
    """A copy of ``args`` with the values of secret params replaced by ``"********"`` (or
    by what their ``redact`` shows)."""
    redacted = list(args)
    for index, param in enumerate(params[: len(redacted)]):
        if param.secret:
            redacted[index] = REDACTED
        elif param.redact is not None:
            redacted[index] = param.redact(redacted[index])
    return redacted


def _param_doc(param: Param) -> dict[str, Any]:
    doc = copy.deepcopy(dict(param.schema))
    doc["title"] = param.name
    if param.description:
        doc["description"] = param.description
    if not param.required:
        doc["default"] = copy.deepcopy(param.default)
    if param.secret:
        doc["writeOnly"] = True
    return doc


def schema_for_docs(params: Sequence[Param]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of the whole positional ``params`` array."""
    min_items = max((index + 1 for index, p in enumerate(params) if p.required), default=0)
    return {
        "type": "array",
        "prefixItems": [_param_doc(param) for param in params],
        "items": False,
        "minItems": min_items,
        "maxItems": len(params),
    }
