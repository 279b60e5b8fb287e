"""Qwen3-TTS's rules without a socket: the server's sentence splitter, what goes out (config, words with
their spaces, the batch ends, input.done), and what every event, close and drop means."""
from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from basetts import Audio, SentenceError, ServerError, StreamInterrupted
from basetts.audio import Timeline
from basetts.errors import ConfigurationError
from basetts.protocols.base import Outgoing
from basetts.protocols.qwen3 import (
    DONE,
    KEEPALIVE,
    MAX_BUFFER,
    BufferOverflow,
    Qwen3Utterance,
    Splitter,
    outgoing,
    ref_audio_uri,
    session_config,
)
from basetts.settings import Settings

from .helpers import server_frame

LOCAL = "ws://127.0.0.1:9/v1/websocket"


def texts(messages: List[Outgoing]) -> List[str]:
    return [json.loads(m.text).get("text", json.loads(m.text)["type"]) for m in messages]


# the splitter ---------------------------------------------------------------------------------------------
def test_the_splitter_ends_a_sentence_only_once_the_space_after_its_stop_has_come() -> None:
    splitter = Splitter()
    assert splitter.add("Hello world.") == []  # a "." at the end may be "3." of "3.14"
    assert splitter.add(" Next") == ["Hello world."]
    assert splitter.buffer == "Next"
    assert splitter.add(" one! And? ") == ["Next one!", "And?"]
    assert splitter.flush() is None


def test_the_splitter_ends_cjk_sentences_at_once_and_clauses_only_when_asked() -> None:
    assert Splitter().add("你好。世界！还有") == ["你好。", "世界！"]
    assert Splitter().add("一，二；三") == []
    assert Splitter(clause=True).add("一，二；三") == ["一，", "二；"]


def test_a_piece_under_two_characters_joins_the_next_without_the_space_as_on_the_server() -> None:
    splitter = Splitter()
    assert splitter.add("Hi. ! Then more. ") == ["Hi.", "!Then more."]
    assert Splitter().add("Dr. Smith came. ") == ["Dr.", "Smith came."]  # it splits at abbreviations too


def test_the_splitter_refuses_more_than_its_buffer_without_a_sentence_end() -> None:
    splitter = Splitter()
    splitter.add("a" * MAX_BUFFER)
    with pytest.raises(BufferOverflow, match="100000"):
        splitter.add("b")


PIECES = ["Hi", "there.", "no!", "why?", "ok", "你好。", "e.g.", "3.14", "x", "。", "!", "，", " ", "\n", "a. b"]


class Resplitting(Splitter):
    """The server's way: every text added splits the whole buffer again."""

    def add(self, text: str) -> List[str]:
        self._clean = False
        return super().add(text)


@given(st.lists(st.sampled_from(PIECES), max_size=40), st.booleans())
def test_the_splitter_answers_as_splitting_the_whole_buffer_each_time(pieces: List[str], clause: bool) -> None:
    fast, server = Splitter(clause), Resplitting(clause)
    for piece in pieces:
        assert fast.add(piece) == server.add(piece) and fast.buffer == server.buffer
    assert fast.flush() == server.flush()


@given(st.lists(st.sampled_from(PIECES[:9]), max_size=30))
def test_sentences_cut_as_the_text_arrives_are_the_sentences_of_the_whole(words: List[str]) -> None:
    whole, pieces = Splitter(), Splitter()
    at_once = whole.add(" ".join(words) + " ") + [s for s in [whole.flush()] if s]
    arriving = [s for word in words for s in pieces.add(word + " ")] + [s for s in [pieces.flush()] if s]
    assert arriving == at_once


# what goes out ----------------------------------------------------------------------------------------------
def test_the_config_comes_first_then_each_word_with_its_space_then_input_done() -> None:
    messages = list(outgoing({"type": "session.config"}, ["Hello", "wörld.", "Again"]))
    assert json.loads(messages[0].text) == {"type": "session.config"}
    assert texts(messages[1:-1]) == ["Hello ", "wörld. ", "Again "]
    assert messages[-1] == Outgoing(DONE, True, last=True)
    assert "wörld" in messages[2].text  # sent as UTF-8, not escaped


