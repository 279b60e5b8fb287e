"""Failures the network and server can produce, and what the SDK promises for each."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time

import pytest

import basetts
from basetts import Synthesizer
from basetts.testing import Faults, LocalServer

from .helpers import all_threads_gone, open_fds, raw_server, server_process, synth_for

TEXT = "Every failure is ours to explain, and nothing received is dropped along the way."


# Retries ------------------------------------------------------------------------------------------

def test_transient_refusals_are_retried_until_the_server_recovers():
    with LocalServer(faults=Faults(handshake_status=503, handshake_failures=2)) as server:
        audio = synth_for(server, retries=2, retry_backoff=0.01).synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)
        assert server.handshakes == 3
        assert len(server.conversations) == 1  # the words went out once


def test_retries_give_up_after_the_configured_count():
    with LocalServer(faults=Faults(handshake_status=500)) as server:
        with pytest.raises(basetts.ServerError) as info:
            synth_for(server, retries=2, retry_backoff=0.01).synthesize(TEXT)
        assert server.handshakes == 3
    assert info.value.status == 500


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_are_never_retried(status):
    with LocalServer(faults=Faults(handshake_status=status)) as server:
        with pytest.raises(basetts.HandshakeError):
            synth_for(server, retries=3, retry_backoff=0.01).synthesize(TEXT)
        assert server.handshakes == 1


@pytest.mark.parametrize("protocol", ["orpheus", "orpheus-http"])
def test_retry_after_is_honoured(protocol):
    with LocalServer(protocol=protocol,
                     faults=Faults(handshake_status=429, handshake_failures=1, retry_after=0.4)) as server:
        audio = synth_for(server, retries=1, retry_backoff=0.0, protocol=protocol).synthesize(TEXT)
        first, second = server.handshake_times
    assert second - first >= 0.4
    # The stats count from the call, not from the attempt that succeeded: the wait is part of it.
    assert audio.stats.connect_time >= 0.4 and audio.stats.first_byte_time >= 0.4


def test_a_retry_after_too_long_to_wait_is_raised_not_slept():
    with LocalServer(faults=Faults(handshake_status=503, retry_after=3600)) as server:
        with pytest.raises(basetts.ServerError) as info:
            synth_for(server, retries=5).synthesize(TEXT)
        assert server.handshakes == 1
    assert info.value.retry_after == 3600


def test_never_retried_after_audio_began():
    with LocalServer(faults=Faults(drop_after_bytes=5000)) as server:
        with pytest.raises(basetts.StreamInterrupted) as info:  # (recovery, which would, is off)
            synth_for(server, retries=3, retry_backoff=0.01, recoveries=0).synthesize(TEXT)
        assert server.handshakes == 1
    assert len(info.value.partial.pcm) == 5000


@pytest.mark.parametrize("code, cut", [(1012, "reset"), (1013, "reset"), (None, "reset"), (None, "eof")],
                         ids=["1012", "1013", "dropped", "dropped-eof"])
def test_a_close_asking_to_come_back_or_a_drop_before_any_message_is_retried(code, cut):
    """1012 "Service Restart" and 1013 "Try Again Later" before any audio, or Orpheus's websocket dropped (no close
    frame) before the server sent any message (a replica gone, a proxy closing it; over HTTP, a request closed
    unanswered is the same): nothing was spoken, so the text goes again on a new connection (every call, the batch
    too; text arriving over time from the words kept of it)."""
    faults = Faults(drop_after_bytes=0, close_code=code, cut=cut, stream_failures=2)
    error = basetts.ServerError if code else basetts.StreamInterrupted
    with LocalServer(faults=faults) as server:
        synth = synth_for(server, retries=2, retry_backoff=0.01)
        audio = synth.synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 3
        server.last()  # its handler has finished
        if code:
            assert [r.close_code for r in server.conversations] == [code, code, 1000]
        faults.stream_failures = server.begun + 1
        assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)
        faults.stream_failures = server.begun + 1
        [result] = synth.synthesize_many([TEXT])
        assert result.audio.pcm == server.expected_pcm(TEXT)
        faults.stream_failures = server.begun + 3
        with pytest.raises(error) as info:
            synth.synthesize(TEXT)
        assert info.value.retryable and (info.value.close_code == code if code else info.value.unanswered)
        # Text arriving over time goes again from the words kept of it (for recovery); with recoveries=0 none are
        # kept, and the iterable is consumed: not sent again.
        faults.stream_failures = server.begun + 1
        audio = synth.synthesize(iter([word + " " for word in TEXT.split()]))
        assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 2
        faults.stream_failures = server.begun + 1
        with synth.session() as session:
            for word in TEXT.split():
                session.send(word + " ")
        assert session.audio.pcm == server.expected_pcm(TEXT)
        faults.stream_failures = server.begun + 1
        with pytest.raises(error):
            synth.synthesize(iter(TEXT.split()), recoveries=0)
        assert server.begun == faults.stream_failures  # not sent again: the iterable is consumed
    if code is None:  # once the server has spoken (audio here), a drop is recovered from, not retried as a whole
        with LocalServer(faults=Faults(drop_after_bytes=4096, cut=cut, stream_failures=1)) as server:
            with pytest.raises(basetts.StreamInterrupted) as info:
                synth_for(server, retries=2, recoveries=0).synthesize(TEXT)
            assert not info.value.retryable and server.begun == 1


@pytest.mark.parametrize("protocol", ["orpheus", "qwen3"])
def test_a_connection_cut_as_the_conversation_begins_is_retried(protocol):
    """Both websockets: a connection cut before the server sent any message (Qwen3's sends nothing before a
    sentence's audio.start either) goes again, a whole text and text arriving over time alike."""
    faults = Faults(drop_at_start=True, stream_failures=1)
    voice = {"voice": "alice"} if protocol == "qwen3" else {}
    with LocalServer(protocol=protocol, faults=faults, voices=("alice",)) as server:
        synth = synth_for(server, retries=2, retry_backoff=0.01, protocol=protocol, **voice)
        audio = synth.synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 2
        faults.stream_failures = server.begun + 1
        with synth.session() as session:
            session.send(TEXT)
        assert session.audio.pcm == server.expected_pcm(TEXT)
        faults.stream_failures = server.begun + 1
        with pytest.raises(basetts.StreamInterrupted) as info:
            synth.synthesize(TEXT, retries=0)
        assert info.value.unanswered and info.value.retryable


def test_refused_connections_are_retried(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    synth = Synthesizer(url=f"ws://127.0.0.1:{port}/v1/websocket", api_key="k", retries=2, retry_backoff=0.01)
    with caplog.at_level(logging.INFO, logger="basetts"):
        with pytest.raises(basetts.ConnectError):
            synth.synthesize(TEXT)
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


# Server misbehaviour ------------------------------------------------------------------------------

def test_a_text_message_instead_of_audio_is_a_server_error():
    with LocalServer(faults=Faults(text_frame='{"error": "model crashed"}')) as server:
        with pytest.raises(basetts.ServerError, match="model crashed"):
            synth_for(server).synthesize(TEXT)


def test_random_frame_sizes_arrive_whole_and_in_order():
    with LocalServer(faults=Faults(random_frames=7)) as server:
        audio = synth_for(server).synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)
        assert any(size % 2 for size in server.last().frame_sizes)


def test_a_stall_shorter_than_read_timeout_is_waited_out():
    with LocalServer(faults=Faults(stall_after_bytes=8000, stall_seconds=0.5)) as server:
        audio = synth_for(server, read_timeout=5).synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)


