"""End to end: Synthesizer against the real local server over loopback."""
from __future__ import annotations

import contextlib
import gc
import json
import resource
import socket
import subprocess
import sys
import threading
import time
import wave

import pytest

import basetts
from basetts import Audio, Synthesizer
from basetts.testing import Faults, LocalServer

from .helpers import (
    all_threads_gone,
    client_threads,
    ctrl_c,
    open_fds,
    raw_server,
    server_process,
    synth_for,
    upgrade_response,
    words_received,
)

TEXT = "Hello there. This is a small test of the streaming speech server, with words to spare."


def test_synthesize_is_byte_exact(basetts_server, basetts_synthesizer):
    audio = basetts_synthesizer.synthesize(TEXT)
    assert audio.pcm == basetts_server.expected_pcm(TEXT)
    assert (audio.sample_rate, audio.channels, audio.sample_width) == (24000, 1, 2)
    assert audio.duration == pytest.approx(len(TEXT.split()) * 2048 / 24000)
    assert audio.stats.bytes_received == len(audio.pcm)
    assert audio.stats.first_byte_time is not None


def test_stream_yields_the_same_bytes_in_whole_samples(basetts_server, basetts_synthesizer):
    chunks = list(basetts_synthesizer.stream(TEXT))
    assert len(chunks) > 1
    assert all(len(c) % 2 == 0 and c for c in chunks)
    assert b"".join(chunks) == basetts_server.expected_pcm(TEXT)


def test_save_writes_a_real_wav(tmp_path, basetts_server, basetts_synthesizer):
    path = tmp_path / "hello.wav"
    returned = basetts_synthesizer.save(TEXT, path)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.readframes(wav.getnframes()) == basetts_server.expected_pcm(TEXT)
    assert path.read_bytes()[:4] == b"RIFF"
    assert returned.audio() == Audio.from_wav(path) and returned.duration == Audio.from_wav(path).duration


USERS_TESTS = """
from basetts import Synthesizer

SEEN = {}


def test_http(basetts_http_synthesizer, basetts_http_server):
    assert basetts_http_synthesizer.synthesize("Hello there.").pcm == basetts_http_server.expected_pcm("Hello there.")
    SEEN["port"], SEEN["synth"] = basetts_http_server.port, basetts_http_synthesizer  # still referred to


def test_its_kept_alive_connection_was_closed_with_it():
    with open("/proc/net/tcp") as table:  # ESTABLISHED or CLOSE_WAIT to that server: a socket still open here
        assert not [line for line in table.readlines()[1:] if int(line.split()[2].split(":")[1], 16) == SEEN["port"]
                    and line.split()[3] in ("01", "08")]


def test_any_protocol(basetts_make_server):
    server = basetts_make_server(protocol="kokoro")
    with Synthesizer(url=server.url, api_key=server.api_key, protocol="kokoro") as synth:
        assert synth.synthesize("Hi there.").duration > 0
    SEEN["kokoro"] = server


def test_its_servers_were_stopped():
    assert "stopped" in repr(SEEN["kokoro"])
"""


def test_the_pytest_plugin_gives_a_users_tests_servers_of_any_protocol_and_closes_what_it_opened(tmp_path):
    """A user's test file, no conftest: the plugin comes with basetts (its entry point)."""
    (tmp_path / "test_users.py").write_text(USERS_TESTS)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_users.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "4 passed" in result.stdout, result.stdout + result.stderr


def test_settings_words_and_sentinel_arrive_in_order_with_the_key_header(basetts_server):
    synth = synth_for(basetts_server, voice="leo", buffer_size=4)
    synth.synthesize(TEXT)
    record = basetts_server.last()
    assert record.authorization == f"Api-Key {basetts_server.api_key}"
    assert record.settings == {"voice": "leo", "max_tokens": 2000, "buffer_size": 4}
    assert record.messages == TEXT.split() + ["__END__"]  # one word per message, then the sentinel
    assert [w for segment in record.segments for w in segment] == TEXT.split()
    assert record.close_code == 1000


@pytest.mark.parametrize("sizes", [[1], [3, 5, 4095], [4097, 1, 2], [7]])
def test_odd_sized_frames_are_realigned(sizes):
    with LocalServer(faults=Faults(frame_sizes=sizes)) as server:
        synth = synth_for(server)
        chunks = list(synth.stream(TEXT))
        assert all(len(c) % 2 == 0 for c in chunks)
        assert b"".join(chunks) == server.expected_pcm(TEXT)
        assert any(size % 2 for size in server.last().frame_sizes)


