"""``bench.completions``' raw client: what it reads from an answer's bytes, and what it refuses."""

from __future__ import annotations

import json

import pytest

from bench.completions import parse_stream


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _answer(texts: list[str], status: str = "200 OK", done: bool = True) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\n"
    head += "transfer-encoding: chunked\r\n\r\n"
    events = [
        b"data: " + json.dumps({"choices": [{"text": text}]}).encode() + b"\n\n" for text in texts
    ]
    events += [b"data: [DONE]\n\n"] if done else []
    return head.encode() + b"".join(map(_chunk, events)) + b"0\r\n\r\n"


def test_each_event_arrives_with_the_read_that_completed_it() -> None:
    raw = _answer(["", "ab", 'c"\n', "d"])  # an empty first event, an escaped quote and newline
    first_event_end = raw.index(b"ab") + 10
    reads = [(first_event_end - 5, 1.0), (first_event_end + 3, 1.5), (len(raw), 2.25)]
    ttft, gaps, characters = parse_stream(raw, reads, started=0.5)
    assert characters == 2 + 3 + 1
    assert ttft == pytest.approx(1.0)  # "ab" was completed by the second read, at 1.5 s
    assert gaps == pytest.approx([0.75, 0.0])


@pytest.mark.parametrize(
    "raw",
    [
        _answer(["ab"], status="429 Too Many Requests"),
        _answer(["ab"], done=False),
        _answer(["ab"])[:-5],  # cut before the last chunk
        _answer([""]),
    ],
)
def test_an_answer_that_is_not_a_whole_stream_of_text_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stream(raw, [(len(raw), 1.0)], started=0.0)
