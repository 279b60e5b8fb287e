"""A connection lost after audio began is recovered: the text goes on, on a new connection, after the last unit
whose audio came whole (an HTTP request, a Qwen3 sentence, a part of a text over Orpheus's websocket, which marks
no segment in its audio). Sans-I/O first (where units end), then the local server cutting connections for real,
every call checked against the same text's audio uncut (the local server's audio is deterministic)."""
from __future__ import annotations

import array
import json
import logging
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import basetts
from basetts import BasettsWarning, StreamInterrupted
from basetts.audio import Timeline
from basetts.protocols.flush import builtin_sentences, flush
from basetts.protocols.orpheus import SENTINEL
from basetts.protocols.orpheus import outgoing as orpheus_outgoing
from basetts.protocols.orpheus_http import prompts
from basetts.protocols.qwen3 import Qwen3Utterance, outgoing
from basetts.testing import LocalServer
from basetts.testing.faults import Faults

from .helpers import all_threads_gone, synth_for
from .test_orpheus_http_protocol import response
from .test_orpheus_http_protocol import utterance as http_utterance
from .test_playback import assert_played_exactly
from .test_qwen3_protocol import event, sentence

WORDS = st.lists(st.sampled_from(["a", "word", "end.", "Yes,", "really?", "U.S.", "x" * 90, "y" * 600,
                                  "日本語。テスト。", "pause;"]), max_size=120)


# where units end, sans-I/O ----------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(WORDS, st.booleans())
def test_each_request_knows_the_words_it_and_those_before_hold(words: List[str], whole: bool) -> None:
    sent = list(prompts(words, builtin_sentences, whole))
    so_far = ""
    for message in sent:
        so_far += message.text.replace(" ", "")
        if message.through is None:  # it ends inside a word: no count of whole words is its text
            assert all(so_far != "".join(words[:n]) for n in range(len(words) + 1)) or not message.text
        else:
            assert so_far == "".join(words[:message.through])
    assert sent[-1].through == len(words)


@settings(max_examples=150, deadline=None)
@given(WORDS)
def test_each_qwen3_sentence_ending_a_word_knows_the_words_through_it(words: List[str]) -> None:
    completed: List[Tuple[List[str], Optional[int]]] = []
    texts = []
    for message in outgoing({"type": "session.config"}, words,
                            completes=lambda _, sentences, through: completed.append((sentences, through))):
        texts.append(json.loads(message.text).get("text", ""))
    spoken = ""
    for sentences, through in completed:
        spoken += "".join(sentences).replace(" ", "")
        if through is not None:
            assert spoken == "".join(words[:through])
    if completed and completed[-1][1] is not None:
        assert "".join(words).replace(" ", "").startswith(spoken)


@settings(max_examples=200, deadline=None)
@given(WORDS, st.integers(1, 12), st.integers(0, 30))
def test_orpheus_parts_end_at_segment_ends_and_the_server_makes_the_same_segments(
        words: List[str], buffer_size: int, part_words: int) -> None:
    """Orpheus's websocket marks no segment's end, but its close marks the end of what came before the sentinel:
    a long text goes as parts, each ended where a segment ends, so the parts' segments are the whole text's."""
    def segments(messages: List[str]) -> List[List[str]]:  # the server's flush rule, one action per message
        buffer: List[str] = []
        made = []
        for message in messages:
            if message == SENTINEL:
                made.append(flush(buffer, buffer_size, True, builtin_sentences))
                break
            buffer.extend(message.split())
            made.append(flush(buffer, buffer_size, False, builtin_sentences))
        return [f.spoken for f in made if f is not None]

    whole = segments([m.text for m in orpheus_outgoing({}, words, buffer_size)][1:])
    made, rest = [], list(words)
    while True:
        sent = list(orpheus_outgoing({}, rest, buffer_size, part_words))
        made += segments([m.text for m in sent[1:]])
        end = sent[-1]
        assert end.text == SENTINEL and end.last and end.through is not None
        if not end.more:
            assert end.through == len(rest)
            break
        assert max(part_words, 1) <= end.through < len(rest)
        rest = rest[end.through:]
    assert made == whole


