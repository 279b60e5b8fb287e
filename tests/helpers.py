"""Test helpers: the local server in its own process, so leak checks count only the client's threads and fds."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pytest

import basetts

if TYPE_CHECKING:
    from basetts.testing import LocalServer


@contextlib.contextmanager
def server_process(*faults: str, extra: Sequence[str] = ()) -> Iterator[Tuple[str, str]]:
    """Run `basetts serve` in a subprocess; yields (url, api_key)."""
    command = [sys.executable, "-m", "basetts.cli", "serve", *extra]
    for fault in faults:
        command += ["--fault", fault]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        url = re.search(r"BASETTS_URL=(\S+)", "".join(lines))
        key = re.search(r"BASETEN_API_KEY=(\S+)", "".join(lines))
        assert url and key, lines
        yield url.group(1), key.group(1)
    finally:
        process.terminate()
        process.wait(10)


def synth_for(server: "LocalServer", **options: Any) -> basetts.Synthesizer:
    """A Synthesizer speaking to `server`, with `options` as its defaults."""
    return basetts.Synthesizer(url=server.url, api_key=server.api_key, **options)


def words_received(server: "LocalServer", since: int = 0) -> List[str]:
    """Every word the server received in its conversations from the `since`th on, in order, once the last has
    ended: over Orpheus's websocket a long text goes as parts, a connection each."""
    server.last()
    return [word for record in server.conversations[since:] for word in record.words]


def client_threads() -> List[str]:
    """Every thread of the SDK's still alive: reader, writer, session, playback, io, connect, PortAudio's
    workers (the local server's, which tests run in this process, are not the client's)."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith("basetts-") and not t.name.startswith("basetts-local-server") and t.is_alive())


def all_threads_gone(within: float = 3.0) -> bool:
    """True once no thread of the SDK's is left; one ending as its work does (a handle's, as its sound
    ends) is allowed `within` seconds."""
    deadline = time.monotonic() + within
    while client_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def open_fds() -> Set[Tuple[str, str]]:
    """The process's open files and sockets, by number and target (for leak checks)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except FileNotFoundError:  # the directory listing's own descriptor
            pass
    return found


def no_sound_card_env(directory: object) -> Dict[str, str]:
    """Environment variables under which PortAudio sees no output device at all, sound card or not.

    ALSA reads only a configuration (written in `directory`) whose one device is a card that does not
    exist: without the stock configuration it cannot even name the cards in /dev/snd ("hw:0") or reach
    PulseAudio/PipeWire through its plugins. (A configuration with no device at all makes PortAudio's
    ALSA enumeration abort.) PortAudio builds with their own PulseAudio or JACK host API are pointed
    at servers that do not exist (and JACK is not started).
    """
    config = os.path.join(str(directory), "asound-no-device.conf")
    with open(config, "w") as file:
        file.write("pcm.default { type hw card 99 }\n")
    return {"ALSA_CONFIG_PATH": config, "PULSE_SERVER": "unix:/nonexistent", "JACK_NO_START_SERVER": "1",
            "JACK_DEFAULT_SERVER": "basetts-none"}


# PortAudio's OSS host API opens /dev/dsp directly: no environment variable hides an OSS device.
needs_no_oss_device = pytest.mark.skipif(os.path.exists("/dev/dsp"),
                                         reason="/dev/dsp exists: PortAudio's OSS host API always finds it")


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a real websocket server answers `key` with (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


@contextlib.contextmanager
def _one_connection(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on loopback that accepts one connection and runs `serve(connection)` in a thread; its port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def accept() -> None:
            connection, _ = listener.accept()
            serve(connection)

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            thread.join(10)


@contextlib.contextmanager
def raw_server(answer: Callable[[socket.socket, str], None],
               pattern: str = r"Sec-WebSocket-Key: (\S+)", tls: Optional[ssl.SSLContext] = None) -> Iterator[str]:
    """A one-connection TCP server that reads the upgrade request and runs `answer(connection, key)`
    (with `pattern`, another request, and what its group matched); with `tls`, over TLS (wss://)."""
    def serve(connection: socket.socket) -> None:
        if tls is not None:
            connection = tls.wrap_socket(connection, server_side=True)
        with connection:
            request = connection.recv(65536).decode("latin-1")
            match = re.search(pattern, request, re.MULTILINE)
            assert match is not None, request
            answer(connection, match.group(1))

    with _one_connection(serve) as port:
        yield f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/v1/websocket"


@contextlib.contextmanager
def raw_http_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A one-connection server at a predict URL: `answer(connection)` reads the requests and answers them."""
    def serve(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            answer(connection)

    with _one_connection(serve) as port:
        yield f"http://127.0.0.1:{port}/environments/production/predict"


@contextlib.contextmanager
def ctrl_c(when: Callable[[], bool], within: float = 10.0) -> Iterator[List[float]]:
    """Ctrl+C from another thread: SIGINT to the main thread once `when()` holds (or `within` seconds passed).
    Yields the list the time it was sent goes in; joins the thread on leaving."""
    sent: List[float] = []

    def interrupt() -> None:
        give_up = time.monotonic() + within
        while not when() and time.monotonic() < give_up:
            time.sleep(0.01)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    try:
        yield sent
    finally:
        interrupter.join()


def upgrade_response(key: str) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode()





def server_frame(payload: bytes, opcode: int = 0x2, fin: bool = True, first: int = 0, masked: bool = False,
                 length: Optional[int] = None) -> bytes:
    """A frame as a server would send it; `first` adds bits to the first byte (RSV), `length` lies."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | first | opcode])
    mask = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask | size])
    elif size < 65536:
        head += bytes([mask | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([mask | 127]) + size.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"") + payload
