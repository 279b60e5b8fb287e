"""The local server behaves like the real one: proved with a raw websocket-client, then through Synthesizer."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pytest
import websocket

from basetts import ConfigurationError, ServerError, Synthesizer
from basetts.audio import Audio
from basetts.protocols.base import decode_mulaw
from basetts.protocols.orpheus import SENTINEL
from basetts.testing.server import HANDLER_ERROR, Faults, LocalServer, flush_rule, mulaw_encode

# Much longer than any test may take: a call that waited for one of these would fail the join below.
LONG_TIMEOUT = 600.0
PROMPT = 30.0


@dataclasses.dataclass
class Raw:
    """What a raw client saw: the audio frames and the close."""

    frames: List[bytes]
    close_code: Optional[int]
    close_reason: str

    @property
    def audio(self) -> bytes:
        return b"".join(self.frames)


def raw_conversation(server: LocalServer, first: Union[str, bytes], messages: Sequence[Union[str, bytes]] = ()
                     ) -> Raw:
    """Send `first` and then `messages` with websocket-client directly, then read until the close."""
    ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=10)
    try:
        for message in (first, *messages):
            if isinstance(message, bytes):
                ws.send_binary(message)
            else:
                ws.send(message)
        frames: List[bytes] = []
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_BINARY:
                frames.append(frame.data)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                return Raw(frames, code, frame.data[2:].decode("utf-8"))
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                raise AssertionError(f"the server sent a text message: {frame.data!r}")
    finally:
        ws.shutdown()


def raw_words(server: LocalServer, text: str, **settings: Any) -> Raw:
    """A whole conversation the way the official client speaks: one word per message."""
    return raw_conversation(server, json.dumps(settings), [*text.split(), SENTINEL])


def replay(messages: Sequence[str], buffer_size: int) -> Tuple[List[List[str]], List[str]]:
    """The real server's receive loop over `messages` (sentinel implied): segments, and words never spoken."""
    buffer: List[str] = []
    segments = []
    for message in messages:
        buffer.extend(message.strip().split())
        segment = flush_rule(buffer, buffer_size, final=False)
        if segment is not None:
            segments.append(segment)
    segment = flush_rule(buffer, buffer_size, final=True)
    if segment is not None:
        segments.append(segment)
    return segments, buffer


def render(server: LocalServer, segments: Sequence[Sequence[str]]) -> bytes:
    return b"".join(server.render(list(segment)) for segment in segments)


def synthesize_promptly(synth: Synthesizer, text: str, **overrides: Any) -> Audio:
    """Run synthesize in a thread and require it to finish long before any configured timeout could fire."""
    result: Dict[str, Any] = {}

    def run() -> None:
        try:
            result["audio"] = synth.synthesize(text, **overrides)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name="test-synthesize", daemon=True)
    thread.start()
    thread.join(PROMPT)
    assert not thread.is_alive(), "synthesize is still waiting: the server's close was not taken as the end"
    if "error" in result:
        raise result["error"]
    return result["audio"]


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


def synthesizer(server: LocalServer, **settings: Any) -> Synthesizer:
    settings.setdefault("first_audio_timeout", LONG_TIMEOUT)
    settings.setdefault("read_timeout", LONG_TIMEOUT)
    return Synthesizer(url=server.url, api_key=server.api_key, **settings)


# the flush rule ----------------------------------------------------------------------------------------------
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "Hello there. How are you today? I am fine, thanks!",
    "One. Two. Three.",
    "a b c d e f",
    " ".join(f"w{n}" for n in range(30)),
    "Wait... what?! Really. Yes",
    "This sentence has more than three words in it. Short one. And an unfinished",
    "Good morning.",
]


@pytest.mark.parametrize("buffer_size", [1, 3, 10])
@pytest.mark.parametrize("text", TEXTS)
def test_flush_rule_table(server: LocalServer, text: str, buffer_size: int) -> None:
    raw = raw_words(server, text, buffer_size=buffer_size)
    record = server.last()
    expected, unspoken = replay(text.split(), buffer_size)
    assert unspoken == []  # one word per message: every word is spoken
    assert record.segments == expected
    assert [w for segment in record.segments for w in segment] == text.split()
    assert raw.audio == render(server, expected) == server.expected_pcm(text)
    assert raw.close_code == 1000


