"""What a local server can be told to do wrong (`Faults`), and what it saw and did in one conversation
(`ConversationRecord`), for tests to inspect."""
from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from ..protocols.orpheus import SENTINEL

CUTS = ("reset", "eof", "blackhole")


@dataclasses.dataclass
class Faults:
    """Ways to misbehave, for testing what a client does when the server or network fails."""

    handshake_status: Optional[int] = None
    """Refuse the upgrade with this HTTP status (401, 404, 429, 503, ...)."""
    handshake_failures: Optional[int] = None
    """With handshake_status: refuse only the first N upgrades, then accept (a recovering server)."""
    retry_after: Optional[float] = None
    """With handshake_status: the Retry-After header to send."""
    silent: bool = False
    """Accept and read everything, but never send audio or close."""
    drop_after_bytes: Optional[int] = None
    """Send this many audio bytes, then cut the TCP connection without a close frame."""
    drop_after_messages: Optional[int] = None
    """Send this many audio messages (HTTP: body chunks), then cut as drop_after_bytes does."""
    drop_after_seconds: Optional[float] = None
    """Cut as drop_after_bytes does at the first audio message due this many seconds after the conversation (HTTP:
    the request) began, wherever its audio then is (a network failing at a moment; pace the server to place it)."""
    cut: str = "reset"
    """How a drop cuts it: "reset" (a TCP reset, as a crashed server or a broken network), "eof" (a FIN: the
    socket closed without a close frame, or an HTTP body without its last chunk), or "blackhole" (nothing more
    goes either way, not even a pong or a FIN, as a network path that died: the client's read_timeout finds it)."""
    close_code: Optional[int] = None
    """With drop_after_bytes (or at the first segment): close with this code instead of dropping."""
    close_reason: str = ""
    frame_sizes: Optional[Sequence[int]] = None
    """Cycle through these message sizes instead of one window per message."""
    stall_after_bytes: Optional[int] = None
    """After this many audio bytes, stop sending for `stall_seconds` (then go on)."""
    stall_seconds: float = 0.0
    random_frames: Optional[int] = None
    """Seed: cut audio into messages of random sizes from 1 to 8192 bytes, odd ones included."""
    text_frame: Optional[str] = None
    """Send this text message (an error message, say) instead of the first audio."""
    one_at_a_time: bool = False
    """Refuse (503) an upgrade while another conversation is running."""
    idle_timeout: Optional[float] = None
    """Close with 1001 "idle timeout" when no message comes for this long, as some proxies do."""
    drop_at_start: bool = False
    """Websocket: cut the connection (`cut`) as the conversation begins, before any message (a replica gone, a
    proxy closing a connection as it is used); which conversations as for the stream's faults."""
    close_on_request: Optional[int] = None
    """HTTP: close the connection without a word when the Nth request (counted over the server's life, from 1)
    arrives, as a server or a proxy closing a kept-alive connection just as the client uses it does."""
    fail_sentence: Optional[int] = None
    """Qwen3: the model fails the sentence of this index (an error event, then audio.done error: true)."""
    predict_error: bool = False
    """orpheus-http: predict() fails before the stream: a 500 with the model's text body."""
    stream_failures: Optional[int] = None
    """With a fault of the stream (silent, drop, close, stall, text_frame, frames): only the first N
    conversations have it, then the server behaves (a server restarting, then back)."""
    first_failure: int = 1
    """The first conversation (an HTTP request is one) the stream's faults apply to: the ones before behave."""
    failure_every: int = 1
    """From first_failure on, every Nth conversation has the stream's faults (stream_failures of them at most)."""

    def __post_init__(self) -> None:
        if self.cut not in CUTS:
            raise ValueError(f"fault cut={self.cut!r}: expected one of {', '.join(CUTS)}")

    @property
    def drops(self) -> bool:
        """The stream is cut after a number of bytes or messages."""
        return (self.drop_after_bytes is not None or self.drop_after_messages is not None
                or self.drop_after_seconds is not None)

    def for_conversation(self, number: int) -> "Faults":
        """The faults conversation `number` (1 for the first) meets: the stream's only from first_failure, every
        failure_every, stream_failures of them."""
        since, every = number - self.first_failure, max(1, self.failure_every)
        within = self.stream_failures is None or since // every < self.stream_failures
        if since >= 0 and since % every == 0 and within:
            return self
        return dataclasses.replace(self, silent=False, drop_at_start=False, drop_after_bytes=None,
                                   drop_after_messages=None, drop_after_seconds=None,
                                   close_code=None, frame_sizes=None, stall_after_bytes=None, random_frames=None,
                                   text_frame=None)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> "Faults":
        """From ``name=value`` strings, as ``basetts serve --fault drop_after_bytes=8192`` takes them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for spec in specs:
            name, _, raw = spec.partition("=")
            name = name.strip().replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(fields)}")
            if name == "frame_sizes":
                try:
                    values[name] = [int(v) for v in raw.split(",")]
                except ValueError:
                    raise ValueError(f"fault frame_sizes={raw!r}: expected whole numbers, comma-separated") from None
            elif name in ("silent", "one_at_a_time", "predict_error", "drop_at_start"):
                values[name] = raw.strip().lower() in ("", "1", "true", "yes")
            elif name in ("close_reason", "text_frame", "cut"):
                values[name] = raw
            else:
                kind = float if name in ("retry_after", "stall_seconds", "idle_timeout") else int
                try:
                    values[name] = kind(raw)
                except ValueError:
                    wanted = "a number" if kind is float else "a whole number"
                    raise ValueError(f"fault {name}={raw!r}: expected {wanted}") from None
        return cls(**values)


@dataclasses.dataclass
class ConversationRecord:
    """What the server saw and did in one conversation, for tests to inspect."""

    path: str
    authorization: Optional[str] = dataclasses.field(repr=False)  # holds the key
    settings: Optional[Dict[str, Any]] = None
    messages: List[str] = dataclasses.field(default_factory=list)
    segments: List[List[str]] = dataclasses.field(default_factory=list)
    bytes_sent: int = 0
    frame_sizes: List[int] = dataclasses.field(default_factory=list)
    close_code: Optional[int] = None
    explicit_close: bool = False
    """After the sentinel: True if the handler closed after the last segment, False if it just ended
    with nothing left to say (the framework closed), as the real server's two paths do."""
    client_disconnected: bool = False
    keepalive_timeout: bool = False
    """The client's pong came too late (it waited behind unread words): closed with 1011."""
    pings: int = 0
    """Keepalive pings the server sent during the conversation."""
    generation_seconds: float = 0.0
    """Time spent generating segments (the rest it spent waiting for words or reading them)."""
    lost: List[str] = dataclasses.field(default_factory=list)
    """Words the flush removed unspoken (a sentence end inside a word), as the real server loses them."""
    audio: bytearray = dataclasses.field(default_factory=bytearray, repr=False)
    """Every audio byte sent, in order."""
    done: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    protocol: str = "orpheus"
    events: List[Dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    """Qwen3: every JSON event sent, in order."""
    sentences: List[str] = dataclasses.field(default_factory=list)
    """Qwen3: each sentence as the server's splitter cut it (`messages` are the input.text texts)."""
    error: Optional[str] = None
    """Qwen3: the error event that ended the session, if one did."""
    connection: int = 0
    """Which of the server's TCP connections it came on (1 for the first accepted): requests kept alive share one."""
    status: Optional[int] = None
    """orpheus-http: the response's status."""
    faulted: bool = False
    """The fault plan cut this conversation short (drop_after_bytes: a cut, or its close_code)."""
    first_message_at: Optional[float] = None
    """Orpheus's websocket: when (`time.monotonic()`) its settings message came."""
    ended_at: Optional[float] = None
    """When (`time.monotonic()`) the conversation ended, for the server."""

    @property
    def text(self) -> str:
        """Qwen3: the text as the server assembled it from the input.text messages."""
        return "".join(self.messages)

    @property
    def words(self) -> List[str]:
        """Every word received, in order (the sentinel and the settings excluded)."""
        if self.protocol == "qwen3":
            return self.text.split()
        return [w for m in self.messages if m != SENTINEL for w in m.strip().split()]

    @property
    def spoken(self) -> List[str]:
        """Every word generated, in order."""
        return [word for segment in self.segments for word in segment]


class Dropped(Exception):
    """The fault plan cut the connection."""


def reset(sock: socket.socket, drain: float = 1.0) -> None:
    """Cut `sock` with a TCP reset (no FIN: a crashed server or a broken network), once the bytes already
    written have reached the client's socket (`drain` seconds at most): a reset discards what is still
    queued here, so without the wait a cut after N bytes would deliver fewer when the client reads slowly,
    and a record would count as sent what never arrived."""
    deadline = time.monotonic() + drain
    while _unsent(sock) and time.monotonic() < deadline:
        time.sleep(0.002)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def blackhole(sock: socket.socket, within: float = 60.0) -> None:
    """Say nothing more on `sock`, and answer nothing (what comes is read and dropped, as a dead path drops it),
    until the client closes (`within` seconds at most); then close it."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                break
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _unsent(sock: socket.socket) -> int:
    """Bytes written to `sock` that the peer has not acknowledged (0 where the system cannot tell)."""
    try:
        import fcntl
        import termios
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (ImportError, OSError):
        return 0