def test_ten_thousand_words():
    vocabulary = "alpha beta gamma delta epsilon zeta eta theta iota kappa.".split()
    text = " ".join(vocabulary[i % len(vocabulary)] for i in range(10_000))
    with LocalServer(samples_per_word=24) as server:
        audio = synth_for(server).synthesize(text)
        assert audio.pcm == server.expected_pcm(text)
        assert words_received(server) == text.split()


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u3000"])
def test_empty_text_is_refused_before_connecting(basetts_server, basetts_synthesizer, text):
    with pytest.raises(ValueError, match="empty"):
        basetts_synthesizer.synthesize(text)
    with pytest.raises(ValueError):
        basetts_synthesizer.stream(text)
    assert basetts_server.conversations == []


@pytest.mark.parametrize("bad", [None, 42, b"bytes", 3.5, object()])
def test_non_text_input_is_a_type_error(basetts_server, basetts_synthesizer, bad):
    with pytest.raises(TypeError, match="str"):
        basetts_synthesizer.synthesize(bad)
    assert basetts_server.conversations == []


def test_lone_surrogates_are_refused(basetts_server, basetts_synthesizer):
    with pytest.raises(ValueError, match="unicode"):
        basetts_synthesizer.synthesize("hello \ud800 there")
    assert basetts_server.conversations == []


def test_unicode_and_emoji_arrive_intact(basetts_server, basetts_synthesizer):
    text = "Grüße 👋🏽 naïve café — 東京 e\u0301 zero\u200bwidth Ω"
    audio = basetts_synthesizer.synthesize(text, text_format="plain")  # as Markdown, the emoji is left out
    assert basetts_server.last().words == text.split()
    assert audio.pcm == basetts_server.expected_pcm(text)


def test_a_word_equal_to_the_sentinel_is_spoken_not_obeyed(basetts_server, basetts_synthesizer):
    text = "before __END__ after the word"
    audio = basetts_synthesizer.synthesize(text, text_format="plain")  # as Markdown, __END__ is a bold END
    record = basetts_server.last()
    assert record.messages.count("__END__") == 1 and record.messages[-1] == "__END__"
    assert record.words == text.split()
    assert audio.pcm == basetts_server.expected_pcm(text)


def test_text_fragments_from_an_iterable(basetts_server, basetts_synthesizer):
    fragments = ["Hel", "lo the", "re. Th", "is is ", "stream", "ed."]
    audio = basetts_synthesizer.synthesize(iter(fragments))
    assert basetts_server.last().words == "Hello there. This is streamed.".split()
    assert audio.pcm == basetts_server.expected_pcm("Hello there. This is streamed.")


def test_an_error_in_the_text_iterable_reaches_the_caller(basetts_server, basetts_synthesizer, tmp_path):
    """As it is, with the audio received before it as ``.partial`` (synthesize and save alike)."""
    spoken = "one two three. "

    def words():
        yield spoken + "Then "  # the next sentence begins: the server speaks the first
        give_up = time.monotonic() + 10
        while not basetts_server.conversations[-1].bytes_sent:
            assert time.monotonic() < give_up, "the first sentence was never spoken"
            time.sleep(0.01)
        time.sleep(0.2)  # its audio reaches the client
        raise RuntimeError("the language model failed")

    with pytest.raises(RuntimeError, match="language model") as info:
        basetts_synthesizer.synthesize(words())
    assert info.value.partial.pcm == basetts_server.expected_pcm(spoken)
    with pytest.raises(RuntimeError, match="language model") as info:
        basetts_synthesizer.save(words(), tmp_path / "cut.wav")
    assert info.value.partial.pcm == basetts_server.expected_pcm(spoken)