@pytest.mark.parametrize("text, buffer_size, segments", [
    ("a b c d e f g", 3, [["a", "b", "c"], ["d", "e", "f"], ["g"]]),
    ("a b c d e f", 3, [["a", "b", "c"], ["d", "e", "f"]]),
    ("a b c", 1, [["a"], ["b"], ["c"]]),
    ("Hello there. How are you? I am fine", 10,
     [["Hello", "there."], ["How", "are", "you?"], ["I", "am", "fine"]]),
    ("Hi. there", 1, [["Hi."], ["there"]]),
    ("This sentence is long. Yes", 3, [["This", "sentence", "is"], ["long."], ["Yes"]]),
    ("One. Two. Three.", 10, [["One."], ["Two."], ["Three."]]),
    ("Good morning.", 10, [["Good", "morning."]]),
])
def test_flush_rule_by_hand(server: LocalServer, text: str, buffer_size: int, segments: List[List[str]]) -> None:
    raw_words(server, text, buffer_size=buffer_size)
    assert server.last().segments == segments
    assert replay(text.split(), buffer_size) == (segments, [])
    audio = synthesizer(server, buffer_size=buffer_size).synthesize(text)
    assert server.last().segments == segments
    assert audio.pcm == server.expected_pcm(text)


def test_synthesizer_segments_match_the_rule_replayed(server: LocalServer) -> None:
    synth = synthesizer(server, buffer_size=3)
    for text in TEXTS:
        audio = synth.synthesize(text)
        record = server.last()
        assert record.messages == [*text.split(), SENTINEL]  # one word per message, then the sentinel
        assert record.segments == replay(text.split(), 3)[0]
        assert audio.pcm == server.expected_pcm(text)


# multi-word messages -------------------------------------------------------------------------------------------
def test_multi_word_messages_are_accepted_and_the_leftovers_never_spoken(server: LocalServer) -> None:
    words = [f"w{n}" for n in range(25)]
    raw = raw_conversation(server, json.dumps({"buffer_size": 10}), [" ".join(words), SENTINEL])
    # One flush for the message, one at the sentinel, then the close: five words are lost.
    expected = [words[:10], words[10:20]]
    assert server.last().segments == expected
    assert replay([" ".join(words)], 10) == (expected, words[20:])
    assert raw.audio == render(server, expected)
    assert raw.close_code == 1000


def test_multi_word_messages_flush_once_per_message(server: LocalServer) -> None:
    messages = ["a b c d e", "  f g h\ti j k l  "]
    raw = raw_conversation(server, json.dumps({"buffer_size": 3}), [*messages, SENTINEL])
    expected = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]
    assert server.last().segments == expected
    assert replay(messages, 3) == (expected, ["j", "k", "l"])
    assert raw.audio == render(server, expected)


def test_a_multi_word_message_with_sentences(server: LocalServer) -> None:
    raw_conversation(server, "{}", ["Hello there. How are you", SENTINEL])
    assert server.last().segments == [["Hello", "there."], ["How", "are", "you"]]


def test_whitespace_only_message_is_no_word(server: LocalServer) -> None:
    raw_conversation(server, json.dumps({"buffer_size": 2}), ["a", "   ", "b", SENTINEL])
    assert server.last().segments == [["a", "b"]]


# framing --------------------------------------------------------------------------------------------------------
def test_audio_comes_in_4096_byte_messages() -> None:
    with LocalServer(samples_per_word=2048) as server:  # one window per word: every message is full
        raw = raw_words(server, "one two three four five", buffer_size=2)
    assert [len(frame) for frame in raw.frames] == [4096] * 5


