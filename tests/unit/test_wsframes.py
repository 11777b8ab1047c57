"""Our server text frames, read back by the websockets library's own frame parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from middlewared.http.wsframes import text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("the parser wanted more bytes than the frame has")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000, 1 << 20])
def test_lengths_across_the_header_forms(size: int) -> None:
    text = ("é" * size)[: size // 2] + "x" * (size - size // 2)
    header, payload = text_frame(text)
    frame = parse(header + payload)
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert bytes(frame.data).decode() == text
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


def test_frames_back_to_back_are_read_one_by_one() -> None:
    texts = ["a", "b" * 300, "c" * 70000]
    data = b"".join(b"".join(text_frame(t)) for t in texts)
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    got = []
    for _ in texts:
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
        try:
            next(parser)
        except StopIteration as done:
            got.append(bytes(done.value.data).decode())
    assert got == texts
