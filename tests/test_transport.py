"""The connection layer against hostile servers of our own (raw sockets): every case ends in bounded time
with our error, saying what the server did, with the audio so far, and leaves no thread or socket."""
from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import pytest
import websocket

import basetts
from basetts import Synthesizer
from basetts.net.transport import BoundedSocket
from basetts.protocols.websocket import frame

from .helpers import accept_key, open_fds, raw_server, server_frame, upgrade_response

AUDIO = bytes(range(256)) * 16  # one 4096-byte message
CERTS = os.path.join(os.path.dirname(__file__), "certs")


def close(code: int, reason: bytes = b"") -> bytes:
    return server_frame(code.to_bytes(2, "big") + reason, 0x8)


def reset(connection: socket.socket) -> None:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    connection.close()


def linger(connection: socket.socket, seconds: float = 10.0) -> None:
    """Read (and drop) what the client sends until it hangs up."""
    connection.settimeout(seconds)
    with contextlib.suppress(OSError):
        while connection.recv(65536):
            pass


@contextlib.contextmanager
def no_leaks() -> Iterator[None]:
    threads = {t.name for t in threading.enumerate() if t.name.startswith("basetts-")}
    fds = open_fds()
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if {t.name for t in threading.enumerate() if t.name.startswith("basetts-")} <= threads:
            break
        time.sleep(0.05)
    assert {t.name for t in threading.enumerate() if t.name.startswith("basetts-")} <= threads
    assert {fd for fd in open_fds() if "socket" in fd[1]} <= fds


def synth(url: str, **options: Any) -> Synthesizer:
    """What one connection's bytes do: no second connection (these servers serve one), so no recovery."""
    options.setdefault("recoveries", 0)
    return Synthesizer(url=url, api_key="k", retries=0, read_timeout=1.0, first_audio_timeout=2.0, **options)


def run(answer: Callable[[socket.socket, str], None], text: str = "hello world", bound: float = 10.0,
        **options: Any) -> Any:
    """synthesize() against a raw server; returns the exception, checked to have come within `bound`."""
    with no_leaks(), raw_server(answer) as url:
        started = time.monotonic()
        with pytest.raises(basetts.BasetenTTSError) as info:
            synth(url, **options).synthesize(text)
        assert time.monotonic() - started < bound, "not bounded by its timeout"
    return info.value


# Hangs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["synthesize", "stream"])
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_a_server_that_stops_reading_then_closes_ends_the_call(call: str, scheme: str, monkeypatch) -> None:
    """Our writer waits for room (megabytes of text); the server's close still ends everything."""
    tls = None
    if scheme == "wss":
        monkeypatch.setenv("SSL_CERT_FILE", os.path.join(CERTS, "untrusted-cert.pem"))
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))

    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO))
        time.sleep(1.0)  # reads nothing: the client's writer fills the socket and waits
        connection.sendall(close(1011, b"gave up"))
        time.sleep(1.0)
        reset(connection)

    received: List[bytes] = []
    with no_leaks(), raw_server(answer, tls=tls) as url:
        started = time.monotonic()
        client = synth(url, buffer_size=2000)
        text = " ".join(["w" * 5000] * 2000)
        with pytest.raises(basetts.ServerError) as info:
            if call == "stream":
                received.extend(client.stream(text))
            else:
                client.synthesize(text)
        assert time.monotonic() - started < 10
    error = info.value
    assert error.close_code == 1011 and "gave up" in str(error)
    assert (b"".join(received) if call == "stream" else error.partial.pcm) == AUDIO


def test_a_frame_trickling_in_is_timed_out_as_a_whole() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO))
        with contextlib.suppress(OSError):
            for byte in server_frame(AUDIO):
                connection.sendall(bytes([byte]))
                time.sleep(0.3)  # each byte well within read_timeout=1 s

    error = run(answer, bound=5)
    assert isinstance(error, basetts.TimeoutError) and "stalled halfway" in str(error)
    assert error.partial.pcm == AUDIO


