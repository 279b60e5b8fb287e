"""One websocket conversation: connect, a writer thread, a reader thread, and a bounded queue between
the reader and the caller. Only this module imports websocket-client."""
from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import websocket

from . import protocol
from .audio import Stats
from .errors import (
    AuthenticationError,
    BasetenTTSError,
    ConnectError,
    ModelNotFoundError,
    ServerError,
    StreamInterrupted,
    TimeoutError,
)
from .settings import Settings

log = logging.getLogger("basetts")

# How often a thread waiting for queue room or socket room looks at its stop flag.
_POLL = 0.05
# The reader waits for data until the next deadline, and at most this long: close() wakes it at once by
# shutting the socket down, so the timer is only for deadlines that appear while it waits (words sent
# meanwhile). Waking 20 times a second instead cost 40% of a real-time stream's CPU (docs/performance.md).
_IDLE_WAKE = 1.0
# Time a thread gets to finish after being told to stop.
_JOIN_TIMEOUT = 2.0
# Queue of chunks between the reader and the consumer: 64 chunks, each one frame (4 kB, 85 ms) when
# audio arrives at the pace it plays, at most _COALESCE_BYTES (32 kB) when it arrives in bursts: 5 s to
# ~45 s of audio, 2 MB at most. When full, the reader stops reading, so the socket (not memory) absorbs
# a slow consumer.
DEFAULT_QUEUE_FRAMES = 64
# Frames already waiting in the socket are handed on together, up to this many bytes: one queue
# hand-off (a thread wake-up and a GIL switch) per burst instead of per 4 kB frame. Never waits for more.
_COALESCE_BYTES = 32768
# Once, after queueing the first audio: long enough for the waiting consumer to wake and run.
_FIRST_AUDIO_HANDOFF = 50e-6
# How much of a whole text open() sends itself (at most its first batch) before leaving the rest to the
# writer thread.
_EAGER_BYTES = 4096
# The writer thread sends a list of words at most this many messages per write.
_BATCH_MESSAGES = 64
# TLS: bytes written per turn of the TLS lock: fits in the room poll() reports for a socket, so the
# write does not wait for room while holding the lock.
_TLS_WRITE = 4096
# Bytes asked of the socket per read (see _read_ahead): a few 4096-byte frames at once.
_READ_SIZE = 16384


class _End:
    """Queue item: the stream is over, normally (error None) or not."""

    __slots__ = ("error",)

    def __init__(self, error: Optional[BaseException]) -> None:
        self.error = error


