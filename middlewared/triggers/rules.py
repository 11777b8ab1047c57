"""@event rules (cozy-stack's ``collection[:VERBS[:values[:selector]]]``) and the index
that finds the triggers an event fires without looking at the triggers it does not.

- VERBS: a comma list of CREATED, UPDATED, DELETED (the bus's added, changed, removed), or
  ALL; omitted means all three.
- values: a comma list compared, as text, with the field ``selector`` names (default ``id``,
  the object's id; else a dotted path into the event's fields, a numeric segment indexing a
  list, as in query filters). A list field matches when any element does; numbers compare
  as written in JSON (``5``), booleans as ``true``/``false``; a missing or null field
  matches nothing. A DELETED event carries no fields, so only ``id`` can match it.
- ``!=`` with a selector: the field changed. CREATED and DELETED count as changes (cozy's
  rule); an UPDATED counts when the field's value differs from the previous value known for
  that object (see changes.ChangeTracker: an update with no known previous value does not).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from middlewared.errors import ValidationErrors
from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event
from middlewared.query.filters import resolve, split_field
from middlewared.triggers.changes import DEFAULT_MAX_VALUES, ChangeTracker, Path

FIELD = "arguments"
VERBS = {"CREATED": ADDED, "UPDATED": CHANGED, "DELETED": REMOVED}
_WORDS = {msg: word for word, msg in VERBS.items()}
ALL_VERBS = frozenset(VERBS.values())
ID: Path = ("id",)
CHANGED_VALUE = "!="
_SHAPE = "collection[:VERBS[:values[:selector]]]"

TriggerId = int


@dataclass(frozen=True)
class Rule:
    collection: str
    verbs: frozenset[str] = ALL_VERBS  # bus messages: added, changed, removed
    values: frozenset[str] = frozenset()  # empty: any object
    selector: Path = ID
    changed: bool = False  # the value "!=": the selected field changed

    def __str__(self) -> str:
        text = self.collection
        if self.verbs != ALL_VERBS or self.values:
            text += ":" + ",".join(_WORDS[v] for v in sorted(self.verbs, key=_order))
        if self.changed:
            return f"{text}:{CHANGED_VALUE}:{'.'.join(self.selector)}"
        if self.values:
            text += ":" + ",".join(sorted(self.values))
            if self.selector != ID:
                text += ":" + ".".join(self.selector)
        return text

    def matches(self, event: Event, changed: set[Path] | frozenset[Path] = frozenset()) -> bool:
        """Whether ``event`` fires this rule (``changed``: the paths an UPDATED changed).
        The index answers the same without calling this; tests hold the two together."""
        if event.collection != self.collection or event.msg not in self.verbs:
            return False
        if self.changed:
            return event.msg != CHANGED or self.selector in changed
        return not self.values or any(k in self.values for k in candidates(event, self.selector))


def _order(msg: str) -> int:
    return (ADDED, CHANGED, REMOVED).index(msg)


def candidates(event: Event, path: Path) -> list[str]:
    """The texts a rule's values are compared with: the selected field's value(s)."""
    value = event.id if path == ID else resolve(event.fields or {}, path)
    items = value if isinstance(value, list | tuple) else (value,)
    return [k for k in map(_text, items) if k is not None]


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None  # MISSING, null, objects


def parse_rules(arguments: object) -> list[Rule]:
    """The rules of an @event trigger: one or more separated by spaces (any one matches).
    Raises ValidationErrors on ``arguments`` with every rule's problem."""
    if not isinstance(arguments, str) or not arguments.split():
        raise ValidationErrors(
            [(FIELD, f"@event needs at least one rule: {_SHAPE}, separated by spaces", 22)]
        )
    errors = ValidationErrors()
    rules = []
    for text in arguments.split():
        try:
            rules.append(_parse_rule(text))
        except ValueError as e:
            errors.add(FIELD, f"rule {text!r}: {e}")
    if errors:
        raise errors
    return rules


def _parse_rule(text: str) -> Rule:
    parts = text.split(":")
    if len(parts) > 4:
        raise ValueError(f"too many ':' parts: {_SHAPE}")
    collection, verbs_text, values_text, selector_text = parts + [None] * (4 - len(parts))
    if not collection:
        raise ValueError(f"empty collection: {_SHAPE}")
    rule = Rule(collection)
    if verbs_text is not None:
        rule = Rule(collection, _verbs(verbs_text))
    if values_text is None:
        return rule
    values = _items(values_text, "values")
    selector = ID
    if selector_text is not None:
        path = split_field(selector_text)
        if path is None:
            raise ValueError(f"selector {selector_text!r} is not a dotted field path")
        selector = path
    if CHANGED_VALUE in values:
        if len(values) > 1:
            raise ValueError(f"{CHANGED_VALUE!r} stands alone in the values")
        if selector_text is None:
            raise ValueError(f"{CHANGED_VALUE!r} needs a selector: {collection}:UPDATED:!=:field")
        return Rule(collection, rule.verbs, changed=True, selector=selector)
    return Rule(collection, rule.verbs, values, selector)


