"""Qwen3-TTS end to end, against the local server speaking Baseten's vLLM-Omni protocol (and raw sockets
for what it never does): the same calls as for Orpheus, word and sentence times, barge-in, voices and
inline cloning, per-sentence and session-ending errors, the server's timers, long texts, the CLI."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import wave
from typing import Any, Iterator, List

import pytest

import basetts
from basetts import ConfigurationError, SentenceError, ServerError, StreamInterrupted, VoiceError
from basetts.testing import Faults, LocalServer
from basetts.testing.server import tone_pcm

from .helpers import all_threads_gone, client_threads, raw_server, server_frame, synth_for, upgrade_response
from .test_long_texts import COMPRESSION, PING, SAMPLES_PER_WORD, long_text
from .test_playback import RATE
from .test_playback_control import wait_for

TEXT = "Hello there, world.  This is a test!\nAnd the end"
SENTENCES = ["Hello there, world.", "This is a test!", "And the end"]
SAMPLES_PER_TONE = len(tone_pcm("x")) // 2


def qwen3_server(serve: Any, **options: Any) -> LocalServer:
    options.setdefault("voices", ("alice",))
    return serve(protocol="qwen3", **options)


def qwen3_synth(server: LocalServer, **options: Any) -> basetts.Synthesizer:
    """A Synthesizer speaking Qwen3 to `server`, with the local server's voice unless told otherwise."""
    options.setdefault("voice", "alice")
    return synth_for(server, protocol="qwen3", **options)