def test_a_segment_is_cut_into_4096_byte_messages(server: LocalServer) -> None:
    raw = raw_words(server, "a b c d e f g", buffer_size=3)
    sizes = []
    for segment in server.last().segments:
        length = len(server.render(segment))
        sizes += [4096] * (length // 4096) + ([length % 4096] if length % 4096 else [])
    assert [len(frame) for frame in raw.frames] == sizes == server.last().frame_sizes
    assert all(len(frame) % 2 == 0 for frame in raw.frames)


def test_mulaw_comes_in_2048_byte_messages(server: LocalServer) -> None:
    raw = raw_words(server, "one two three", encoding="pcm_mulaw")
    assert [len(frame) for frame in raw.frames][:3] == [2048] * 3
    assert raw.audio == mulaw_encode(server.expected_pcm("one two three"))


def test_the_server_never_sends_text(server: LocalServer) -> None:
    raw_words(server, "Hello there. General Kenobi", buffer_size=2)  # raw_conversation fails on text


# the two close paths ----------------------------------------------------------------------------------------------
def test_close_after_the_last_segment(server: LocalServer) -> None:
    raw = raw_words(server, "a b c d", buffer_size=3)
    record = server.last()
    assert record.segments[-1] == ["d"]  # generated at the sentinel, then closed explicitly
    assert record.explicit_close
    assert (raw.close_code, raw.close_reason) == (1000, "")


def test_close_when_nothing_was_left(server: LocalServer) -> None:
    raw = raw_words(server, "a b c d e f", buffer_size=3)
    record = server.last()
    assert record.segments == [["a", "b", "c"], ["d", "e", "f"]]
    assert not record.explicit_close  # the handler just ended; the framework closed
    assert (raw.close_code, raw.close_reason) == (1000, "")
    assert raw.audio == server.expected_pcm("a b c d e f")


@pytest.mark.parametrize("text, explicit", [("a b c d", True), ("a b c d e f", False), ("Hi.", True)])
def test_synthesize_ends_at_either_close_without_waiting_for_a_timeout(
    server: LocalServer, text: str, explicit: bool
) -> None:
    audio = synthesize_promptly(synthesizer(server, buffer_size=3), text)
    record = server.last()
    assert record.explicit_close is explicit
    assert record.close_code == 1000
    assert audio.pcm == server.expected_pcm(text)


# bad first messages ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first", [
    "hello", "{not json", "", '{"voice": "tara"', "[1, 2]", "42", "null", '"tara"', "true",
    b'{"voice": "tara"}', b"\x00\xff",
])
def test_a_first_message_that_is_not_a_json_object_is_a_1011(server: LocalServer, first: Union[str, bytes]) -> None:
    raw = raw_conversation(server, first)
    assert (raw.close_code, raw.close_reason) == (1011, HANDLER_ERROR)
    assert HANDLER_ERROR == "Internal Server Error (in model/chainlet)."
    assert raw.frames == []
    record = server.last()
    assert record.settings is None and record.close_code == 1011


@pytest.mark.parametrize("buffer_size", ["ten", None, [3], {"n": 3}, "3.5"])
def test_a_buffer_size_that_is_not_an_int_is_a_1011(server: LocalServer, buffer_size: Any) -> None:
    raw = raw_conversation(server, json.dumps({"buffer_size": buffer_size}))
    assert (raw.close_code, raw.close_reason) == (1011, HANDLER_ERROR)


def test_buffer_size_goes_through_int_as_on_the_real_server(server: LocalServer) -> None:
    # The real handler runs int(params.get("buffer_size", 10)): "2" and 2.9 both mean 2.
    for value in ("2", 2.9):
        raw_conversation(server, json.dumps({"buffer_size": value}), ["a", "b", "c", SENTINEL])
        assert server.last().segments == [["a", "b"], ["c"]]


@pytest.mark.parametrize("settings", [
    {"temperature": "hot"}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"top_p": None},
    {"repetition_penalty": 0}, {"repetition_penalty": "1.3"}, {"max_tokens": 0}, {"max_tokens": 2.5},
])
def test_bad_sampling_values_are_a_1011_at_the_first_generation(server: LocalServer, settings: dict) -> None:
    """As on the real server, the sampler refuses them when it first runs, not when they arrive."""
    raw = raw_conversation(server, json.dumps({"buffer_size": 2, **settings}), ["a", "b", "c", SENTINEL])
    assert (raw.close_code, raw.close_reason) == (1011, HANDLER_ERROR)
    assert raw.frames == [] and server.last().close_code == 1011
    raw = raw_conversation(server, json.dumps(settings), [SENTINEL])  # nothing to generate: no sampler
    assert (raw.close_code, raw.close_reason) == (1000, "")


