"""The local server's websocket layer: websockets' sans-I/O protocol over one socket, with uvicorn's timing.

The real server runs on uvicorn, and what makes long texts fail there is uvicorn's, not the model's:
- it stops reading the socket as soon as a received message waits for the handler, and reads again
  only once the handler has taken every queued message; control frames come through the same bytes,
  so a pong waits behind every unread word (each read then takes whatever the socket holds);
- it pings every `ping_interval` seconds and, when the pong is `ping_timeout` seconds late, closes with
  1011 "keepalive ping timeout" and drops the connection;
- its writes never block its reading: pongs and close replies go out while the handler waits for room.
Three threads per connection reproduce that: the reader (the caller of `serve`), a writer that also
keeps the keepalive, and the handler.
"""
from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import threading
import time
from typing import Callable, Deque, List, Optional, Union

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..net.transport import ready
from . import faults

# uvicorn's transport asks for this much per read.
READ_SIZE = 256 * 1024
# At most a TLS record's worth of plaintext per TLS write, so the lock is held briefly.
TLS_WRITE = 16 * 1024
# Bytes queued for the socket before a handler's send waits (asyncio's default high-water mark).
WRITE_HIGH_WATER = 64 * 1024
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
               b"content-length: 29\r\n\r\nInvalid HTTP request received.")
"""uvicorn's answer to bytes that are not an HTTP request (its HTTP parser reads them before any upgrade)."""

Message = Union[str, bytes]


class Closed(Exception):
    """The connection is closed (or closing): nothing more can be received or sent."""


class Idle(Exception):
    """No message came within the time `recv` was given."""