def test_whole_messages_of_a_byte_each_are_timed_out_too() -> None:
    """One byte of audio a message, every 0.3 s, within read_timeout=1 each time: no real progress."""
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO))
        with contextlib.suppress(OSError):
            for _ in range(100):
                connection.sendall(server_frame(b"\0"))
                time.sleep(0.3)

    error = run(answer, bound=5)
    assert isinstance(error, basetts.ReadTimeout) and "read_timeout=1" in str(error)
    assert error.partial.pcm.startswith(AUDIO)


def test_far_more_audio_than_asked_for_is_refused_with_bounded_memory() -> None:
    """600 MB of audio for "hi": the server is broken, said once its audio passes what max_tokens can make."""
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        with contextlib.suppress(OSError):
            for _ in range(600 * 16):
                connection.sendall(server_frame(b"\0" * 65536))
        linger(connection, 2)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error = run(answer, text="hi")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kB
    assert isinstance(error, basetts.ServerError) and "max_tokens" in str(error)
    assert 0 < len(error.partial.pcm) < 16 * 2 ** 20
    assert grown < 64 * 1024, f"memory grew by {grown} kB"


def test_a_fragmented_message_whose_last_fragment_never_comes_times_out() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO))
        with contextlib.suppress(OSError):
            connection.sendall(server_frame(AUDIO, fin=False))
            for _ in range(20):
                connection.sendall(server_frame(b"\0\0", 0x0, fin=False))
                time.sleep(0.3)

    error = run(answer, bound=5)
    assert isinstance(error, basetts.TimeoutError) and "stalled halfway" in str(error)
    assert error.partial.pcm == AUDIO


@pytest.mark.parametrize("size, limit", [(1024, None), (4096, 64 * 2 ** 20)])
def test_ten_thousand_fragments_arrive_whole_and_quickly(size: int, limit: Optional[int]) -> None:
    """websocket-client joined fragments with +=: 4,000 of 4 kB took 9 s, 10,000 never finished."""
    piece = b"\1\0" * (size // 2)

    def answer(connection: socket.socket, key: str) -> None:
        data = server_frame(piece, fin=False) + server_frame(piece, 0x0, fin=False) * 9998 + server_frame(piece, 0x0)
        connection.sendall(upgrade_response(key) + data + close(1000))
        linger(connection)

    with no_leaks(), raw_server(answer) as url:
        started = time.monotonic()
        # 10 to 41 MB of audio for one word: a token budget that allows that much (else it is refused as too much)
        audio = synth(url, max_message_size=limit, max_tokens=100_000).synthesize("hello")
        assert time.monotonic() - started < 10
    assert audio.pcm == piece * 10000


def test_a_message_over_max_message_size_in_fragments_is_refused() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        piece = b"\1\0" * 2048
        data = server_frame(piece, fin=False) + server_frame(piece, 0x0, fin=False) * 5000
        with contextlib.suppress(OSError):
            connection.sendall(upgrade_response(key) + data)
        linger(connection, 3)

    error = run(answer)
    assert isinstance(error, basetts.StreamInterrupted) and "over 16777216 bytes" in str(error)


def test_a_frame_claiming_exabytes_is_refused_with_bounded_memory() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO) + server_frame(b"", length=2 ** 62))
        with contextlib.suppress(OSError):
            for _ in range(2000):  # a flood: 128 MB if it were taken in
                connection.sendall(b"\0" * 65536)
        linger(connection, 2)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error = run(answer)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kB
    assert isinstance(error, basetts.StreamInterrupted) and "over 16777216 bytes" in str(error)
    assert "max_message_size" in str(error) and error.partial.pcm == AUDIO
    assert grown < 64 * 1024, f"memory grew by {grown} kB"


def test_max_message_size_is_a_setting() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO * 2) + close(1000))
        linger(connection)

    error = run(answer, max_message_size=4096)
    assert isinstance(error, basetts.StreamInterrupted) and "over 4096 bytes" in str(error)


