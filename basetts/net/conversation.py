"""One conversation's threads: a reader, a writer when needed, and a queue (bounded in bytes) between the
reader and the caller. Every rule is the protocol's (`protocols.Conversing`: it hands out the bytes to write);
the socket is `transport`'s. This module only moves bytes, waits and wakes."""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

from .. import protocols
from ..audio import Stats
from ..errors import BasetenTTSError, StreamInterrupted, warn
from ..protocols.base import Outgoing
from ..settings import Settings
from ..text import is_whole
from ..trace import Trace
from . import transport

log = logging.getLogger("basetts")

# The reader waits for data until the next deadline, and at most this long: close() wakes it at once by
# shutting the socket down, so the timer is only for deadlines that appear while it waits (words sent
# meanwhile).
_IDLE_WAKE = 1.0
# Time a thread gets to finish after being told to stop.
_JOIN_TIMEOUT = 2.0
# The queue of chunks between the reader and the consumer. Once it holds ROOM_BYTES (~2.7 s of audio)
# the writer holds the text back, so what piles up behind a slow or paused consumer is the audio of text
# already sent; the reader goes on reading it, answering the server's pings. Only past MAX_QUEUED_BYTES
# (a server sending audio nobody asked for) does it stop reading and leave the rest in the socket.
ROOM_BYTES = 128 * 1024
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# Once, after queueing the first audio: long enough for the waiting consumer to wake and run.
_FIRST_AUDIO_HANDOFF = 50e-6
# How much of a whole text open() sends itself (at most its first batch) before leaving the rest to the
# writer thread: little enough to fit in the socket buffers even if the server reads none.
_EAGER_BYTES = 4096
# What `_read_first` reads at a time: the answer's head and its first chunk or two of audio, so the first audio is
# handed on without first decoding all that a fast server has sent by then (up to READ_SIZE).
_FIRST_READ_SIZE = 8192


class _End:
    """Queue item: the stream is over, normally (error None) or not."""

    __slots__ = ("error",)

    def __init__(self, error: Optional[BaseException]) -> None:
        self.error = error


def utterance_for(settings: Settings, words: Iterable[str], stats: Stats) -> protocols.Conversing:
    """The protocol's state machine for one utterance (settings.protocol)."""
    return protocols.spec(settings.protocol).utterance(settings, words, stats)


def count_audio(stats: Stats, utterance: protocols.Conversing, started: float, now: float, audio: bool,
                before: Tuple[int, int] = (0, 0)) -> bool:
    """Bring `stats` up to date after a read (True if it brought the first audio); say once that the
    server ignored pcm_mulaw. `before`: the bytes and messages earlier connections of the call received."""
    first = audio and stats.first_byte_time is None
    if first:
        stats.first_byte_time = now - started
    stats.bytes_received = before[0] + utterance.audio_bytes
    stats.frames_received = before[1] + utterance.audio_messages
    if utterance.decoder.fell_back and stats.encoding is None:
        warn("asked for encoding='pcm_mulaw', but the server sent 16-bit PCM (an older server); decoding that")
    stats.encoding = utterance.decoder.encoding
    return first


def warn_trailing(utterance: protocols.Conversing) -> None:
    """At the normal end: half a sample left over is dropped, and said."""
    if utterance.decoder.pending:
        warn(f"dropping {len(utterance.decoder.pending)} trailing byte(s): the stream ended mid-sample "
             "(half a 16-bit sample is not audio)")


