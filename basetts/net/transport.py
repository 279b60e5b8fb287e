"""The transport: TCP, a proxy tunnel, TLS, the websocket upgrade, and moving bytes. The only module that
imports websocket-client, and only its public API.

websocket-client does the upgrade (`WebSocket.connect` with `socket=`, `header=`, redirects refused) and
builds our frames (`ABNF`). It is handed a `BoundedSocket` of ours, so that `handshake_timeout` bounds the
whole upgrade (not each of its one-byte reads), those reads come from memory, and what arrives after the
upgrade stays with us. Frames are the protocol layer's (protocols/websocket.py); this module only moves bytes.
"""
from __future__ import annotations

import base64
import logging
import select
import socket
import ssl
import threading
import time
import urllib.request
from typing import Callable, Dict, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

import websocket

from .. import protocols
from ..errors import BasetenTTSError, ConnectError, ConnectTimeout, HandshakeTimeout
from ..protocols.http import REDIRECT_STATUSES, status_error
from ..settings import Settings, is_loopback

log = logging.getLogger("basetts")

# Bytes asked of the socket per read: several 4096-byte audio messages at once.
READ_SIZE = 65536
MAX_UPGRADE_ANSWER = 4 * READ_SIZE
"""Bytes the upgrade's answer may take (headers, and frames read with them): more is not a websocket server."""
# TLS: bytes written per turn of the TLS lock (written without waiting), so that a long write lets the
# reader in between.
_TLS_WRITE = 4096
# How often a writer waiting for room looks at its stop flag.
_POLL = 0.05
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


# A proxy's answer to CONNECT: an HTTP response header.
MAX_HTTP_HEADER = 65536
"""Bytes a response may take before its blank line: more is not an HTTP server."""


class HTTPResponse(NamedTuple):
    status: int
    headers: Dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    rest: bytes
    """What came after the blank line."""