def test_good_sampling_values_are_spoken(server: LocalServer) -> None:
    settings = {"temperature": 0, "top_p": 1, "repetition_penalty": 1.1, "max_tokens": 1, "buffer_size": 2}
    raw = raw_conversation(server, json.dumps(settings), ["a", "b", SENTINEL])
    assert (raw.close_code, raw.audio) == (1000, server.expected_pcm("a b"))


def test_a_binary_message_after_the_settings_is_a_1011(server: LocalServer) -> None:
    raw = raw_conversation(server, "{}", ["a", b"\x00\x01"])
    assert (raw.close_code, raw.close_reason) == (1011, HANDLER_ERROR)


def test_basetts_sends_a_json_object_first(server: LocalServer) -> None:
    synth = synthesizer(server)
    synth.synthesize("hi")
    assert server.last().settings == synth.settings.session_message()


def test_synthesizer_raises_a_server_error_on_1011() -> None:
    # basetts never sends a bad first message, so the handler's failure is injected at the first segment.
    with LocalServer(faults=Faults(close_code=1011, close_reason=HANDLER_ERROR)) as server:
        with pytest.raises(ServerError) as caught:
            synthesize_promptly(synthesizer(server), "a b c")
    assert caught.value.close_code == 1011
    assert HANDLER_ERROR in str(caught.value)


# settings end to end --------------------------------------------------------------------------------------------
def test_only_set_fields_and_our_defaults_are_sent(server: LocalServer) -> None:
    synthesizer(server).synthesize("hi")
    assert server.last().settings == {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}


def test_every_server_setting_at_construction_and_per_call(server: LocalServer) -> None:
    synth = synthesizer(server, voice="leo", max_tokens=300, buffer_size=3, temperature=0.5, top_p=0.9,
                        repetition_penalty=1.1, encoding="pcm_s16le")
    synth.synthesize("hi")
    assert server.last().settings == {"voice": "leo", "max_tokens": 300, "buffer_size": 3, "temperature": 0.5,
                                      "top_p": 0.9, "repetition_penalty": 1.1, "encoding": "pcm_s16le"}
    synth.synthesize("hi", voice="zoe", top_p=0.5, buffer_size=2, encoding="pcm_mulaw")
    assert server.last().settings == {"voice": "zoe", "max_tokens": 300, "buffer_size": 2, "temperature": 0.5,
                                      "top_p": 0.5, "repetition_penalty": 1.1, "encoding": "pcm_mulaw"}


@pytest.mark.parametrize("override", [{"top_p": 0}, {"buffer_size": 0}, {"temperature": float("nan")},
                                      {"max_tokens": True}, {"encoding": "wav"}])
def test_invalid_per_call_settings_never_reach_the_server(server: LocalServer, override: Dict[str, Any]) -> None:
    synth = synthesizer(server)
    with pytest.raises(ConfigurationError):
        synth.synthesize("hi", **override)
    with pytest.raises(ConfigurationError):
        list(synth.stream("hi", **override))
    assert server.conversations == []


def test_unknown_voice_is_sent_with_a_warning(server: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="basetts"):
        synthesizer(server, voice="custom").synthesize("hi")
    assert server.last().settings["voice"] == "custom"
    assert any("custom" in r.getMessage() for r in caplog.records)


def test_a_word_equal_to_the_sentinel_is_spoken(server: LocalServer) -> None:
    text = f"say {SENTINEL} now"
    audio = synthesizer(server).synthesize(text, text_format="plain")  # as Markdown, __END__ is a bold END
    record = server.last()
    assert record.words == ["say", SENTINEL, "now"]
    assert record.messages.count(SENTINEL) == 1 and record.messages[-1] == SENTINEL
    assert audio.pcm == server.expected_pcm(text)


# encodings end to end -------------------------------------------------------------------------------------------
TEXT = "The quick brown fox. It jumps over the lazy dog, twice"


def test_s16_end_to_end(server: LocalServer) -> None:
    synth = synthesizer(server, buffer_size=3)
    audio = synth.synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT)
    assert audio.stats.encoding == "pcm_s16le"
    assert audio.stats.bytes_received == len(audio.pcm)
    assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)


