"""@event rules: what parses and what is refused (naming ``arguments``), and the index: verbs,
values, selectors, ``!=`` with its bounded memory of previous values, removal, and that an
event costs the same however many triggers are registered elsewhere."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewared.errors import ValidationErrors
from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event
from middlewared.triggers.changes import ChangeTracker, fingerprint
from middlewared.triggers.rules import ALL_VERBS, Rule, RuleIndex, parse_rules

JOBS = "core.get_jobs"
FILES = "filesystem.files"


def ev(msg: str, id: Any, collection: str = JOBS, **fields: Any) -> Event:
    return Event(collection, msg, id, None if msg == REMOVED else fields)


def index_of(**triggers: str) -> RuleIndex:
    """An index of triggers named t<N> (their id is N) with those @event arguments."""
    index = RuleIndex()
    for name, arguments in triggers.items():
        index.add(int(name[1:]), parse_rules(arguments))
    return index


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "rules"),
    [
        ("core.get_jobs", [Rule(JOBS)]),
        ("core.get_jobs:CREATED", [Rule(JOBS, frozenset({ADDED}))]),
        ("core.get_jobs:created,Updated", [Rule(JOBS, frozenset({ADDED, CHANGED}))]),
        ("core.get_jobs:ALL:7", [Rule(JOBS, ALL_VERBS, frozenset({"7"}))]),
        (
            "core.get_jobs:UPDATED:SUCCESS,FAILED:state",
            [Rule(JOBS, frozenset({CHANGED}), frozenset({"SUCCESS", "FAILED"}), ("state",))],
        ),
        (
            "core.get_jobs:UPDATED:!=:progress.percent",
            [Rule(JOBS, frozenset({CHANGED}), selector=("progress", "percent"), changed=True)],
        ),
        (
            "filesystem.files:DELETED:image/jpeg:mime",
            [Rule(FILES, frozenset({REMOVED}), frozenset({"image/jpeg"}), ("mime",))],
        ),
        (
            "  core.get_jobs:CREATED \t filesystem.files  ",
            [Rule(JOBS, frozenset({ADDED})), Rule(FILES)],
        ),
    ],
)
def test_parse(arguments: str, rules: list[Rule]) -> None:
    assert parse_rules(arguments) == rules


@pytest.mark.parametrize(
    "text",
    [
        "core.get_jobs",
        "core.get_jobs:CREATED",
        "core.get_jobs:CREATED,DELETED",
        "core.get_jobs:UPDATED:FAILED,SUCCESS:state",
        "core.get_jobs:UPDATED:!=:state",
        "core.get_jobs:CREATED:5",
    ],
)
def test_rule_text_round_trips(text: str) -> None:
    [rule] = parse_rules(text)
    assert str(rule) == text
    assert parse_rules(str(rule)) == [rule]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("", "@event needs at least one rule: collection[:VERBS[:values[:selector]]]"),
        ("   ", "@event needs at least one rule"),
        (None, "@event needs at least one rule"),
        (["core.get_jobs"], "@event needs at least one rule"),
        (":CREATED", "rule ':CREATED': empty collection"),
        ("core.get_jobs:", "rule 'core.get_jobs:': empty verbs"),
        ("core.get_jobs:CREATED,", "rule 'core.get_jobs:CREATED,': empty item in verbs"),
        ("core.get_jobs:POST", "rule 'core.get_jobs:POST': unknown verb 'POST': CREATED, UPDATED"),
        ("core.get_jobs:CREATED:", "rule 'core.get_jobs:CREATED:': empty values"),
        ("core.get_jobs:CREATED::state", "rule 'core.get_jobs:CREATED::state': empty values"),
        ("core.get_jobs:CREATED:a,,b", "empty item in values 'a,,b'"),
        ("core.get_jobs:CREATED:a:", "rule 'core.get_jobs:CREATED:a:': selector '' is not"),
        ("core.get_jobs:CREATED:a:x..y", "selector 'x..y' is not a dotted field path"),
        ("core.get_jobs:UPDATED:!=", "'!=' needs a selector: core.get_jobs:UPDATED:!=:field"),
        ("core.get_jobs:UPDATED:!=,x:state", "'!=' stands alone in the values"),
        ("a:CREATED:b:c:d", "rule 'a:CREATED:b:c:d': too many ':' parts"),
    ],
)
def test_refused(arguments: object, message: str) -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_rules(arguments)
    [(field, reason, errno)] = e.value.errors
    assert (field, errno) == ("arguments", 22)
    assert reason.startswith((message, f"rule {arguments!r}: {message}")), reason


def test_every_bad_rule_is_reported() -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_rules("core.get_jobs:NOPE ok.collection :x")
    assert [m for _, m, _ in e.value.errors] == [
        "rule 'core.get_jobs:NOPE': unknown verb 'NOPE': CREATED, UPDATED, DELETED or ALL",
        "rule ':x': empty collection: collection[:VERBS[:values[:selector]]]",
    ]


# --- matching -----------------------------------------------------------------------------


def test_verbs() -> None:
    index = index_of(
        t1="core.get_jobs", t2="core.get_jobs:CREATED", t3="core.get_jobs:UPDATED,DELETED"
    )
    assert index.match(ev(ADDED, 1, state="WAITING")) == {1, 2}
    assert index.match(ev(CHANGED, 1, state="RUNNING")) == {1, 3}
    assert index.match(ev(REMOVED, 1)) == {1, 3}
    assert index.match(ev(ADDED, 1, FILES, path="/x")) == set()
    assert index.match(ev("notify", 1)) == set()


def test_values_and_selectors() -> None:
    index = index_of(
        t1="core.get_jobs:CREATED:5,6",  # the object's id
        t2="core.get_jobs:UPDATED:SUCCESS,FAILED:state",
        t3="core.get_jobs:UPDATED:alice:credentials.data.username",
        t4="core.get_jobs:UPDATED:100:progress.percent",
        t5="core.get_jobs:UPDATED:true:abortable",
        t6="core.get_jobs:UPDATED:b:tags",
        t7="core.get_jobs:UPDATED:x:items.1",
        t8="filesystem.files:CREATED:image/jpeg:mime",
    )
    assert index.match(ev(ADDED, 5)) == {1}
    assert index.match(ev(ADDED, "6")) == {1}
    assert index.match(ev(ADDED, 7)) == set()
    assert index.match(ev(CHANGED, 9, state="SUCCESS")) == {2}
    assert index.match(ev(CHANGED, 9, state="RUNNING")) == set()
    assert index.match(ev(CHANGED, 9, credentials={"data": {"username": "alice"}})) == {3}
    assert index.match(ev(CHANGED, 9, credentials={"data": None})) == set()
    assert index.match(ev(CHANGED, 9, progress={"percent": 100})) == {4}
    assert index.match(ev(CHANGED, 9, progress={"percent": 100.0})) == {4}
    assert index.match(ev(CHANGED, 9, abortable=True)) == {5}
    assert index.match(ev(CHANGED, 9, abortable=1)) == set()  # 1 is not true
    assert index.match(ev(CHANGED, 9, tags=["a", "b"])) == {6}
    assert index.match(ev(CHANGED, 9, items=["w", "x"])) == {7}
    assert index.match(ev(CHANGED, 9, items=["x"])) == set()
    assert index.match(ev(CHANGED, 9, state=None, progress=None)) == set()
    assert index.match(ev(ADDED, "/p/a.jpg", FILES, mime="image/jpeg")) == {8}
    assert index.match(ev(ADDED, "/p/a.png", FILES, mime="image/png")) == set()


def test_deleted_matches_only_by_id_it_has_no_fields() -> None:
    index = index_of(t1="core.get_jobs:DELETED:3", t2="core.get_jobs:DELETED:FAILED:state")
    assert index.match(ev(REMOVED, 3)) == {1}
    assert index.match(ev(REMOVED, 4)) == set()


def test_any_rule_of_a_trigger_fires_it_once() -> None:
    index = index_of(t1="core.get_jobs:CREATED core.get_jobs:CREATED:5 filesystem.files:DELETED")
    assert index.match(ev(ADDED, 5)) == {1}
    assert index.match(ev(REMOVED, "/x", FILES)) == {1}
    assert index.match(ev(CHANGED, 5)) == set()


def test_result_is_a_fresh_set() -> None:
    index = index_of(t1="core.get_jobs")
    index.match(ev(ADDED, 1)).add(99)
    assert index.match(ev(ADDED, 1)) == {1}


# --- "!=": the field changed ------------------------------------------------------------


def test_changed_counts_created_and_deleted() -> None:
    index = index_of(t1="core.get_jobs:CREATED,DELETED:!=:state")
    assert index.match(ev(ADDED, 1, state="WAITING")) == {1}
    assert index.match(ev(REMOVED, 1)) == {1}
    # No UPDATED in the rule: nothing is remembered.
    assert not index.changes.watches(JOBS)


def test_changed_on_updated_needs_a_previous_value() -> None:
    index = index_of(t1="core.get_jobs:UPDATED:!=:state")
    # Object 1 existed before anyone watched it: its first update has nothing to compare.
    assert index.match(ev(CHANGED, 1, state="RUNNING")) == set()
    assert index.match(ev(CHANGED, 1, state="RUNNING", progress=5)) == set()  # same state
    assert index.match(ev(CHANGED, 1, state="SUCCESS")) == {1}
    # An update that does not carry the field says nothing about it.
    assert index.match(ev(CHANGED, 1, progress=6)) == set()
    assert index.match(ev(CHANGED, 1, state="SUCCESS")) == set()
    # CREATED records the value: the next update compares with it.
    assert index.match(ev(ADDED, 2, state="WAITING")) == set()  # the rule is UPDATED only
    assert index.match(ev(CHANGED, 2, state="RUNNING")) == {1}


def test_changed_compares_json_values() -> None:
    index = index_of(t1="core.get_jobs:UPDATED:!=:result")
    index.match(ev(ADDED, 1, result={"a": 1, "b": [1, 2]}))
    assert index.match(ev(CHANGED, 1, result={"b": [1, 2], "a": 1})) == set()  # key order
    assert index.match(ev(CHANGED, 1, result={"b": [1, 2], "a": True})) == {1}  # 1 is not true
    assert index.match(ev(CHANGED, 1, result=None)) == {1}
    assert index.match(ev(CHANGED, 1, result=None)) == set()


def test_removed_object_is_forgotten() -> None:
    index = index_of(t1="core.get_jobs:UPDATED:!=:state")
    index.match(ev(ADDED, 1, state="A"))
    index.match(ev(REMOVED, 1))
    assert len(index.changes) == 0
    # A new object with the same id starts afresh.
    assert index.match(ev(CHANGED, 1, state="B")) == set()


def test_previous_values_are_bounded_and_evicted_means_unknown() -> None:
    index = RuleIndex(max_tracked_values=3)
    index.add(1, parse_rules("core.get_jobs:UPDATED:!=:state"))
    for job in range(10):
        index.match(ev(ADDED, job, state="WAITING"))
        assert len(index.changes) <= 3
    # Jobs 7, 8, 9 are remembered; job 0 was evicted: its change is a first sight.
    assert index.match(ev(CHANGED, 9, state="RUNNING")) == {1}
    assert index.match(ev(CHANGED, 0, state="RUNNING")) == set()
    assert index.match(ev(CHANGED, 0, state="SUCCESS")) == {1}
    # A touched value is kept over older ones (least recently updated goes first).
    index.match(ev(CHANGED, 9, state="RUNNING"))
    index.match(ev(ADDED, 100, state="WAITING"))
    assert index.match(ev(CHANGED, 9, state="DONE")) == {1}


def test_values_are_kept_only_for_watched_collections_and_fields() -> None:
    index = index_of(t1="core.get_jobs:UPDATED:!=:state", t2="filesystem.files")
    index.match(ev(ADDED, "/a", FILES, size=1, mime="text/plain"))
    index.match(ev(ADDED, 1, state="A", progress=1, result="big"))
    assert len(index.changes) == 1  # job 1's state only


def test_removal_unwatches_and_drops_the_values() -> None:
    index = index_of(t1="core.get_jobs:UPDATED:!=:state", t2="core.get_jobs:UPDATED:!=:state")
    index.match(ev(ADDED, 1, state="A"))
    index.remove(1)
    assert index.changes.watches(JOBS) and len(index.changes) == 1
    assert index.match(ev(CHANGED, 1, state="B")) == {2}
    index.remove(2)
    assert not index.changes.watches(JOBS) and len(index.changes) == 0
    assert index.match(ev(CHANGED, 1, state="C")) == set()


def test_tracker_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ChangeTracker(0)


def test_fingerprint() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert len({fingerprint(v) for v in (1, True, "1", 1.5, None, [1], {"1": 1})}) == 7
    assert len(fingerprint("x" * 100_000)) == 16
    assert fingerprint({1, 2}) == fingerprint({1, 2})  # not JSON: by its repr


# --- registration ---------------------------------------------------------------------------


def test_remove_and_replace() -> None:
    index = index_of(t1="core.get_jobs:CREATED:5", t2="core.get_jobs:CREATED")
    assert len(index) == 2 and 1 in index
    index.remove(1)
    assert 1 not in index and index.rules_of(1) == []
    assert index.match(ev(ADDED, 5)) == {2}
    index.remove(1)  # twice: nothing
    index.add(2, parse_rules("filesystem.files"))  # add replaces
    assert index.rules_of(2) == [Rule(FILES)]
    assert index.match(ev(ADDED, 5)) == set()
    assert index.match(ev(ADDED, "/x", FILES)) == {2}
    index.remove(2)
    assert len(index) == 0
    assert index.match(ev(ADDED, "/x", FILES)) == set()


@contextmanager
def counting_calls() -> Iterator[list[int]]:
    """Counts the Python and C function calls made inside the block. The collector is off
    meanwhile: a collection there runs the finalizers of whatever earlier tests left
    (weakref callbacks, ``__del__``), calls that are not the block's own (a CI run counted
    46 against 42)."""
    count = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            count[0] += 1

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)
        if was_enabled:
            gc.enable()


def calls_to_match(index: RuleIndex, event: Event) -> int:
    with counting_calls() as count:
        index.match(event)
    return count[0]


def test_an_event_costs_the_same_with_10000_triggers_registered() -> None:
    few, many = RuleIndex(), RuleIndex()
    for index, n in ((few, 10), (many, 10_000)):
        for i in range(n):
            index.add(i, parse_rules(f"core.get_jobs:UPDATED:{i}"))
            index.add(100_000 + i, parse_rules(f"core.get_jobs:CREATED:job-{i}:name"))
        index.add(-1, parse_rules("core.get_jobs:UPDATED:!=:state"))
        index.add(-2, parse_rules("core.get_jobs:UPDATED:x:state"))
    for event in (
        ev(CHANGED, 5, state="x"),  # fires 5, -2 and (after a first sight) -1
        ev(CHANGED, 5, state="y"),
        ev(ADDED, 7, name="job-3"),
        ev(ADDED, "/a", FILES),  # a collection no trigger watches
        ev(REMOVED, 5),
    ):
        assert few.match(event) == many.match(event)
        assert calls_to_match(many, event) == calls_to_match(few, event)
    assert many.match(ev(CHANGED, 9999, state="z")) == {9999}


def test_an_unrelated_collection_touches_nothing() -> None:
    index = RuleIndex()
    for i in range(10_000):
        index.add(i, parse_rules(f"core.get_jobs:UPDATED:!=:f{i}"))
    empty = RuleIndex()
    event = ev(CHANGED, "/a", FILES, size=3)
    assert calls_to_match(index, event) == calls_to_match(empty, event)
    assert index.match(event) == set()


# --- the index agrees with the rules read one by one ----------------------------------------

collections = st.sampled_from([JOBS, FILES, "x.y"])
verb_sets = st.sets(st.sampled_from(["CREATED", "UPDATED", "DELETED"]), min_size=1)
small_values = st.sampled_from(["1", "2", "a", "true"])
selectors = st.sampled_from(["id", "state", "n", "t"])
rule_texts = st.one_of(
    collections,
    st.builds(lambda c, v: f"{c}:{','.join(sorted(v))}", collections, verb_sets),
    st.builds(
        lambda c, v, x, s: f"{c}:{','.join(sorted(v))}:{','.join(sorted(x))}:{s}",
        collections,
        verb_sets,
        st.sets(small_values, min_size=1, max_size=3),
        selectors,
    ),
    st.builds(
        lambda c, v, s: f"{c}:{','.join(sorted(v))}:!=:{s}", collections, verb_sets, selectors
    ),
)
field_values = st.one_of(st.none(), small_values, st.integers(1, 2), st.booleans())
events = st.builds(
    lambda c, m, i, f: Event(c, m, i, None if m == REMOVED else f),
    collections,
    st.sampled_from([ADDED, CHANGED, REMOVED]),
    st.integers(1, 3),
    st.dictionaries(st.sampled_from(["state", "n", "t"]), field_values, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(rule_texts, min_size=1, max_size=3), max_size=6), st.lists(events))
def test_index_agrees_with_each_rule(triggers: list[list[str]], stream: list[Event]) -> None:
    index = RuleIndex()
    rules = {tid: parse_rules(" ".join(texts)) for tid, texts in enumerate(triggers)}
    for tid, rs in rules.items():
        index.add(tid, rs)
    previous: dict[tuple[str, int, str], Any] = {}  # unbounded, the reference's memory
    for event in stream:
        changed: set[tuple[str, ...]] = set()
        if event.msg == REMOVED:
            for key in [k for k in previous if k[:2] == (event.collection, event.id)]:
                del previous[key]
        if event.msg in (ADDED, CHANGED):
            for name, value in (event.fields or {}).items():
                key = (event.collection, event.id, name)
                if key in previous and fingerprint(previous[key]) != fingerprint(value):
                    changed.add((name,))
                previous[key] = value
        expected = {
            tid
            for tid, rs in rules.items()
            if any(r.matches(event, changed if event.msg == CHANGED else set()) for r in rs)
        }
        assert index.match(event) == expected