# A close that was read is honoured -----------------------------------------------------------------------
@pytest.mark.parametrize("code", [1000, 1011])
def test_a_close_followed_at_once_by_a_reset_is_honoured(code: int) -> None:
    """Answering the close hits ECONNRESET: the close that was read still decides the outcome."""
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        time.sleep(0.5)  # the client has sent its words and the end
        connection.sendall(server_frame(AUDIO) + close(code, b"why"))
        reset(connection)

    with no_leaks(), raw_server(answer) as url:
        if code == 1000:
            assert synth(url).synthesize("hello").pcm == AUDIO
            return
        with pytest.raises(basetts.ServerError) as info:
            synth(url).synthesize("hello")
    assert info.value.close_code == 1011 and "why" in str(info.value) and info.value.partial.pcm == AUDIO


# Strict RFC 6455 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, gist", [
    (server_frame(AUDIO, masked=True), "masked a frame"),
    (server_frame(AUDIO, first=0x40), "reserved bits"),
    (server_frame(b"\x03", 0x8), "1-byte payload"),
    (close(999), "code 999"),
    (server_frame(b"x", 0x3), "reserved opcode 0x3"),
    (server_frame(b"p" * 200, 0x9), "control frame of 200 bytes"),
    (server_frame(b"x", 0x0), "continuation frame with no message"),
])
def test_a_server_breaking_the_protocol_is_named(data: bytes, gist: str) -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key) + server_frame(AUDIO) + data)
        linger(connection, 3)

    error = run(answer)
    assert isinstance(error, basetts.StreamInterrupted) and gist in str(error)
    assert "no close frame" not in str(error) and error.partial.pcm == AUDIO


@pytest.mark.parametrize("response, gist", [
    (lambda key: upgrade_response(key).replace(b"HTTP/1.1", b"HTTP/1.0"), "HTTP/1.1"),
    (lambda key: upgrade_response(key)[:-2] + b"Sec-WebSocket-Protocol: chat\r\n\r\n", "subprotocol"),
    (lambda key: upgrade_response(key)[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
     "extension"),
])
def test_an_upgrade_answer_breaking_rfc_6455_is_refused(response: Callable[[str], bytes], gist: str) -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(response(key))
        linger(connection, 3)

    error = run(answer)
    assert isinstance(error, basetts.ConnectError) and gist in str(error)


# What we take from websocket-client ----------------------------------------------------------------------
def test_websocket_client_reads_the_upgrade_through_our_socket_and_leaves_the_rest() -> None:
    """We hand websocket-client a socket of ours (its public `socket=`): it must read the upgrade's answer
    only through it, byte by byte, so the bytes after it (here a frame in the same packet) stay ours. If a
    new websocket-client read ahead on its own, this fails loudly instead of losing the first audio."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        bounded = BoundedSocket(client, time.monotonic() + 5)
        result: dict = {}

        def connect() -> None:
            ws = websocket.WebSocket(skip_utf8_validation=True)
            ws.connect("ws://127.0.0.1/x", socket=bounded, suppress_origin=True, redirect_limit=0)
            result["status"] = ws.getstatus()

        thread = threading.Thread(target=connect)
        thread.start()
        request = server.recv(65536).decode("latin-1")
        key = request.split("Sec-WebSocket-Key: ")[1].split("\r\n")[0]
        server.sendall(upgrade_response(key) + b"first frame")
        thread.join(5)
        assert result == {"status": 101}
        assert bounded.take_buffered() == b"first frame"
        assert bounded.received.startswith(b"HTTP/1.1 101")
        assert accept_key(key) in bounded.received.decode()
    finally:
        for sock in (server, client, listener):
            sock.close()


def test_our_frames_are_websocket_clients_own() -> None:
    """`frame()` is websocket-client's ABNF: a masked final frame that a server unmasks to the payload."""
    data = frame("héllo".encode())
    assert data[0] == 0x81 and data[1] & 0x80
    key, masked = data[2:6], data[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == "héllo".encode()