def test_an_http_request_answered_whole_is_where_the_text_resumes() -> None:
    state = http_utterance("One two. Three four.".split())
    state.send(state.take(eager=True), 0.0)
    assert state.resume_point == (0, 0)
    state.receive(response(chunks=(b"\x01\x00" * 100,), end=False), 0.1)
    assert state.resume_point == (0, 0)  # its body is still coming
    state.receive(b"0\r\n\r\n", 0.2)
    assert state.resume_point == (4, 200)


def test_a_qwen3_sentence_done_is_where_the_text_resumes_and_a_resumed_session_counts_on() -> None:
    timeline = Timeline()
    state = Qwen3Utterance({"type": "session.config", "timestamp_type": "word"}, ["One.", "Two", "three."],
                           timeline=timeline, first_audio_timeout=5, read_timeout=5, max_message_size=2 ** 20)
    messages = [m.text for m in state.messages]
    state.sent(messages, None, 0.0)
    state.receive(sentence(0, "One.", bytes(24000), [("One.", 0.0, 0.5)]), 0.1)
    assert state.resume_point == (1, 24000)
    state.receive(event("audio.start", sentence_index=1, sentence_text="Two three.", format="pcm",
                        sample_rate=24000), 0.2)
    assert state.resume_point == (1, 24000)  # begun, not done
    resumed = Qwen3Utterance({"type": "session.config", "timestamp_type": "word"}, ["Two", "three."],
                             timeline=timeline, first_audio_timeout=5, read_timeout=5, max_message_size=2 ** 20)
    resumed.resume_from(24000)
    resumed.sent([m.text for m in resumed.messages], None, 0.3)
    resumed.receive(sentence(0, "Two three.", bytes(48000), [("Two", 0.0, 0.5), ("three.", 0.5, 1.0)]), 0.4)
    assert [(s.index, s.start, s.end) for s in timeline.sentences] == [(0, 0.0, 0.5), (1, 0.5, 1.5)]
    assert [(w.text, w.start, w.end) for w in timeline.words] == [("One.", 0.0, 0.5), ("Two", 0.5, 1.0),
                                                                  ("three.", 1.0, 1.5)]
    assert resumed.resume_point == (2, 48000)


# cut for real ------------------------------------------------------------------------------------------------
TEXT = " ".join(f"Sentence number {i} is a short one." for i in range(36))
PROTOCOLS = ["orpheus-http", "qwen3", "orpheus", "xtts-streaming", "kokoro"]


def server_options(protocol: str) -> Dict[str, Any]:
    return {"voices": ("alice",)} if protocol == "qwen3" else {}


def synth(server: LocalServer, protocol: str, **options: Any) -> basetts.Synthesizer:
    if protocol == "qwen3":
        options.setdefault("voice", "alice")
    return synth_for(server, protocol=protocol, **options)


_clean: Dict[str, Tuple[bytes, List[int]]] = {}


def clean(serve: Any, protocol: str) -> Tuple[bytes, List[int]]:
    """The text's audio uncut, and where each unit's audio ends in it (requests', sentences')."""
    if protocol not in _clean:
        server = serve(protocol=protocol, **server_options(protocol))
        audio = synth(server, protocol).synthesize(TEXT)
        if protocol == "qwen3":
            ends = [round(s.end * 48000) for s in audio.sentences]
        else:
            ends = []
            for record in server.conversations:
                ends.append((ends[-1] if ends else 0) + len(record.audio))
        assert ends[-1] == len(audio.pcm)
        _clean[protocol] = (audio.pcm, ends)
    return _clean[protocol]