def test_a_stall_longer_than_read_timeout_raises_with_the_audio_so_far():
    with LocalServer(faults=Faults(stall_after_bytes=8192, stall_seconds=3)) as server:
        with pytest.raises(basetts.TimeoutError, match="read_timeout") as info:
            synth_for(server, read_timeout=0.3).synthesize(TEXT)
        assert info.value.partial.pcm == server.expected_pcm(TEXT)[:8192]


def test_frequent_pings_are_answered():
    with LocalServer(ping_interval=0.05, speed=4.0) as server:
        audio = synth_for(server).synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)
        assert server.last().close_code == 1000


def test_fault_specs_parse_from_the_command_line_form():
    faults = Faults.parse(["drop_after_bytes=10", "frame_sizes=1,3", "silent", "close_reason=x y",
                           "retry-after=1.5"])
    assert faults == Faults(drop_after_bytes=10, frame_sizes=[1, 3], silent=True, close_reason="x y",
                            retry_after=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.parse(["nope=1"])


# Concurrency --------------------------------------------------------------------------------------

def test_one_synthesizer_shared_by_32_threads():
    texts = [f"thread {i} says {' '.join(['word%d' % (i * 7 + j) for j in range(12)])}." for i in range(32)]
    results: dict = {}
    with LocalServer(samples_per_word=480) as server:
        synth = synth_for(server)

        def work(i: int) -> None:
            results[i] = synth.synthesize(texts[i]).pcm

        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 32
        for i, text in enumerate(texts):
            assert results[i] == server.expected_pcm(text), f"thread {i} got someone else's audio"


def test_one_connection_at_a_time_server_is_retried_through():
    with LocalServer(faults=Faults(one_at_a_time=True), speed=20.0) as server:
        synth = synth_for(server, retries=6, retry_backoff=0.05)
        errors, done = [], []

        def work() -> None:
            try:
                done.append(synth.synthesize(TEXT))
            except basetts.BasetenTTSError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert server.handshakes > 3  # some were refused while another conversation ran
        assert all(isinstance(e, basetts.ServerError) and e.status == 503 for e in errors)
        assert all(a.pcm == server.expected_pcm(TEXT) for a in done)


# Secrets ------------------------------------------------------------------------------------------

SECRET = "sk-SENTINEL-5f3a9c-never-print-me"


def test_the_key_never_appears_in_logs_reprs_or_errors(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    seen = []
    with LocalServer(api_key=SECRET) as server:
        synth = synth_for(server)
        seen += [repr(synth), str(synth), repr(synth.settings), repr(synth.synthesize("hello there"))]
        for faults in (Faults(handshake_status=401), Faults(drop_after_bytes=100),
                       Faults(drop_after_bytes=100, close_code=1011, close_reason="bad"),
                       Faults(text_frame="oops")):
            server.faults = faults
            try:
                synth.synthesize(TEXT, retries=0)
            except basetts.BasetenTTSError as exc:
                seen += [str(exc), repr(exc), repr(exc.partial), repr(vars(exc))]
        wrong = Synthesizer(url=server.url, api_key=SECRET + "x")
        try:
            wrong.synthesize(TEXT)
        except basetts.AuthenticationError as exc:
            seen.append(str(exc))
    captured = capsys.readouterr()
    seen += [r.getMessage() for r in caplog.records] + [captured.out, captured.err]
    assert len(seen) > 10
    assert not [s for s in seen if "SENTINEL-5f3a9c" in s]


def test_the_key_never_appears_whatever_the_server_echoes(tmp_path, caplog):
    """A server that echoes the request (its Authorization header) in a refusal's body and headers, a close
    reason or a text message: the key is in no message, attribute, exception chain, trace or log line."""
    caplog.set_level(logging.DEBUG)
    trace = tmp_path / "trace.jsonl"
    caught = []

    def echoing(status):
        def answer(connection, authorization):
            body = f"you sent {authorization}".encode()
            connection.sendall(f"HTTP/1.1 {status} No\r\nContent-Length: {len(body)}\r\nX-Echo: {authorization}"
                               "\r\n\r\n".encode() + body)
        return answer

    for status in (400, 401, 404, 500):
        for protocol in ("orpheus", "orpheus-http"):
            with raw_server(echoing(status), r"(?im)^(authorization: .*?)\r?$") as url:
                if protocol == "orpheus-http":
                    url = url.replace("ws://", "http://").replace("/v1/websocket", "/predict")
                with pytest.raises(basetts.BasetenTTSError) as info:
                    Synthesizer(url=url, api_key=SECRET, protocol=protocol, retries=0, trace=str(trace)
                                ).synthesize(TEXT)
                caught.append(info.value)
    with LocalServer(api_key=SECRET) as server:
        for faults in (Faults(drop_after_bytes=100, close_code=1011, close_reason=f"you sent Api-Key {SECRET}"),
                       Faults(text_frame=f"you sent Api-Key {SECRET}")):
            server.faults = faults
            with pytest.raises(basetts.ServerError) as info:
                synth_for(server, trace=str(trace)).synthesize(TEXT)
            caught.append(info.value)
    seen = [r.getMessage() for r in caplog.records] + [trace.read_text()]
    for exc in caught:
        chained = exc
        while chained is not None:
            seen += [str(chained), repr(chained), repr(vars(chained))]
            chained = chained.__cause__ or chained.__context__
    assert sum("[redacted]" in s for s in seen) >= 10, "the server's echoes never reached the checks"
    assert not [s for s in seen if SECRET in s]


def test_unencrypted_key_to_a_remote_host_is_refused():
    with pytest.raises(basetts.ConfigurationError, match="unencrypted"):
        Synthesizer(url="ws://example.com/v1/websocket", api_key="k")
    with pytest.raises(basetts.ConfigurationError, match="unencrypted through the proxy"):
        Synthesizer(url="ws://127.0.0.1:1/v1/websocket", api_key="k", proxy="http://proxy.example:3128")
    Synthesizer(url="ws://127.0.0.1:1/v1/websocket", api_key="k", proxy="http://127.0.0.1:3128")
    Synthesizer(url="wss://example.com/v1/websocket", api_key="k", proxy="http://proxy.example:3128")
    Synthesizer(url="ws://example.com/v1/websocket", api_key="k", allow_insecure=True)
    Synthesizer(url="ws://localhost:1/v1/websocket", api_key="k")
    Synthesizer(url="ws://[::1]:1/v1/websocket", api_key="k")


# Timeouts, each settable per call -----------------------------------------------------------------

MARGIN = 5.0  # generous: proves "bounded by the timeout", not speed


def test_connect_timeout_when_the_host_does_not_accept():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # a full accept queue: further SYNs are dropped, as by a black-holed host
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        synth = Synthesizer(url=f"ws://127.0.0.1:{port}/v1/websocket", api_key="k", retries=0)
        started = time.monotonic()
        try:
            with pytest.raises(basetts.TimeoutError, match="connect_timeout=0.3"):
                synth.synthesize(TEXT, connect_timeout=0.3)
        finally:
            for filler in fillers:
                filler.close()
    assert time.monotonic() - started < 0.3 + MARGIN


def test_first_audio_timeout_per_call():
    with LocalServer(faults=Faults(silent=True)) as server:
        synth = synth_for(server)  # default first_audio_timeout is long
        started = time.monotonic()
        with pytest.raises(basetts.TimeoutError, match="first_audio_timeout=0.4"):
            synth.synthesize(TEXT, first_audio_timeout=0.4)
        assert time.monotonic() - started < 0.4 + MARGIN


def test_slow_text_producer_never_trips_the_audio_timeout():
    """Audio is owed only once buffer_size words or the end went out: a slow LLM is not a dead server."""
    def slow_words():
        for word in "one two three".split():
            time.sleep(0.4)
            yield word + " "

    with LocalServer() as server:
        audio = synth_for(server, first_audio_timeout=0.2).synthesize(slow_words())
        assert audio.pcm == server.expected_pcm("one two three")


# No leaks, every call and every fault -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.playback
def test_no_thread_socket_or_audio_stream_left_after_500_calls_mixing_every_call_and_fault(pulse):
    """speak, synthesize, stream (whole and broken off), sessions (playing or not) against a good server
    and every fault; afterwards threads, file descriptors and PulseAudio streams are as before."""
    text = "one two three four five six seven eight nine ten eleven twelve."
    tiny = ["--samples-per-word=48"]  # 2 ms of audio per word: 500 calls, a few of them played
    faults = {  # name: (server faults, call overrides)
        "good": ((), {}),
        # (the losses are recovered, and lost again: recovery's connections too must leave nothing behind)
        "drop": (("drop_after_bytes=1000",), {"recoveries": 1}),
        "refuse-503": (("handshake_status=503",), {"retries": 1, "retry_backoff": 0.001}),
        "refuse-401": (("handshake_status=401",), {}),
        "silent": (("silent",), {"first_audio_timeout": 0.05}),
        "close-1011": (("close_code=1011", "close_reason=model crashed"), {"recoveries": 1}),
        "text-frame": (("text_frame=overloaded",), {}),
        # 12 words: frames of 960 and 192 bytes; the stall comes before the second (a gap, not first audio)
        "stall": (("stall_after_bytes=1000", "stall_seconds=2"), {"read_timeout": 0.05, "recoveries": 1}),
        "random-frames": (("random_frames=1",), {}),
    }
    calls = ["speak", "synthesize", "stream", "stream-break", "session", "session-play"]
    with contextlib.ExitStack() as stack:
        synths = {}
        for name, (specs, options) in faults.items():
            url, key = stack.enter_context(server_process(*specs, extra=tiny))
            synths[name] = (Synthesizer(url=url, api_key=key), options)

        def call(kind: str, synth: Synthesizer, options: dict) -> None:
            if kind == "speak":
                synth.speak(text, **options)
            elif kind == "synthesize":
                synth.synthesize(text, **options)
            elif kind == "stream":
                for _ in synth.stream(text, **options):
                    pass
            elif kind == "stream-break":
                for _ in synth.stream(text, **options):
                    break
            else:
                with synth.session(play=kind == "session-play", **options) as session:
                    session.send(text)

        good, _ = synths["good"]
        for kind in calls:  # load the lazy imports and PortAudio once before counting
            call(kind, good, {})
        threads, fds = sorted(t.name for t in threading.enumerate()), open_fds()
        outcomes: dict = {}
        names = list(faults)
        for i in range(500):
            name, kind = names[i % len(names)], calls[(i // len(names)) % len(calls)]
            synth, options = synths[name]
            try:
                call(kind, synth, options)
                result = "ok"
            except basetts.BasetenTTSError as exc:
                result = type(exc).__name__
            if kind != "stream-break":  # (breaking off before the fault strikes is a success)
                outcomes.setdefault(name, set()).add(result)
        assert sorted(t.name for t in threading.enumerate()) == threads
        assert open_fds() - fds == set()
        assert pulse.sink_inputs() == []
    assert outcomes["good"] == {"ok"} and outcomes["random-frames"] == {"ok"}
    assert all("ok" not in outcomes[name] for name in ("drop", "refuse-503", "refuse-401", "silent",
                                                         "close-1011", "text-frame", "stall")), outcomes


CERTS = os.path.join(os.path.dirname(__file__), "certs")
KEY = "sk-reliability-0123456789"


def test_a_certificate_no_ca_signed_is_refused_before_the_key_is_sent():
    """wss:// is always verified: a self-signed server gets a ConnectError and never the upgrade."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    received: list = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.settimeout(5)
                    received.append(tls.recv(65536))
            except (ssl.SSLError, OSError):
                pass  # the client refused the handshake

        server = threading.Thread(target=serve)
        server.start()
        url = f"wss://127.0.0.1:{listener.getsockname()[1]}/environments/production/websocket"
        with pytest.raises(basetts.ConnectError, match="TLS failed.*[Cc]ertificate"):
            Synthesizer(url=url, api_key=KEY, retries=0).synthesize("hello")
        server.join(10)
    assert received == []  # no byte of the upgrade, and so not the key, crossed the connection


def test_wss_end_to_end_while_text_and_audio_cross_on_one_tls_connection(monkeypatch):
    """Over TLS (the test certificate trusted as a private CA), with audio after every word, the writer
    sends while the reader receives on the same connection: every byte arrives, in order."""
    monkeypatch.setenv("SSL_CERT_FILE", os.path.join(CERTS, "untrusted-cert.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    words = [f"w{i}" for i in range(2000)]
    with LocalServer(ssl_context=context, samples_per_word=240) as server:
        assert server.url.startswith("wss://")
        synth = synth_for(server, buffer_size=1)
        audio = synth.synthesize(word + " " for word in words)
        assert audio.pcm == server.expected_pcm(" ".join(words))
        with synth.session() as session:
            for word in words[:300]:
                session.send(word + " ")
        assert session.audio.pcm == server.expected_pcm(" ".join(words[:300]))
    # A whole text in parts: the next part's TLS connection opened, and the part begun on it, while the part before
    # is heard (a model at 10x: its last segment, 85 ms, takes longer than a TLS upgrade in this busy process).
    with LocalServer(ssl_context=context, speed=10.0) as server:
        text = " ".join(words[:300])
        audio = synth_for(server).synthesize(text)
        assert audio.pcm == server.expected_pcm(text) and audio.stats.recoveries == 0
        parts = server.conversations
        assert server.most_at_once == 2 and len(parts) > 2
        assert any(later.first_message_at < earlier.ended_at for earlier, later in zip(parts, parts[1:]))
    assert all_threads_gone()


def test_a_redirect_is_not_followed_with_the_key(basetts_server):
    """The key goes only to the configured host: a redirecting server gets a ConnectError, and the
    host it points to never hears from us."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {basetts_server.url}\r\n"
                                   "Content-Length: 0\r\n\r\n".encode())
                connection.recv(1)  # until the client hangs up

        server = threading.Thread(target=serve)
        server.start()
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/environments/production/websocket"
        with pytest.raises(basetts.ConnectError, match="redirect"):
            Synthesizer(url=url, api_key=basetts_server.api_key, retries=0).synthesize("hello")
        server.join(10)
    assert basetts_server.handshakes == 0
