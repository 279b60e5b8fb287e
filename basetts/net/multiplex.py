"""`Multiplexer`: many conversations of whole texts on one thread, for `synthesize_many`.

A `Conversation` spends a reader thread (and often a writer) per utterance, which a call that speaks
one text never notices; a batch of hundreds in flight pays for hundreds of threads taking turns with the
GIL. Here one thread (`basetts-io`) waits on every socket at once (`selectors`), and each conversation
is the same sans-I/O state as `Conversation`'s (`conversation.utterance_for`): it hands out the bytes to
write and takes the bytes read; this loop only moves them. Connecting (TCP, a proxy, TLS, the upgrade, retries)
blocks, so a few `basetts-connect` threads do it and hand the socket over.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, Dict, List, Optional, Set

from ..audio import Audio, Stats
from ..errors import BasetenTTSError, StreamInterrupted
from ..protocols.base import Write
from ..settings import Settings
from ..trace import Trace
from . import transport
from .conversation import count_audio, utterance_for, warn_trailing
from .retry import MAX_DROPS, Cancelled, backoff, recovery, retry_delay, retrying, trace_recovery

log = logging.getLogger("basetts")

Done = Callable[[Optional[Audio], Optional[BaseException]], None]
"""Called once per text, in the I/O thread (or a connector's): the audio, or the error (with `.partial`)."""

# Deadlines are checked this often: they are seconds long, so a quarter of a second late is nothing,
# and the scan of every conversation is then a small part of the loop's work even with hundreds.
_DEADLINE_CHECK = 0.25


class _Stream:
    """One conversation in the loop: its socket, its protocol state, what waits to be sent, what came."""

    def __init__(self, settings: Settings, sock: transport.BoundedSocket, words: List[str], stats: Stats,
                 started: float, done: Done, cancel: threading.Event, resumed: Optional["_Resumed"] = None) -> None:
        self.settings = settings
        self.words = words
        self.cancel = cancel
        self.bounded = sock
        self.sock = sock.sock
        self.utterance = utterance_for(settings, words, stats)
        self.resumed = resumed
        if resumed is not None:
            self.utterance.resume_from(resumed.pcm.tell())
        self.before = (stats.bytes_received, stats.frames_received)  # earlier connections' (a recovery)
        self.messages = self.utterance.messages
        self.stats = stats
        self.started = started
        self.done = done
        self.out = bytearray()
        self.pcm = resumed.pcm if resumed is not None else io.BytesIO()
        self.trace = Trace.open(settings)
        self.events = 0  # the selector events registered
        self.ended = False

    def fill(self, now: float) -> None:
        """Queue the next batches while the pacing allows (a whole text never waits on its iterable)."""
        for write in self.utterance.fill(now):
            self.queue(write)

    def control(self, now: float) -> None:
        """Queue what the protocol owes besides the text: the latest ping's pong, a keepalive, a close answer."""
        write = self.utterance.data_to_send(now)
        if write is not None:
            self.queue(write)

    def queue(self, write: Write) -> None:
        self.out += write.data
        self.trace.wrote(write)


@dataclasses.dataclass
class _Resumed:
    """A text going on after a lost connection or a part (`Conversing.continues`): its audio so far, the text's
    words before these, the recent losses, when the one being recovered from came, and when the text began."""

    pcm: io.BytesIO
    offset: int
    drops: Deque[float]
    lost_at: Optional[float]
    started: float


class Multiplexer:
    """Runs conversations of whole texts on one I/O thread; `connectors` threads open their connections.
    `close()` ends every conversation still running (as a `StreamInterrupted`) and joins the threads."""

    def __init__(self, connectors: int = 4) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._arrivals: Deque[_Stream] = collections.deque()
        self._streams: Dict[int, _Stream] = {}  # by file descriptor; only the I/O thread touches it
        self._stopping = threading.Event()
        self._connecting: Set[socket.socket] = set()  # duplicates of connections still opening (under _lock)
        self._connect = ThreadPoolExecutor(max_workers=connectors, thread_name_prefix="basetts-connect")
        self._thread = threading.Thread(target=self._run, name="basetts-io", daemon=True)
        self._thread.start()

    # what the batch calls ---------------------------------------------------------------------------------
    def submit(self, settings: Settings, words: List[str], done: Done,
               cancel: Optional[threading.Event] = None) -> None:
        """Speak `words` (a whole text): connect on a connector thread (retrying what is transient), then
        run in the loop; `done` gets the outcome."""
        self._connect.submit(self._open, settings, words, done, cancel or self._stopping)

    def close(self) -> None:
        """End everything now; safe to call more than once. Connections still being opened are cut (a
        deployment starting up can hold an upgrade for minutes)."""
        with self._lock:
            self._stopping.set()
            connecting = list(self._connecting)
        for raw in connecting:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._wake()
        self._connect.shutdown(wait=True, cancel_futures=True)
        self._thread.join()
        for stream in list(self._arrivals):  # arrived after the loop ended
            self._end(stream, StreamInterrupted("The batch was stopped.", recoverable=False), close=True)
        self._arrivals.clear()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    # connecting (a connector thread) ------------------------------------------------------------------------
    def _open(self, settings: Settings, words: List[str], done: Done, cancel: threading.Event,
              again: Optional[Stats] = None, delay: float = 0.0, resumed: Optional[_Resumed] = None,
              part: bool = False) -> None:
        """`again`: the stats of a conversation refused before any audio (an HTTP status), tried again after
        `delay` seconds, or one lost after audio began (`resumed`: where it goes on), or ended after a `part`."""
        if again is not None and cancel.wait(delay):
            done(None, BasetenTTSError("The batch was stopped before this text was sent."))
            return
        stats = again or Stats()
        tried = 0 if resumed is not None else stats.attempts  # a recovery has the retries of a new call
        earlier = stats.attempts - part if resumed is not None else 0  # a part's first attempt is not a retry
        connecting = time.monotonic()
        started = resumed.started if resumed is not None else connecting
        opened: List[socket.socket] = []

        def connected(raw: socket.socket) -> None:
            # A duplicate of the descriptor: TLS takes over `raw` itself, and shutting the connection down
            # through the duplicate touches neither (the connector's thread may be inside OpenSSL).
            handle = raw.dup()
            with self._lock:
                opened.append(handle)
                self._connecting.add(handle)
                stopping = self._stopping.is_set()
            if stopping:  # close() came between the connect and this: it could not see this socket
                handle.shutdown(socket.SHUT_RDWR)

        try:
            try:
                sock = retrying(settings, stats, lambda: transport.open_socket(settings, on_connected=connected),
                                cancel, already=tried)
            finally:
                stats.attempts += earlier
        except Cancelled:
            done(None, BasetenTTSError("The batch was stopped before this text was sent."))
            return
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to `done`
            if self._stopping.is_set() and isinstance(exc, BasetenTTSError):
                exc = BasetenTTSError(f"The batch was stopped while this text's connection was opening ({exc}).")
            elif resumed is not None and isinstance(exc, BasetenTTSError):
                failed = StreamInterrupted(
                    f"A new connection for the rest of the text (a long text goes on several) failed: {exc}" if part
                    else f"The connection was lost; a new connection to finish the text failed: {exc}")
                failed.__cause__, failed.partial = exc, Audio(resumed.pcm.getvalue(), stats=stats)
                exc = failed
            done(None, exc)
            return
        finally:
            with self._lock:
                self._connecting.difference_update(opened)
            for handle in opened:
                handle.close()
        if resumed is None:
            stats.connect_time = time.monotonic() - connecting
        try:
            stream = _Stream(settings, sock, words, stats, started, done, cancel, resumed)
            sock.sock.setblocking(False)
            # The first batch goes out from here, at once: handing it to the loop first would delay the
            # server's first audio by a thread's wake-up. What the socket does not take, the loop sends.
            stream.trace.event("open")
            stream.fill(time.monotonic())
            _send_some(stream)
        except BaseException as exc:  # noqa: BLE001
            sock.close()
            done(None, exc)
            return
        with self._lock:
            stopped = self._stopping.is_set()
            if not stopped:
                self._arrivals.append(stream)
        if stopped:
            self._end(stream, StreamInterrupted("The batch was stopped.", recoverable=False), close=True)
            return
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending (or we are closing)

    # the loop (the I/O thread) --------------------------------------------------------------------------------
    def _run(self) -> None:
        next_check = time.monotonic() + _DEADLINE_CHECK
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for key, events in self._selector.select(max(0.0, next_check - now)):
                    if key.data is None:
                        self._drain_wake()
                        continue
                    stream: _Stream = key.data
                    try:
                        if events & selectors.EVENT_READ:
                            self._read(stream)
                        if events & selectors.EVENT_WRITE and stream.sock.fileno() in self._streams:
                            self._write(stream)
                    except Exception as exc:  # noqa: BLE001 - a bug of ours: that text fails, the rest go on
                        log.exception("the batch's I/O failed")
                        error = StreamInterrupted(f"basetts failed while streaming: {exc!r}", recoverable=False)
                        self._end(stream, error)
                self._admit()
                now = time.monotonic()
                if now >= next_check:
                    self._check_deadlines(now)
                    next_check = now + _DEADLINE_CHECK
        finally:
            # Stopped, or (a bug of ours) the loop failed: nothing more is admitted, and every text still
            # here ends now, so no caller waits for a result that cannot come.
            self._stopping.set()
            with self._lock:
                arrived, self._arrivals = list(self._arrivals), collections.deque()
            for stream in list(self._streams.values()) + arrived:
                self._end(stream, StreamInterrupted("The batch was stopped.", recoverable=False))

    def _drain_wake(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _admit(self) -> None:
        """Take the conversations the connectors opened: send their first batch, watch their sockets."""
        with self._lock:
            arrived, self._arrivals = list(self._arrivals), collections.deque()
        for stream in arrived:
            try:
                self._streams[stream.sock.fileno()] = stream
                self._watch(stream)
                buffered = stream.bounded.take_buffered()  # what came with the upgrade's answer
                if buffered:
                    self._received(stream, buffered)
            except Exception as exc:  # noqa: BLE001 - a bug of ours: that text fails, the rest go on
                log.exception("the batch's I/O failed")
                self._end(stream, StreamInterrupted(f"basetts failed while streaming: {exc!r}", recoverable=False))

    def _watch(self, stream: _Stream) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.out else 0)
        if events == stream.events:
            return
        if stream.events:
            self._selector.modify(stream.sock, events, stream)
        else:
            self._selector.register(stream.sock, events, stream)
        stream.events = events

    def _read(self, stream: _Stream) -> None:
        sock = stream.sock
        chunks: List[bytes] = []
        try:
            while True:
                data = sock.recv(transport.READ_SIZE)
                chunks.append(data)
                if not data or not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            log.debug("batch: connection lost: %s", exc)
            chunks.append(b"")
        for data in chunks:
            if stream.sock.fileno() not in self._streams:
                return
            self._received(stream, data)

    def _received(self, stream: _Stream, data: bytes) -> None:
        now = time.monotonic()
        utterance, stats = stream.utterance, stream.stats
        received = utterance.receive(data, now)
        stream.trace.received(len(data), received)
        count_audio(stats, utterance, stream.started, now, audio=bool(received.audio), before=stream.before)
        if received.audio:
            if stream.resumed is not None and stream.resumed.lost_at is not None:
                stats.recovery_time += now - stream.resumed.lost_at
                stream.resumed.lost_at = None
            stream.pcm.write(received.audio)
        stream.control(now)
        if received.ended:
            _send_some(stream)  # the close's answer
            if received.error is None:
                warn_trailing(utterance)
            self._end(stream, received.error)
            return
        expired = utterance.expired(now)
        if expired is not None:  # however the bytes came (pings, empty messages): the deadline holds
            self._end(stream, expired)
            return
        if received.acknowledged:
            stream.fill(now)
        if stream.out:
            self._write(stream)

    def _write(self, stream: _Stream) -> None:
        _send_some(stream)
        self._watch(stream)

    def _check_deadlines(self, now: float) -> None:
        for stream in list(self._streams.values()):
            utterance = stream.utterance
            try:
                expired = utterance.expired(now)
                if expired is not None:
                    self._end(stream, expired)
                    continue
                stream.control(now)  # a quiet Qwen3 session's keepalive (checked here only: due every 10 s)
                if stream.out:
                    self._write(stream)
            except Exception as exc:  # noqa: BLE001 - a bug of ours: that text fails, the rest go on
                log.exception("the batch's I/O failed")
                self._end(stream, StreamInterrupted(f"basetts failed while streaming: {exc!r}", recoverable=False))

    def _end(self, stream: _Stream, error: Optional[BaseException], close: bool = True) -> None:
        """The conversation is over: close it, and hand over the audio or the error (with the audio so far).
        Once per conversation, whatever calls it again."""
        if stream.ended:
            return
        stream.ended = True
        fileno = stream.sock.fileno()
        if self._streams.get(fileno) is stream:
            del self._streams[fileno]
            try:
                self._selector.unregister(stream.sock)
            except (KeyError, ValueError):
                pass
        if close:
            stream.bounded.close()
        stats = stream.stats
        stats.total_time = time.monotonic() - stream.started
        stream.trace.event("end", error=None if error is None else str(error),
                           kind=None if error is None else type(error).__name__)
        stream.trace.close()
        if error is None and stream.utterance.continues:
            error = self._next_part(stream)
            if error is None:
                return
        elif (isinstance(error, BasetenTTSError) and not self._stopping.is_set() and not stream.cancel.is_set()
                and (stream.utterance.decoder.out_bytes or stream.resumed is not None)):
            if self._recover(stream, error):
                return
        elif error is not None and not stream.pcm.tell() and not self._stopping.is_set():
            delay = retry_delay(stream.settings, stats.attempts - 1, error)
            if delay is not None:  # refused before any audio (an HTTP request's status): again, as a call would
                try:
                    self._connect.submit(self._open, stream.settings, stream.words, stream.done, stream.cancel,
                                         stats, delay)
                    return
                except RuntimeError:  # the batch is closing: no more connections
                    pass
        audio = Audio(stream.pcm.getvalue(), stats=stats)
        if error is not None and isinstance(error, BasetenTTSError):
            error.partial = audio
        stream.done(None if error is not None else audio, error)

    def _next_part(self, stream: _Stream) -> Optional[BasetenTTSError]:
        """A part of the text ended (`Conversing.continues`): the rest goes on a new connection; else the error."""
        if self._stopping.is_set() or stream.cancel.is_set():
            return StreamInterrupted("The batch was stopped.", recoverable=False)
        resumed = stream.resumed or _Resumed(stream.pcm, 0, collections.deque(maxlen=MAX_DROPS), None, stream.started)
        words_done = stream.utterance.resume_point[0]
        resumed.offset += words_done
        try:
            self._connect.submit(self._open, stream.settings, stream.words[words_done:], stream.done, stream.cancel,
                                 stream.stats, 0.0, resumed, True)
        except RuntimeError:  # the batch is closing: no more connections
            return StreamInterrupted("The batch was stopped.", recoverable=False)
        return None

    def _recover(self, stream: _Stream, error: BasetenTTSError) -> bool:
        """A connection lost after audio began: the text goes on on a new one (the rule is `retry.recovery`'s),
        its audio after the last unit done taken back; False if the text ends with `error`."""
        resumed = stream.resumed or _Resumed(stream.pcm, 0, collections.deque(maxlen=MAX_DROPS), None, stream.started)
        held = stream.pcm.tell()
        began = held - stream.utterance.decoder.out_bytes
        words_done, done = stream.utterance.resume_point

        def take_back(count: int) -> int:
            stream.pcm.truncate(held - count)
            stream.pcm.seek(0, io.SEEK_END)
            return count

        taken = recovery(stream.settings, stream.stats, error, resumed.drops, stream.utterance.resumable,
                         began + done, held, take_back)
        if taken is None:
            return False
        stream.stats.recoveries += 1
        resumed.offset += words_done
        if resumed.lost_at is None:
            resumed.lost_at = time.monotonic()
        trace_recovery(stream.settings, error, resumed.offset, stream.pcm.tell(), taken, stream.trace)
        try:
            self._connect.submit(self._open, stream.settings, stream.words[words_done:], stream.done, stream.cancel,
                                 stream.stats, backoff(stream.settings, stream.stats.recoveries), resumed)
        except RuntimeError:  # the batch is closing: no more connections
            return False
        return True


def _send_some(stream: _Stream) -> None:
    """Send what is queued, as much as the socket takes now."""
    while stream.out:
        try:
            sent = stream.sock.send(stream.out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError as exc:  # the reader will see why (a close, or the drop)
            log.debug("batch: write failed: %s", exc)
            stream.out.clear()
            return
        del stream.out[:sent]


def default_connectors(concurrency: int) -> int:
    """Connector threads: they only wait (for the server's accept and upgrade, slow when it is busy), so
    enough to keep opening connections as fast as texts finish; a quarter of the concurrency, 4 at least,
    64 at most, never one per text."""
    return max(1, min(concurrency, max(4, concurrency // 4), 64))