def test_ctrl_c_while_the_text_iterable_blocks_returns_at_once(basetts_server, basetts_synthesizer):
    """Nothing can interrupt a generator blocked in another thread: Ctrl+C does not wait for it (no 2 s join);
    its thread sends nothing more and ends once the generator yields."""
    release = threading.Event()

    def text():
        yield "One two three. Four "
        release.wait(30)  # a language model that hangs
        yield "five."

    with ctrl_c(lambda: bool(basetts_server.conversations and basetts_server.conversations[-1].bytes_sent)
                ) as interrupted, pytest.raises(KeyboardInterrupt):
        basetts_synthesizer.synthesize(text())
    returned = time.monotonic()
    assert not release.is_set() and returned - interrupted[0] < 1.0, "Ctrl+C waited for the blocked iterable"
    release.set()
    assert all_threads_gone()
    assert basetts_server.last().words == "One two three. Four".split()  # nothing sent after the stop


# Handshake failures -------------------------------------------------------------------------------

def test_wrong_key_is_an_authentication_error(basetts_server):
    synth = Synthesizer(url=basetts_server.url, api_key="not-the-key")
    with pytest.raises(basetts.AuthenticationError) as info:
        synth.synthesize(TEXT)
    assert info.value.status == 401
    assert "not-the-key" not in str(info.value)


@pytest.mark.parametrize("status, error", [
    (403, basetts.AuthenticationError),
    (404, basetts.ModelNotFoundError),
    (429, basetts.ServerError),
    (500, basetts.ServerError),
    (503, basetts.ServerError),
])
def test_handshake_status_maps_to_an_error(status, error):
    with LocalServer(faults=Faults(handshake_status=status, retry_after=7)) as server:
        with pytest.raises(error) as info:
            synth_for(server, retries=0).synthesize(TEXT)
    assert info.value.status == status
    assert isinstance(info.value, basetts.BasetenTTSError)
    assert info.value.partial == basetts.Audio(b"")  # nothing arrived: an empty Audio, never None
    if error is basetts.ServerError:
        assert info.value.retry_after == 7


def test_unknown_path_is_model_not_found(basetts_server):
    url = basetts_server.url.replace("/environments/production/websocket", "/nope")
    with pytest.raises(basetts.ModelNotFoundError):
        Synthesizer(url=url, api_key=basetts_server.api_key).synthesize(TEXT)


def test_nothing_listening_is_a_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    synth = Synthesizer(url=f"ws://127.0.0.1:{port}/v1/websocket", api_key="k")
    with pytest.raises(basetts.ConnectError, match=str(port)):
        synth.synthesize(TEXT)


def test_a_server_that_never_answers_the_upgrade_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/websocket"
        synth = Synthesizer(url=url, api_key="k", handshake_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(basetts.TimeoutError, match="handshake_timeout") as info:
            synth.synthesize(TEXT)
        assert time.monotonic() - started < 10  # bounded by the timeout, not hanging
    assert isinstance(info.value, TimeoutError)  # the built-in one too


def test_an_upgrade_response_split_over_reads_with_the_first_frame_in_its_last_read():
    """The response is read until its blank line, however it arrives, and bytes after it are the
    stream's: here a whole frame and the close come in the same packet as the response's end."""
    pcm = bytes(range(256)) * 16
    frames = b"\x82\x7e" + len(pcm).to_bytes(2, "big") + pcm + b"\x88\x02\x03\xe8"

    def answer(connection: socket.socket, key: str) -> None:
        response = upgrade_response(key)
        for start in range(0, len(response) - 5, 5):
            connection.sendall(response[start:start + 5])
            time.sleep(0.002)
        connection.sendall(response[start + 5:] + frames)
        connection.recv(65536)  # until the client hangs up

    with raw_server(answer) as url:
        audio = Synthesizer(url=url, api_key="k", retries=0).synthesize("hello")
    assert audio.pcm == pcm


def test_a_101_without_the_right_accept_key_is_refused():
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key[::-1]))
        connection.recv(65536)

    with raw_server(answer) as url:
        with pytest.raises(basetts.ConnectError, match="Sec-WebSocket-Accept"):
            Synthesizer(url=url, api_key="k", retries=0).synthesize("hello")


def test_handshake_timeout_bounds_the_whole_upgrade_not_each_read():
    """A server trickling its answer one byte at a time never lets a single read time out."""
    def answer(connection: socket.socket, key: str) -> None:
        with contextlib.suppress(OSError):
            for byte in upgrade_response(key)[:-1]:  # never complete
                connection.sendall(bytes([byte]))
                time.sleep(0.05)

    with raw_server(answer) as url:
        started = time.monotonic()
        with pytest.raises(basetts.TimeoutError, match="handshake_timeout"):
            Synthesizer(url=url, api_key="k", retries=0, handshake_timeout=0.5).synthesize("hello")
        assert time.monotonic() - started < 3  # the answer takes ~6 s to trickle out