def test_batches_end_where_the_server_starts_generating() -> None:
    words = "One two. Three four! Five 六。七 eight".split()
    ends = [json.loads(m.text)["text"] for m in outgoing({}, words) if m.ends_batch and not m.last]
    assert ends == ["two. ", "four! ", "六。七 "]


def test_a_very_long_word_goes_in_pieces_and_too_much_without_a_stop_is_refused_before_sending() -> None:
    long_word = "x" * 20000
    pieces = texts(list(outgoing({}, [long_word]))[1:-1])
    assert "".join(pieces) == long_word + " " and max(map(len, pieces)) <= 8193
    with pytest.raises(ConfigurationError, match="without a sentence end"):
        list(outgoing({}, ["word"] * 30000))


def settings(**options: Any) -> Settings:
    return Settings(url=LOCAL, api_key="k", protocol="qwen3", **options)


def test_the_config_asks_for_streamed_pcm_and_sends_only_what_is_set() -> None:
    assert session_config(settings()) == {"type": "session.config", "response_format": "pcm", "stream_audio": True}
    config = session_config(settings(voice="Alice", language="English", word_timestamps=True,
                                     split_granularity="clause", max_new_tokens=512))
    assert config["voice"] == "Alice" and config["language"] == "English"
    assert config["timestamp_type"] == "word" and config["timestamp_transport_strategy"] == "sync"
    assert config["split_granularity"] == "clause" and config["max_new_tokens"] == 512
    assert session_config(settings(word_timestamps=True, timestamp_transport="async"))[
        "timestamp_transport_strategy"] == "async"


def test_inline_reference_audio_goes_as_a_data_uri_never_bare_base64(tmp_path: Any) -> None:
    clip = Audio(b"\x01\x00" * 24000)
    wav = clip.wav()
    path = tmp_path / "me.wav"
    path.write_bytes(wav)
    for source in (clip, wav, str(path), path):
        uri = ref_audio_uri(source)
        head, _, data = uri.partition(",")
        assert head == "data:audio/wav;base64" and base64.b64decode(data) == wav
    assert ref_audio_uri("https://example.com/me.wav") == "https://example.com/me.wav"
    with pytest.raises(ConfigurationError, match="WAV, FLAC, Ogg or MP3"):
        ref_audio_uri(b"not audio")
    with pytest.raises(ConfigurationError, match="cannot read"):
        ref_audio_uri(str(tmp_path / "missing.wav"))
    with pytest.raises(ConfigurationError, match="4 MiB"):
        ref_audio_uri(b"RIFF" + bytes(4 * 2 ** 20))


# what comes in ----------------------------------------------------------------------------------------------
def event(kind: str, **fields: Any) -> bytes:
    return server_frame(json.dumps({"type": kind, **fields}).encode(), opcode=0x1)


def utterance(words: Optional[List[str]] = None, **options: Any) -> Qwen3Utterance:
    config: Dict[str, Any] = {"type": "session.config", "timestamp_type": "word"}
    return Qwen3Utterance(config, words or ["Hi."], timeline=options.pop("timeline", Timeline()),
                          first_audio_timeout=5, read_timeout=5, max_message_size=2 ** 20, **options)


def sent_all(state: Qwen3Utterance) -> None:
    messages = [m.text for m in state.messages]
    state.sent(messages, None, 0.0)


def sentence(index: int, text: str, pcm: bytes, words: Optional[List[Any]] = None, error: bool = False) -> bytes:
    done: Dict[str, Any] = {"sentence_index": index, "total_bytes": len(pcm), "error": error}
    if words is not None:
        done["timestamp_info"] = {"word_alignment": {"words": [w[0] for w in words],
                                                     "word_start_times_seconds": [w[1] for w in words],
                                                     "word_end_times_seconds": [w[2] for w in words]}}
    return (event("audio.start", sentence_index=index, sentence_text=text, format="pcm", sample_rate=24000)
            + server_frame(pcm) + event("audio.done", **done))