def spoken_once(server: LocalServer, protocol: str) -> None:
    """From the server's records across connections: the units it finished make the text, each word once."""
    if protocol == "qwen3":
        done = []
        for record in server.conversations:
            finished = {e["sentence_index"] for e in record.events if e.get("type") == "audio.done"}
            done += [text for index, text in enumerate(record.sentences) if index in finished]
        assert " ".join(done).split() == TEXT.split()
    elif protocol == "orpheus":  # each part is one record; a part begun ahead may come before a part made again
        words = TEXT.split()

        def start(spoken: List[str]) -> int:
            return next(i for i in range(len(words)) if words[i:i + len(spoken)] == spoken)

        parts = sorted((r.spoken for r in server.conversations if not r.faulted and r.spoken), key=start)
        assert [w for spoken in parts for w in spoken] == words
    else:  # over HTTP each request is one record
        assert " ".join(m for r in server.conversations if not r.faulted for m in r.messages).split() == TEXT.split()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_cut_mid_unit_is_recovered_and_the_audio_is_the_uncut_audio(serve: Any, protocol: str,
                                                                       caplog: Any) -> None:
    pcm, ends = clean(serve, protocol)
    http = protocol != "qwen3"
    # Over HTTP each request is a conversation, over Orpheus's websocket each part: the second one is cut halfway;
    # Qwen3: one session, cut in its second unit's audio.
    cut = (ends[1] - ends[0]) // 2 + 1 if http else ends[0] + (ends[1] - ends[0]) // 2 + 1
    server = serve(protocol=protocol, **server_options(protocol),
                   faults=Faults(drop_after_bytes=cut, stream_failures=1, first_failure=2 if http else 1))
    with caplog.at_level(logging.INFO, logger="basetts"), warnings.catch_warnings():
        warnings.simplefilter("error", BasettsWarning)  # taken back whole: nothing to warn of
        audio = synth(server, protocol).synthesize(TEXT)
    assert audio.pcm == pcm
    assert audio.stats.recoveries == 1 and audio.stats.recovery_time > 0
    assert any("resuming" in r.getMessage() for r in caplog.records)
    spoken_once(server, protocol)
    assert all_threads_gone()


@pytest.mark.parametrize("protocol", ["orpheus-http", "qwen3", "orpheus"])
@pytest.mark.parametrize("where", ["boundary", "last unit", "twice", "eof", "close 1011"])
def test_cuts_anywhere_and_twice_are_recovered(serve: Any, protocol: str, where: str) -> None:
    pcm, ends = clean(serve, protocol)
    http = protocol != "qwen3"  # a conversation per unit
    last = len(ends) - 1
    faults = {
        "boundary": Faults(drop_after_bytes=ends[1] - ends[0] if http else ends[1], stream_failures=1,
                           first_failure=2 if http else 1),
        "last unit": Faults(drop_after_bytes=(ends[last] - ends[last - 1]) // 2 if http
                            else ends[last - 1] + 1000, stream_failures=1, first_failure=last + 1 if http else 1),
        "twice": Faults(drop_after_bytes=5000, stream_failures=2, first_failure=1),
        "eof": Faults(drop_after_bytes=ends[0] + 2 if not http else 3, cut="eof", stream_failures=1),
        "close 1011": Faults(drop_after_bytes=(ends[1] - ends[0]) // 2 if http else (ends[0] + ends[1]) // 2,
                             close_code=1011, close_reason="model crashed", stream_failures=1,
                             first_failure=2 if http else 1),
    }[where]
    server = serve(protocol=protocol, **server_options(protocol), faults=faults)
    audio = synth(server, protocol).synthesize(TEXT)
    assert audio.pcm == pcm
    assert audio.stats.recoveries == (2 if where == "twice" else 1)
    spoken_once(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_save_stream_and_speak_recover(serve: Any, tmp_path: Any, pulse: Any, protocol: str) -> None:
    pcm, ends = clean(serve, protocol)
    # Over HTTP (Orpheus's websocket) the second request (part), a conversation of its own, is cut halfway;
    # Qwen3's session in its eleventh sentence (well ahead of the player: its sentences are short).
    unit = 0 if protocol != "qwen3" else 9  # the last unit done before the cut
    done, middle = ends[unit], (ends[unit] + ends[unit + 1]) // 2

    def cut(scale: float = 1.0) -> Faults:
        if protocol != "qwen3":
            return Faults(drop_after_bytes=int((middle - done) * scale), stream_failures=1, first_failure=2)
        return Faults(drop_after_bytes=int(middle * scale), stream_failures=1)

    def cut_once() -> basetts.Synthesizer:
        return synth(serve(protocol=protocol, faults=cut(), **server_options(protocol)), protocol)

    saved = cut_once().save(TEXT, tmp_path / "out.wav")  # the file is cut back to the last unit done
    assert saved.audio().pcm == pcm and saved.stats.recoveries == 1
    if protocol == "kokoro":  # an answer is handed on once it is whole: a stream has nothing of the cut one
        with warnings.catch_warnings():
            warnings.simplefilter("error", BasettsWarning)
            assert b"".join(cut_once().stream(TEXT)) == pcm
    else:  # a stream cannot take back what it yielded: that unit is heard again from its start, and said
        with pytest.warns(BasettsWarning, match="heard again"):
            streamed = b"".join(cut_once().stream(TEXT))
        again = len(streamed) - len(pcm)
        assert again > 0 and streamed[:done + again] == pcm[:done + again]
        assert streamed[done + again:] == pcm[done:]
    # speak(): the player gives back what it has not played, so with a server faster than real time the loss
    # is never heard: the sink plays the uncut audio, sample for sample.
    short = {"samples_per_word": 240, **server_options(protocol)}  # 10 ms a word: the text plays in 2.5 s
    uncut = synth(serve(protocol=protocol, **short), protocol).synthesize(TEXT).pcm
    recording = pulse.record()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BasettsWarning)
        spoken = synth(serve(protocol=protocol, faults=cut(len(uncut) / len(pcm)), **short), protocol).speak(TEXT)
    played = recording.stop()
    assert spoken.stats.recoveries >= 1 and spoken.pcm == uncut
    assert_played_exactly(played, uncut)
    assert all_threads_gone()