def test_header_lines_trickling_after_the_101_are_bounded_by_handshake_timeout():
    def answer(connection: socket.socket, key: str) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
            for i in range(100):  # 10 s of header lines
                connection.sendall(f"X-Line-{i}: more\r\n".encode())
                time.sleep(0.1)

    with raw_server(answer) as url:
        started = time.monotonic()
        with pytest.raises(basetts.HandshakeTimeout, match="handshake_timeout"):
            Synthesizer(url=url, api_key="k", retries=0, handshake_timeout=0.5).synthesize("hello")
        assert time.monotonic() - started < 3


def test_a_header_that_never_ends_is_refused_with_bounded_memory():
    """Megabytes of header without a line break: refused once it passes what an upgrade's answer can be."""
    def answer(connection: socket.socket, key: str) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nX-Long: ")
            give_up = time.monotonic() + 5
            for _ in range(2000):  # 128 MB if it were taken in
                connection.sendall(b"a" * 65536)
                if time.monotonic() > give_up:
                    break

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with raw_server(answer) as url:
        with pytest.raises(basetts.ConnectError, match="without ending its headers"):
            Synthesizer(url=url, api_key="k", retries=0, handshake_timeout=10).synthesize("hello")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kB
    assert grown < 64 * 1024, f"memory grew by {grown} kB"


def test_a_server_that_never_sends_audio_times_out():
    with LocalServer(faults=Faults(silent=True)) as server:
        synth = synth_for(server, first_audio_timeout=0.5)
        with pytest.raises(basetts.TimeoutError, match="first_audio_timeout") as info:
            synth.synthesize(TEXT)
    assert info.value.partial is not None and info.value.partial.pcm == b""


# Failures mid-stream ------------------------------------------------------------------------------

@pytest.mark.parametrize("drop_after", [0, 4096, 10001, 20000])
def test_a_dropped_connection_keeps_the_partial_audio(drop_after):
    with LocalServer(faults=Faults(drop_after_bytes=drop_after)) as server:
        with pytest.raises(basetts.StreamInterrupted) as info:
            synth_for(server).synthesize(TEXT)
        expected = server.expected_pcm(TEXT)[: drop_after - drop_after % 2]
    assert info.value.partial.pcm == expected


def test_an_error_close_is_a_server_error_with_partial_audio():
    with LocalServer(faults=Faults(drop_after_bytes=8192, close_code=1011, close_reason="boom")) as server:
        with pytest.raises(basetts.ServerError, match="1011: boom") as info:
            synth_for(server).synthesize(TEXT)
        assert info.value.close_code == 1011
        assert info.value.partial.pcm == server.expected_pcm(TEXT)[:8192]


def test_stream_failure_after_chunks_were_yielded():
    with LocalServer(faults=Faults(drop_after_bytes=10000)) as server:
        received = bytearray()
        with pytest.raises(basetts.StreamInterrupted):
            for chunk in synth_for(server, recoveries=0).stream(TEXT):
                received += chunk
        assert bytes(received) == server.expected_pcm(TEXT)[:10000]


def test_breaking_out_of_stream_closes_the_connection():
    with LocalServer(speed=2.0) as server:  # paced, so the server is still sending when we leave
        stream = synth_for(server, buffer_size=2).stream(TEXT * 3)
        next(stream)
        assert client_threads()
        stream.close()
        assert client_threads() == []
        record = server.last()
    assert record.client_disconnected
    assert record.bytes_sent < len(server.expected_pcm(TEXT * 3))


def test_an_abandoned_stream_is_closed_when_it_is_garbage_collected():
    with LocalServer(speed=2.0) as server:
        stream = synth_for(server, buffer_size=2).stream(TEXT * 3)
        next(stream)
        assert client_threads()
        del stream  # never closed, never exhausted: the generator's finalizer closes the conversation
        gc.collect()
        assert client_threads() == []
        assert server.last().client_disconnected


