"""Connections for the next conversation: `Spare`, one opened ahead (`Synthesizer.connect`); `Ahead`, the next part's
of a long text, opened while the current part is heard (`PartAhead`: with the part's conversation on it); and `Idle`,
those an HTTP protocol's conversations left open and reusable (keep-alive)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Iterable, List, Optional, Tuple

from .. import protocols
from ..audio import Stats
from ..protocols import base
from ..settings import Settings
from . import transport
from .conversation import Conversation

log = logging.getLogger("basetts")


class Spare:
    """One pre-opened connection, kept for the next conversation (the protocol allows one per connection).
    A spare opened in another process (before a fork) is never used, nor touched: the parent owns it."""

    def __init__(self, settings: Settings, sock: Optional[transport.BoundedSocket] = None) -> None:
        """Opens the connection, or takes `sock`, one already open."""
        self.url, self.api_key = settings.url, settings.api_key
        self.sock: Optional[transport.BoundedSocket] = sock or transport.open_socket(settings)
        self.opened = time.monotonic()
        self.pid = os.getpid()

    def take(self, settings: Settings) -> Optional[transport.BoundedSocket]:
        """The connection, if it fits `settings` and is fresh and quiet; else None (and closed).

        Only the endpoint and key must match: everything else goes in the first message, after this.
        """
        sock, self.sock = self.sock, None
        if sock is None or self.pid != os.getpid():
            return None
        if (settings.url, settings.api_key) != (self.url, self.api_key):
            sock.close()
            return None
        if time.monotonic() - self.opened > protocols.spec(settings.protocol).spare_max_age or _readable(sock):
            # Too old, or the server already spoke (a close or a ping) on a connection nobody has used.
            log.debug("discarding a stale spare connection")
            sock.close()
            return None
        return sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None and self.pid == os.getpid():
            sock.close()


def _readable(sock: transport.BoundedSocket) -> bool:
    try:
        return transport.ready(sock.sock, 0)
    except (OSError, ValueError):
        return True


class Ahead:
    """The connection of a long text's next part (`Conversing.continues`), opened in a thread of its own
    (``basetts-connect``) once the current part's text is all sent, so the next part pays no TCP, TLS or upgrade.
    `take()` waits for it (it is due then) and hands it over, or None if it failed, went stale or the server
    spoke on it (the part then opens its own, with the call's retries); `close()` ends it at once, shutting down
    a connection still being opened, and joins the thread."""

    JOIN_TIMEOUT = 2.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()  # the fields below: the thread sets them, take() and close() clear them
        self._raw: Optional[socket.socket] = None  # a duplicate of the TCP socket while the connection is opened
        self._spare: Optional[Spare] = None  # once it is open
        self._closed = False
        self._thread = threading.Thread(target=self._open, name="basetts-connect", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            sock = transport.open_socket(self._settings, on_connected=self._connected)
        except Exception as exc:  # noqa: BLE001 - the next part opens its own connection and reports its failure
            log.debug("opening the next part's connection ahead failed: %s", exc)
            sock = None
        with self._lock:
            raw, self._raw = self._raw, None
            if sock is not None and not self._closed:
                self._spare, sock = Spare(self._settings, sock), None
        if raw is not None:
            raw.close()
        if sock is not None:
            sock.close()
        self._opened()

    def _opened(self) -> None:
        """Runs in the thread once the connection is open (or failed): `PartAhead` starts the part on it."""

    def _connected(self, raw: socket.socket) -> None:
        # A duplicate of the descriptor, as the multiplexer's connectors keep: TLS takes `raw` itself over (it is
        # detached), and shutting the connection down through the duplicate reaches a wait inside OpenSSL too.
        handle = raw.dup()
        with self._lock:
            self._raw = handle
            closed = self._closed
        if closed:
            _shut(handle)

    def take(self) -> Optional[transport.BoundedSocket]:
        self._thread.join()  # bounded by connect_timeout and handshake_timeout; Ctrl+C interrupts it
        with self._lock:
            spare, self._spare = self._spare, None
        return spare.take(self._settings) if spare is not None else None  # None if stale (`Spare.take`)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            raw, spare, self._spare = self._raw, self._spare, None
        if raw is not None:
            _shut(raw)  # ends a wait for TCP, the proxy, TLS or the upgrade at once
        self._thread.join(self.JOIN_TIMEOUT)
        if spare is not None:
            spare.close()


class PartAhead(Ahead):
    """A whole text's next part, begun while the current part is heard: its connection opened (`Ahead`), and the
    part's conversation opened on it, so the server makes its first audio while the current part's last is heard
    (a part otherwise waits for a model's first audio, each time). What it reads waits in its queue (about one
    part's audio at most), counted in the call's `stats` once `take_part()` hands it
    over. `take_part()` gives None if it failed (the part opens its own, with the call's retries) or begins
    elsewhere."""

    def __init__(self, settings: Settings, words: Iterable[str], start: int, stats: Stats, started: float) -> None:
        self._words, self._start, self._stats, self._started = words, start, stats, started
        self._conversation: Optional[Conversation] = None
        super().__init__(settings)

    def _opened(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        sock = spare.take(self._settings) if spare is not None else None
        if sock is None:
            return
        try:
            begun: Optional[Conversation] = Conversation(self._settings, self._words, stats=self._stats, sock=sock,
                                                         started=self._started, ahead=True).open()
        except Exception as exc:  # noqa: BLE001 - the next part opens its own connection and reports its failure
            log.debug("beginning the next part ahead failed: %s", exc)
            return
        with self._lock:
            if not self._closed:
                self._conversation, begun = begun, None
        if begun is not None:
            begun.close()

    def take_part(self, start: int, resumed_at: int) -> Optional[Conversation]:
        """The part's conversation, adopted as the call's, if it begins at word `start` of the text; else None
        (and closed). `resumed_at`: the bytes of audio the parts before made."""
        self._thread.join()  # bounded by connect_timeout and handshake_timeout; Ctrl+C interrupts it
        with self._lock:
            conversation, self._conversation = self._conversation, None
        if conversation is None:
            return None
        if start != self._start:
            log.debug("the part begun ahead begins at word %d, not %d: not used", self._start, start)
            conversation.close()
            return None
        conversation.adopt(resumed_at)
        return conversation

    def close(self) -> None:
        super().close()
        with self._lock:
            conversation, self._conversation = self._conversation, None
        if conversation is not None:
            conversation.close()


def _shut(raw: socket.socket) -> None:
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Idle:
    """The connections a Synthesizer's HTTP conversations ended with, open and reusable (the server keeps
    them alive), newest first: the next call takes one and pays no TCP or TLS handshake. Safe across threads;
    across fork, a child never uses (nor closes) its parent's. A connection idle past its protocol's
    `spare_max_age`, or that the server has closed or spoken on, is closed instead of used."""

    MAX_IDLE = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: List[Tuple[Tuple[str, str, Optional[str]], transport.BoundedSocket, float, int]] = []

    def put(self, settings: Settings, sock: transport.BoundedSocket) -> None:
        with self._lock:
            self._items.insert(0, (_key(settings), sock, time.monotonic(), os.getpid()))
            extra = self._items[self.MAX_IDLE:]
            del self._items[self.MAX_IDLE:]
        for _, old, _, pid in extra:
            if pid == os.getpid():
                old.close()

    def take(self, settings: Settings) -> Optional[transport.BoundedSocket]:
        key, now, max_age = _key(settings), time.monotonic(), protocols.spec(settings.protocol).spare_max_age
        while True:
            with self._lock:
                found = next((item for item in self._items if item[0] == key and item[3] == os.getpid()), None)
                if found is None:
                    return None
                self._items.remove(found)
            _, sock, since, _ = found
            if now - since <= max_age and not _readable(sock):
                return sock
            log.debug("discarding a stale kept-alive connection")
            sock.close()

    def close(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for _, sock, _, pid in items:
            if pid == os.getpid():
                sock.close()


def _key(settings: Settings) -> Tuple[str, str, Optional[str]]:
    return settings.url, settings.api_key, settings.proxy


PROBE_WAIT = (0.02, 1.0)
"""Seconds `probe` listens after the upgrade: the TCP handshake's round trip, within these bounds (truss
sends its close right after the 101, so it comes with it or just behind it)."""


def probe(settings: Settings) -> Tuple[bool, Optional[transport.BoundedSocket]]:
    """Which protocol a deployment known only by its model id speaks: its websocket is opened, and listened
    to for one round trip more. truss closes a websocket to an HTTP-only deployment at once with 1003 "not
    implemented" (True: speak orpheus-http); a websocket deployment waits for the first message (False, with
    the connection, for the call that asked: the probe costs that round trip, once)."""
    connected: List[float] = []
    started = time.monotonic()
    sock = transport.open_socket(settings, on_connected=lambda raw: connected.append(time.monotonic()))
    round_trip = connected[0] - started if connected else PROBE_WAIT[1] / 2
    deadline = time.monotonic() + min(PROBE_WAIT[1], max(PROBE_WAIT[0], round_trip))
    data = sock.take_buffered()
    try:
        while not base.serves_http_only(data):
            remaining = deadline - time.monotonic()
            more = sock.read(transport.READ_SIZE, remaining) if remaining > 0 else None
            if not more:  # quiet (a websocket deployment waiting for words), or closed
                if more is None:
                    sock.unread(data)
                    return False, sock
                break
            data += more
    except OSError:
        pass
    sock.close()
    return base.serves_http_only(data), None