def clip(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(tone_pcm("voice", int(24000 * seconds)))
    return out.getvalue()


# the same calls as for Orpheus -----------------------------------------------------------------------------
def test_synthesize_sends_the_words_with_their_spaces_and_gets_every_sentence(serve: Any) -> None:
    server = qwen3_server(serve)
    audio = qwen3_synth(server, word_timestamps=True).synthesize(TEXT)
    record = server.last()
    assert audio.pcm == server.expected_pcm(TEXT) == bytes(record.audio)
    assert record.text == " ".join(TEXT.split()) + " "  # whole words, each with its space
    assert record.sentences == SENTENCES and record.close_code == 1000 and record.error is None
    assert record.settings is not None and record.settings["response_format"] == "pcm"
    assert [s.text for s in audio.sentences] == SENTENCES
    assert [w.text for w in audio.words] == TEXT.split()
    assert audio.sentences[-1].end == pytest.approx(audio.duration)


def test_word_times_point_at_each_words_audio_across_sentences(serve: Any) -> None:
    """The server's times count from the session's first sample: a client adding its own sentence
    offset (as LiveKit's does) would point every word after the first sentence at the wrong audio."""
    server = qwen3_server(serve)
    audio = qwen3_synth(server, word_timestamps=True).synthesize(TEXT)
    assert len(audio.words) == len(TEXT.split())
    slack = 3  # samples: the server rounds its times to 0.1 ms
    for word in audio.words:
        start, end = round(word.start * RATE), round(word.end * RATE)
        found = audio.pcm.find(tone_pcm(word.text), 2 * max(0, start - slack)) // 2
        assert abs(found - start) <= slack and abs(found + SAMPLES_PER_TONE - end) <= slack, word


def test_async_timestamps_fill_the_same_words(serve: Any) -> None:
    server = qwen3_server(serve)
    sync = qwen3_synth(server, word_timestamps=True).synthesize(TEXT)
    later = qwen3_synth(server, word_timestamps=True, timestamp_transport="async").synthesize(TEXT)
    assert later.words == sync.words and later.pcm == sync.pcm
    assert [e["type"] for e in server.last().events][-4:] == ["timestamps"] * 3 + ["session.done"]


def test_stream_save_and_a_session_of_llm_tokens(serve: Any, tmp_path: Any) -> None:
    server = qwen3_server(serve)
    synth = qwen3_synth(server)
    expected = server.expected_pcm(TEXT)
    assert b"".join(synth.stream(TEXT)) == expected
    saved = synth.save(TEXT, tmp_path / "out.wav")
    assert saved.audio().pcm == expected
    with synth.session() as session:
        for token in ["Hel", "lo th", "ere, wor", "ld.  This", " is a te", "st!\nAnd the", " end"]:
            session.send(token)
    assert session.audio.pcm == expected
    assert server.last().text == " ".join(TEXT.split()) + " "


def test_many_texts_and_a_pickled_synthesizer(serve: Any) -> None:
    import pickle

    server = qwen3_server(serve)
    synth = pickle.loads(pickle.dumps(qwen3_synth(server)))
    texts = [f"Text number {i}. It ends." for i in range(6)]
    results = list(synth.synthesize_many(texts, concurrency=3))
    assert [r.error for r in results] == [None] * 6
    assert [r.audio.pcm for r in results if r.audio] == [server.expected_pcm(t) for t in texts]


def test_settings_of_the_other_protocol_are_refused_naming_it(serve: Any, monkeypatch: Any) -> None:
    server = qwen3_server(serve)
    with pytest.raises(ConfigurationError, match="buffer_size: a setting of protocol='orpheus' only"):
        qwen3_synth(server, buffer_size=5)
    with pytest.raises(ConfigurationError, match="language.*protocol='qwen3'"):
        basetts.Synthesizer(url=server.url, api_key=server.api_key, language="English")
    with pytest.raises(ConfigurationError, match="language must be one of"):
        qwen3_synth(server, language="english")
    monkeypatch.setenv("BASETTS_PROTOCOL", "qwen3")
    from_env = basetts.Synthesizer(url=server.url, api_key=server.api_key, voice="alice")
    assert from_env.settings.protocol == "qwen3" and from_env.synthesize("Hi.").pcm == server.expected_pcm("Hi.")
    assert server.last().settings is not None and server.last().settings["type"] == "session.config"


# barge-in on the sound card --------------------------------------------------------------------------------
@pytest.mark.playback
def test_a_stopped_speak_tells_exactly_which_words_were_heard(pulse: Any, serve: Any) -> None:
    server = qwen3_server(serve, speed=1.0)
    synth = qwen3_synth(server, word_timestamps=True)
    text = " ".join(f"w{i}." if i % 6 == 5 else f"w{i}" for i in range(60))  # 5 s, ten sentences
    recording = pulse.record()
    playback = synth.speak(text, wait=False)
    wait_for(lambda: playback.position > 1.2)
    playback.stop()
    heard = playback.wait(5)
    played = recording.stop()
    expected = server.expected_pcm(text)
    assert 1.2 < heard.duration < 3.5 and expected.startswith(heard.pcm)
    assert playback.words_heard == heard.words
    spoken = text.split()
    count = len(heard.words)
    assert [w.text for w in heard.words] == spoken[:count]
    assert [text[slice(*w.span)] for w in heard.words] == spoken[:count]  # each word's place in the text given
    assert heard.words[-1].end <= heard.duration < heard.words[-1].end + 2 * SAMPLES_PER_WORD / RATE
    assert count < len(spoken)  # the rest was not heard
    assert len(played) > 0 and all_threads_gone()


# errors --------------------------------------------------------------------------------------------------
def test_a_failed_sentence_raises_with_its_index_and_the_audio_before_it_or_is_collected(serve: Any) -> None:
    server = qwen3_server(serve, faults=Faults(fail_sentence=1))
    with pytest.raises(SentenceError) as raised:
        qwen3_synth(server).synthesize(TEXT)
    error = raised.value
    assert error.index == 1 and error.text == SENTENCES[1] and "illegal memory access" in error.server_message
    assert error.partial.pcm == server.expected_pcm(SENTENCES[0])
    audio = qwen3_synth(server, sentence_errors="collect").synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(SENTENCES[0] + " " + SENTENCES[2])
    assert [bool(s.error) for s in audio.sentences] == [False, True, False]


def test_an_unknown_voice_says_how_to_give_the_model_one(serve: Any) -> None:
    server = qwen3_server(serve)
    with pytest.raises(SentenceError, match="requires 'ref_audio'.*synth.voices.add.*--voice.*basetts voices add"):
        qwen3_synth(server, voice="nobody").synthesize("Hello.")


@pytest.mark.parametrize("session_end", ["drop", "close", "open"])
def test_timestamps_without_an_aligner_fail_at_once_however_the_server_ends(serve: Any, session_end: str) -> None:
    server = qwen3_server(serve, aligner=False, session_end=session_end)
    started = time.monotonic()
    with pytest.raises(ServerError, match="no word aligner.*FORCED_ALIGNER_MODEL"):
        qwen3_synth(server, word_timestamps=True, read_timeout=30, first_audio_timeout=30).synthesize(TEXT)
    assert time.monotonic() - started < 5  # not a wait for a close that (with "open") never comes
    assert server.last().error is not None and server.last().done.wait(5)
    assert all_threads_gone()


class ClientFrames:
    """The client's (masked) frames on a raw connection, its pings answered as they are read."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.data = b""

    def until(self, kind: str) -> None:
        """Read until a message of type `kind` (the frames after it stay for the next call)."""
        while True:
            while len(self.data) >= 6 and len(self.data) >= frame_length(self.data):
                end = frame_length(self.data)
                opcode, start = self.data[0] & 0x0F, end - payload_length(self.data)
                payload = bytes(b ^ self.data[start - 4 + i % 4] for i, b in enumerate(self.data[start:end]))
                self.data = self.data[end:]
                if opcode == 0x9:
                    self.connection.sendall(server_frame(payload, opcode=0xA))
                elif opcode == 0x1 and json.loads(payload).get("type") == kind:
                    self.answer_pings()
                    return
            more = self.connection.recv(65536)
            assert more, f"the client left before {kind}"
            self.data += more

    def answer_pings(self) -> None:
        """Answer the pings among the frames already read, as a server's websocket layer does at once."""
        rest, kept = self.data, b""
        while len(rest) >= 6 and len(rest) >= frame_length(rest):
            frame, rest = rest[:frame_length(rest)], rest[frame_length(rest):]
            if frame[0] & 0x0F == 0x9:
                start = len(frame) - payload_length(frame)
                payload = bytes(b ^ frame[start - 4 + i % 4] for i, b in enumerate(frame[start:]))
                self.connection.sendall(server_frame(payload, opcode=0xA))
            else:
                kept += frame
        self.data = kept + rest


def payload_length(data: bytes) -> int:
    length = data[1] & 0x7F
    return int.from_bytes(data[2:4], "big") if length == 126 else length


def frame_length(data: bytes) -> int:
    return (8 if data[1] & 0x7F == 126 else 6) + payload_length(data)


def test_a_server_that_never_closes_after_session_done_is_not_waited_for() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        frames = ClientFrames(connection)
        frames.until("input.text")  # "Hi. ": a sentence, generated at once
        connection.sendall(server_frame(json.dumps({"type": "audio.start", "sentence_index": 0, "sentence_text": "Hi.",
                                                    "format": "pcm", "sample_rate": 24000}).encode(), opcode=0x1))
        connection.sendall(server_frame(b"\x01\x00" * 100))
        connection.sendall(server_frame(json.dumps({"type": "audio.done", "sentence_index": 0}).encode(), opcode=0x1))
        frames.until("input.done")
        connection.sendall(server_frame(json.dumps({"type": "session.done"}).encode(), opcode=0x1))
        time.sleep(2)  # holds the connection open, reading nothing

    with raw_server(answer) as url:
        started = time.monotonic()
        audio = basetts.Synthesizer(url=url, api_key="k", protocol="qwen3").synthesize("Hi.")
        assert audio.pcm == b"\x01\x00" * 100 and time.monotonic() - started < 1.5


def test_a_server_of_another_lineage_is_named() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        connection.recv(65536)
        connection.sendall(server_frame(json.dumps({"type": "audio.start", "utterance_index": 0,
                                                    "sentence_index": 0}).encode(), opcode=0x1))
        time.sleep(1)

    with raw_server(answer) as url:
        with pytest.raises(ServerError, match="upstream vLLM-Omni"):
            basetts.Synthesizer(url=url, api_key="k", protocol="qwen3").synthesize("Hi.")


def test_a_drop_mid_sentence_is_interrupted_with_the_audio_so_far(serve: Any) -> None:
    server = qwen3_server(serve, faults=Faults(drop_after_bytes=4096))
    with pytest.raises(StreamInterrupted, match="session.done") as raised:
        qwen3_synth(server, retries=0).synthesize(TEXT)
    assert raised.value.partial.pcm == server.expected_pcm(TEXT)[:4096]


# the server's timers -----------------------------------------------------------------------------------
def test_a_spare_connection_older_than_the_config_deadline_is_not_used(serve: Any) -> None:
    server = qwen3_server(serve, config_timeout=0.3)
    synth = qwen3_synth(server)
    synth.connect()
    time.sleep(0.8)  # the server gave up on it
    assert synth.synthesize("Hello.").pcm == server.expected_pcm("Hello.")
    assert server.handshakes == 2 and server.conversations[0].error == "Timeout waiting for session.config"
    synth.connect()
    synth.synthesize("Hello.")  # a fresh spare is used
    assert server.handshakes == 3


def test_a_producer_pausing_past_the_idle_timeout_is_kept_alive(serve: Any) -> None:
    server = qwen3_server(serve, idle_timeout=0.6)

    def tokens(synth_idle: float) -> List[bytes]:
        synth = qwen3_synth(server, idle_timeout=synth_idle, read_timeout=10)
        with synth.session() as session:
            session.send("Hello there. ")
            time.sleep(1.6)  # an LLM thinking, past the server's idle timeout
            session.send("Again.")
        return [session.audio.pcm]

    assert tokens(0.6) == [server.expected_pcm("Hello there. Again.")]
    assert "" in server.last().messages  # the keepalives
    with pytest.raises(ServerError, match="Idle timeout"):  # without them, the server ends the session
        tokens(60.0)


# long texts against the keepalive -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("real_time, minutes", [(1.0, 2), (3.0, 4)])
def test_minutes_of_text_paced_against_the_keepalive(real_time: float, minutes: float) -> None:
    text = long_text(minutes)
    with LocalServer(protocol="qwen3", voices=("alice",), speed=real_time * COMPRESSION,
                     samples_per_word=SAMPLES_PER_WORD, ping_interval=PING, ping_timeout=PING) as server:
        audio = qwen3_synth(server, keepalive_timeout=PING).synthesize(text)
        record = server.last()
    assert not record.keepalive_timeout, "the server's keepalive ping went unanswered"
    assert record.pings >= 3 and record.close_code == 1000  # it spanned several keepalive windows
    assert record.words == text.split() and audio.pcm == server.expected_pcm(text)


LONG_SENTENCE = " ".join(f"w{i}" for i in range(160)) + "."  # 55 s of audio: 2.7 s at 20x; the timeout is 1 s


@pytest.mark.parametrize("many, text", [
    (False, f"{LONG_SENTENCE} And then a short one. And another."),
    (True, f"{LONG_SENTENCE} And then a short one. And another."),
    (False, f"A short one first. {LONG_SENTENCE} And another."),  # the speed learned, then a long one
], ids=["long-first", "long-first-many", "short-first"])
def test_a_sentence_longer_to_generate_than_the_keepalive_timeout_is_not_followed_by_more_text(
        many: bool, text: str) -> None:
    """Text sent while the server generates waits unread, and our keepalive pong waits behind it: with a
    sentence taking 2.7 keepalive timeouts to generate, anything sent ahead loses the connection."""
    with LocalServer(protocol="qwen3", voices=("alice",), speed=COMPRESSION, samples_per_word=SAMPLES_PER_WORD,
                     ping_interval=PING, ping_timeout=PING) as server:
        synth = qwen3_synth(server, keepalive_timeout=PING)
        if many:
            results = list(synth.synthesize_many([text, text], concurrency=2))
            assert [r.error for r in results] == [None, None]
            pcm = results[0].audio.pcm if results[0].audio else b""
        else:
            pcm = synth.synthesize(text).pcm
        record = server.last()
    assert not record.keepalive_timeout and record.close_code == 1000
    assert pcm == server.expected_pcm(text) and len(record.sentences) == 3


def test_a_client_sending_everything_at_once_loses_the_connection_as_on_the_real_server() -> None:
    """The local server's fidelity: a bare websocket-client loop sending the whole text ahead loses the
    connection to the keepalive (its pong waits behind words unread while sentences are generated)."""
    import websocket

    text = long_text(3)
    with LocalServer(protocol="qwen3", voices=("alice",), speed=COMPRESSION, samples_per_word=SAMPLES_PER_WORD,
                     ping_interval=PING, ping_timeout=PING) as server:
        ws = websocket.create_connection(server.url, header=[f"Authorization: Api-Key {server.api_key}"], timeout=30)
        received, ended = 0, None
        try:
            ws.send(json.dumps({"type": "session.config", "voice": "alice", "response_format": "pcm",
                                "stream_audio": True}))
            for word in text.split():
                ws.send(json.dumps({"type": "input.text", "text": word + " "}))
            ws.send(json.dumps({"type": "input.done"}))
            while ended is None:
                opcode, frame = ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    received += len(frame.data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    ended = int.from_bytes(frame.data[:2], "big")
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            ended = 1006
        finally:
            ws.shutdown()
        record = server.last()
    assert record.keepalive_timeout and ended in (1011, 1006)
    assert received < len(server.expected_pcm(text)), "the whole text was spoken: the keepalive did not bite"


# voices ---------------------------------------------------------------------------------------------------
def test_voices_are_listed_added_used_and_removed_case_insensitively(serve: Any) -> None:
    server = qwen3_server(serve, voices=())
    synth = qwen3_synth(server, voice=None)
    assert synth.voices.list() == []
    added = synth.voices.add("Bob", clip(3), consent="consent-1", ref_text="a tone")
    assert added.name == "Bob" and added.consent == "consent-1" and added.ref_text == "a tone"
    assert [(v.name, v.added) for v in synth.voices.list()] == [("Bob", True)]
    assert synth.synthesize("Hi there.", voice="BOB").pcm == server.expected_pcm("Hi there.")
    with pytest.raises(VoiceError, match="already exists"):
        synth.voices.add("bob", clip(3), consent="consent-1")
    synth.voices.remove("bob")
    with pytest.raises(VoiceError, match="not found"):
        synth.voices.remove("bob")
    assert server.conversations[-1].settings is None  # voice requests start no session


def test_voice_refusals_are_clear_before_or_from_the_server(serve: Any, tmp_path: Any) -> None:
    server = qwen3_server(serve, voices=())
    voices = qwen3_synth(server).voices
    with pytest.raises(ConfigurationError, match="consent"):
        voices.add("x", clip(3), consent="")
    with pytest.raises(ConfigurationError, match="0.5 s: a voice needs 1-30 s"):
        voices.add("x", clip(0.5), consent="c")
    with pytest.raises(ConfigurationError, match="WAV, FLAC, Ogg or MP3"):
        voices.add("x", b"not audio", consent="c")
    with pytest.raises(ConfigurationError, match="protocol='qwen3'"):
        basetts.Synthesizer(url=server.url, api_key=server.api_key).voices.list()
    handshakes = server.handshakes
    path = tmp_path / "long.wav"
    path.write_bytes(clip(31))
    with pytest.raises(ConfigurationError, match="31.0 s"):
        voices.add("x", path, consent="c")
    assert server.handshakes == handshakes  # refused before anything was sent


def test_inline_cloning_sends_the_clip_as_a_data_uri(serve: Any, tmp_path: Any) -> None:
    import base64

    server = qwen3_server(serve, voices=())
    path = tmp_path / "me.wav"
    path.write_bytes(clip(2))
    synth = qwen3_synth(server, voice=None, ref_audio=path, ref_text="a tone")
    assert synth.synthesize("Hello.").pcm == server.expected_pcm("Hello.")
    uri = server.last().settings["ref_audio"]
    assert uri.startswith("data:audio/wav;base64,") and base64.b64decode(uri.split(",", 1)[1]) == clip(2)
    assert synth.synthesize("Hello.", ref_audio="https://example.com/me.wav").duration > 0
    assert server.last().settings["ref_audio"] == "https://example.com/me.wav"
    with pytest.raises(SentenceError, match="ref_text"):
        qwen3_synth(server, voice=None, ref_audio=path).synthesize("Hello.")
    assert server.api_key not in repr(synth.settings) and "base64" not in repr(synth.settings)


# the command line ---------------------------------------------------------------------------------------
def cli(*args: str, env: Any = None, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BASETEN", "BASETTS"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "basetts", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def test_the_cli_speaks_qwen3_and_manages_its_voices(serve: Any, tmp_path: Any) -> None:
    out = tmp_path / "out.wav"
    result = cli("say", "--local", "--protocol", "qwen3", "-o", str(out), "Hello from Qwen.")
    assert result.returncode == 0, result.stderr
    assert basetts.Audio.from_wav(str(out)).duration > 0
    server = qwen3_server(serve, voices=())
    env = {"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key, "BASETTS_PROTOCOL": "qwen3"}
    (tmp_path / "bob.wav").write_bytes(clip(2))
    result = cli("voices", "add", "bob", str(tmp_path / "bob.wav"), env=env)
    assert result.returncode == 2 and "--consent" in result.stderr
    result = cli("voices", "add", "bob", str(tmp_path / "bob.wav"), "--consent", "c1", env=env)
    assert result.returncode == 0, result.stderr
    assert "bob  (added; consent c1)" in cli("voices", env=env).stdout
    result = cli("say", "--voice", "bob", "--language", "English", "-o", str(out), "Hi there.", env=env)
    assert result.returncode == 0, result.stderr
    assert basetts.Audio.from_wav(str(out)).pcm == server.expected_pcm("Hi there.")
    assert server.last().settings["language"] == "English"
    assert cli("voices", "remove", "bob", env=env).returncode == 0
    result = cli("voices", "remove", "bob", env=env)
    assert result.returncode == 1 and "not found" in result.stderr
    result = cli("voices", "add", "x", "y", "--consent", "c", env={**env, "BASETTS_PROTOCOL": "orpheus"})
    assert result.returncode == 2 and "--protocol qwen3" in result.stderr
    result = cli("doctor", "--local", env={"BASETTS_PROTOCOL": "qwen3"})  # its local server speaks qwen3 too
    line = next(line for line in result.stdout.splitlines() if "time to first audio" in line)
    assert line.split()[0] == "ok", result.stdout


def test_serve_says_its_qwen3_server_needs_a_voice_and_the_error_names_the_flag(tmp_path: Any) -> None:
    """`basetts serve --protocol qwen3` is the real Base model: every sentence fails until a voice is given. It
    says so (on stderr: its stdout is the lines a shell runs), and a `say` without one names what to pass."""
    def serve(*extra: str) -> "subprocess.Popen[str]":
        return subprocess.Popen([sys.executable, "-m", "basetts", "serve", "--protocol", "qwen3", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    bare, voiced = serve(), serve("--voice", "bob")
    try:
        lines = [bare.stdout.readline() for _ in range(4)]
        env = dict(line.strip()[len("export "):].split("=", 1) for line in lines if line.startswith("export "))
        assert sorted(env) == ["BASETEN_API_KEY", "BASETTS_PROTOCOL", "BASETTS_URL"]
        said = cli("say", "Hi there.", "-o", str(tmp_path / "o.wav"), env=env)
        assert said.returncode == 1 and "--voice" in said.stderr and "basetts voices add" in said.stderr
        assert [voiced.stdout.readline() for _ in range(4)][-1].startswith("export BASETTS_PROTOCOL=")
    finally:
        told = []
        for process in (bare, voiced):
            process.terminate()
            told.append(process.communicate(timeout=10)[1])  # what each said on stderr, said before its exports
    assert "has none yet" in told[0] and "has none yet" not in told[1]


def test_the_pytest_fixtures_have_a_qwen3_variant(basetts_qwen3_synthesizer: Any, basetts_qwen3_server: Any) -> None:
    audio = basetts_qwen3_synthesizer.synthesize("Hello. World.")
    assert audio.pcm == basetts_qwen3_server.expected_pcm("Hello. World.")
    assert [w.text for w in audio.words] == ["Hello.", "World."]


@pytest.fixture(autouse=True)
def _no_threads_left() -> Iterator[None]:
    yield
    assert all_threads_gone(), f"threads left behind: {client_threads()}"


def test_a_trace_holds_no_inline_clip(serve: Any, tmp_path: Any) -> None:
    server = qwen3_server(serve, voices=())
    trace = tmp_path / "trace.jsonl"
    synth = qwen3_synth(server, voice=None, ref_audio=clip(2), ref_text="a tone", trace=str(trace))
    synth.synthesize("Hello.")
    lines = trace.read_text().splitlines()
    assert max(len(line) for line in lines) < 2000
    sent = [json.loads(line)["text"] for line in lines if json.loads(line)["event"] == "sent"]
    assert sent[0].endswith("characters)") and json.loads(sent[1]) == {"type": "input.text", "text": "Hello. "}