def test_a_slow_consumer_holds_the_server_back_instead_of_buffering():
    """Back-pressure: while the caller does not read, the reader stops reading once its bounded queue
    is full, TCP stops the server, and memory stays flat; then every byte still arrives, in order."""
    text = " ".join(f"w{i % 40}" for i in range(600))  # 10 minutes of audio, 29 MB
    with LocalServer(samples_per_word=24000) as server:  # unpaced: it would send it all in ~1 s
        stream = synth_for(server).stream(text)
        received = [next(stream)]
        time.sleep(2.0)  # the caller is busy
        sent_while_stalled = server.conversations[-1].bytes_sent
        received.extend(stream)
    total = len(server.expected_pcm(text))
    assert sent_while_stalled < total / 2, "the server was never held back: the client buffered it all"
    assert b"".join(received) == server.expected_pcm(text)


# Configuration and secrets ------------------------------------------------------------------------

def test_missing_key_names_what_to_set(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("BASETEN_API_KEY", "BASETEN-API-KEY", "BASETEN_MODEL_ID", "BASETTS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(basetts.ConfigurationError, match="BASETEN_API_KEY"):
        Synthesizer(model_id="abc123")
    with pytest.raises(basetts.ConfigurationError, match="BASETEN_MODEL_ID"):
        Synthesizer(api_key="k")


def test_dotenv_in_the_working_directory_with_the_official_key_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("BASETEN_API_KEY", "BASETEN-API-KEY", "BASETEN_MODEL_ID", "BASETTS_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("BASETEN-API-KEY=sk-from-dotenv\nBASETEN_MODEL_ID=m0del\n")
    synth = Synthesizer()
    assert synth.settings.api_key == "sk-from-dotenv"
    assert synth.settings.url == "wss://model-m0del.api.baseten.co/environments/production/websocket"
    assert "sk-from-dotenv" not in repr(synth) and "sk-from-dotenv" not in repr(synth.settings)


# No leaks -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_threads_or_sockets_left_after_200_calls():
    text = "one two three four five six seven eight nine ten eleven twelve."
    with server_process(extra=["--samples-per-word=240"]) as good, \
            server_process("drop_after_bytes=1000") as dropping, \
            server_process("handshake_status=503") as refusing, \
            server_process("silent") as silent:
        synths = [Synthesizer(url=good[0], api_key=good[1]),
                  Synthesizer(url=dropping[0], api_key=dropping[1], recoveries=1),  # one recovery, lost again
                  Synthesizer(url=refusing[0], api_key=refusing[1], retries=1, retry_backoff=0.001),
                  Synthesizer(url=silent[0], api_key=silent[1], first_audio_timeout=0.05)]
        synths[0].synthesize(text)  # warm up lazy imports
        threads, fds = threading.active_count(), open_fds()
        outcomes = {"ok": 0, "error": 0}
        for i in range(200):
            synth = synths[i % len(synths)]
            try:
                if i % 8 == 4:
                    for _ in synth.stream(text):
                        break  # an early break must clean up as well
                else:
                    synth.synthesize(text)
                outcomes["ok"] += 1
            except basetts.BasetenTTSError:
                outcomes["error"] += 1
        assert threading.active_count() == threads, threading.enumerate()
        assert open_fds() - fds == set()  # nothing opened by the calls is still open
    assert outcomes == {"ok": 50, "error": 150}  # every 4th call is to the good server


def test_settings_message_is_json_object_first(basetts_server, basetts_synthesizer):
    basetts_synthesizer.synthesize("hi")
    assert json.loads(json.dumps(basetts_server.last().settings))["voice"] == "tara"


def test_a_callback_that_is_not_a_function_is_refused_before_anything_is_sent(tmp_path, basetts_server,
                                                                               basetts_synthesizer):
    """on_audio=True would fail at the first chunk, the request made and its audio lost: said at once instead."""
    calls = (lambda: basetts_synthesizer.synthesize("Hi.", on_audio=True),
             lambda: basetts_synthesizer.save("Hi.", tmp_path / "a.wav", on_audio=1),
             lambda: basetts_synthesizer.speak("Hi.", on_audio="print"),
             lambda: basetts_synthesizer.session(on_audio=[]))
    for call in calls:
        with pytest.raises(basetts.ArgumentTypeError, match="on_audio must be a function"):
            call()
    assert basetts_server.conversations == [] and not (tmp_path / "a.wav").exists()