def parse_http_response(data: bytes) -> Optional[HTTPResponse]:
    """The response, or None while its header is incomplete. ValueError if it is not HTTP."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HTTP_HEADER:
            raise ValueError(f"no end of the HTTP header in {len(data)} bytes")
        return None
    status_line, *lines = data[:end].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    status = rest.partition(" ")[0]
    if not version.startswith("HTTP/") or not (status.isdigit() and len(status) == 3):
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    headers: Dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed HTTP header line: {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return HTTPResponse(int(status), headers, data[end + 4:])



def ready(sock: socket.socket, timeout: float, write: bool = False) -> bool:
    """Whether `sock` has data or EOF (or, with `write`, room for a write) within `timeout` seconds.
    poll(), not select(): select() fails for descriptors above 1023, which a long-running service reaches."""
    if not hasattr(select, "poll"):  # Windows: its select() has no such limit
        readable, writable, _ = select.select([] if write else [sock], [sock] if write else [], [], timeout)
        return bool(writable if write else readable)
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


class BoundedSocket:
    """A TCP or TLS socket, as websocket-client's `socket=` takes it, with what we need around it:
    - `deadline`: every read and write gives up then (socket.timeout), however the bytes trickle;
    - reads are buffered, so websocket-client's byte-at-a-time header reads come from memory, and what
      arrives with the upgrade's answer stays here for the frame reader (`take_buffered`);
    - the raw bytes of the upgrade's answer are kept (`received`), for the checks websocket-client skips;
    - TLS: one OpenSSL connection must not read and write from two threads at once (reported to corrupt
      its state: python-engineio #461, python-socketio #1568), so each side waits for the socket outside
      `tls_lock` and reads or writes under it: a writer waiting for room never stops the reader.
    """

    def __init__(self, sock: socket.socket, deadline: Optional[float]) -> None:
        self.sock = sock
        self.deadline = deadline
        self.tls_lock: Optional[threading.Lock] = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None
        self._buffer = b""
        self._at = 0  # what of _buffer was taken
        self.received = b""  # everything read while `recording`
        self.recording = True
        self.on_sent: Optional[Callable[[], None]] = None  # runs once, after the first complete send

    # what websocket-client calls ---------------------------------------------------------------------
    def gettimeout(self) -> Optional[float]:
        if self._at < len(self._buffer):
            return 0.0  # a read takes from memory: websocket-client then calls recv() straight away
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def settimeout(self, timeout: Optional[float]) -> None:
        """Ignored: the deadline is ours to set (websocket-client only restates its default here)."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def send(self, data: bytes) -> int:
        remaining = self.gettimeout()
        if remaining is not None and not ready(self.sock, remaining, write=True):
            raise socket.timeout("the write timed out")
        if self.tls_lock is None:
            sent = self.sock.send(data)
        else:
            with self.tls_lock:
                sent = self.sock.send(data[:_TLS_WRITE])
        if sent == len(data) and self.on_sent is not None:
            log.debug("upgrade request sent")
            on_sent, self.on_sent = self.on_sent, None
            on_sent()
        return sent

    def recv(self, size: int) -> bytes:
        at = self._at
        if at < len(self._buffer):  # websocket-client reads the upgrade's answer a byte at a time
            self._at = at + size
            return self._buffer[at:at + size]
        while True:
            remaining = self.gettimeout()
            data = self.read(READ_SIZE, remaining if remaining is not None else 3600.0)
            if data is None:  # nothing yet (or only TLS records that are not data, e.g. session tickets)
                if remaining is not None and self.gettimeout() == 0:
                    raise socket.timeout("the read timed out")
                continue
            if self.recording and data:
                if len(self.received) + len(data) > MAX_UPGRADE_ANSWER:
                    raise ConnectError(f"The server's answer to the websocket upgrade ran past {MAX_UPGRADE_ANSWER} "
                                       "bytes without ending its headers: not a websocket server.")
                self.received += data
            self._buffer, self._at = data, size
            return data[:size]

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        try:
            self.sock.shutdown(how)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    # ours ------------------------------------------------------------------------------------------------
    def unread(self, data: bytes) -> None:
        """Put bytes read ahead back, for the next reader (`take_buffered`)."""
        self._buffer, self._at = data + self._buffer[self._at:], 0

    def take_buffered(self) -> bytes:
        """What was read but not yet taken (the start of the first frame, after the upgrade)."""
        data, self._buffer, self._at = self._buffer[self._at:], b"", 0
        self.recording = False
        return data

    def read(self, size: int, timeout: float) -> Optional[bytes]:
        """Up to `size` bytes within `timeout` seconds: None if nothing came, b"" at the end."""
        sock = self.sock
        if self.tls_lock is None:
            if not ready(sock, timeout):
                return None
            return sock.recv(size)
        assert isinstance(sock, ssl.SSLSocket)
        with self.tls_lock:
            pending = sock.pending()  # bytes OpenSSL already decrypted: poll() cannot see them
        if not pending and not ready(sock, timeout):
            return None
        with self.tls_lock:
            sock.settimeout(0)  # poll() saw bytes, but maybe not a whole TLS record: never wait here
            try:
                return sock.recv(size)
            except ssl.SSLWantReadError:
                return None
            finally:
                sock.settimeout(None)

    def write(self, data: memoryview, stop: threading.Event, give_up: Optional[float]) -> None:
        """Write all of `data`, waiting for room as long as it takes (the server reads no text while it
        generates) until `stop` is set, or until `give_up` (monotonic time; then socket.timeout). The socket
        is tried first: a write that fits (nearly all) costs one call, and only a full socket is polled."""
        sock = self.sock
        while data:
            sent = self._send_without_waiting(data)
            if sent is not None:
                data = data[sent:]
                continue
            if give_up is not None and time.monotonic() > give_up:
                raise socket.timeout("no room to write")
            if stop.is_set():
                return
            ready(sock, _POLL, write=True)

    def _send_without_waiting(self, data: memoryview) -> Optional[int]:
        """Bytes of `data` the socket took at once; None if it had no room."""
        sock = self.sock
        try:
            if self.tls_lock is None:
                if not _DONTWAIT:  # no such flag here (Windows): look for room first
                    return sock.send(data) if ready(sock, 0, write=True) else None
                return sock.send(data, _DONTWAIT)
            with self.tls_lock:
                sock.settimeout(0)
                try:
                    return sock.send(data[:_TLS_WRITE])
                except ssl.SSLWantReadError:
                    pass  # a renegotiation: this write must read first, which polling for room would never see
                finally:
                    sock.settimeout(None)
                return sock.send(data[:_TLS_WRITE])  # so it is made blocking, as every TLS write used to be
        except (BlockingIOError, ssl.SSLWantWriteError):
            return None

    def writable(self) -> bool:
        """Whether a small write would go out now."""
        try:
            return ready(self.sock, 0, write=True)
        except (OSError, ValueError):
            return False

    def try_write(self, data: bytes) -> bool:
        """Write a small frame (a pong, a close) only if that cannot block; False if it did not go."""
        if not ready(self.sock, 0, write=True):
            return False
        try:
            if self.tls_lock is None:
                sent = self.sock.send(data)
            else:
                with self.tls_lock:
                    sent = self.sock.send(data)
        except (OSError, ValueError):
            return False
        if sent < len(data):  # a few bytes of room only: finish it, briefly
            self.write(memoryview(data)[sent:], threading.Event(), time.monotonic() + 1.0)
        return True


class Proxy(NamedTuple):
    host: str
    port: int
    authorization: Optional[str]  # the Proxy-Authorization header's value, from the URL's credentials

    def __repr__(self) -> str:
        return f"Proxy({self.host}:{self.port}{', with credentials' if self.authorization else ''})"


def proxy_for(settings: Settings, environ: Optional[Dict[str, str]] = None) -> Optional[Proxy]:
    """The HTTP proxy to tunnel through: `proxy=` (or "" for none), else HTTPS_PROXY/https_proxy (for
    wss:// and https://) or HTTP_PROXY (ws://, http://), ALL_PROXY, honouring NO_PROXY. An environment's
    proxy is never used for loopback (it could not reach this machine's 127.0.0.1); `proxy=` always is."""
    host = urlsplit(settings.url).hostname or ""
    value = settings.proxy
    if value is None:
        if is_loopback(host):
            return None
        found = urllib.request.getproxies_environment() if environ is None else {
            name.lower()[:-len("_proxy")]: url for name, url in environ.items() if name.lower().endswith("_proxy")}
        if _bypassed(host, found.get("no", "")):
            return None
        scheme = "https" if settings.url.startswith(("wss:", "https:")) else "http"
        value = found.get(scheme) or found.get("all")
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme not in ("http", "") or not parts.hostname:
        raise ConnectError(f"Unsupported proxy {parts.scheme}://{parts.hostname or ''}: basetts tunnels "
                           "through HTTP proxies (http://host:port); set proxy= or HTTPS_PROXY to one.")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return Proxy(parts.hostname, parts.port or 8080, authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip(".").split(":")[0]
        if host.lower() == entry or host.lower().endswith("." + entry):
            return True
    return False


def open_socket(settings: Settings, while_waiting: Optional[Callable[[], None]] = None,
                on_connected: Optional[Callable[[socket.socket], None]] = None) -> BoundedSocket:
    """TCP (connect_timeout), a proxy tunnel and TLS, the upgrade if the protocol is a websocket's
    (handshake_timeout); every failure mapped to our errors. `while_waiting` runs once the upgrade request
    is sent, while the server answers; `on_connected` gets the TCP socket as soon as it is connected
    (shutting it down from another thread ends a wait for the proxy, TLS or the upgrade at once)."""
    parts = urlsplit(settings.url)
    host = parts.hostname or ""
    secure = parts.scheme in ("wss", "https")
    port = parts.port or (443 if secure else 80)
    proxy = proxy_for(settings)
    target = (proxy.host, proxy.port) if proxy else (host, port)
    try:
        raw = socket.create_connection(target, timeout=settings.connect_timeout)
    except socket.timeout:
        where = f"the proxy {target[0]}:{target[1]}" if proxy else f"{host}:{port}"
        raise ConnectTimeout(
            f"Could not connect to {where} within connect_timeout={settings.connect_timeout:g} s.") from None
    except OSError as exc:
        transient = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
        if proxy:
            raise ConnectError(f"Cannot reach the proxy {proxy.host}:{proxy.port}: {exc.strerror or exc}. "
                               "Check proxy= or HTTPS_PROXY.", transient=transient) from None
        raise ConnectError(f"Cannot reach {host}:{port}: {exc.strerror or exc}. Check the URL and network.",
                           transient=transient) from None
    deadline = time.monotonic() + settings.handshake_timeout
    sock: socket.socket = raw
    try:
        if on_connected is not None:
            on_connected(raw)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None:
            _tunnel(BoundedSocket(raw, deadline), proxy, host, port)
        if secure:
            raw.settimeout(max(0.001, deadline - time.monotonic()))
            sock = ssl.create_default_context().wrap_socket(raw, server_side=False, server_hostname=host)
            sock.settimeout(None)
        else:
            raw.settimeout(None)
        bounded = BoundedSocket(sock, deadline)
        if protocols.spec(settings.protocol).upgrades:
            _upgrade(bounded, settings, while_waiting)  # websocket-client's object is done with: we own the socket
        bounded.deadline = None
        return bounded
    except BaseException as exc:
        sock.close()
        raw.close()
        if isinstance(exc, BasetenTTSError) or not isinstance(exc, Exception):
            raise
        error = _handshake_error(exc, settings)
    raise error  # outside the except: the library's exception, which may hold the server's answer, is no context


def _tunnel(sock: BoundedSocket, proxy: Proxy, host: str, port: int) -> None:
    """HTTP CONNECT through the proxy; the API key is not in this request (it goes inside the tunnel)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.write(memoryview("\r\n".join(lines + ["", ""]).encode("latin-1")), threading.Event(), sock.deadline)
    answer = b""
    try:
        while True:
            response = parse_http_response(answer)
            if response is not None:
                break
            piece = sock.recv(4096)
            if not piece:
                raise ConnectError(f"The proxy {proxy.host}:{proxy.port} closed the connection instead of "
                                   "answering CONNECT.")
            answer += piece
    except ValueError as exc:
        raise ConnectError(f"The proxy {proxy.host}:{proxy.port} did not answer CONNECT in HTTP ({exc}): "
                           "is proxy= (or HTTPS_PROXY) an HTTP proxy?") from None
    except socket.timeout:
        raise HandshakeTimeout(f"The proxy {proxy.host}:{proxy.port} did not answer CONNECT within "
                           f"handshake_timeout.") from None
    if response.status // 100 != 2:
        hint = {407: " (it wants credentials: put them in the proxy URL, http://user:password@host:port)",
                403: " (it does not allow this destination)", 502: " (it could not reach the server)"}
        raise ConnectError(f"The proxy {proxy.host}:{proxy.port} refused to tunnel to {authority} with HTTP "
                           f"{response.status}{hint.get(response.status, '')}. Check proxy= or HTTPS_PROXY.",
                           transient=response.status in (502, 503, 504))
    if response.rest or sock.take_buffered():  # the server speaks only after our request: a broken proxy
        raise ConnectError(f"The proxy {proxy.host}:{proxy.port} sent data before the tunnel was used.")


def _upgrade(sock: BoundedSocket, settings: Settings, while_waiting: Optional[Callable[[], None]]
             ) -> websocket.WebSocket:
    """websocket-client's upgrade on our socket; then the RFC 6455 checks it leaves to its caller."""
    ws = websocket.WebSocket(skip_utf8_validation=True)
    sock.on_sent = while_waiting
    refused: Optional[BasetenTTSError] = None
    try:
        ws.connect(settings.url, socket=sock, header=[f"Authorization: Api-Key {settings.api_key}"],
                   suppress_origin=True, redirect_limit=0)
    except websocket.WebSocketBadStatusException as exc:
        # Raised below, outside the except: this exception holds the server's whole answer (which may echo the
        # key), and it must not ride along as our error's __context__.
        refused = status_error(exc.status_code, _headers(exc.resp_headers), settings.url)
    except websocket.WebSocketException:
        try:
            answered = parse_http_response(sock.received)
        except ValueError:
            answered = None
        if answered is None or answered.status not in REDIRECT_STATUSES:
            raise
        # Some websocket-client versions refuse a redirect themselves when told to follow none.
        refused = status_error(answered.status, answered.headers, settings.url)
    finally:
        sock.on_sent = None
    if refused is not None:
        raise refused
    log.debug("upgrade answered: HTTP %d", ws.getstatus())
    status_line = sock.received.split(b"\r\n", 1)[0].decode("latin-1")
    status = ws.getstatus() or 0
    if status != 101:  # a redirect: websocket-client returns it when told to follow none
        raise status_error(status, _headers(ws.getheaders()), settings.url)
    headers = _headers(ws.getheaders())
    if not status_line.startswith("HTTP/1.1 "):
        raise ConnectError(f"The websocket upgrade failed: the server answered {status_line[:40]!r} "
                           "(a websocket upgrade needs HTTP/1.1).")
    if headers.get("sec-websocket-protocol"):
        raise ConnectError("The websocket upgrade failed: the server chose a subprotocol we did not ask for "
                           f"({headers['sec-websocket-protocol']}).")
    if headers.get("sec-websocket-extensions"):
        raise ConnectError("The websocket upgrade failed: the server answered with an extension we did not "
                           f"ask for ({headers['sec-websocket-extensions']}).")
    return ws


def _headers(headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    return {name.lower(): value for name, value in (headers or {}).items()}


def _handshake_error(exc: Exception, settings: Settings) -> BasetenTTSError:
    if isinstance(exc, (socket.timeout, websocket.WebSocketTimeoutException)):
        return HandshakeTimeout(
            f"The server did not complete the websocket upgrade within handshake_timeout="
            f"{settings.handshake_timeout:g} s.")
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS failed: {exc.reason or exc}. Certificates are always verified.")
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return ConnectError("The server closed the connection during the websocket upgrade.")
    if isinstance(exc, (websocket.WebSocketException, ValueError)):
        detail = str(exc)
        if "Invalid WebSocket Header" in detail:
            detail = "headers that do not open a websocket (no Upgrade, or a wrong Sec-WebSocket-Accept)"
        return ConnectError(f"The websocket upgrade failed: the server answered with {detail} "
                            "(is this a websocket server, or a proxy in the way?)")
    return ConnectError(f"The websocket upgrade failed: {exc}")