def test_sentences_and_word_times_come_from_the_events_counted_from_the_first_sample() -> None:
    timeline = Timeline()
    state = utterance(["One.", "Two", "three."], timeline=timeline)
    sent_all(state)
    second = 0.5  # the server's times already count from the session's first sample: never shifted again
    received = state.receive(sentence(0, "One.", bytes(24000), [("One.", 0.0, 0.5)])
                             + sentence(1, "Two three.", bytes(48000), [("Two", second, 1.0), ("three.", 1.0, 1.5)])
                             + event("session.done", total_sentences=2), 0.0)
    assert received.ended and received.error is None and len(received.audio) == 72000
    assert [(s.index, s.text, s.start, s.end) for s in timeline.sentences] == [(0, "One.", 0.0, 0.5),
                                                                              (1, "Two three.", 0.5, 1.5)]
    assert [(w.text, w.start, w.end) for w in timeline.words] == [("One.", 0.0, 0.5), ("Two", 0.5, 1.0),
                                                                  ("three.", 1.0, 1.5)]
    audio = Audio(received.audio)
    audio.stats.timeline = timeline
    cut = Audio(received.audio[:2 * 30000])  # 1.25 s heard: "three." was not heard whole
    cut.stats.timeline = timeline
    assert [w.text for w in audio.words] == ["One.", "Two", "three."]
    assert [w.text for w in cut.words] == ["One.", "Two"]
    assert [s.end for s in cut.sentences] == [0.5, 1.25]


def test_async_timestamps_arrive_after_the_audio() -> None:
    state = utterance()
    sent_all(state)
    state.receive(sentence(0, "Hi.", bytes(4800)), 0.0)
    assert state.timeline.words == []
    info = {"word_alignment": {"words": ["Hi."], "word_start_times_seconds": [0.0], "word_end_times_seconds": [0.1]}}
    received = state.receive(event("timestamps", sentence_index=0, timestamp_info=info) + event("session.done"), 0.0)
    assert received.ended and received.error is None and [w.text for w in state.timeline.words] == ["Hi."]


def test_a_failed_sentence_raises_with_its_index_and_the_servers_words_or_is_collected() -> None:
    failing = (event("audio.start", sentence_index=0, sentence_text="Hi.", format="pcm")
               + event("error", message="Generation failed for sentence 0: Invalid language 'Klingon'")
               + event("audio.done", sentence_index=0, total_bytes=0, error=True))
    state = utterance()
    sent_all(state)
    received = state.receive(failing, 0.0)
    assert received.ended and isinstance(received.error, SentenceError)
    assert received.error.index == 0 and received.error.server_message == "Invalid language 'Klingon'"
    assert "sentence_errors='collect'" in str(received.error)
    collecting = utterance(sentence_errors="collect")
    sent_all(collecting)
    received = collecting.receive(failing + sentence(1, "Bye.", bytes(480)) + event("session.done"), 0.0)
    assert received.ended and received.error is None
    assert [s.error for s in collecting.timeline.sentences] == ["Invalid language 'Klingon'", None]


@pytest.mark.parametrize("message, says", [
    ("Invalid session config: 1 validation error", "refused the settings"),
    ("Timestamps requested but no ForcedAligner is loaded.", "no word aligner"),
    ("Idle timeout: no message received", "30 s without a message"),
    ("Timeout waiting for session.config", "waits 10 s"),
    ("Internal error: Text buffer exceeded maximum size", "Text buffer exceeded"),
])
def test_an_error_outside_a_sentence_ends_the_session_with_the_servers_message(message: str, says: str) -> None:
    state = utterance()
    received = state.receive(event("error", message=message), 0.0)
    assert received.ended and isinstance(received.error, ServerError)
    assert says in str(received.error) and message.split(":")[0] in str(received.error)


def test_session_done_is_the_end_whatever_follows_and_anything_before_it_is_incomplete() -> None:
    state = utterance()
    sent_all(state)
    assert state.receive(event("session.done", total_sentences=0), 0.0).error is None
    for ending in (server_frame(b"\x03\xe8", opcode=0x8), b""):
        early = utterance()
        sent_all(early)
        received = early.receive(ending, 0.0)
        assert received.ended and isinstance(received.error, StreamInterrupted)
        assert "session.done" in str(received.error)