def test_mulaw_end_to_end_synthesize_and_stream(server: LocalServer) -> None:
    expected = decode_mulaw(mulaw_encode(server.expected_pcm(TEXT)))
    synth = synthesizer(server, buffer_size=3, encoding="pcm_mulaw")
    audio = synth.synthesize(TEXT)
    record = server.last()
    assert record.settings is not None and record.settings["encoding"] == "pcm_mulaw"
    assert max(record.frame_sizes) == 2048
    assert audio.pcm == expected
    assert audio.stats.encoding == "pcm_mulaw"
    assert audio.stats.bytes_received * 2 == len(audio.pcm)  # half the bytes on the wire
    assert b"".join(synth.stream(TEXT)) == expected
    # Per call too, from a 16-bit synthesizer:
    assert synthesizer(server).synthesize(TEXT, encoding="pcm_mulaw", buffer_size=3).pcm == expected


def test_mulaw_with_odd_frame_sizes() -> None:
    with LocalServer(faults=Faults(frame_sizes=[2048, 1, 333, 4095])) as server:
        audio = synthesizer(server, encoding="pcm_mulaw").synthesize(TEXT)
        assert audio.pcm == decode_mulaw(mulaw_encode(server.expected_pcm(TEXT)))


def test_legacy_server_sends_16_bit_though_mulaw_was_asked(caplog: pytest.LogCaptureFixture) -> None:
    with LocalServer(legacy=True) as server:
        synth = synthesizer(server, buffer_size=3, encoding="pcm_mulaw")
        with caplog.at_level(logging.WARNING, logger="basetts"):
            audio = synth.synthesize(TEXT)
        record = server.last()
        assert record.settings is not None and record.settings["encoding"] == "pcm_mulaw"
        assert record.frame_sizes[0] == 4096
        assert audio.pcm == server.expected_pcm(TEXT)
        assert audio.stats.encoding == "pcm_s16le"
        assert any("16-bit" in r.getMessage() for r in caplog.records)
        assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)


# The real server's word loss, and uvicorn's timing ---------------------------------------------------------
@pytest.mark.parametrize("word, spoken, lost", [
    ("日本語。テスト。", ["日本語。"], "テスト。"), ("Hmm..", ["Hmm."], ".")])
def test_a_sentence_end_inside_a_word_deletes_words_as_on_the_real_server(
        server: LocalServer, word: str, spoken: List[str], lost: str) -> None:
    """pysbd ends a sentence inside the word; the flush counts words per sentence and removes more than
    it spoke: a client that sends the word whole loses part of it."""
    raw = raw_words(server, f"{word} later words")
    record = server.last()
    assert record.segments[0] == spoken and record.lost == [lost]
    assert raw.audio == render(server, record.segments)


@pytest.mark.parametrize("text", ["日本語。テスト。 later words", "Hmm.. ok then", "Wait?!What? Yes."])
def test_basetts_cuts_such_words_so_nothing_is_lost(server: LocalServer, text: str) -> None:
    audio = Synthesizer(url=server.url, api_key=server.api_key).synthesize(text)
    record = server.last()
    assert record.lost == []
    assert "".join(record.spoken) == "".join(text.split())  # every character, once, in order
    assert audio.pcm == bytes(record.audio)


@pytest.mark.parametrize("text", [
    "I saw Dr. Smith at 5 p.m. Then he left.", "Mr. Brown lives in the U.S. He likes it, e.g. the food.",
    "It was late. ok then", "Wow! Great. Really? Yes", "The U.S. is big. Yes", "We met at 5 p.m. in town"])
def test_the_builtin_splitter_agrees_with_pysbd(text: str) -> None:
    from basetts.protocols.flush import builtin_sentences, pysbd_sentences

    assert builtin_sentences(text.split()) == pysbd_sentences(text.split())


def test_a_client_that_does_not_answer_pings_is_closed_with_1011() -> None:
    with LocalServer(ping_interval=0.2, ping_timeout=0.2) as server:
        ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=10)
        try:
            time.sleep(1.0)
            while True:
                frame = ws.recv_frame()  # read, never answered
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
        finally:
            ws.shutdown()
        record = server.last()
    assert frame.data[:2] == (1011).to_bytes(2, "big") and frame.data[2:] == b"keepalive ping timeout"
    assert record.keepalive_timeout and record.close_code == 1011


