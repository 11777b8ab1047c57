"""The REST facade's routes and params, in memory: which route a method gets, how a path is
matched, how a query string and a body become params."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from middlewared.errors import ParseError, ValidationErrors
from middlewared.http.openapi import summary
from middlewared.http.restmap import Kind, NoRoute, Operation, Router, build_operations
from middlewared.http.restparams import query_params, request_params
from middlewared.registry import Access, JobOptions, MethodSpec, Param, Registry
from middlewared.services.schemas import QUERY_PARAMS

INT = {"type": "integer"}
OBJ = {"type": "object"}


def specs() -> list[MethodSpec]:
    thing = Registry("thing")
    conf = Registry("app.conf")
    cmd = Registry("cmd")

    async def f(ctx: Any, *args: Any) -> None:
        """Do it."""

    thing.method(params=QUERY_PARAMS, name="query")(f)
    thing.method(params=[Param("data", OBJ)], name="create")(f)
    thing.method(params=[Param("id", INT), Param("data", OBJ)], name="update")(f)
    thing.method(params=[Param("id", INT)], name="delete")(f)
    thing.method(params=[Param("a", INT), Param("b", INT, required=False)], name="add")(f)
    thing.method(params=[Param("x")], job=JobOptions(), name="run")(f)
    thing.method(params=[], job=JobOptions(pipes=frozenset({"input"})), name="load")(f)
    thing.method(access=Access.PRIVATE, name="secret")(f)
    conf.method(name="config")(f)
    conf.method(params=[Param("changes", OBJ)], name="update")(f)
    cmd.method(params=QUERY_PARAMS, name="query")(f)
    cmd.method(params=[Param("name", {"type": "string"})], name="delete")(f)
    cmd.method(params=[Param("name", {"type": "string"}), Param("n", INT)], name="show")(f)
    return [*thing.methods.values(), *conf.methods.values(), *cmd.methods.values()]


def routes() -> dict[tuple[str, str], Operation]:
    return {(op.verb, op.path): op for op in build_operations(specs())}


def test_crud_config_and_call_routes() -> None:
    r = routes()
    assert r["GET", "/thing"].method == "thing.query" and r["GET", "/thing"].kind is Kind.FILTERS
    lookup = r["GET", "/thing/id/{id}"]
    assert (lookup.method, lookup.kind, lookup.id_name) == ("thing.query", Kind.LOOKUP, "id")
    assert r["POST", "/thing"].method == "thing.create"
    assert r["PUT", "/thing/id/{id}"].method == "thing.update"
    assert r["DELETE", "/thing/id/{id}"].method == "thing.delete"
    assert r["POST", "/thing/add"].method == "thing.add"
    assert r["GET", "/thing/query"].kind is Kind.FILTERS
    assert ("GET", "/thing/add") not in r  # takes params: POST only
    # A config namespace (dots are path segments).
    assert r["GET", "/app/conf"].method == "app.conf.config"
    assert r["PUT", "/app/conf"].method == "app.conf.update"
    assert r["GET", "/app/conf/config"].method == "app.conf.config"
    # Items named by a string: looked up by that field.
    assert r["GET", "/cmd/id/{id}"].id_name == "name"
    # Item methods: those whose first param is the item's id.
    assert ("POST", "/thing/id/{id}/run") not in r  # its first param is x, not id
    assert r["POST", "/cmd/id/{id}/show"].method == "cmd.show"
    assert ("POST", "/thing/id/{id}/add") not in r  # its first param is not the id
    # Private methods and jobs with pipes are not routed.
    assert not [k for k in r if k[1].endswith(("/secret", "/load"))]


def test_router_matches_ids_and_says_which_verbs() -> None:
    router = Router(build_operations(specs()))
    op, ident = router.match("PUT", "/thing/id/12")
    assert (op.method, ident) == ("thing.update", "12")
    op, ident = router.match("DELETE", "/cmd/id/a%2Fb/")
    assert (op.method, ident) == ("cmd.delete", "a/b")
    op, ident = router.match("POST", "/cmd/id/x/show")
    assert (op.method, ident) == ("cmd.show", "x")
    with pytest.raises(NoRoute) as e:
        router.match("PUT", "/thing")
    assert e.value.allowed == ["GET", "POST"]
    with pytest.raises(NoRoute) as e:
        router.match("GET", "/nothing/here")
    assert e.value.allowed == []


def test_query_string_as_filters_and_options() -> None:
    query = MultiDict(
        [
            ("name", "x"),
            ("n__gte", "5"),
            ("n__lt", '"7"'),
            ("tag__in", "a,b"),
            ("k__in", "[1, 2]"),
            ("a__b", "1"),  # not an operator: a field named a__b
            ("name", "y"),
            ("limit", "2"),
            ("offset", "1"),
            ("sort", "-n,name"),
            ("auth_token", "secret"),
        ]
    )
    filters, options = query_params(query)
    assert filters == [
        ["name", "=", "x"],
        ["name", "=", "y"],
        ["n", ">=", 5],
        ["n", "<", "7"],
        ["tag", "in", ["a", "b"]],
        ["k", "in", [1, 2]],
        ["a__b", "=", 1],
    ]
    assert options == {"limit": 2, "offset": 1, "order_by": ["-n", "name"]}
    with pytest.raises(ValidationErrors):
        query_params(MultiDict([("limit", "1"), ("limit", "2")]))


def test_body_and_path_as_params() -> None:
    r = routes()
    empty: MultiDict[str] = MultiDict()
    # One param: the body is its value; the path's id goes first.
    assert request_params(r["PUT", "/thing/id/{id}"], "3", empty, b'{"a": 1}') == [3, {"a": 1}]
    assert request_params(r["POST", "/thing/run"], None, empty, b"[1, 2]") == [[1, 2]]
    assert request_params(r["POST", "/thing/run"], None, empty, b"") == []
    # Several: an array or an object by name.
    assert request_params(r["POST", "/thing/add"], None, empty, b"[1]") == [1]
    assert request_params(r["POST", "/thing/add"], None, empty, b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValidationErrors):
        request_params(r["POST", "/thing/add"], None, empty, b"1")
    with pytest.raises(ParseError):
        request_params(r["POST", "/thing/add"], None, empty, b"[1")
    # A string id stays text; a lookup asks the query for exactly one item.
    assert request_params(r["DELETE", "/cmd/id/{id}"], "12", empty, b"") == ["12"]
    # An item method: the id, then the body's one param.
    assert request_params(r["POST", "/cmd/id/{id}/show"], "x", empty, b"3") == ["x", 3]
    assert request_params(r["GET", "/thing/id/{id}"], "12", empty, b"") == [
        [["id", "=", 12]],
        {"get": True},
    ]


def test_summary_is_the_first_sentence() -> None:
    assert summary("Query jobs. Full admins see all.\n\nMore.") == "Query jobs."
    assert summary("One line\nwrapped e.g. here") == "One line wrapped e.g. here"