@pytest.mark.parametrize("data, says", [
    (event("audio.start", sentence_index=0, utterance_index=0), "upstream vLLM-Omni"),
    (event("voice.registered", voice_name="x"), "truss example installs"),
    (event("audio.start", sentence_index=0, format="wav"), "not the streamed 24 kHz PCM"),
    (server_frame(b"not json", opcode=0x1), "not a Qwen3-TTS event"),
])
def test_other_servers_are_named_not_misread(data: bytes, says: str) -> None:
    received = utterance().receive(data, 0.0)
    assert received.ended and isinstance(received.error, ServerError) and says in str(received.error)


def test_events_of_unknown_types_are_ignored() -> None:
    received = utterance().receive(event("server.hint", detail="newer server"), 0.0)
    assert not received.ended


def test_a_keepalive_goes_out_after_a_third_of_the_idle_timeout_until_input_done() -> None:
    state = utterance(idle_timeout=3.0)
    state.sent([next(state.messages).text], None, 100.0)  # the config
    assert state.keepalive(100.5) is None and not state.wants_to_send(100.5)
    assert state.keepalive(101.0) == KEEPALIVE and state.wants_to_send(101.0)  # the driver asks the socket then
    state.sent([KEEPALIVE], None, 101.0)
    assert state.words_sent == 0 and state.keepalive(101.5) is None
    rest = [m.text for m in state.messages]
    state.sent(rest, None, 102.0)
    assert state.all_sent and state.keepalive(200.0) is None


def test_audio_is_owed_once_input_done_is_sent() -> None:
    state = utterance()
    state.sent([next(state.messages).text], None, 0.0)
    assert state.deadline() is None  # text still being produced owes nothing
    state.sent([m.text for m in state.messages], None, 1.0)
    assert state.deadline() == 6.0


def test_a_sentence_sent_owes_its_audio_even_while_the_rest_of_the_text_is_awaited() -> None:
    state = utterance(["Hi.", "more"])
    state.sent([next(state.messages).text], None, 0.0)
    first = next(state.messages)
    assert first.ends_batch
    state.sent([first.text], state.end_batch(1.0), 1.0)
    state.receive(server_frame(b"1", opcode=0xA), 1.1)  # its pong: read, but the audio is still owed
    assert state.deadline() == pytest.approx(6.1)
    state.receive(event("audio.start", sentence_index=0, sentence_text="Hi.") + server_frame(bytes(480)), 2.0)
    assert state.deadline() == pytest.approx(7.0)  # "Hi." is begun, not done: a server gone silent is found
    state.receive(event("audio.done", sentence_index=0, total_bytes=480, error=False), 2.5)
    assert state.deadline() is None  # "more" is no sentence yet: a producer may take its time


def test_text_goes_ahead_only_while_what_the_server_generates_ends_within_the_budget() -> None:
    long = "x" * 99 + "."
    state = utterance(["One.", "Two", "three.", long, "end"])
    config, first = next(state.messages), next(state.messages)
    state.sent([config.text, first.text], state.end_batch(0.0), 0.0)
    state.receive(server_frame(b"1", opcode=0xA), 0.1)  # the batch was read: the pacing alone would go on
    assert not state.may_send(0.1)  # "One." is being generated, at a speed not known yet: wait
    received = state.receive(sentence(0, "One.", bytes(480)), 0.2)
    assert received.acknowledged and state.may_send(0.2)  # done: 0.05 s per character
    two, three = next(state.messages), next(state.messages)
    state.sent([two.text, three.text], state.end_batch(0.3), 0.3)
    state.receive(server_frame(b"2", opcode=0xA), 0.31)
    assert state.may_send(0.31)  # "Two three.": 0.75 s to go at most, within the 2 s budget
    ahead = next(state.messages)
    state.sent([ahead.text], state.end_batch(0.4), 0.4)  # the long one, sent ahead
    state.receive(server_frame(b"3", opcode=0xA), 0.41)
    assert not state.may_send(0.41)  # 110 characters to generate: 8 s predicted, past the budget
    assert state.may_send(7.5)  # once most of that time has gone by
    state.receive(sentence(1, "Two three.", bytes(480)) + sentence(2, long, bytes(480)), 7.6)
    assert state.may_send(7.6)