def connect(settings: Settings, while_waiting: Optional[Callable[[], None]] = None) -> websocket.WebSocket:
    """Open the socket (connect_timeout), TLS and the upgrade (handshake_timeout); map every failure.

    `while_waiting` runs once the upgrade request is sent, while the server answers it."""
    parts = urlsplit(settings.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        sock = socket.create_connection((host, port), timeout=settings.connect_timeout)
    except socket.timeout:
        raise TimeoutError(
            f"Could not connect to {host}:{port} within connect_timeout={settings.connect_timeout:g} s."
        ) from None
    except OSError as exc:
        transient = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
        raise ConnectError(f"Cannot reach {host}:{port}: {exc.strerror or exc}. Check the URL and network.",
                           transient=transient) from None
    try:
        deadline = time.monotonic() + settings.handshake_timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(settings.handshake_timeout)
        if parts.scheme == "wss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        # The upgrade is ours, not websocket-client's: it reads the response a byte per call (see
        # protocol.parse_upgrade_response). websocket-client takes over the socket once it is open.
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        sock.sendall(protocol.upgrade_request(settings.url, settings.api_key, key))
        log.debug("upgrade request sent to %s:%s", host, port)
        if while_waiting is not None:
            while_waiting()
        response = _read_upgrade(sock, deadline)
        log.debug("upgrade answered: HTTP %d", response.status)
        if response.status != 101:
            raise _status_error(response, settings)
        problem = protocol.upgrade_problem(response, key)
        if problem is not None:
            raise ConnectError(f"The websocket upgrade failed: the server answered with {problem}.")
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        ws.sock, ws.connected = sock, True
        if response.rest:  # a frame that came with the response: websocket-client reads it next
            ws.frame_buffer.recv_buffer.append(response.rest)
        sock.settimeout(settings.read_timeout)  # from now on it bounds each send and each frame
        return ws
    except BaseException as exc:
        sock.close()
        if isinstance(exc, BasetenTTSError) or not isinstance(exc, Exception):
            raise
        raise _handshake_error(exc, settings) from None


def _read_upgrade(sock: socket.socket, deadline: float) -> protocol.UpgradeResponse:
    """Read until the response's header is complete (usually one read), by `deadline`."""
    data = b""
    while True:
        response = protocol.parse_upgrade_response(data)
        if response is not None:
            return response
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        sock.settimeout(remaining)
        piece = sock.recv(4096)
        if not piece:
            raise ConnectError("The server closed the connection during the websocket upgrade.")
        data += piece


def _status_error(response: protocol.UpgradeResponse, settings: Settings) -> BasetenTTSError:
    status = response.status
    if status in protocol.REDIRECT_STATUSES:
        return ConnectError(
            f"The server redirected the websocket upgrade (HTTP {status}). basetts does not follow "
            "redirects, so your API key goes only to the URL you configured: check that URL.")
    if status in (401, 403):
        return AuthenticationError(
            f"The server refused the API key (HTTP {status}). Check BASETEN_API_KEY and that the key "
            "may call this model.", status=status)
    if status == 404:
        return ModelNotFoundError(
            f"Nothing at {settings.url} (HTTP 404). Check the model id and environment.", status=status)
    return ServerError(
        f"The server refused the connection with HTTP {status}"
        + (" (overloaded)" if status in (429, 503) else "")
        + ". Retry later; a deployment scaled to zero may be starting.",
        status=status, retry_after=_retry_after(response.headers.get("retry-after")))


def _handshake_error(exc: Exception, settings: Settings) -> BasetenTTSError:
    if isinstance(exc, socket.timeout):
        return TimeoutError(
            f"The server did not complete the websocket upgrade within handshake_timeout="
            f"{settings.handshake_timeout:g} s.")
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS failed: {exc.reason or exc}. Certificates are always verified.")
    if isinstance(exc, ValueError):  # from protocol.parse_upgrade_response
        return ConnectError(f"The websocket upgrade failed: {exc} (is this a websocket server?)")
    return ConnectError(f"The websocket upgrade failed: {exc}")


def is_transient(exc: BaseException) -> bool:
    """Worth another try before any audio: refused or reset connections, 429 and 5xx at the upgrade."""
    if isinstance(exc, ConnectError):
        return exc.transient
    if isinstance(exc, ServerError):
        return exc.status is not None and (exc.status == 429 or exc.status >= 500)
    return False


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# A spare connection older than this is closed, not used: uvicorn pings every 20 s and an idle spare
# has no reader to answer, and a gateway may drop idle connections sooner.
SPARE_MAX_AGE = 15.0


class Spare:
    """One pre-opened connection, kept for the next conversation (the protocol allows one per connection)."""

    def __init__(self, settings: Settings) -> None:
        self.url, self.api_key = settings.url, settings.api_key
        self.ws: Optional[websocket.WebSocket] = connect(settings)
        self.opened = time.monotonic()

    def take(self, settings: Settings) -> Optional[websocket.WebSocket]:
        """The connection, if it fits `settings` and is fresh and quiet; else None (and closed).

        Only the endpoint and key must match: everything else goes in the first message, after this.
        """
        ws, self.ws = self.ws, None
        if ws is None:
            return None
        if (settings.url, settings.api_key) != (self.url, self.api_key):
            ws.shutdown()
            return None
        if time.monotonic() - self.opened > SPARE_MAX_AGE or _readable(ws):
            # Too old, or the server already spoke (a close or a ping) on a connection nobody has used.
            log.debug("discarding a stale spare connection")
            ws.shutdown()
            return None
        return ws

    def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.shutdown()


def _readable(ws: websocket.WebSocket) -> bool:
    if ws.sock is None:
        return True
    try:
        return _ready(ws.sock, 0)
    except (OSError, ValueError):
        return True


def _ready(sock: socket.socket, timeout: float, write: bool = False) -> bool:
    """Whether `sock` has data or EOF (or, with `write`, room for a write) within `timeout` seconds.
    poll(), not select(): select() fails for descriptors above 1023, which a long-running service reaches."""
    if not hasattr(select, "poll"):  # Windows: its select() has no such limit
        readable, writable, _ = select.select([] if write else [sock], [sock] if write else [], [], timeout)
        return bool(writable if write else readable)
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _read_ahead(ws: websocket.WebSocket, tls_lock: Optional[threading.Lock]) -> None:
    """Read up to _READ_SIZE per recv(). websocket-client asks the socket for each frame's header,
    length and payload in turn (three syscalls, each with a poll() as the socket has a timeout); its
    frame buffer keeps whatever a read brings beyond what it asked for, for the next ask.

    With `tls_lock` (see Conversation._tls_lock), the read waits for data outside the lock and reads
    under it."""
    frames = ws.frame_buffer
    recv = frames.recv
    if tls_lock is None:
        frames.recv = lambda size: recv(max(size, _READ_SIZE))
        return
    sock = ws.sock
    assert isinstance(sock, ssl.SSLSocket)

    def read(size: int) -> bytes:
        with tls_lock:
            pending = sock.pending()  # bytes OpenSSL already decrypted: poll() cannot see them
        if not pending and not _ready(sock, sock.gettimeout() or 0.0):
            raise websocket.WebSocketTimeoutException("no data within the read timeout")
        with tls_lock:
            return recv(max(size, _READ_SIZE))

    frames.recv = read


def _buffered(ws: websocket.WebSocket) -> bool:
    """Whether websocket-client already holds bytes read ahead (see `_read_ahead`)."""
    return any(getattr(ws.frame_buffer, "recv_buffer", ()))


class Conversation:
    """One utterance over one connection. Owns its threads (a reader; a writer when the
    caller's thread could not send everything) and joins them in `close()`.

    Use as a context manager; `chunks()` yields sample-aligned 16-bit PCM as it arrives and raises a
    `BasetenTTSError` if the stream does not end with the server's normal close.
    """

    def __init__(self, settings: Settings, words: Iterable[str], *,
                 queue_frames: int = DEFAULT_QUEUE_FRAMES, stats: Optional[Stats] = None,
                 ws: Optional[websocket.WebSocket] = None, started: Optional[float] = None,
                 on_upgrade: Optional[Callable[[], object]] = None) -> None:
        """`ws`: an already connected websocket (from `connect`) to use instead of connecting; the
        conversation owns it from here on and closes it. `started`: the monotonic time the user's
        call began, which the stats count from (default: now). `on_upgrade`: runs in open()'s thread
        while the server answers the upgrade (at once on `ws`), before any text is sent; what it raises,
        open() raises."""
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self._words = words
        self._queue: "queue.Queue[Union[bytes, _End]]" = queue.Queue(maxsize=queue_frames)
        self._stop = threading.Event()
        self._connected = threading.Event()  # set once the reader may use the connection (or must stop)
        self._lock = threading.Lock()
        self._deadlines = protocol.Deadlines(
            settings.buffer_size, settings.first_audio_timeout, settings.read_timeout)
        # A deadline that appears while the reader waits (words sent meanwhile) is seen within a tenth
        # of its timeout.
        self._idle_wake = min(_IDLE_WAKE, settings.first_audio_timeout / 10, settings.read_timeout / 10)
        self._decoder = protocol.AudioDecoder(settings.encoding)
        self._ws: Optional[websocket.WebSocket] = None
        self._preopened = ws
        self._on_upgrade = on_upgrade
        self._threads: List[threading.Thread] = []
        self._started = time.monotonic() if started is None else started
        self._finished = False
        self.words_sent = 0
        self._messages = protocol.outgoing(settings.session_message(), words, settings.buffer_size)
        self._messages_sent = 0
        self._pacer = protocol.Pacer()
        self._acknowledged = threading.Condition(self._lock)  # notified when a batch's ping comes back
        self._reader_done = False
        self._writer_waiting = False
        self._room = max(1, queue_frames // 2)  # the next batch waits while the queue holds this many
        self._all_sent = False
        self._pending_pong: Optional[bytes] = None  # a ping's payload still to be answered
        # TLS only: one OpenSSL connection must not read and write from two threads at once (reported
        # to corrupt its state: python-engineio #461, python-socketio #1568). Each side waits for the
        # socket outside this lock and reads or writes under it, so neither waits on the network while
        # holding it: a writer waiting for room never stops the reader (see _send_bytes).
        self._tls_lock: Optional[threading.Lock] = None
        self._pending: List[bytes] = []  # audio read but not yet queued (see _COALESCE_BYTES)
        self._pending_bytes = 0

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> "Conversation":
        """Connect in the caller's thread (so its errors raise here), start the reader (and the writer,
        unless this thread could send everything). On any failure, everything opened is closed."""
        if self._ws is not None:
            return self
        try:
            self._open()
        except BaseException:
            self.close()  # also wakes and joins a reader started during the upgrade
            raise
        return self

    def _open(self) -> None:
        if self._preopened is not None:
            self._ws, self._preopened = self._preopened, None
            if self._ws.sock is not None:
                self._ws.sock.settimeout(self.settings.read_timeout)  # this call's, not the spare's
            if self._on_upgrade is not None:
                self._on_upgrade()
        else:
            self._ws = connect(self.settings, while_waiting=self._while_upgrading)
        self.stats.connect_time = self._elapsed()
        if isinstance(self._ws.sock, ssl.SSLSocket):
            self._tls_lock = threading.Lock()
        _read_ahead(self._ws, self._tls_lock)
        self._ws.pong = self._pong  # type: ignore[method-assign]  # websocket-client answers pings with it
        # A whole text (a list of words) is sent from this thread, not the writer's: the first segment's
        # words before the reader touches the connection, so no GIL hand-off delays the server's first
        # audio; then the rest, up to a few kB, which fit in the socket buffers even if the server
        # reads none, so this never blocks. A short text needs no writer thread at all.
        # (docs/performance.md, "What we fixed".)
        if isinstance(self._words, (list, tuple)):
            self._send_now()
        self._start_reader()
        self._connected.set()
        if not self._all_sent:
            self._start_thread("writer", self._write)

    def _while_upgrading(self) -> None:
        """Work done while the server answers the upgrade, off the critical path: starting the reader
        (`Thread.start()` blocks ~0.1 ms) and `on_upgrade` (speak() opens the sound device here)."""
        self._start_reader()
        if self._on_upgrade is not None:
            self._on_upgrade()

    def _start_reader(self) -> None:
        if not self._threads:
            self._start_thread("reader", self._read)

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"basetts-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _send_now(self) -> None:
        """Send the first batch, at most _EAGER_BYTES, from the caller's thread in one write: so little
        that it fits in the socket buffers even if the server reads none (no reader runs yet)."""
        messages, ping = self._take(eager=True, max_bytes=_EAGER_BYTES)
        try:
            self._send(messages, ping, wait_for_room=False)
        except BasetenTTSError:
            raise  # our TimeoutError, which is also an OSError
        except (OSError, websocket.WebSocketException) as exc:
            log.debug("sending from the caller's thread failed: %s", exc)  # the reader reports why
            with self._lock:
                self._all_sent = True  # nothing more can go out on this connection

    def _take(self, eager: bool, max_bytes: Optional[int] = None) -> Tuple[List[str], Optional[bytes]]:
        """The next messages to write at once, and the ping payload to follow them (at a batch's end).

        A whole text (`eager`) goes out a batch per write (at most _BATCH_MESSAGES, or `max_bytes`); an
        iterable (an LLM's tokens) may make us wait for each word, so each goes out as soon as it comes.
        """
        messages: List[str] = []
        size = 0
        for message in self._messages:
            size += len(message.text.encode("utf-8")) + 14  # the frame header and mask, at most
            if messages and max_bytes is not None and size > max_bytes:
                self._messages = itertools.chain([message], self._messages)  # the next write sends it
                break
            messages.append(message.text)
            if message.ends_batch and message.text != protocol.SENTINEL:
                with self._lock:
                    return messages, self._pacer.end_batch()
            if not eager or len(messages) >= _BATCH_MESSAGES:
                break
        return messages, None

    def close(self) -> None:
        """Stop the threads, close the socket, join. Safe to call any number of times, from any path."""
        self._stop.set()
        self._connected.set()  # a reader still waiting for the connection wakes and sees the stop
        with self._acknowledged:
            self._acknowledged.notify_all()  # a writer waiting for a pong sees the stop
        if self._preopened is not None:  # never opened: the spare it was given is still ours to close
            self._preopened.shutdown()
            self._preopened = None
        ws = self._ws
        if ws is not None and ws.sock is not None:
            if not self._finished:
                log.debug("closing the connection early")
            try:
                ws.sock.shutdown(socket.SHUT_RDWR)  # wakes a send or select blocked on it
            except OSError:
                pass
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
                if thread.is_alive():
                    log.warning("%s did not stop within %.0f s (blocked in the text iterable?)",
                                thread.name, _JOIN_TIMEOUT)
        if ws is not None:
            ws.shutdown()
        try:  # wake a consumer waiting in chunks() (another thread) now, not at its next poll
            self._queue.put_nowait(_End(StreamInterrupted("The conversation was closed.")))
        except queue.Full:  # then the consumer is not waiting
            pass
        if self.stats.total_time is None:
            self.stats.total_time = self._elapsed()

    def __enter__(self) -> "Conversation":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._stop.is_set() and self._threads:
            self.close()

    # consumer --------------------------------------------------------------------------------------
    def chunks(self) -> Iterator[bytes]:
        """Audio chunks in order until the normal end; raises our error (or the text iterable's) if not."""
        while True:
            item = self._next_item()
            if isinstance(item, _End):
                self._finished = True
                self.stats.total_time = self._elapsed()
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _next_item(self) -> Union[bytes, _End]:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if not any(t.is_alive() for t in self._threads):
                    # Both threads gone without an _End: only possible after close(); never wait forever.
                    try:
                        return self._queue.get_nowait()
                    except queue.Empty:
                        return _End(StreamInterrupted("The conversation was closed."))
                continue
            if self._writer_waiting and self._queue.qsize() < self._room:
                with self._acknowledged:
                    self._acknowledged.notify_all()  # the consumer caught up: the writer may go on
            return item

    # threads ---------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _put(self, item: Union[bytes, _End]) -> bool:
        """Queue an item, waiting while the consumer is behind (back-pressure), unless told to stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _send(self, messages: List[str], ping: Optional[bytes] = None, wait_for_room: bool = True) -> None:
        """Send messages (settings, words, the sentinel), each its own websocket message, and then a
        pacing ping with `ping` as its payload, in one write.

        The deadlines count the words as handed to the socket: a server that stops reading them owes
        audio all the same, so the reader's deadlines end a conversation whose server is gone, however
        long this write waits for room.
        """
        ws = self._ws
        assert ws is not None
        if not messages:
            return
        words = len(messages) - (self._messages_sent == 0) - (messages[-1] == protocol.SENTINEL)
        self._messages_sent += len(messages)
        now = time.monotonic()
        with self._lock:
            self.words_sent += words
            for _ in range(words):
                self._deadlines.word_sent(now)
            if ping is not None:
                self._deadlines.ping_sent(now)
            if messages[-1] == protocol.SENTINEL:
                self._all_sent = True
                self._deadlines.end_sent(now)  # before sending: the close may come before send() returns
        # What ws.send does for each message, in one syscall; the random mask keys (RFC 6455 5.3) come
        # from one os.urandom call instead of one each.
        keys = os.urandom(4 * len(messages) + 4)
        frames = [protocol.client_frame(message.encode("utf-8"), keys[4 * index:4 * index + 4])
                  for index, message in enumerate(messages)]
        if ping is not None:
            frames.append(protocol.client_frame(ping, keys[-4:], protocol.OPCODE_PING))
        with ws.lock:
            assert ws.sock is not None
            self._send_bytes(ws.sock, memoryview(b"".join(frames)), wait_for_room)
        self._send_pong()  # a ping that came while this write waited

    def _send_bytes(self, sock: socket.socket, data: memoryview, wait_for_room: bool) -> None:
        """Write all of `data`. The server reads no text while it generates a segment, which may take
        longer than any timeout, so a send that finds no room tries again (unless `wait_for_room` is
        False); close() wakes it by shutting the socket down."""
        give_up = None if wait_for_room else time.monotonic() + self.settings.read_timeout
        while data:
            try:
                if self._tls_lock is None:
                    data = data[sock.send(data):]
                    continue
                if not _ready(sock, _POLL, write=True):  # TLS: wait for room outside the lock
                    if give_up is not None and time.monotonic() > give_up:
                        raise socket.timeout()
                    if self._stop.is_set():
                        return
                    continue
                with self._tls_lock:
                    data = data[sock.send(data[:_TLS_WRITE]):]
            except socket.timeout:
                if not wait_for_room:
                    raise TimeoutError(f"The server read none of the text within "
                                       f"read_timeout={self.settings.read_timeout:g} s.") from None
                if self._stop.is_set():
                    return
                log.debug("the server is not reading (generating?); still waiting to send")

    def _pong(self, payload: Union[str, bytes] = b"") -> None:
        """websocket-client's ping answer, replaced: the reader must never block on a send. While the
        server generates it reads nothing, so our socket can be full of text; a reader waiting to send
        a pong would stop reading audio, and the server would wait for us to read: a deadlock."""
        self._pending_pong = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        self._send_pong()

    def _send_pong(self) -> None:
        """Answer the latest ping now if that cannot block (no write in progress, room in the socket);
        else it stays pending for the next write or the next wake of the reader."""
        ws = self._ws
        if self._pending_pong is None or ws is None or not ws.lock.acquire(blocking=False):
            return
        try:
            payload, sock = self._pending_pong, ws.sock
            if payload is None or sock is None or not _ready(sock, 0, write=True):
                return
            self._pending_pong = None
            frame = protocol.client_frame(payload, os.urandom(4), protocol.OPCODE_PONG)
            self._send_bytes(sock, memoryview(frame), wait_for_room=True)
        except OSError as exc:
            log.debug("answering a ping failed: %s", exc)  # the connection is gone: the reader sees it
        finally:
            ws.lock.release()

    def _write(self) -> None:
        """Send settings, one word per message, then the sentinel (whatever open() has not sent), each
        batch once the server has read the one before (see `protocol.Pacer`)."""
        eager = isinstance(self._words, (list, tuple))
        try:
            while self._wait_until_paced():
                messages, ping = self._take(eager)
                if not messages:
                    return
                self._send(messages, ping)
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer, never lost
            if self._stop.is_set():
                return
            if isinstance(exc, (OSError, websocket.WebSocketException)):
                # The connection is gone; the reader sees why (close code or drop) and reports it.
                log.debug("writer stopped: %s", exc)
                return
            self._put(_End(exc))  # the caller's text iterable failed: re-raise it in the caller

    def _wait_until_paced(self) -> bool:
        """Wait until the next batch may go out: the server has read the one before, and the consumer
        is not behind (else the server would get ahead of a slow consumer, our reader would stop reading
        behind the queue, and the server's pings would go unanswered). False once the conversation is over."""
        with self._acknowledged:
            while not self._stop.is_set() and not self._reader_done:
                if self._pacer.may_send() and self._queue.qsize() < self._room:
                    return True
                self._writer_waiting = True
                # Notified by the reader on each pong and when it ends, by the consumer when it catches
                # up, and by close().
                self._acknowledged.wait()
                self._writer_waiting = False
            return False

    def _read(self) -> None:
        """Receive frames until the close; queue aligned PCM; enforce the deadlines; let the writer go on."""
        try:
            self._receive()
        finally:
            with self._acknowledged:
                self._reader_done = True  # the writer, waiting for a pong, stops: nothing more is read
                self._acknowledged.notify_all()

    def _receive(self) -> None:
        self._connected.wait()
        ws = self._ws
        if ws is None or self._stop.is_set():
            return
        error: Optional[BaseException] = None
        try:
            while not self._stop.is_set():
                if self._pending_pong is not None:
                    self._send_pong()
                ready = bool(self._pending) and self._wait_readable(ws, 0)
                if not ready:
                    self._flush_pending()  # the burst is over (if any): hand on what it brought
                    with self._lock:
                        deadline = self._deadlines.deadline()
                    wait = self._idle_wake if deadline is None else deadline - time.monotonic()
                    ready = self._wait_readable(ws, min(max(wait, 0.0), self._idle_wake))
                    if not ready and wait <= 0:
                        with self._lock:
                            error = TimeoutError(f"The server stopped sending: {self._deadlines.describe()}.")
                        break
                if not ready:
                    continue
                opcode, frame = ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    self._on_audio(frame.data)
                elif opcode == websocket.ABNF.OPCODE_PONG:
                    self._on_pong(frame.data)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    error = self._on_close(frame.data)
                    break
                elif opcode == websocket.ABNF.OPCODE_TEXT:
                    # The protocol has no text messages: one is an error from a proxy or a newer server.
                    text = frame.data.decode("utf-8", "replace") if isinstance(frame.data, bytes) else frame.data
                    error = ServerError(f"The server sent a message instead of audio: {text[:300]!r}")
                    break
        except websocket.WebSocketTimeoutException:
            error = TimeoutError(
                f"A frame stalled halfway for read_timeout={self.settings.read_timeout:g} s.")
        except (OSError, websocket.WebSocketException) as exc:
            if self._stop.is_set():
                return
            log.debug("reader: connection lost: %s", exc)
            error = protocol.close_error(None, "", self._deadlines.sentinel_sent)
        except BaseException as exc:  # noqa: BLE001 - a bug of ours: the consumer must still hear of it
            log.exception("reader failed")
            error = StreamInterrupted(f"basetts failed while reading the stream: {exc!r}")
            error.__cause__ = exc
        if self._stop.is_set():
            return
        self._flush_pending()
        if error is None and self._decoder.pending:
            log.warning("dropping %d trailing byte(s): the stream ended mid-sample", len(self._decoder.pending))
        self._put(_End(error))

    def _wait_readable(self, ws: websocket.WebSocket, timeout: float) -> bool:
        sock = ws.sock
        if sock is None:
            return False
        if _buffered(ws):
            return True
        if isinstance(sock, ssl.SSLSocket):
            with self._tls_lock or contextlib.nullcontext():
                if sock.pending():
                    return True
        try:
            return _ready(sock, timeout)
        except (OSError, ValueError):  # socket shut down or closed by close()
            if self._stop.is_set():
                return False
            raise

    def _on_audio(self, data: bytes) -> None:
        now = time.monotonic()
        stats = self.stats
        if stats.first_byte_time is None:
            stats.first_byte_time = now - self._started
        stats.bytes_received += len(data)
        stats.frames_received += 1
        with self._lock:
            self._deadlines.audio_received(now)
        pcm = self._decoder.feed(data)
        if self._decoder.fell_back and stats.encoding is None:
            log.warning("asked for pcm_mulaw, but the server sent 16-bit PCM (an older server); decoding that")
        stats.encoding = self._decoder.encoding
        if not pcm:
            return
        if stats.frames_received == 1:
            self._put(pcm)
            # Let the consumer take the GIL now: when frames come in a burst (a fast server),
            # this thread would otherwise read several more before the first one is handed on.
            time.sleep(_FIRST_AUDIO_HANDOFF)
            return
        self._pending.append(pcm)
        self._pending_bytes += len(pcm)
        if self._pending_bytes >= _COALESCE_BYTES:
            self._flush_pending()

    def _on_pong(self, payload: bytes) -> None:
        with self._acknowledged:
            if self._pacer.pong(payload):
                self._deadlines.pong_received(time.monotonic(), self._pacer.pings_outstanding)
                self._acknowledged.notify_all()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        self._put(chunk)

    def _on_close(self, payload: bytes) -> Optional[BaseException]:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else protocol.NORMAL_CLOSE
        reason = payload[2:].decode("utf-8", "replace")
        with self._lock:
            sentinel_sent = self._deadlines.sentinel_sent
        log.debug("server closed: %s %s", code, reason)
        return protocol.close_error(code, reason, sentinel_sent)