class Conversation:
    """One utterance over one connection. Owns its threads (a reader; a writer when the
    caller's thread could not send everything) and joins them in `close()`.

    Use as a context manager; `chunks()` yields sample-aligned 16-bit PCM as it arrives and raises a
    `BasetenTTSError` if the stream does not end with the server's normal close.
    """

    def __init__(self, settings: Settings, words: Iterable[str], *,
                 stats: Optional[Stats] = None,
                 sock: Optional[transport.BoundedSocket] = None, started: Optional[float] = None,
                 on_upgrade: Optional[Callable[[], object]] = None,
                 release: Optional[Callable[[Settings, transport.BoundedSocket], None]] = None,
                 resumed_at: int = 0, ahead: bool = False) -> None:
        """`sock`: an already connected websocket (from `connect`) to use instead of connecting; the
        conversation owns it from here on and closes it, or hands it to `release` when it ended normally and
        the protocol may use it again (HTTP keep-alive). `started`: the monotonic time the user's
        call began, which the stats count from (default: now). `on_upgrade`: runs in open()'s thread
        while the server answers the upgrade (at once on `sock`), before any text is sent; what it raises,
        open() raises. `resumed_at`: the bytes of audio earlier connections of the call made (`replaying`). `ahead`: a
        long text's next part, opened while the current part is heard: it counts nothing in `stats` until the
        call takes it up (`adopt`)."""
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self._before = (self.stats.bytes_received, self.stats.frames_received)
        self._counting = not ahead  # in `stats`: an ahead part's audio is counted from `adopt` on
        self._timed_connect = False  # this conversation set `stats.connect_time`
        self._words = words
        self._queue: "queue.SimpleQueue[Union[bytes, _End]]" = queue.SimpleQueue()
        self._queued = 0  # bytes of audio in the queue (under _lock): see ROOM_BYTES
        self._stop = threading.Event()
        self._connected = threading.Event()  # set once the reader may use the connection (or must stop)
        self._lock = threading.Lock()  # guards the utterance's state
        self._changed = threading.Condition(self._lock)  # a pong, the reader's end, the consumer catching up
        self._utterance = utterance_for(settings, words, self.stats)
        if resumed_at:
            self._utterance.resume_from(resumed_at)
        self._messages = self._utterance.messages
        # A deadline that appears while the reader waits (words sent meanwhile) is seen within a tenth
        # of its timeout.
        self._idle_wake = min(_IDLE_WAKE, settings.first_audio_timeout / 10, settings.read_timeout / 10,
                              settings.idle_timeout / 10)  # Qwen3's keepalive is due every third of it
        self._sock: Optional[transport.BoundedSocket] = None
        self._preopened = sock
        self.preopened = sock is not None
        """It goes on a connection opened earlier (kept alive, connect()'s, a part's opened ahead)."""
        self._on_upgrade = on_upgrade
        self._release = release
        self._clean_end = False  # chunks() saw the normal end
        self._threads: List[threading.Thread] = []
        self._started = time.monotonic() if started is None else started
        self._finished = False
        self._end: Optional[_End] = None  # the end chunks() met
        self._reader_done = False
        self._writer_waiting = False
        # HTTP with a whole text: no writer thread. This thread reads the answer up to its first audio and the
        # reader starts when the consumer comes back for more; each next request goes from whichever thread sees
        # room for it (`_send_next`), so no thread hand-off stands between a response and the next request.
        self._sends_itself = (not protocols.spec(settings.protocol).upgrades
                              and is_whole(words))
        self._reader_deferred = False
        self._in_text = False  # the writer waits for the caller's text iterable (which nothing can interrupt)
        self._write_lock = threading.Lock()  # one write at a time: the writer's, or a pong between them
        self._trace = Trace.open(settings)
        # A conversation dropped without close(): its socket is closed when it is collected (its threads
        # hold it while they run, so by then they have ended). Never at exit: close() is for that.
        self._sockets: List[transport.BoundedSocket] = []
        self._finalizer = weakref.finalize(self, _close_sockets, self._sockets)
        self._finalizer.atexit = False

    @property
    def words_sent(self) -> int:
        return self._utterance.words_sent

    @property
    def resume_point(self) -> Tuple[int, int]:
        """(words, PCM bytes) of this conversation's text and audio whose units all came (`Conversing`)."""
        with self._lock:
            return self._utterance.resume_point

    @property
    def resumable(self) -> bool:
        return self._utterance.resumable

    @property
    def trace(self) -> Trace:
        """This conversation's lines in the trace file (`trace=`): a recovery from its loss is said there."""
        return self._trace

    @property
    def started(self) -> float:
        """The monotonic time the call began: its stats count from there."""
        return self._started

    @property
    def part_words(self) -> Optional[int]:
        """Once a part's text is all sent (`continues`): the words it carries, where the next part begins."""
        with self._lock:
            return self._utterance.part_words

    @property
    def continues(self) -> bool:
        """It carried a part of the text: the words after its `resume_point` go on on a new connection."""
        with self._lock:
            return self._utterance.continues

    @property
    def audio_out(self) -> int:
        """Bytes of PCM this conversation has handed out."""
        with self._lock:
            return self._utterance.decoder.out_bytes

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> "Conversation":
        """Connect in the caller's thread (so its errors raise here), start the reader (and the writer,
        unless this thread could send everything). On any failure, everything opened is closed."""
        if self._sock is not None:
            return self
        try:
            self._open()
        except BaseException as exc:
            if isinstance(exc, BasetenTTSError):
                self._trace.event("error", error=str(exc), kind=type(exc).__name__)
            if self._timed_connect:
                self.stats.connect_time = None  # refused: the attempt that is answered (a retry) sets it
            self.close()  # also wakes and joins a reader started during the upgrade
            raise
        return self

    def _open(self) -> None:
        if self._trace.on:
            self._trace.event("connect", url=self.settings.url, settings=self.settings.session_message())
        upgrades = protocols.spec(self.settings.protocol).upgrades
        if self._preopened is not None:
            self._sock, self._preopened = self._preopened, None
            if self._on_upgrade is not None and upgrades:
                self._on_upgrade()
        else:
            self._sock = transport.open_socket(self.settings, while_waiting=self._while_upgrading)
        self._sockets.append(self._sock)
        if self._counting and self.stats.connect_time is None:  # the call's first connection that served it
            self.stats.connect_time = self._elapsed()
            self._timed_connect = True
        self._trace.event("open")
        # A whole text (a list of words) starts from this thread, not the writer's: the first batch goes
        # out before the reader touches the connection, so no GIL hand-off delays the server's first
        # audio. A short text needs no writer thread at all.
        if is_whole(self._words):
            self._send_now()
        if self._sends_itself:
            self._connected.set()
            self._read_first()
            return
        self._start_reader()
        self._connected.set()
        if not upgrades:
            self._await_answer()
        if not self._utterance.all_sent:
            self._start_thread("writer", self._write)

    def _read_first(self) -> None:
        """HTTP, a whole text: read the answer in this thread up to its first audio (or its end), so nothing
        waits for another thread before the first sound; a refusal raises here, where it is retried, as in
        `_await_answer`. The reader starts when the consumer asks for more (`_next_item`)."""
        if self._on_upgrade is not None:
            self._on_upgrade()
        if self._utterance.finished:
            return  # no words: nothing was asked, and `_send` queued the end
        sock = self._sock
        assert sock is not None
        data: Optional[bytes] = sock.take_buffered()
        while not self._stop.is_set():
            over = self._step(sock, data, _FIRST_READ_SIZE, consumer=True)
            data = b""
            if over is not None:
                with self._changed:
                    self._reader_done = True
                self._finish(over[0])
                if over[0] is not None and not self._utterance.answered:
                    raise over[0]
                return
            if self._queued:
                break
        self._reader_deferred = not self._stop.is_set()

    def _await_answer(self) -> None:
        """An HTTP protocol: the request just sent is answered (a 2xx head) before open() returns, so a
        refusal (a wrong key, a deployment starting up) raises here, where it is retried, as a refused
        upgrade is. `on_upgrade` runs meanwhile. The protocol's deadline (handshake_timeout) bounds it."""
        if self._on_upgrade is not None:
            self._on_upgrade()
        if not self._utterance.messages_sent:
            return  # text arriving over time: its first request goes when its first sentence is there
        with self._changed:
            while not self._utterance.answered and not self._reader_done and not self._stop.is_set():
                self._changed.wait(self._idle_wake)
            if self._utterance.answered or self._stop.is_set():
                return
        try:  # the reader ended before any audio: its end is all it queues (just after it is done)
            item = self._queue.get(timeout=_JOIN_TIMEOUT)
        except queue.Empty:
            return
        if isinstance(item, _End) and item.error is not None:
            raise item.error
        self._queue.put_nowait(item)

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

    def close(self) -> None:
        """Stop the threads, close the socket, join. Safe to call any number of times, from any path."""
        self._stop.set()
        self._connected.set()  # a reader still waiting for the connection wakes and sees the stop
        with self._changed:
            self._changed.notify_all()  # a writer waiting for a pong sees the stop
        if self._preopened is not None:  # never opened: the spare it was given is still ours to close
            self._preopened.close()
            self._preopened = None
        sock = self._sock
        with self._lock:
            reuse = self._clean_end and self._release is not None and self._utterance.reusable
        if sock is not None and not reuse:
            if not self._finished:
                log.debug("closing the connection early")
            sock.shutdown()  # wakes a write or a poll blocked on it
        for thread in self._threads:
            if thread is threading.current_thread():
                continue
            if thread.name == "basetts-writer" and self._in_text and not getattr(self._words, "ends_on_close", False):
                # Blocked in the caller's text iterable: nothing can interrupt it, so close (Ctrl+C) does not
                # wait for it; it sends nothing more and ends when the iterable next yields. (A session's feed
                # ends at once when the session closes: that one is waited for.)
                reuse = False
                log.debug("not waiting for the writer: it waits for the text iterable to yield")
                continue
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                reuse = False
                log.warning("%s did not stop within %.0f s", thread.name, _JOIN_TIMEOUT)
        if sock is not None and reuse and self._release is not None and sock in self._sockets:
            self._sockets.remove(sock)  # the next conversation's now
            self._sock = None
            self._release(self.settings, sock)
        elif sock is not None:
            sock.close()
        self._finalizer.detach()
        # Wake a consumer waiting in chunks() (another thread) now, not at its next poll.
        self._queue.put_nowait(_End(StreamInterrupted("The conversation was closed.", recoverable=False)))
        if self.stats.total_time is None:
            self.stats.total_time = self._elapsed()
        self._trace.close()

    def __enter__(self) -> "Conversation":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # consumer --------------------------------------------------------------------------------------
    def chunks(self) -> Iterator[bytes]:
        """Audio chunks in order until the normal end; raises our error (or the text iterable's) if not."""
        while True:
            item = self._next_item()
            if isinstance(item, _End):
                self._finished = True
                self._clean_end = item.error is None
                self.stats.total_time = self._elapsed()
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _next_item(self) -> Union[bytes, _End]:
        """The next item, woken by its arrival: every way a conversation ends queues an _End (the reader's
        end, a failed text iterable, close())."""
        if self._end is not None:
            return self._end  # asked again after the end
        if self._reader_deferred and self._queue.empty():
            self._reader_deferred = False
            self._start_reader()
        item = self._queue.get()
        if isinstance(item, _End):
            self._end = item
        else:
            with self._changed:
                self._queued -= len(item)
                # Only as the queue falls below a bound: a writer waiting for the server (pacing) is not woken
                # for each chunk taken, only the one that waits for room (or a full reader).
                if ((self._writer_waiting and self._queued < ROOM_BYTES <= self._queued + len(item))
                        or self._queued + len(item) > MAX_QUEUED_BYTES):
                    self._changed.notify_all()  # the consumer caught up: the writer (or a full reader) goes on
            if self._sends_itself:
                self._send_next()
        return item

    # threads ---------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _put(self, item: Union[bytes, _End]) -> bool:
        """Queue an item; past MAX_QUEUED_BYTES, wait for the consumer (unless told to stop)."""
        if isinstance(item, bytes):
            with self._changed:
                while self._queued > MAX_QUEUED_BYTES:
                    if self._stop.is_set():
                        return False
                    self._changed.wait()
                self._queued += len(item)
        self._queue.put(item)
        return True

    # sending ---------------------------------------------------------------------------------------
    def _send_now(self) -> None:
        """Send the first batch, at most _EAGER_BYTES, from the caller's thread in one write."""
        messages = self._utterance.take(eager=True, max_bytes=_EAGER_BYTES)
        try:
            self._send(messages, wait_for_room=False)
        except OSError as exc:
            log.debug("sending from the caller's thread failed: %s", exc)  # the reader reports why
            with self._lock:
                self._utterance.all_sent = True  # nothing more can go out on this connection

    def _send(self, messages: List[Outgoing], wait_for_room: bool = True) -> None:
        """Write what the protocol makes of `messages` (their frames, and the pacing ping after a batch).

        The protocol counts them as handed to the socket: a server that stops reading them owes audio all
        the same, so the reader's deadlines end a conversation whose server is gone, however long this
        write waits for room (`wait_for_room`; else it gives up after read_timeout).
        """
        sock = self._sock
        assert sock is not None
        if not messages:
            return
        with self._lock:
            write = self._utterance.send(messages, time.monotonic())
        give_up = None if wait_for_room else time.monotonic() + self.settings.read_timeout
        with self._write_lock:
            sock.write(memoryview(write.data), self._stop, give_up)
        self._trace.wrote(write)
        self._send_control()  # a ping that came while this write waited
        if self._utterance.finished:
            self._put(_End(None))  # nothing was asked, so nothing will be read: the end is now

    def _send_control(self) -> None:
        """Write what the protocol owes besides the text (the latest ping's pong, a keepalive, a close answer)
        now, if that cannot block: no write in progress, and room in the socket; else it waits in the protocol
        for the next write or the next wake of the reader. The reader must never block on a send: while the
        server generates it reads nothing, so our socket can be full of text, and a reader waiting to send
        would stop reading audio while the server waits for us to read."""
        sock = self._sock
        if sock is None or not self._utterance.controls or not self._write_lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            with self._lock:
                if not self._utterance.wants_to_send(now):
                    return  # nothing owed: no system call to ask the socket for room
            if not sock.writable():
                return
            with self._lock:
                write = self._utterance.data_to_send(now)
            if write is not None and sock.try_write(write.data):
                self._trace.wrote(write)
        finally:
            self._write_lock.release()

    def _send_next(self) -> None:
        """HTTP, a whole text: the next request, once the one before has been answered whole and the consumer
        is not behind (`ROOM_BYTES`), written by the thread that sees it (the reader at a response's end, the
        consumer once it has caught up). A request follows a response the server has finished, so the
        socket has room for it; the write is bounded by read_timeout all the same."""
        sock = self._sock
        if sock is None or self._stop.is_set():
            return
        with self._lock:
            now = time.monotonic()
            if self._utterance.all_sent or self._queued >= ROOM_BYTES or not self._utterance.may_send(now):
                return
            writes = self._utterance.fill(now)
        try:
            with self._write_lock:
                for write in writes:
                    sock.write(memoryview(write.data), self._stop, now + self.settings.read_timeout)
                    self._trace.wrote(write)
        except OSError as exc:
            log.debug("sending the next request failed: %s", exc)  # the reader reports why
            return
        self._prepare()

    def _prepare(self) -> None:
        """HTTP, a whole text: cut the next request's text while the server answers this one (`Conversing.prepare`)."""
        with self._lock:
            if not self._utterance.all_sent:
                self._utterance.prepare()

    def _write(self) -> None:
        """Send settings, one word per message, then the sentinel (whatever open() has not sent), each
        batch once the server has read the one before (see `protocols.base.Pacer`)."""
        eager = is_whole(self._words)
        try:
            while self._wait_until_paced():
                self._in_text = True
                try:
                    messages = self._utterance.take(eager)  # may wait for the caller's text: outside the lock
                finally:
                    self._in_text = False
                if not messages or self._stop.is_set():
                    return
                self._send(messages)
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer, never lost
            if self._stop.is_set():
                return
            if isinstance(exc, OSError):
                # The connection is gone; the reader sees why (close code or drop) and reports it.
                log.debug("writer stopped: %s", exc)
                return
            self._put(_End(exc))  # the caller's text iterable failed: re-raise it in the caller

    def _wait_until_paced(self) -> bool:
        """Wait until the next batch may go out: the server has read the one before, and the consumer
        is not behind (else the server would get ahead of a slow consumer, our reader would stop reading
        behind the queue, and the server's pings would go unanswered). False once the conversation is over."""
        with self._changed:
            while not self._stop.is_set() and not self._reader_done:
                if self._utterance.may_send(time.monotonic()) and self._queued < ROOM_BYTES:
                    return True
                self._writer_waiting = True
                self._changed.wait()
                self._writer_waiting = False
            return False

    # receiving -------------------------------------------------------------------------------------
    def _read(self) -> None:
        """Receive until the end; queue aligned PCM; enforce the deadlines; let the writer go on."""
        try:
            error = self._receive()
        except BaseException as exc:  # noqa: BLE001 - a bug of ours: the consumer must still hear of it
            log.exception("reader failed")
            error = StreamInterrupted(f"basetts failed while reading the stream: {exc!r}", recoverable=False)
            error.__cause__ = exc
        finally:
            with self._changed:
                self._reader_done = True  # the writer, waiting for a pong, stops: nothing more is read
                self._changed.notify_all()
        self._finish(error)

    def _finish(self, error: Optional[BaseException]) -> None:
        """The stream is over: trace it and queue its end (unless close() did)."""
        if self._stop.is_set():
            return  # close() queues the end
        try:
            self._trace.event("end", error=None if error is None else str(error),
                              kind=None if error is None else type(error).__name__)
        finally:
            self._put(_End(error))  # the consumer waits for it without a timeout

    def _receive(self) -> Optional[BaseException]:
        self._connected.wait()
        sock = self._sock
        if sock is None or self._stop.is_set():
            return None
        data: Optional[bytes] = sock.take_buffered()  # what came with the upgrade's answer
        if self._sends_itself:
            self._prepare()  # the second request's text: `_read_first` handed on the first audio without it
        while not self._stop.is_set():
            over = self._step(sock, data)
            data = b""
            if over is not None:
                return over[0]
        return None

    def _step(self, sock: transport.BoundedSocket, data: Optional[bytes], size: int = transport.READ_SIZE,
              consumer: bool = False) -> Optional[Tuple[Optional[BaseException]]]:
        """One read of at most `size` bytes (unless `data` came already) and what the protocol makes of it: (the
        error, or None) once the stream is over, else None. `consumer`: run by the thread that takes the audio."""
        self._send_control()
        if not data:
            with self._lock:
                deadline = self._utterance.deadline()
            wait = self._idle_wake if deadline is None else deadline - time.monotonic()
            try:
                data = sock.read(size, min(max(wait, 0.0), self._idle_wake))
            except OSError as exc:
                if self._stop.is_set():
                    return (None,)
                log.debug("reader: connection lost: %s", exc)
                data = b""
            if data is None:
                if wait <= 0:
                    with self._lock:
                        return (self._utterance.timeout_error(time.monotonic()),)
                return None
        now = time.monotonic()
        with self._changed:
            received = self._utterance.receive(data, now)
            expired = None if received.ended else self._utterance.expired(now)
            if received.acknowledged:
                self._changed.notify_all()
        self._trace.received(len(data), received)
        if received.audio:
            self._on_audio(received.audio, now, consumer)
        if received.ended:
            self._send_control()  # the close's answer: if it cannot go now, what was read still counts
            if received.error is None:
                warn_trailing(self._utterance)
            return (received.error,)
        if expired is not None:  # however the bytes came (pings, empty messages): the deadline holds
            return (expired,)
        if received.acknowledged and self._sends_itself:
            self._send_next()
        return None

    def adopt(self, resumed_at: int) -> None:
        """A part opened ahead (`ahead`) becomes the call's current conversation: its audio so far is counted in
        `stats`, after that of the parts before, and goes on from `resumed_at` bytes of audio (`replaying`)."""
        with self._lock:
            self._before = (self.stats.bytes_received, self.stats.frames_received)
            if resumed_at:
                self._utterance.resume_from(resumed_at)
            self._counting = True
            if self._utterance.audio_messages:
                count_audio(self.stats, self._utterance, self._started, time.monotonic(), audio=True,
                            before=self._before)

    def _on_audio(self, pcm: bytes, now: float, consumer: bool = False) -> None:
        # An ahead part's reader counts nothing until `adopt`, which counts what it read by then: only the reader
        # changes the utterance's counts, so whichever of the two counts last counts them all.
        first = self._counting and count_audio(self.stats, self._utterance, self._started, now, audio=True,
                                               before=self._before)
        if not pcm:
            return
        self._put(pcm)
        if first and not consumer:
            # Let the consumer take the GIL now: when frames come in a burst (a fast server), this
            # thread would otherwise read several more before the first one is handed on.
            time.sleep(_FIRST_AUDIO_HANDOFF)


def _close_sockets(sockets: List[transport.BoundedSocket]) -> None:
    for sock in sockets:
        sock.close()
