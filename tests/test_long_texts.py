"""Long texts against the real server's keepalive: every word spoken once, in order, byte-exact.

Each case holds one connection against the keepalive (recoveries=0; else a long text goes as parts, a
connection each, as the first case's synthesize() does). Time is compressed: the local server pings every 1 s
and gives 1 s for the pong, standing for uvicorn's 20 s / 20 s, and generates 20 times faster than the
real-time multiple a case stands for, so a segment's generation shrinks by the same factor. A text of 30
minutes at "3x real time" then runs in 30 s.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import pytest
import websocket

import basetts
from basetts.testing import Faults, LocalServer
from basetts.testing.server import ConversationRecord

from .helpers import synth_for

COMPRESSION = 20.0
PING = 20.0 / COMPRESSION
SAMPLES_PER_WORD = 8192  # 0.34 s, about a spoken word; four whole 4096-byte messages
WORD_SECONDS = SAMPLES_PER_WORD / 24000


def long_text(minutes: float) -> str:
    """Words (300 distinct: the tone engine caches them), sentences of 7 to 19 words, some abbreviations."""
    count = int(minutes * 60 / WORD_SECONDS) + 1
    words: List[str] = []
    for index in range(count):
        word = f"w{index % 300}"
        if index % 97 == 40:
            word = "Dr."
        elif index % 13 == 12 or index % 19 == 18:
            word += "."
        words.append(word)
    return " ".join(words)


def server_standing_for(real_time: float, compression: float = COMPRESSION, **options: Any) -> LocalServer:
    """A local server generating at `real_time` times real time, keepalive and speed compressed alike."""
    return LocalServer(speed=real_time * compression, samples_per_word=SAMPLES_PER_WORD,
                       ping_interval=20 / compression, ping_timeout=20 / compression, **options)


def paced_synth(server: LocalServer, **options: Any) -> basetts.Synthesizer:
    """The client told the server's (compressed) keepalive timeout, as it is told uvicorn's 20 s by default. A
    text goes on one connection unless the case says otherwise (`recoveries`): these cases are about one
    connection held against the keepalive (a long text otherwise goes as parts, a connection each)."""
    options.setdefault("recoveries", 0)
    return synth_for(server, keepalive_timeout=PING, **options)


def assert_complete(server: LocalServer, record: ConversationRecord, text: str, pcm: bytes) -> None:
    words = text.split()
    assert not record.keepalive_timeout, "the server's keepalive ping went unanswered"
    assert record.close_code == 1000
    assert record.words == words, "words were lost, repeated or reordered on the way"
    assert record.spoken == words, "the server did not speak every word exactly once"
    assert record.lost == []
    assert pcm == bytes(record.audio), "the audio is not the bytes the server sent"
    assert pcm == server.expected_pcm(text)


def in_text_order(records: List[Any], words: List[str]) -> List[Any]:
    """The parts' records laid end to end along the text, each where its words come next (the rest after): a part
    begun ahead, while the part before was heard, may have come before a part made again after a cut."""
    left, ordered, at = list(records), [], 0
    while left:
        found = next((record for record in left if words[at:at + len(record.words)] == record.words), None)
        if found is None:
            break
        left.remove(found)
        ordered.append(found)
        at += len(found.words)
    return ordered + left


@pytest.mark.slow
def test_30_minutes_at_3x_real_time_by_synthesize_in_parts_cut_three_times_by_stream_and_by_a_slow_session(
        ) -> None:
    """Three texts of 30 minutes at once (30 s of compressed time each, so together they take about as long as
    one): synthesize() in parts as every call sends a long text, three of them cut and recovered; stream() and a
    session fed word by word by a slow producer each on one connection (recoveries=0), over many keepalive
    windows, their pacing alone keeping the pongs in time."""
    text = long_text(30)
    words = text.split()
    results: Dict[str, Any] = {}
    cuts = Faults(drop_after_bytes=300_000, first_failure=10, failure_every=25, stream_failures=3)

    def in_parts() -> None:
        with server_standing_for(3.0, faults=cuts) as server:
            results["parts"] = (server, paced_synth(server, recoveries=3).synthesize(text), server.last())

    def streamed() -> None:
        with server_standing_for(3.0) as server:
            chunks = list(paced_synth(server, recoveries=0).stream(text))
            results["stream"] = (server, b"".join(chunks), server.last())

    def session() -> None:
        with server_standing_for(3.0) as server:
            with paced_synth(server, recoveries=0).session() as fed:
                for index, word in enumerate(words):
                    fed.send(word + " ")
                    if index % 50 == 49:
                        time.sleep(0.2)  # an LLM producing in bursts, slower than the server at times
            results["session"] = (server, fed.audio.pcm, server.last())

    threads = [threading.Thread(target=case) for case in (in_parts, streamed, session)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == ["parts", "session", "stream"], "a case failed: see its thread's exception"
    for case in ("stream", "session"):
        server, pcm, record = results[case]
        assert record.pings >= 20, "the case did not span many keepalive windows"
        assert_complete(server, record, text, pcm)
    server, audio, _ = results["parts"]
    assert audio.duration >= 30 * 60 and audio.pcm == server.expected_pcm(text)
    assert audio.stats.recoveries == 3
    whole = in_text_order([record for record in server.conversations if not record.faulted], words)
    assert len(whole) > 60 and sum(record.faulted for record in server.conversations) == 3
    assert not any(record.keepalive_timeout for record in server.conversations)
    assert [w for record in whole for w in record.words] == words, "words lost, repeated or reordered"
    assert [w for record in whole for w in record.spoken] == words, "not every word spoken exactly once"


@pytest.mark.parametrize("real_time", [0.5, 1.2], ids=["slow-model-0.5x", "1.2x"])
def test_a_slow_model_speaks_a_long_text_whole(real_time: float) -> None:
    """Slower than real time, generation of a few minutes of audio spans many keepalive windows."""
    text = long_text(2.5 * real_time)
    with server_standing_for(real_time) as server:
        audio = paced_synth(server).synthesize(text)
        record = server.last()
    assert record.pings >= 5
    assert_complete(server, record, text, audio.pcm)


def test_a_client_sending_everything_at_once_loses_the_connection_as_on_the_real_server() -> None:
    """The local server's fidelity: a bare websocket-client loop, as the official example client sends
    (the whole text ahead), loses the connection to the keepalive: its pong waits behind unread words."""
    text = long_text(5)
    with server_standing_for(3.0) as server:
        ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"],
                                         timeout=30)
        try:
            ws.send('{"voice": "tara", "max_tokens": 2000, "buffer_size": 10}')
            for word in text.split():
                ws.send(word)
            ws.send("__END__")
            received = 0
            while True:
                opcode, frame = ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    received += len(frame.data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(frame.data[:2], "big")
                    reason = frame.data[2:].decode()
                    break
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            code, reason = None, "dropped"
        finally:
            ws.shutdown()
        record = server.last()
    assert record.keepalive_timeout
    assert (code, reason) in ((1011, "keepalive ping timeout"), (None, "dropped"))
    assert received < len(server.expected_pcm(text)), "the whole text was spoken: the keepalive did not bite"
    assert len(record.spoken) < len(text.split())


def test_the_same_text_through_basetts_completes() -> None:
    text = long_text(5)
    with server_standing_for(3.0) as server:
        audio = paced_synth(server).synthesize(text)
        assert_complete(server, server.last(), text, audio.pcm)


def test_a_server_with_a_shorter_keepalive_than_uvicorns_is_learned_from_its_pings() -> None:
    """A deployment that pings every 1 s and allows 1 s for the answer, at default settings (which assume
    uvicorn's 20 s): the first ping's interval bounds what the pacing assumes, and before it the window stays
    small, so no pong waits long behind unread words. Real time, not compressed: 6x, segments of ~0.6 s (two
    in flight would hold a pong past the second)."""
    text = long_text(0.5)  # 88 words
    with LocalServer(speed=6.0, samples_per_word=SAMPLES_PER_WORD, ping_interval=1.0, ping_timeout=1.0) as server:
        audio = synth_for(server, recoveries=0).synthesize(text)
        record = server.last()
    assert record.pings >= 2
    assert_complete(server, record, text, audio.pcm)


# Edges -----------------------------------------------------------------------------------------------

def test_500_words_without_punctuation() -> None:
    text = " ".join(f"plain{i % 50}" for i in range(500))
    with server_standing_for(3.0) as server:
        audio = paced_synth(server).synthesize(text)
        assert_complete(server, server.last(), text, audio.pcm)


def test_one_10000_character_word() -> None:
    text = "start " + "x" * 10000 + " end."
    with server_standing_for(3.0) as server:
        audio = paced_synth(server).synthesize(text)
        assert_complete(server, server.last(), text, audio.pcm)


@pytest.mark.parametrize("buffer_size", [1, 100])
def test_extreme_buffer_sizes(buffer_size: int) -> None:
    """Compressed only tenfold: what is not compressed (pysbd over a 100-word buffer at every message,
    ~0.1 s a segment here) must stay small next to the keepalive, as it is on the real server."""
    text = " ".join(f"b{i % 40}" for i in range(600))  # no sentence ends: buffer_size decides
    with server_standing_for(3.0, compression=10) as server:
        audio = basetts.Synthesizer(url=server.url, api_key=server.api_key, keepalive_timeout=2.0,
                                    buffer_size=buffer_size, recoveries=0).synthesize(text)
        record = server.last()
        assert_complete(server, record, text, audio.pcm)
    assert {len(segment) for segment in record.segments} == {buffer_size}


def test_a_session_idle_for_many_keepalive_windows_stays_up() -> None:
    """A producer that pauses (60 s, compressed): nothing is owed, pings are answered, nothing closes."""
    with server_standing_for(3.0) as server:
        with paced_synth(server).session() as session:
            session.send("before the pause. ")
            time.sleep(6 * PING)
            session.send("and after it.")
        record = server.last()
    assert record.pings >= 5
    assert_complete(server, record, "before the pause. and after it.", session.audio.pcm)


def test_a_server_that_closes_an_idle_connection_is_a_clear_error_with_the_audio_so_far() -> None:
    """A proxy that closes connections idle for 2 s, while the producer pauses for 4: the error says so."""
    with server_standing_for(3.0, faults=Faults(idle_timeout=2 * PING)) as server:
        session = paced_synth(server, recoveries=0).session()  # the close itself (a new connection mends it)
        session.send("before the pause. and ")  # "and" goes out: the sentence before it is complete
        time.sleep(4 * PING)
        with pytest.raises(basetts.StreamInterrupted, match="idle timeout") as info:
            session.send("after it.")
            session.finish()
    assert info.value.partial.pcm == server.expected_pcm("before the pause.")


@pytest.mark.playback
def test_a_long_speak_into_the_sound_card(pulse: Any) -> None:
    """Real-time playback of a text whose generation outlasts many keepalive windows (1 s pings, a
    server at 3x real time): the reader keeps answering pings while the device drains."""
    text = " ".join(f"s{i % 60}{'.' if i % 11 == 10 else ''}" for i in range(36))  # ~12 s: 4 s to make
    with server_standing_for(3.0 / COMPRESSION) as server:  # generation at 3x, not compressed: playback
        recording = pulse.record()
        audio = paced_synth(server).speak(text)
        played = recording.stop()
        record = server.last()
    assert_complete(server, record, text, audio.pcm)
    from .test_playback import assert_played_exactly

    assert_played_exactly(played, audio.pcm)
    assert audio.stats.underruns == 0


def test_a_stalled_consumer_holds_the_text_back_and_the_keepalive_holds() -> None:
    """stream() whose caller stalls for 6 keepalive windows while a fast server could speak the whole
    text: once 128 kB wait in the queue to the caller no more words go out, so the server stops with
    little audio ahead and our reader, never blocked for long, keeps answering its pings."""
    text = long_text(20)
    with LocalServer(samples_per_word=SAMPLES_PER_WORD, ping_interval=0.5, ping_timeout=0.5) as server:
        synth = basetts.Synthesizer(url=server.url, api_key=server.api_key, keepalive_timeout=0.5, recoveries=0)
        stream = synth.stream(text)
        chunks = [next(stream)]
        time.sleep(3.0)  # the caller is busy
        during_stall = len(server.conversations[-1].messages)
        chunks.extend(stream)
        record = server.last()
    assert during_stall < len(text.split()) / 4, "the text kept going out while nobody read the audio"
    assert_complete(server, record, text, b"".join(chunks))


@pytest.mark.parametrize("protocol", ["orpheus", "qwen3", "orpheus-http"])
def test_a_long_texts_first_audio_comes_before_the_rest_of_it_is_read(serve: Any, protocol: str) -> None:
    """The first words go out before the rest of a long text is read, so its first audio is not delayed by its
    length: a text_format function sees each sentence as it is read, and by the first audio it has seen few."""
    read: List[str] = []

    def reading(sentence: str) -> str:
        read.append(sentence)
        return sentence

    text = " ".join(f"Sentence {i} is read when its words are asked for." for i in range(2000))
    server = serve(protocol=protocol, **({"voices": ("alice",)} if protocol == "qwen3" else {}))
    synth = synth_for(server, protocol=protocol, text_format=reading,
                      **({"voice": "alice"} if protocol == "qwen3" else {}))
    chunks = synth.stream(text)
    next(chunks)
    assert 0 < len(read) < 200  # of 2000
    chunks.close()


def test_a_text_in_parts_reads_each_sentence_once(serve: Any) -> None:
    """A long text over Orpheus's websocket goes as parts; the words each part carries on from were read once:
    a text_format function sees each sentence once, and every word is spoken once."""
    read: List[str] = []

    def reading(sentence: str) -> str:
        read.append(sentence)
        return sentence

    text = " ".join(f"Sentence {i} is read once." for i in range(60))
    server = serve()
    audio = synth_for(server, text_format=reading).synthesize(text)
    assert len(server.conversations) > 2  # in parts
    assert audio.pcm == server.expected_pcm(text)
    assert [s.strip() for s in read] == [f"Sentence {i} is read once." for i in range(60)]