def _verbs(text: str) -> frozenset[str]:
    verbs: set[str] = set()
    for word in _items(text, "verbs"):
        if word.upper() == "ALL":
            verbs.update(ALL_VERBS)
        elif word.upper() in VERBS:
            verbs.add(VERBS[word.upper()])
        else:
            raise ValueError(f"unknown verb {word!r}: CREATED, UPDATED, DELETED or ALL")
    return frozenset(verbs)


def _items(text: str, what: str) -> frozenset[str]:
    if not text:
        raise ValueError(f"empty {what}: {_SHAPE}")
    items = text.split(",")
    if "" in items:
        raise ValueError(f"empty item in {what} {text!r}")
    return frozenset(items)


@dataclass
class _Bucket:
    """The rules of one (collection, verb)."""

    any: set[TriggerId] = field(default_factory=set)
    values: dict[Path, dict[str, set[TriggerId]]] = field(default_factory=dict)
    changed: dict[Path, set[TriggerId]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.any or self.values or self.changed)


class RuleIndex:
    """The @event rules of every trigger, indexed by (collection, verb), then by selector and
    value: an event costs one lookup per selector used on its (collection, verb) plus the
    triggers it fires, however many triggers are registered.

    Previous values for ``!=`` are kept only for the fields such rules watch, at most
    ``max_tracked_values`` of them (changes.ChangeTracker: an evicted value is "no previous
    value", so that update does not count as a change).
    """

    def __init__(self, max_tracked_values: int = DEFAULT_MAX_VALUES) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._rules: dict[TriggerId, list[Rule]] = {}
        self.changes = ChangeTracker(max_tracked_values)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._rules

    def rules_of(self, trigger_id: TriggerId) -> list[Rule]:
        return list(self._rules.get(trigger_id, ()))

    def add(self, trigger_id: TriggerId, rules: Iterable[Rule]) -> None:
        """Register (or replace) a trigger's rules."""
        self.remove(trigger_id)
        rules = list(rules)
        self._rules[trigger_id] = rules
        for rule in rules:
            if rule.changed and CHANGED in rule.verbs:
                self.changes.watch(rule.collection, rule.selector)
            for verb in rule.verbs:
                bucket = self._buckets.setdefault((rule.collection, verb), _Bucket())
                if rule.changed:
                    bucket.changed.setdefault(rule.selector, set()).add(trigger_id)
                elif rule.values:
                    by_value = bucket.values.setdefault(rule.selector, {})
                    for value in rule.values:
                        by_value.setdefault(value, set()).add(trigger_id)
                else:
                    bucket.any.add(trigger_id)

    def remove(self, trigger_id: TriggerId) -> None:
        for rule in self._rules.pop(trigger_id, ()):
            if rule.changed and CHANGED in rule.verbs:
                self.changes.unwatch(rule.collection, rule.selector)
            for verb in rule.verbs:
                key = (rule.collection, verb)
                bucket = self._buckets.get(key)
                if bucket is None:
                    continue
                bucket.any.discard(trigger_id)
                _discard(bucket.changed, rule.selector, trigger_id)
                by_value = bucket.values.get(rule.selector)
                if by_value is not None:
                    for value in rule.values:
                        _discard(by_value, value, trigger_id)
                    if not by_value:
                        del bucket.values[rule.selector]
                if bucket.empty():
                    del self._buckets[key]

    def match(self, event: Event) -> set[TriggerId]:
        """The triggers ``event`` fires (a new set). Every event of a collection with
        ``!=`` rules must come here, also those that fire nothing, to keep values current."""
        changed = self._observe(event)
        bucket = self._buckets.get((event.collection, event.msg))
        if bucket is None:
            return set()
        found = set(bucket.any)
        for path, by_value in bucket.values.items():
            for key in candidates(event, path):
                ids = by_value.get(key)
                if ids:
                    found |= ids
        for path, ids in bucket.changed.items():
            if event.msg != CHANGED or path in changed:
                found |= ids
        return found

    def _observe(self, event: Event) -> set[Path]:
        if not self.changes.watches(event.collection):
            return set()
        if event.msg == REMOVED and isinstance(event.id, Hashable):
            self.changes.forget(event.collection, event.id)
            return set()
        if event.msg not in (ADDED, CHANGED) or not isinstance(event.id, Hashable):
            return set()
        return self.changes.update(event.collection, event.id, event.fields)


def _discard(index: dict[Any, set[TriggerId]], key: Any, trigger_id: TriggerId) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(trigger_id)
        if not ids:
            del index[key]
