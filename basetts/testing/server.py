"""`LocalServer`: Baseten's Orpheus TTS websocket protocol, served on 127.0.0.1 with deterministic audio.

It behaves like the real handler (see docs/protocol.md): the same paths and key check, settings first,
the same flush rule with pysbd's sentences (one action per message, nothing read while a segment is
generated, words deleted where pysbd ends a sentence inside one), whole 4096-byte audio messages, close
1000 after the sentinel and 1011 on a bad first message; and uvicorn's timing around it (keepalive
pings, reading paused while a message waits: see `transport`). Instead of a model it plays one tone per
word (or speaks with espeak-ng), so tests can predict every byte. `Faults` make it misbehave on purpose.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ..protocols import flush
from . import orpheus, orpheus_http, qwen3
from .faults import ConversationRecord, Dropped, Faults
from .orpheus import DEFAULTS, HANDLER_ERROR, sampling_problem
from .sender import WINDOW_SAMPLES, Sender, espeak_pcm, mulaw_encode, tone_pcm
from .transport import Connection

_QUIET = logging.getLogger("basetts.server.websockets")
_QUIET.setLevel(logging.CRITICAL)

log = logging.getLogger("basetts.server")

PATHS = (
    re.compile(r"^/v1/websocket$"),
    re.compile(r"^/environments/[^/]+/websocket$"),
    re.compile(r"^/development/websocket$"),
    re.compile(r"^/deployment/[^/]+/websocket$"),
    re.compile(r"^/v1/audio/speech/stream$"),  # Qwen3-TTS's route inside its container
)
NOT_IMPLEMENTED = "WebSocket is not implemented on this deployment."
# uvicorn's keepalive defaults, which truss keeps for this model.
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
MAX_MESSAGE = 100 * 2 ** 20  # uvicorn's inbound cap



def _head(sock: socket.socket) -> bytes:
    """The first request's head (and whatever came with it), to tell an upgrade from a POST."""
    received = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in received and len(received) < 65536:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    sock.settimeout(None)
    return received


def split_sentences(words: Sequence[str]) -> List[List[str]]:
    """Words grouped into sentences by the server's splitter (pysbd if installed)."""
    return flush.server_sentences()(list(words)) if words else [[]]


def flush_rule(buffer: List[str], buffer_size: int, final: bool) -> Optional[List[str]]:
    """The real server's flush (`basetts.flush.flush`, with its splitter): the words it speaks now, or None."""
    done = flush.flush(buffer, buffer_size, final, flush.server_sentences())
    return None if done is None else done.spoken


