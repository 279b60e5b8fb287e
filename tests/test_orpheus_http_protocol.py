"""Orpheus over HTTP, sans-I/O: how text becomes requests, and what the response's bytes mean. No sockets: the
server's side is h11's, fed the bytes our `Utterance` hands out."""
from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basetts.errors import (
    AuthenticationError,
    FirstAudioTimeout,
    HandshakeTimeout,
    ServerUnavailable,
    StreamInterrupted,
)
from basetts.protocols.flush import builtin_sentences, server_sentences
from basetts.protocols.orpheus_http import MAX_PROMPT, Utterance, prompts
from basetts.testing.orpheus_http import Stalled, chunk_text

URL = "https://model-abc.api.baseten.co/environments/production/predict"


def texts(words: List[str], whole: bool) -> List[Tuple[str, bool]]:
    return [(o.text, o.last) for o in prompts(words, server_sentences(), whole)]


def test_a_short_text_is_one_request() -> None:
    assert texts("Hello there. How are you?".split(), whole=True) == [("Hello there. How are you?", True)]


def test_a_long_text_fills_requests_up_to_the_models_chunk_size_cut_after_sentences() -> None:
    text = " ".join(f"Sentence number {i} is not short at all." for i in range(40))
    sent = texts(text.split(), whole=True)
    assert " ".join(t for t, _ in sent) == text and [last for _, last in sent] == [False] * (len(sent) - 1) + [True]
    assert all(len(t) <= MAX_PROMPT and t.endswith("all.") for t, _ in sent)
    assert all(len(t) > MAX_PROMPT - 45 for t, _ in sent[:-1])  # full: as many sentences as fit


def test_without_sentence_ends_a_request_ends_after_a_pause_else_between_words() -> None:
    text = ("word " * 40 + "then a pause, " + "more " * 40).split()
    first = texts(text, whole=True)[0][0]
    assert first.endswith("pause,") and len(first) <= MAX_PROMPT
    assert all(len(t) <= MAX_PROMPT for t, _ in texts(["x" * 10] * 100, whole=True))
    giant = texts(["y" * 700], whole=True)  # one "word" longer than a request: in pieces
    assert [len(t) for t, _ in giant] == [280, 280, 140] and "".join(t for t, _ in giant) == "y" * 700


def test_text_arriving_over_time_goes_a_sentence_at_a_time_once_the_next_begins() -> None:
    seen: List[str] = []

    def words() -> Any:
        for word in "Dr. Smith arrived. He met the U.S. team! Then".split():
            seen.append(word)
            yield word

    requests = prompts(words(), server_sentences(), whole=False)
    first = next(requests)
    assert first.text == "Dr. Smith arrived." and not first.last and seen[-1] == "He"  # "He" began the next
    assert next(requests).text == "He met the U.S. team!"
    last = next(requests)
    assert (last.text, last.last) == ("Then", True)


def test_a_text_with_no_words_asks_nothing() -> None:
    assert texts([], whole=False) == [("", True)]
    state = utterance([])
    assert state.fill(0.0)[0].data == b"" and state.finished and state.all_sent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "word", "longerword", "end.", "Yes,", "really?", "U.S.", "Dr.", "x" * 90,
                                 "pause;", "“quoted.”", "日本語。テスト。"]), max_size=300), st.booleans())
def test_every_word_once_in_order_and_no_request_the_server_would_cut_itself(words: List[str], whole: bool) -> None:
    sent = [o for o in prompts(words, builtin_sentences, whole)]
    assert " ".join(o.text for o in sent).split() == words
    assert sum(o.last for o in sent) == 1 and sent[-1].last
    for o in sent:
        assert len(o.text) <= MAX_PROMPT
        assert chunk_text(o.text) == [o.text]  # taken whole: the model's own cutting never runs (it can hang)


def test_the_models_chunking_hangs_on_ordinary_text_over_its_chunk_size() -> None:
    """The rule as the model has it (reproduced in the local server): it cuts before a comma, and a window
    starting with that comma and holding no other cut is cut at 0, forever."""
    assert chunk_text("Short, fine.") == ["Short, fine."]
    with pytest.raises(Stalled):
        chunk_text("A " + "word " * 55 + "the end. Yes, it works.")
    long = " ".join("Sentence number one is here." for _ in range(20))
    assert all(len(c) <= 280 for c in chunk_text(long)) and " ".join(chunk_text(long)) == long


# the utterance ---------------------------------------------------------------------------------------------
def utterance(words: Any, **fields: Any) -> Utterance:
    return Utterance(URL, "secret", {"voice": "tara", **fields}, words, handshake_timeout=5.0,
                     first_audio_timeout=2.0, read_timeout=1.0)