@pytest.mark.parametrize("protocol", ["orpheus-http", "qwen3", "orpheus"])
def test_a_cut_at_a_chosen_time_is_recovered(serve: Any, protocol: str) -> None:
    """A network failing at a moment, 50 ms into a unit's generation (a server at 10x real time)."""
    http = protocol != "qwen3"
    faults = Faults(drop_after_seconds=0.05, stream_failures=1, first_failure=2 if http else 1)
    server = serve(protocol=protocol, faults=faults, speed=10.0, samples_per_word=480, **server_options(protocol))
    audio = synth(server, protocol).synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.recoveries == 1
    spoken_once(server, protocol)


@pytest.mark.parametrize("protocol", ["orpheus-http", "qwen3", "orpheus"])
def test_a_path_gone_silent_is_found_by_read_timeout_and_recovered(serve: Any, protocol: str) -> None:
    """A blackhole: after three audio messages nothing more either way (no FIN, no pong, no close), as a
    network path that died: `read_timeout` finds it, and the text goes on on a new connection."""
    pcm, _ = clean(serve, protocol)
    http = protocol != "qwen3"
    faults = Faults(drop_after_messages=3, cut="blackhole", stream_failures=1, first_failure=2 if http else 1)
    server = serve(protocol=protocol, faults=faults, **server_options(protocol))
    audio = synth(server, protocol, read_timeout=0.5).synthesize(TEXT)
    assert audio.pcm == pcm and audio.stats.recoveries == 1
    assert [r.faulted for r in server.conversations].count(True) == 1
    spoken_once(server, protocol)
    assert all_threads_gone()