class LocalServer:
    """The protocol on 127.0.0.1, in a background thread. Use as a context manager.

    >>> with LocalServer() as server:
    ...     synth = Synthesizer(url=server.url, api_key=server.api_key)
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        port: int = 0,
        engine: str = "tone",
        samples_per_word: int = WINDOW_SAMPLES,
        speed: Optional[float] = None,
        faults: Optional[Faults] = None,
        legacy: bool = False,
        ssl_context: Optional[ssl.SSLContext] = None,
        ping_interval: Optional[float] = PING_INTERVAL,
        ping_timeout: Optional[float] = PING_TIMEOUT,
        pysbd: Optional[bool] = None,
        protocol: str = "orpheus",
        aligner: bool = True,
        voices: Sequence[str] = (),
        speakers: Sequence[str] = (),
        task_type: str = "Base",
        config_timeout: float = qwen3.CONFIG_TIMEOUT,
        idle_timeout: float = qwen3.IDLE_TIMEOUT,
        session_end: str = "drop",
        history: Optional[int] = None,
        predict_only: bool = False,
        keep_alive: float = orpheus_http.KEEP_ALIVE,
    ) -> None:
        """`speed`: None sends as fast as it can; 1.0 paces audio in real time, 2.0 twice as fast, 0.5 a
        model slower than real time. `legacy`: behave like older servers that ignore `encoding` and always
        send 16-bit PCM. `ssl_context`: serve wss:// with it (clients must trust its certificate, e.g. via
        SSL_CERT_FILE). `ping_interval`, `ping_timeout`: uvicorn's keepalive (None: off); tests shorten
        both, and speed the server up by the same factor, to run a long text in seconds. `pysbd`: split
        sentences with pysbd as the real server does (None: when it is installed; False: the built-in
        splitter, for megabytes of text, where pysbd on every message is as slow as on the real server).

        `protocol="qwen3"` serves Qwen3-TTS instead (`testing.qwen3`): `aligner` (word times, as a server
        with FORCED_ALIGNER_MODEL), `voices` (names already added, as with voice.add), `speakers` (a
        CustomVoice model's built-in ones; the Base model has none), `task_type` (the model's),
        `config_timeout` and `idle_timeout` (its timers; tests shorten them), `session_end` (how the
        connection ends after an error that ends the session: see `testing.qwen3.SESSION_ENDS`).

        `protocol="orpheus-http"` serves Orpheus over HTTP instead (`testing.orpheus_http`): POST …/predict,
        streamed PCM; its websocket paths close with 1003 as truss's do on such a deployment. `keep_alive`:
        seconds an idle kept-alive connection stays open (uvicorn's 5). `protocol="xtts-streaming"` serves
        the xtts-streaming truss the same way ({"text", "language"} in, octet-stream PCM out); "kokoro",
        "chatterbox", "sesame", "piper", "xtts-v2", "metavoice" and "json-audio" answer as those trusses do:
        JSON with a base64 WAV (float samples, or piper's 22.05 kHz), once the audio is made.

        `history`: keep the records of only the last this many conversations (None: all; each holds its
        audio, so a server serving thousands, as a benchmark's, would grow without it)."""
        if protocol not in ("orpheus", "qwen3") + orpheus_http.PROTOCOLS:
            raise ValueError(f"protocol must be one of {('orpheus', 'qwen3') + orpheus_http.PROTOCOLS}")
        if session_end not in qwen3.SESSION_ENDS:
            raise ValueError(f"session_end must be one of {qwen3.SESSION_ENDS}")
        self.protocol = protocol
        self.aligner = aligner
        self.voices: Dict[str, Dict[str, Any]] = {
            name.lower(): {"name": name, "consent": "local", "created_at": 0, "mime_type": "audio/wav",
                           "file_size": 0} for name in voices}
        """Qwen3: the voices added (by lower-case name), as one replica keeps them."""
        self.speakers = tuple(name.lower() for name in speakers)
        self.task_type = task_type
        self.config_timeout = config_timeout
        self.idle_timeout = idle_timeout
        self.session_end = session_end
        self.history = history
        self.predict_only = predict_only or protocol in orpheus_http.PROTOCOLS
        self.keep_alive = keep_alive
        if pysbd and flush.pysbd_segment() is None:
            raise RuntimeError("pysbd=True needs pysbd: pip install pysbd")
        if speed is not None and not speed > 0:
            raise ValueError("speed must be > 0 (or None: as fast as it can)")
        if engine not in ("tone", "espeak"):
            raise ValueError("engine must be 'tone' or 'espeak'")
        if engine == "espeak" and not shutil.which("espeak-ng"):
            raise RuntimeError("engine='espeak' needs espeak-ng (Debian/Ubuntu: apt-get install espeak-ng)")
        self.api_key = api_key or f"local-{secrets.token_hex(8)}"
        self.engine = engine
        self.samples_per_word = samples_per_word
        self.speed = speed
        self.faults = faults or Faults()
        self.legacy = legacy
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.sentences = flush.builtin_sentences if pysbd is False else flush.server_sentences()
        self.conversations: List[ConversationRecord] = []
        self._requested_port = port
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.handshakes = 0
        """Upgrades (and, for orpheus-http, requests) answered, refusals included."""
        self.begun = 0  # conversations begun (the records may keep only the last `history`)
        self._requests = 0  # HTTP requests that arrived, for Faults.close_on_request
        self.connections = 0
        """TCP connections accepted: a client that keeps its connections alive opens fewer than its calls."""
        self.handshake_times: List[float] = []
        self._accepted: Set[Connection] = set()  # connections past the upgrade check, until they close
        self.most_at_once = 0
        """The most conversations that were open at the same time (a client's concurrency, seen here)."""
        self._live: Set[Connection] = set()  # every connection being served, for stop()
        self._workers: Set[threading.Thread] = set()
        self._sockets: Set[socket.socket] = set()  # orpheus-http's connections being served, for stop()

    # The built-in speakers of `ready_to_speak("qwen3")`'s server.
    SPEAKERS = ("vivian", "ryan")

    @classmethod
    def ready_to_speak(cls, protocol: str = "orpheus", **options: Any) -> "LocalServer":
        """A server any Synthesizer of `protocol` speaks to as it is (`--local`): for Qwen3, a CustomVoice
        model with built-in speakers, so no voice has to be added or cloned first."""
        if protocol == "qwen3":
            options = {"speakers": cls.SPEAKERS, "task_type": "CustomVoice", **options}
        return cls(protocol=protocol, **options)

    # lifecycle -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1); chosen free when 0 was asked for."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """The URL to give `Synthesizer(url=...)`: the production path of a Baseten model, its websocket (or,
        for orpheus-http, its predict endpoint)."""
        if self.protocol in orpheus_http.PROTOCOLS:
            scheme = "https" if self.ssl_context is not None else "http"
            return f"{scheme}://127.0.0.1:{self.port}/environments/production/predict"
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/environments/production/websocket"

    def __repr__(self) -> str:
        state = f"127.0.0.1:{self.port}" if self._listener else "stopped"
        return f"<LocalServer {state} protocol={self.protocol} engine={self.engine}>"

    def start(self) -> "LocalServer":
        """Listen and serve in a background thread; returns self (also what ``with`` does)."""
        try:
            from . import transport  # noqa: F401 - needs websockets
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError("The local server needs websockets: pip install websockets ([server])") from None
        self._stopping.clear()
        self._listener = socket.create_server(("127.0.0.1", self._requested_port), backlog=1024)
        self._listener.settimeout(0.1)  # how soon stop() is noticed
        self._thread = threading.Thread(target=self._accept, name="basetts-local-server", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the server stops (or `timeout` passes): what `basetts serve` does."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Stop accepting, cut the connections still open, and join every thread."""
        if self._listener is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            live, workers, sockets = list(self._live), list(self._workers), list(self._sockets)
        for connection in live:
            connection.abort(reset=False)
        for sock in sockets:  # orpheus-http's connections
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for worker in workers:
            worker.join(5)
        self._listener.close()
        self._listener = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            worker = threading.Thread(target=self._serve, args=(sock, number), name="basetts-local-server-conn",
                                      daemon=True)
            with self._lock:
                self._workers = {w for w in self._workers if w.is_alive()}
                self._workers.add(worker)
            worker.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        """One connection: TLS, the upgrade, then the handler with uvicorn's websocket behaviour (or HTTP requests,
        unless the first is an upgrade: the predict route's, as `orpheus_http` serves them)."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock.settimeout(10)
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            received = _head(sock)
            head = received.lower()
            # A websocket deployment answers a GET without an upgrade with the handshake's refusal, and any
            # other request (a POST to its predict path) as truss's predict route does (`orpheus_http`).
            if not head.startswith(b"get ") or (b"\r\nupgrade:" not in head
                                                 and self.protocol in orpheus_http.PROTOCOLS):
                with self._lock:
                    self._sockets.add(sock)
                try:
                    orpheus_http.serve(self, sock, received, number)
                finally:
                    with self._lock:
                        self._sockets.discard(sock)
                return
            connection = Connection(sock, max_size=MAX_MESSAGE, ping_interval=self.ping_interval,
                                    ping_timeout=self.ping_timeout, close_timeout=2.0, logger=_QUIET)
            with self._lock:
                self._live.add(connection)
            try:
                if connection.handshake(lambda request: self._check_request(connection, request), timeout=10,
                                        received=received):
                    connection.serve(lambda accepted: self._handle(accepted, number), name="basetts-local-server")
            finally:
                with self._lock:
                    self._live.discard(connection)
        except (OSError, ssl.SSLError) as exc:
            log.debug("local server: connection failed: %s", exc)
        finally:
            sock.close()

    # what tests ask ------------------------------------------------------------------------------------
    def render(self, words: Sequence[str], encoding: str = "pcm_s16le") -> bytes:
        """The audio this server generates for one segment of words."""
        if self.engine == "espeak":
            pcm = espeak_pcm(" ".join(words))
            pcm += bytes(-len(pcm) % (2 * WINDOW_SAMPLES))  # whole windows, as the model's are
        else:
            pcm = b"".join(tone_pcm(word, self.samples_per_word) for word in words)
        if encoding == "pcm_mulaw" and not self.legacy:
            return mulaw_encode(pcm)
        return pcm

    def expected_pcm(self, text: str) -> bytes:
        """The 16-bit PCM a client must end up with for `text` (tone engine: independent of segmenting)."""
        if self.engine != "tone":
            raise RuntimeError("expected_pcm needs the deterministic tone engine")
        return b"".join(tone_pcm(word, self.samples_per_word) for word in text.split())

    def last(self, timeout: float = 5.0) -> ConversationRecord:
        """The most recent conversation, once its handler has finished."""
        with self._lock:
            if not self.conversations:
                raise LookupError("no conversation yet")
            record = self.conversations[-1]
        if not record.done.wait(timeout):
            raise TimeoutError("the conversation's handler did not finish")
        return record

    # protocol --------------------------------------------------------------------------------------------
    def _refusal(self) -> Optional[Tuple[int, Optional[float]]]:
        """Counts an upgrade or request; (status, Retry-After) when the fault plan refuses it."""
        with self._lock:
            self.handshakes += 1
            self.handshake_times.append(time.monotonic())
            attempt = self.handshakes
        failures = self.faults.handshake_failures
        if self.faults.handshake_status is not None and (failures is None or attempt <= failures):
            return self.faults.handshake_status, self.faults.retry_after
        return None

    def _closes_unanswered(self) -> bool:
        """Counts an HTTP request that arrived; True when `Faults.close_on_request` closes it unanswered."""
        with self._lock:
            self._requests += 1
            return self.faults.close_on_request == self._requests

    def _key_ok(self, authorization: str) -> bool:
        scheme, _, key = authorization.partition(" ")
        return scheme in ("Api-Key", "Bearer") and secrets.compare_digest(key.strip(), self.api_key)

    def _begin(self, record: ConversationRecord) -> int:
        """Keeps `record`; its conversation's number (1 for the first)."""
        with self._lock:
            self.begun += 1
            number = self.begun
            self.conversations.append(record)
            if self.history is not None and len(self.conversations) > self.history:
                del self.conversations[:len(self.conversations) - self.history]
        return number

    def _end(self, record: ConversationRecord) -> None:
        record.done.set()

    def _check_request(self, connection: Connection, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        refusal = self._refusal()
        if refusal is not None:
            response = connection.reject(refusal[0], "Refused by fault injection.\n")
            if refusal[1] is not None:
                response.headers["Retry-After"] = f"{refusal[1]:g}"
            return response
        if not any(p.match(path) for p in PATHS):
            return connection.reject(404, "Not Found\n")
        if not self._key_ok(request.headers.get("Authorization", "")):
            response = connection.reject(401, "")
            body = json.dumps({"error": "Invalid API key"}).encode()
            response.body = body
            response.headers["Content-Type"] = "application/json"
            response.headers["Content-Length"] = str(len(body))
            return response
        with self._lock:  # decided with the accept itself, so two simultaneous upgrades cannot both pass
            self._accepted = {c for c in self._accepted if c.open}
            if self.faults.one_at_a_time and self._accepted:
                return connection.reject(503, "Busy: one conversation at a time.\n")
            self._accepted.add(connection)
            self.most_at_once = max(self.most_at_once, len(self._accepted))
        return None

    def _handle(self, connection: Connection, accepted: int = 0) -> None:
        """One websocket conversation, on the `accepted`th TCP connection."""
        assert connection.request is not None
        record = ConversationRecord(path=connection.request.path,
                                    authorization=connection.request.headers.get("Authorization"),
                                    protocol=self.protocol, connection=accepted)
        number = self._begin(record)
        if self.predict_only:  # truss's websocket route on a model without one
            connection.close(1003, NOT_IMPLEMENTED)
            record.close_code = 1003
            self._finished(connection, record)
            return
        sender = Sender(self, connection, record, self.faults.for_conversation(number))
        if sender.faults.drop_at_start:
            try:
                sender.drop()
            except Dropped:
                pass
            finally:
                self._finished(connection, record)
            return
        if self.protocol == "qwen3":
            try:
                qwen3.Qwen3Session(self, connection, record, sender).run()
            except Dropped:
                pass
            finally:
                self._finished(connection, record)
            return
        try:
            orpheus.serve(self, connection, record, sender)
        finally:
            self._finished(connection, record)

    def _finished(self, connection: Connection, record: ConversationRecord) -> None:
        record.keepalive_timeout, record.pings = connection.keepalive_timed_out, connection.pings
        if record.keepalive_timeout:
            record.close_code = 1011
        with self._lock:
            self._accepted.discard(connection)
        record.ended_at = time.monotonic()
        record.done.set()


__all__ = ["DEFAULTS", "HANDLER_ERROR", "ConversationRecord", "Faults", "LocalServer", "flush_rule", "mulaw_encode",
           "sampling_problem", "split_sentences", "tone_pcm"]