class Connection:
    """One accepted websocket connection, as uvicorn serves it to a handler."""

    def __init__(self, sock: socket.socket, *, max_size: int, ping_interval: Optional[float],
                 ping_timeout: Optional[float], close_timeout: float, logger: logging.Logger) -> None:
        self.socket = sock
        # TLS: the reader and the writer must not be in OpenSSL at once (it corrupts the connection's state, as
        # the client's BoundedSocket says): each waits for the socket outside this lock and reads or writes under it.
        self._tls = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None
        self.request: Optional[Request] = None
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.keepalive_timed_out = False
        self.pings = 0
        self._protocol = ServerProtocol(max_size=max_size, logger=logger)
        self._changed = threading.Condition()  # guards everything below; notified on every change
        self._inbox: Deque[Message] = collections.deque()
        self._fragments: List[bytes] = []
        self._fragment_opcode: Optional[Opcode] = None
        self._outbox = bytearray()
        # What to do to the socket once the outbox is sent: None, "eof" (shut down writing: the
        # protocol's end), "shutdown" (both ways: the reader ends too), "reset" (a TCP reset), "blackhole"
        # (nothing more either way: what comes is read and dropped, and nothing, a FIN neither, goes out).
        self._then: Optional[str] = None
        self._closing = False  # the handler closed: read on (the close reply), never pause
        self._reading_done = False
        self._broken = False  # a write failed: the client is gone (uvicorn learns it the same way)
        self._finished = False
        self._ping: Optional[bytes] = None
        self._ping_sent = 0.0
        self._last_pong = time.monotonic()

    # handshake -----------------------------------------------------------------------------------------
    def handshake(self, check: Callable[[Request], Optional[Response]], timeout: float,
                  received: bytes = b"") -> bool:
        """Read the upgrade request (after `received`, what was read of it already) and answer it: `check`'s
        refusal, or the 101. True if open."""
        self.socket.settimeout(timeout)
        while self.request is None:
            data, received = received or self.socket.recv(65536), b""
            if not data:
                return False
            self._protocol.receive_data(data)
            for event in self._protocol.events_received():
                if isinstance(event, Request):
                    self.request = event
            if self._protocol.handshake_exc is not None:
                break
        if self.request is None:  # not HTTP: websockets has given up on the connection (it sent its end)
            self.socket.sendall(BAD_REQUEST)
            return False
        response = check(self.request)
        if response is None:
            response = self._protocol.accept(self.request)
        self._protocol.send_response(response)
        self.socket.sendall(b"".join(self._protocol.data_to_send()))
        self.socket.settimeout(None)
        return response.status_code == 101

    def reject(self, status: int, text: str) -> Response:
        """A refusal to return from `check`."""
        return self._protocol.reject(status, text)

    # the handler's side --------------------------------------------------------------------------------
    def recv(self, timeout: Optional[float] = None) -> Message:
        """The next message; raises Closed once the client has closed and every message was taken, Idle
        when none came within `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._inbox or self._reading_done or self._broken, timeout):
                raise Idle()
            if not self._inbox:
                raise Closed()
            message = self._inbox.popleft()
            self._changed.notify_all()  # the reader resumes once the inbox is empty
            return message

    def send(self, data: Message) -> None:
        """Send one message, waiting while the socket is behind (as uvicorn's drain does)."""
        with self._changed:
            while len(self._outbox) > WRITE_HIGH_WATER and not self._finished and self._then is None:
                self._changed.wait()
            if not self.open or self._finished or self._then is not None:  # cut (a FIN): nothing more goes out
                raise Closed()
            if isinstance(data, str):
                self._protocol.send_text(data.encode("utf-8"))
            else:
                self._protocol.send_binary(data)
            self._collect()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait (at most `close_timeout`) for the client's reply and its FIN."""
        with self._changed:
            if self.open and self._then is None:
                self._protocol.send_close(code, reason)
                self._collect()
            self._closing = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._reading_done, self.close_timeout)
        self.end("shutdown")

    def end(self, how: str = "reset") -> None:
        """Once what is queued has been sent, cut the connection: "reset" (no close frame, as a crashed
        server), "shutdown" or "eof" (FIN), or "blackhole" (silence both ways until the client leaves)."""
        with self._changed:
            if self._then not in ("reset", "blackhole"):
                self._then = how
            self._changed.notify_all()

    def abort(self, reset: bool = True) -> None:
        """Cut the connection now, whatever is still queued: a TCP reset unless `reset` is False."""
        if reset:
            return faults.reset(self.socket)
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def open(self) -> bool:
        return (self._protocol.state is State.OPEN and self._then not in ("shutdown", "reset", "blackhole")
                and not self._broken)

    # threads --------------------------------------------------------------------------------------------
    def serve(self, handler: Callable[["Connection"], None], name: str) -> None:
        """Run `handler` in its own thread, the writer in another, and read in this one until the end."""
        if self._tls is not None:
            self.socket.settimeout(0)  # each side waits with poll(), outside the TLS lock
        threads = [threading.Thread(target=self._write_loop, name=f"{name}-writer", daemon=True),
                   threading.Thread(target=self._run_handler, args=(handler,), name=f"{name}-handler",
                                    daemon=True)]
        for thread in threads:
            thread.start()
        try:
            self._read_loop()
        finally:
            with self._changed:
                self._reading_done = True
                self._changed.notify_all()
            threads[1].join()  # the handler ends once its recv() or send() sees the close
            with self._changed:
                self._finished = True
                self._changed.notify_all()
            threads[0].join()
            self.socket.close()

    def _run_handler(self, handler: Callable[["Connection"], None]) -> None:
        try:
            handler(self)
            if self.open:  # the handler returned without closing: the framework closes, normally
                self.close(1000)
        finally:
            self.end("shutdown")  # nothing more will be sent: once it is out, the reader sees the end

    def _read_loop(self) -> None:
        while True:
            with self._changed:
                # Paused while a message waits for the handler, as uvicorn does, unless it is closing.
                while self._inbox and not self._closing and self._then is None and not self._broken:
                    self._changed.wait()
            try:
                data = self._receive()
            except OSError:
                data = b""
            with self._changed:
                if self._then == "blackhole":  # dropped unread: no pong, no close reply
                    if not data:
                        self._reading_done = True
                        self._changed.notify_all()
                        return
                    continue
                if data:
                    self._protocol.receive_data(data)
                else:
                    self._protocol.receive_eof()
                self._take_events()
                self._collect()
                self._changed.notify_all()
                if not data or self._protocol.state is State.CLOSED:
                    return

    def _receive(self) -> bytes:
        """What the socket holds (up to READ_SIZE; b"" at the end), waiting for it. Over TLS the socket is
        non-blocking (`serve`): every record already there is read in one turn of the lock."""
        sock = self.socket
        if self._tls is None:
            return sock.recv(READ_SIZE)
        while True:
            pieces: List[bytes] = []
            size = 0
            with self._tls:
                while size < READ_SIZE:
                    try:
                        piece = sock.recv(READ_SIZE - size)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    if not piece:  # the end: said now, or by the next call once what came before is taken
                        return b"".join(pieces)
                    pieces.append(piece)
                    size += len(piece)
            if pieces:
                return b"".join(pieces)
            ready(sock, 3600.0)

    def _send_all(self, data: bytes) -> None:
        """Write all of `data`, waiting for room as long as it takes (an abort ends it with an OSError)."""
        sock = self.socket
        if self._tls is None:
            sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            wait_to_read = False
            with self._tls:
                try:
                    sent = sock.send(view[:TLS_WRITE])  # after a want-write, the same bytes again, as OpenSSL needs
                except ssl.SSLWantWriteError:
                    sent = 0
                except ssl.SSLWantReadError:
                    sent, wait_to_read = 0, True
            view = view[sent:]
            if not sent:
                ready(sock, 0.05, write=not wait_to_read)

    def _take_events(self) -> None:
        for frame in self._protocol.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if opcode is not Opcode.CONT:
                    self._fragment_opcode = opcode
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    data = b"".join(self._fragments)
                    self._fragments = []
                    if self._fragment_opcode is not Opcode.TEXT:
                        self._inbox.append(data)
                        continue
                    try:
                        self._inbox.append(data.decode("utf-8"))
                    except UnicodeDecodeError:  # as uvicorn's websockets does: 1007, and nothing more is read
                        self._protocol.fail(1007, "invalid UTF-8 in a text message")
                        return
            elif opcode is Opcode.PONG and self._ping is not None and frame.data == self._ping:
                self._ping = None
                self._last_pong = time.monotonic()

    def _collect(self) -> None:
        """Move what the protocol wants sent into the outbox (an empty piece means: shut down writing)."""
        for piece in self._protocol.data_to_send():
            if piece:
                self._outbox += piece
            elif self._then is None:
                self._then = "eof"
        self._changed.notify_all()

    def _write_loop(self) -> None:
        done: Optional[str] = None  # the last thing done to the socket (see `_then`)
        while True:
            with self._changed:
                while True:
                    wait = self._keepalive() if done is None else None
                    if self._outbox or self._then != done or self._finished:
                        break
                    self._changed.wait(wait)
                data, self._outbox = bytes(self._outbox), bytearray()
                then, finished = self._then, self._finished
                self._changed.notify_all()  # a handler waiting for room goes on
            try:
                if data and done != "blackhole":
                    self._send_all(data)
                if then != done:
                    if then == "eof":
                        # TCP's half-close: SSLSocket.shutdown() would end TLS for the reader too (it drops the
                        # SSL object, and the reader would get the records' raw bytes as data).
                        socket.socket.shutdown(self.socket, socket.SHUT_WR)
                    elif then == "blackhole":
                        pass  # nothing more goes out: see _then
                    elif then is not None:
                        self.abort(reset=then == "reset")
            except OSError:
                with self._changed:
                    self._broken = True
                    self._changed.notify_all()
                self.abort(reset=False)  # the reader, paused or not, sees the end
            done = then
            if finished:
                return

    def _keepalive(self) -> Optional[float]:
        """Ping when due; fail the connection when a pong is late. The seconds until the next check."""
        if not self.ping_interval or self._protocol.state is not State.OPEN:
            return None
        now = time.monotonic()
        if self._ping is None:
            due = self._last_pong + self.ping_interval
            if now < due:
                return due - now
            self._ping, self._ping_sent = os.urandom(4), now
            self.pings += 1
            self._protocol.send_ping(self._ping)
            self._collect()
            return self.ping_timeout
        if self.ping_timeout is None:
            return None
        late = self._ping_sent + self.ping_timeout
        if now < late:
            return late - now
        self.keepalive_timed_out = True
        self._protocol.send_close(1011, "keepalive ping timeout")
        self._collect()
        self._then = "shutdown"
        return None

