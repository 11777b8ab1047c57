"""The frame guard on byte streams cut at every place: masking, control frames, message sizes
counted across fragments, and the limit that applies when each header arrives."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from middlewared.http.frameguard import (
    CONTROL_TOO_LONG,
    TOO_BIG,
    UNMASKED,
    FixedLimit,
    FrameGuard,
    Violation,
)
from tests.rawws import ws_frame

TEXT, CONT, CLOSE, PING = 1, 0, 8, 9


def frame(size: int, opcode: int = TEXT, *, fin: bool = True, masked: bool = True) -> bytes:
    return ws_frame(b"p" * size, opcode, fin=fin, masked=masked)


def feed(guard: FrameGuard, data: bytes, cuts: list[int]) -> list[Violation | None]:
    """What the guard says about each piece of ``data`` cut at ``cuts``."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [guard.check(data[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def test_whole_frames_in_one_read() -> None:
    guard = FrameGuard(FixedLimit(100))
    assert guard.check(frame(10) + frame(100) + frame(0) + frame(125, PING)) is None


def test_unmasked_frame() -> None:
    assert FrameGuard(FixedLimit(100)).check(frame(3, masked=False)) == UNMASKED


def test_control_frame_too_long() -> None:
    assert FrameGuard(FixedLimit(1000)).check(frame(126, PING)) == CONTROL_TOO_LONG


def test_limit_is_inclusive() -> None:
    assert FrameGuard(FixedLimit(70000)).check(frame(70000)) is None
    assert FrameGuard(FixedLimit(69999)).check(frame(70000)) == TOO_BIG


def test_one_small_frame_a_read_takes_the_same_rules() -> None:
    # The common case has a shortcut: it must say what the general walk says.
    guard = FrameGuard(FixedLimit(10))
    assert guard.check(frame(10)) is None
    assert guard.check(frame(11)) == TOO_BIG
    assert FrameGuard(FixedLimit(10)).check(frame(11, masked=False)) == UNMASKED
    guard = FrameGuard(FixedLimit(100))
    assert guard.check(frame(60, fin=False)) is None
    assert guard.check(frame(41, CONT)) == TOO_BIG


def test_fragments_add_up_and_control_frames_do_not_count() -> None:
    guard = FrameGuard(FixedLimit(100))
    data = frame(40, fin=False) + frame(125, PING) + frame(40, CONT, fin=False)
    assert guard.check(data) is None
    assert guard.check(frame(21, CONT)) == TOO_BIG
    guard = FrameGuard(FixedLimit(100))
    assert guard.check(data + frame(20, CONT)) is None
    # The message ended: the next one counts from zero.
    assert guard.check(frame(100)) is None


def test_header_announcing_too_much_is_refused_before_its_payload() -> None:
    guard = FrameGuard(FixedLimit(1000))
    assert guard.check(frame(2000)[:14]) == TOO_BIG


def test_the_limit_in_force_when_the_header_arrives_applies() -> None:
    limit = FixedLimit(100)
    guard = FrameGuard(limit)
    assert guard.check(frame(100)) is None
    limit.max_frame = 1000
    assert guard.check(frame(1000)) is None
    limit.max_frame = 100
    assert guard.check(frame(101)) == TOO_BIG


def test_payload_split_over_many_reads_is_skipped() -> None:
    # The guard keeps its place across reads: the unmasked frame after a long payload is
    # found, in the last read, and nothing before it.
    data = frame(300_000) + frame(5) + frame(1, masked=False)
    said = feed(FrameGuard(FixedLimit(1 << 20)), data, list(range(1, len(data), 4096)))
    assert said[-1] == UNMASKED
    assert all(v is None for v in said[:-1])


SIZES = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Violation | None]]:
    """A stream of frames, and the verdict on each frame as a reader of the whole stream
    would give it (the first violation ends the stream)."""
    limit = 70000
    data = b""
    verdicts: list[Violation | None] = []
    message = 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "more", "cont", "ping", "unmasked"]))
        size = draw(SIZES)
        if kind == "ping":
            size = min(size, 130)
            data += frame(size, PING)
            verdicts.append(CONTROL_TOO_LONG if size > 125 else None)
        elif kind == "unmasked":
            data += frame(size, masked=False)
            verdicts.append(UNMASKED)
        else:
            fin = kind != "more"
            opcode = CONT if kind == "cont" else TEXT
            total = message + size if opcode == CONT else size
            data += frame(size, opcode, fin=fin)
            verdicts.append(TOO_BIG if total > limit else None)
            message = 0 if fin else total
        if verdicts[-1] is not None:
            break
    return data, verdicts


@given(streams(), st.lists(st.integers(0, 300_000), max_size=20))
def test_any_cut_gives_the_verdict_of_the_whole(
    stream: tuple[bytes, list[Violation | None]], cuts: list[int]
) -> None:
    data, verdicts = stream
    said = [v for v in feed(FrameGuard(FixedLimit(70000)), data, cuts) if v is not None]
    expected = [v for v in verdicts if v is not None]
    assert said[:1] == expected[:1]


def test_one_byte_at_a_time() -> None:
    data = frame(5) + frame(200, fin=False) + frame(70000, CONT) + frame(3, masked=False)
    said = feed(FrameGuard(FixedLimit(1 << 20)), data, list(range(len(data))))
    # Found with the byte that holds the mask bit: the second of the last frame.
    first = next(i for i, v in enumerate(said) if v is not None)
    assert (first, said[first]) == (len(data) - 3 - 1, UNMASKED)