@pytest.mark.parametrize("extension", [".flac", ".mp3"])
def test_an_encoded_file_is_fed_late_enough_to_give_back_what_a_loss_makes_again(serve: Any, tmp_path: Any,
                                                                                  extension: str) -> None:
    import soundfile

    pcm, ends = clean(serve, "orpheus-http")
    faults = Faults(drop_after_bytes=(ends[1] - ends[0]) // 2, stream_failures=1, first_failure=2)
    path = tmp_path / f"out{extension}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BasettsWarning)  # nothing heard again: taken back before the encoder
        saved = synth(serve(protocol="orpheus-http", faults=faults), "orpheus-http").save(TEXT, path)
    samples, _ = soundfile.read(str(path), dtype="int16")
    assert saved.stats.recoveries == 1 and saved.duration == len(pcm) / 48000
    if extension == ".flac":  # lossless: the very samples
        assert samples.tobytes() == pcm
    else:  # the encoder's frames pad the start and end: the length says no unit came twice
        assert abs(len(samples) * 2 - len(pcm)) < 48000 * 0.2


def test_a_sentence_partly_heard_is_heard_again_after_a_fade_not_a_click(serve: Any, pulse: Any) -> None:
    """A long sentence after a short one, from a server at 3x real time: cut halfway, the sentence has been
    heard in part, and what the player holds of the rest is taken back. It is heard again from its start,
    joined by a fade out and in (5 ms each): on the sound card's recording no step between two samples is
    larger than the tone's own (a click would be)."""
    words = ["Hi."] + [f"w{i}" for i in range(30)] + ["end.", "Bye."]
    text = " ".join(words)
    word = 1200 * 2  # 50 ms
    server = serve(protocol="qwen3", faults=Faults(drop_after_bytes=16 * word + word // 2, stream_failures=1),
                   speed=3.0, samples_per_word=1200, voices=("alice",))
    uncut = server.expected_pcm(text)
    recording = pulse.record()
    with pytest.warns(BasettsWarning, match="heard again"):
        audio = synth(server, "qwen3").speak(text)
    played = array.array("h", recording.stop())
    assert audio.stats.recoveries == 1 and audio.stats.underruns == 0  # the join is the splice's, not a rebuffer
    natural = max(abs(b - a) for a, b in zip(array.array("h", uncut), array.array("h", uncut)[1:]))
    steps = [abs(b - a) for a, b in zip(played, played[1:])]
    assert max(steps) <= natural * 1.2, "a click where the sentence restarts"
    sounding = [i for i, sample in enumerate(played) if sample]
    assert (sounding[-1] - sounding[0]) * 2 > len(uncut) + 2 * 1200  # part of the sentence: heard twice


def test_each_part_goes_on_a_connection_opened_while_the_part_before_was_heard(serve: Any) -> None:
    """Orpheus's websocket, a text in parts: the next part's connection is opened (TCP, upgrade) once the part
    before has all its text sent, so it is there when that part ends; a whole text's next part is begun on it
    then (its text sent), so the model makes its first audio while the part before is heard. Text arriving over
    time gets the connection only. A deployment that takes one connection at a time (at its concurrency limit)
    refuses it, and each part then opens its own: the same audio either way. The stats are the whole call's."""
    pcm, _ = clean(serve, "orpheus")
    for text in (TEXT, iter([word + " " for word in TEXT.split()])):
        # The last segment of a part (a sentence: 26 ms at 20x) takes longer than the next part's upgrade, which in
        # this process shares the GIL with the server's threads: at 8x, 64 ms, where 20x lost all three races once.
        server = serve(protocol="orpheus", speed=8.0)
        before = time.monotonic()
        audio = synth(server, "orpheus").synthesize(text)
        assert audio.pcm == pcm and audio.stats.recoveries == 0
        assert server.most_at_once == 2 and server.connections == len(server.conversations) > 2
        spoken_once(server, "orpheus")
        parts = server.conversations
        begun_ahead = [later.first_message_at < earlier.ended_at for earlier, later in zip(parts, parts[1:])]
        # Begun while the server still made the part before's last segment: how many pairs make it depends on the
        # machine's load (as `most_at_once` does); text arriving over time never begins early.
        assert any(begun_ahead) if text == TEXT else not any(begun_ahead)
        assert audio.stats.bytes_received == len(pcm) and audio.stats.frames_received == sum(
            len(part.frame_sizes) for part in parts)
        assert audio.stats.total_time is not None and audio.stats.total_time > parts[-1].first_message_at - before
        assert audio.stats.connect_time is not None and before + audio.stats.connect_time < parts[0].ended_at
    server = serve(protocol="orpheus", speed=20.0, faults=Faults(one_at_a_time=True))
    audio = synth(server, "orpheus").synthesize(TEXT)
    assert audio.pcm == pcm and audio.stats.recoveries == 0
    spoken_once(server, "orpheus")
    assert all_threads_gone()


def test_what_recovery_cannot_mend_ends_the_call_with_what_was_complete(serve: Any) -> None:
    pcm, ends = clean(serve, "orpheus-http")
    half = (ends[1] - ends[0]) // 4 * 2
    # recoveries=0: as before, the error at once, with every byte received (a FIN: a reset may lose some).
    server = serve(protocol="orpheus-http", faults=Faults(drop_after_bytes=half, first_failure=2, cut="eof"))
    with pytest.raises(StreamInterrupted) as caught:
        synth(server, "orpheus-http", recoveries=0).synthesize(TEXT)
    assert caught.value.partial.pcm == pcm[:ends[0] + half] and caught.value.partial.stats.recoveries == 0
    # A budget spent, or a server that drops at once again and again: said, and every byte received.
    for options, said in (({"recoveries": 1}, "recoveries=1"), ({"recoveries": 10, "retry_backoff": 0}, "within")):
        server = serve(protocol="orpheus-http", faults=Faults(drop_after_bytes=half, first_failure=2, cut="eof"))
        with pytest.warns(BasettsWarning, match=said), pytest.raises(StreamInterrupted) as caught:
            synth(server, "orpheus-http", **options).synthesize(TEXT)
        assert caught.value.partial.pcm == pcm[:ends[0] + half]
    # Refused at the reconnection (401, or a 429 asking for longer than a call waits): the loss, saying why it
    # could not go on, with the audio complete so far.
    for status, retry_after in ((401, None), (429, 120.0)):
        server = serve(protocol="orpheus-http", faults=Faults(drop_after_bytes=half, first_failure=2, stream_failures=1,
                                                              retry_after=retry_after))
        heard: List[int] = []

        def refuse(chunk: bytes, server: LocalServer = server, status: int = status, heard: List[int] = heard) -> None:
            heard.append(len(chunk))  # from the second request's audio on: it was answered already
            if sum(heard) > ends[0]:
                server.faults.handshake_status = status

        with pytest.raises(StreamInterrupted, match=f"A new connection to finish it failed.*{status}") as caught:
            synth(server, "orpheus-http").synthesize(TEXT, on_audio=refuse)
        assert caught.value.partial.pcm == pcm[:ends[0]]
    assert all_threads_gone()


def test_a_reconnection_refused_once_is_retried_and_the_text_goes_on(serve: Any) -> None:
    """The network still failing while the call reconnects: the new connection's upgrade is refused (503) once;
    the retries try again after their backoff, and the text goes on."""
    pcm, ends = clean(serve, "qwen3")
    faults = Faults(drop_after_bytes=ends[2] + 100, stream_failures=1)
    server = serve(protocol="qwen3", voices=("alice",), faults=faults)

    def refuse_the_next_upgrade(chunk: bytes) -> None:
        if server.faults.handshake_status is None:
            server.faults.handshake_status, server.faults.handshake_failures = 503, server.handshakes + 1

    audio = synth(server, "qwen3", retry_backoff=0.01).synthesize(TEXT, on_audio=refuse_the_next_upgrade)
    assert audio.pcm == pcm and audio.stats.recoveries == 1
    assert server.handshakes == 3 and audio.stats.attempts == 3  # the first, the refused one, the one that went on


def test_each_recovery_is_traced_with_its_cause(serve: Any, tmp_path: Any) -> None:
    pcm, ends = clean(serve, "qwen3")
    server = serve(protocol="qwen3", voices=("alice",), faults=Faults(drop_after_bytes=ends[2] + 10, stream_failures=1))
    trace = tmp_path / "trace.jsonl"
    audio = synth(server, "qwen3", trace=str(trace), word_timestamps=True).synthesize(TEXT)
    assert audio.pcm == pcm
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    recoveries = [e for e in events if e.get("event") == "recovery"]
    assert len(recoveries) == 1 and recoveries[0]["kind"] == "StreamInterrupted"
    # Among the lines of the conversation it was lost on: the one whose end was that loss.
    lost = [e["conversation"] for e in events if e["event"] == "end" and e["error"]]
    assert lost == [recoveries[0]["conversation"]]
    assert recoveries[0]["words_done"] == 3 * 7 and recoveries[0]["audio_bytes"] == ends[2]
    # Word times and sentences count on across the connections, as if nothing had happened.
    assert [w.text for w in audio.words] == TEXT.split()
    assert [s.text for s in audio.sentences] == [s.text for s in basetts.Audio(pcm, stats=audio.stats).sentences]
    assert [s.index for s in audio.sentences] == list(range(36))


def cut_in_the_middle(protocol: str, uncut: basetts.Audio) -> Faults:
    """A cut in a middle unit: over HTTP a request (a sentence at a time) and over Orpheus's websocket a part are
    conversations of their own; a Qwen3 session is one."""
    if protocol == "qwen3":
        return Faults(drop_after_bytes=len(uncut.pcm) // 3, stream_failures=1)
    return Faults(drop_after_bytes=3000, stream_failures=1, first_failure=2 if protocol == "orpheus" else 10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_text_arriving_over_time_is_recovered_from_the_words_kept(serve: Any, protocol: str) -> None:
    def tokens() -> Any:  # as a language model hands them over
        for word in TEXT.split():
            yield word[:4]
            yield word[4:] + " "

    uncut = synth(serve(protocol=protocol, **server_options(protocol)), protocol).synthesize(tokens())
    faults = cut_in_the_middle(protocol, uncut)
    server = serve(protocol=protocol, **server_options(protocol), faults=faults)
    audio = synth(server, protocol).synthesize(tokens())
    assert audio.pcm == uncut.pcm and audio.stats.recoveries == 1
    spoken_once(server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_session_goes_on_after_a_lost_connection_with_the_text_sent_but_not_spoken(serve: Any,
                                                                                    protocol: str) -> None:
    def session_audio(server: LocalServer) -> basetts.Audio:
        with synth(server, protocol, word_timestamps=protocol == "qwen3").session() as session:
            for word in TEXT.split():
                session.send(word + " ")
        assert session.stats is session.audio.stats
        return session.audio

    uncut = session_audio(serve(protocol=protocol, **server_options(protocol)))
    faults = cut_in_the_middle(protocol, uncut)
    server = serve(protocol=protocol, **server_options(protocol), faults=faults)
    audio = session_audio(server)
    assert audio.pcm == uncut.pcm and audio.stats.recoveries == 1
    spoken_once(server, protocol)
    if protocol == "qwen3":  # words_heard and Audio.words stay true
        assert [w.text for w in audio.words] == TEXT.split()
    assert all_threads_gone()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_recovers_each_text_on_its_own(serve: Any, protocol: str) -> None:
    pcm, ends = clean(serve, protocol)
    http = protocol != "qwen3"
    # Every third conversation (HTTP: request; Orpheus: part) of the batch is cut halfway through its audio, once.
    cut = (ends[1] - ends[0]) // 2 if http else len(pcm) // 2
    server = serve(protocol=protocol, **server_options(protocol),
                   faults=Faults(drop_after_bytes=cut, stream_failures=2, first_failure=3))
    results = list(synth(server, protocol).synthesize_many([TEXT] * 4, concurrency=2))
    assert [r.error for r in results] == [None] * 4
    assert all(r.audio is not None and r.audio.pcm == pcm for r in results)
    assert sum(r.audio.stats.recoveries for r in results if r.audio is not None) == 2
    assert all_threads_gone()


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["orpheus-http", "qwen3", "orpheus"]), st.floats(0.0, 0.999), st.sampled_from(["reset", "eof"]))
def test_a_cut_anywhere_is_mended_byte_for_byte(protocol: str, where: float, cut: str) -> None:
    """Cuts at random points (any byte of any unit, once audio has begun), by a reset or a FIN."""
    pcm, ends = _clean_cached(protocol)
    at = max(2, int(where * len(pcm)))
    if protocol != "qwen3":  # the request (the part) holding that byte, cut there
        unit = next(i for i, end in enumerate(ends) if at < end)
        faults = Faults(drop_after_bytes=at - (ends[unit - 1] if unit else 0) + 1, first_failure=unit + 1,
                        stream_failures=1, cut=cut)
    else:
        faults = Faults(drop_after_bytes=at + 1, stream_failures=1, cut=cut)
    with LocalServer(protocol=protocol, faults=faults, **server_options(protocol)) as server:
        audio = synth(server, protocol).synthesize(TEXT)
        assert audio.pcm == pcm and audio.stats.recoveries == 1
        spoken_once(server, protocol)


def _clean_cached(protocol: str) -> Tuple[bytes, List[int]]:
    """`clean`, outside a test's fixtures (hypothesis runs one test many times)."""
    if protocol not in _clean:
        with LocalServer(protocol=protocol, **server_options(protocol)) as server:
            clean(lambda **options: server, protocol)
    return _clean[protocol]