def test_pings_wait_behind_unread_words_as_on_uvicorn() -> None:
    """While the handler generates, a received message waits and the server reads nothing more: a pong
    sent behind it is not seen until the handler has taken every queued message."""
    with LocalServer(ping_interval=None, speed=1.0, samples_per_word=24000) as server:  # 1 s per word
        ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=10)
        try:
            ws.send(json.dumps({"buffer_size": 1}))
            ws.send("first")  # the server generates 1 s of audio for it, reading nothing meanwhile
            ws.send("second")  # waits in the server's queue: reading stops
            time.sleep(0.2)  # read by then (a ping read together with it would be answered at once)
            sent = time.monotonic()
            ws.ping(b"probe")  # its pong comes only once "second" has been taken, after "first"'s audio
            while True:
                opcode, frame = ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_PONG:
                    waited = time.monotonic() - sent
                    break
            ws.send(SENTINEL)
        finally:
            ws.shutdown()
    assert waited > 0.6, "the pong was read while a message waited: uvicorn would not have"


@pytest.mark.parametrize("by", ["bytes", "messages"])
def test_a_cut_after_n_bytes_delivers_n_bytes_to_a_client_reading_slowly(serve: Any, by: str) -> None:
    """A reset discards what the server's socket still holds: the fault waits for it to reach the client, so
    tests can count on what the server's record says it sent (a slow reader used to lose the last frames)."""
    cut = 1_000_001 if by == "bytes" else 4096 * 250
    server = serve(faults=Faults(drop_after_bytes=cut) if by == "bytes" else Faults(drop_after_messages=250))
    ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=10)
    received = 0
    try:
        for message in (json.dumps({"voice": "tara"}), *["word"] * 600, SENTINEL):
            ws.send(message)
        while True:
            try:
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                break
            if opcode == websocket.ABNF.OPCODE_BINARY:
                received += len(frame.data)
                time.sleep(0.003)  # a slow reader: the server's socket fills up
    finally:
        ws.shutdown()
    record = server.conversations[0]
    assert record.faulted and record.bytes_sent == cut
    assert received == cut


@pytest.mark.parametrize("protocol", ["orpheus", "qwen3", "orpheus-http"])
def test_bytes_that_are_not_http_get_uvicorns_400_and_the_server_serves_on(serve: Any, protocol: str) -> None:
    """A request line or header h11 cannot parse is answered "400 Invalid HTTP request received." and closed, as
    uvicorn's parser answers before any upgrade (the websocket servers crashed a thread on a bad header); a
    thread's crash would fail this test (setup.cfg's filterwarnings)."""
    import socket

    server = serve(protocol=protocol, **({"voices": ("v",)} if protocol == "qwen3" else {}))
    for data in (b"HELLO\r\n\r\n", b"GET /environments/production/websocket HTTP/1.1\r\nBad Header\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(data)
            answer = b""
            while True:
                got = sock.recv(4096)
                if not got:
                    break
                answer += got
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"Invalid HTTP request received.")
    options = {"protocol": "qwen3", "voice": "v"} if protocol == "qwen3" else {}
    assert Synthesizer(url=server.url, api_key=server.api_key, **options).synthesize("Still here.").duration > 0


def test_the_espeak_engine_speaks_any_text_a_nul_included(serve: Any) -> None:
    """A NUL cannot go in espeak-ng's arguments: it crashed the handler's thread (the connection dropped)."""
    server = serve(engine="espeak")
    audio = Synthesizer(url=server.url, api_key=server.api_key).synthesize("Hello\x00 there.", text_format="plain")
    assert audio.duration > 0.3 and server.last().close_code == 1000


def test_a_text_message_that_is_not_utf8_is_closed_with_1007_and_the_server_serves_on(serve: Any) -> None:
    """As uvicorn's websockets answers it: a close with 1007 (it crashed the connection's reading thread)."""
    server = serve()
    ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=5)
    try:
        ws.send(json.dumps({"voice": "tara"}))
        ws.send(b"caf\xe9", opcode=websocket.ABNF.OPCODE_TEXT)  # Latin-1, not UTF-8
        opcode, frame = ws.recv_data_frame(control_frame=True)
        while opcode != websocket.ABNF.OPCODE_CLOSE:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        assert int.from_bytes(frame.data[:2], "big") == 1007
    finally:
        ws.shutdown()
    assert Synthesizer(url=server.url, api_key=server.api_key).synthesize("Still here.").duration > 0