def server_reads(data: bytes, server: Optional[h11.Connection] = None) -> Tuple[h11.Request, dict]:
    server = server or h11.Connection(h11.SERVER)
    server.receive_data(data)
    request, body = None, b""
    while True:
        event = server.next_event()
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    assert request is not None
    return request, json.loads(body)


def response(status: int = 200, chunks: Tuple[bytes, ...] = (b"\x01\x02" * 8,), end: bool = True,
             content_type: bytes = b"audio/wav") -> bytes:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    server.next_event(), server.next_event()
    out = server.send(h11.Response(status_code=status, headers=[(b"content-type", content_type)])) or b""
    for chunk in chunks:
        out += server.send(h11.Data(data=chunk)) or b""
    if end:
        out += server.send(h11.EndOfMessage()) or b""
    return out


def test_the_request_is_a_post_with_the_key_and_json_prompt() -> None:
    state = utterance(["Hello", "world."], temperature=0.5)
    writes = state.fill(0.0)
    assert len(writes) == 1 and not state.may_send(0.0)  # one request at a time
    request, body = server_reads(writes[0].data)
    assert request.method == b"POST" and request.target == b"/environments/production/predict"
    headers = dict(request.headers)
    assert headers[b"authorization"] == b"Api-Key secret" and headers[b"host"] == b"model-abc.api.baseten.co"
    assert headers[b"content-type"] == b"application/json"
    assert body == {"voice": "tara", "temperature": 0.5, "prompt": "Hello world."}
    assert "secret" not in repr(state)


def test_audio_split_anywhere_comes_out_whole_samples_in_order() -> None:
    pcm = bytes(range(256)) * 40
    state = utterance(["Hi."])
    state.fill(0.0)
    data = response(chunks=(pcm[:4095], pcm[4095:4097], pcm[4097:]))
    out, ended = b"", None
    for i in range(0, len(data), 7):
        received = state.receive(data[i:i + 7], 0.1)
        out += received.audio
        assert len(received.audio) % 2 == 0
        if received.ended:
            ended = received
    assert out == pcm and ended is not None and ended.error is None and state.answered


def test_the_next_request_goes_only_once_the_response_before_has_ended() -> None:
    state = utterance(iter("One. Two.".split()))
    state.fill(0.0)
    assert not state.may_send(0.0)
    state.receive(response(end=False), 0.1)
    assert not state.may_send(0.1)  # the body is still coming
    received = state.receive(b"0\r\n\r\n", 0.2)  # the chunked body's last chunk
    assert received.acknowledged and state.may_send(0.2)  # the writer may send the next: on the same connection
    request, body = server_reads(state.send(state.take(eager=False), 0.3).data)
    assert body["prompt"] == "Two." and state.all_sent


@pytest.mark.parametrize("status, kind, said", [(401, AuthenticationError, ""),
                                                (500, ServerUnavailable, "An internal server error occurred")])
def test_an_error_status_is_our_error_quoting_the_body(status: int, kind: type, said: str) -> None:
    state = utterance(["Hi."])
    state.fill(0.0)
    received = state.receive(response(status, (b"An internal server error occurred while processing",),
                                      content_type=b"text/plain"), 0.1)
    assert received.ended and isinstance(received.error, kind) and received.error.status == status
    assert said in str(received.error) and not state.answered


def test_a_body_cut_off_is_an_interruption_with_the_audio_so_far() -> None:
    state = utterance(["Hi."])
    state.fill(0.0)
    first = state.receive(response(end=False), 0.1)
    cut = state.receive(b"", 0.2)
    assert first.audio and cut.ended and isinstance(cut.error, StreamInterrupted)
    assert "cut the response off" in str(cut.error)


def test_deadlines_the_head_within_handshake_timeout_then_audio_within_first_audio_timeout() -> None:
    state = utterance(["Hi."])
    state.fill(10.0)
    assert state.deadline() == 15.0 and isinstance(state.expired(15.0), HandshakeTimeout)
    state.receive(response(chunks=(), end=False), 11.0)
    assert state.deadline() == 13.0 and isinstance(state.expired(13.0), FirstAudioTimeout)


def test_a_json_answer_is_not_audio() -> None:
    state = utterance(["Hi."])
    state.fill(0.0)
    received = state.receive(response(chunks=(b'{"audio": "UklGRg=="}',), content_type=b"application/json"), 0.1)
    assert received.ended and received.audio == b"" and "not audio" in str(received.error)
