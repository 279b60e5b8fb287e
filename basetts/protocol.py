"""The conversation, sans-I/O: what to send, how to re-align and decode what arrives, what a close means.

Nothing here touches a socket or a thread, so every rule is unit-tested directly.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional
from urllib.parse import urlsplit

from .errors import BasetenTTSError, ServerError, StreamInterrupted
from .flush import SegmentModel, safe_pieces

SENTINEL = "__END__"
"""The text message that ends the words. The server compares the raw message to it."""

SAMPLE_RATE = 24000
SAMPLE_WIDTH = 2
CHANNELS = 1

NORMAL_CLOSE = 1000
GOING_AWAY = 1001


def check_text(text: Any) -> str:
    """Reject what cannot be spoken before any connection is made."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (or an iterable of str fragments), not {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: there is nothing to speak")
    return check_fragment(text)


def check_fragment(fragment: Any) -> str:
    """A fragment must be a str that can be sent as UTF-8 (no lone surrogates)."""
    if not isinstance(fragment, str):
        raise TypeError(f"text fragments must be str, not {type(fragment).__name__}")
    try:
        fragment.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid unicode (lone surrogate at index {exc.start})") from None
    return fragment


def word_message(word: str) -> str:
    """The text message for one word. A word that *is* the sentinel goes out padded: spoken, not ending."""
    return f" {word}" if word == SENTINEL else word


class Outgoing(NamedTuple):
    """One text message, and whether the server will have a segment to generate once it has read it."""

    text: str
    ends_batch: bool


def outgoing(settings_message: Dict[str, Any], words: Iterable[str], buffer_size: int = 10) -> Iterator[Outgoing]:
    """Every message of one conversation, in order: settings, one word per message, sentinel.

    One word per message matters: the server takes at most one flush action per message, so words sent
    together can stay in its buffer and never be spoken. A word in which pysbd finds a sentence end goes
    out in pieces cut there (the server would delete words otherwise). `ends_batch` marks where our copy
    of the server's flush rule says it will speak: the pacing's batches end there (see `Pacer`).
    """
    yield Outgoing(json.dumps(settings_message, ensure_ascii=False), False)
    model = SegmentModel(buffer_size)
    for word in words:
        for piece in safe_pieces(word):
            yield Outgoing(word_message(piece), model.push(piece))
    yield Outgoing(SENTINEL, True)


class Pacer:
    """How much text may be in flight: at most one batch (the words up to a segment's end) that the
    server has not read yet.

    The real server reads nothing while it generates, and its websocket layer stops reading the socket
    while a received message waits, so a keepalive pong waits behind every unread word. A ping after
    each batch tells us when the server has read it (its pong comes back only then): the next batch goes
    out then, so the server always holds the next segment's words and a pong never waits behind more
    than the segment being generated (docs/reliability.md, "Long texts").
    """

    def __init__(self) -> None:
        self.batch = 1  # the batch the next message belongs to
        self.acknowledged = 0  # the last batch whose ping came back

    def may_send(self) -> bool:
        return self.acknowledged >= self.batch - 1

    def end_batch(self) -> bytes:
        """The ping payload that follows the batch just sent; messages after it form the next batch."""
        payload = str(self.batch).encode("ascii")
        self.batch += 1
        return payload

    @property
    def pings_outstanding(self) -> int:
        return self.batch - 1 - self.acknowledged

    def pong(self, payload: bytes) -> bool:
        """A pong came back; True if it acknowledges one of our batches (pongs of other pings are not)."""
        try:
            batch = int(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return False
        if not self.acknowledged < batch < self.batch:
            return False
        self.acknowledged = batch  # the server reads in order: every earlier batch is read too
        return True


class WordSplitter:
    """Turns text fragments (LLM tokens, split anywhere) into whole words; holds back a trailing partial."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, fragment: str) -> List[str]:
        text = self._partial + check_fragment(fragment)
        words = text.split()
        self._partial = words.pop() if words and not text[-1].isspace() else ""
        return words

    def finish(self) -> List[str]:
        """The held-back word, once no more text will come."""
        word, self._partial = self._partial, ""
        return [word] if word else []


def iter_words(fragments: Iterable[str]) -> Iterator[str]:
    """Whole words from an iterable of fragments, yielded as soon as each word is known complete."""
    splitter = WordSplitter()
    for fragment in fragments:
        yield from splitter.feed(fragment)
    yield from splitter.finish()


class SampleAligner:
    """Re-cuts frames on sample boundaries: a sample split across two frames is joined, never dropped."""

    def __init__(self, width: int = SAMPLE_WIDTH) -> None:
        self.width = width
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self._rest:
            data = self._rest + data
        cut = len(data) - len(data) % self.width
        self._rest = data[cut:]
        return data[:cut]

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete sample still waiting for its other half."""
        return self._rest


def _mulaw_table() -> bytes:
    """The inverse of the server's companding (not G.711): byte b -> int16, little-endian."""
    out = bytearray()
    for code in range(256):
        y = code / 255 * 2 - 1
        x = math.copysign((256 ** abs(y) - 1) / 255, y)
        out += int(round(x * 32767)).to_bytes(2, "little", signed=True)
    return bytes(out)


MULAW_TO_S16 = _mulaw_table()
_LOW = bytes(MULAW_TO_S16[0::2])
_HIGH = bytes(MULAW_TO_S16[1::2])


def decode_mulaw(data: bytes) -> bytes:
    """8-bit companded samples to 16-bit PCM, at C speed (two byte translations, interleaved)."""
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(_LOW)
    out[1::2] = data.translate(_HIGH)
    return bytes(out)


class AudioDecoder:
    """Wire frames in, whole 16-bit PCM samples out, for either encoding.

    A server too old to know `encoding` ignores it and sends 16-bit PCM in 4096-byte frames; a μ-law
    window is 2048 bytes. So the first frame decides what actually came back.
    """

    PCM_WINDOW = 4096

    def __init__(self, encoding: Optional[str] = None) -> None:
        self.requested = encoding or "pcm_s16le"
        self.encoding: Optional[str] = None if self.requested == "pcm_mulaw" else "pcm_s16le"
        self._aligner = SampleAligner(SAMPLE_WIDTH)

    def feed(self, frame: bytes) -> bytes:
        if not frame:
            return b""  # an empty frame says nothing about the encoding
        if self.encoding is None:
            self.encoding = "pcm_s16le" if len(frame) == self.PCM_WINDOW else "pcm_mulaw"
        if self.encoding == "pcm_mulaw":
            return decode_mulaw(frame)
        return self._aligner.feed(frame)

    @property
    def fell_back(self) -> bool:
        """True when μ-law was asked for but the server sent 16-bit PCM."""
        return self.requested == "pcm_mulaw" and self.encoding == "pcm_s16le"

    @property
    def pending(self) -> bytes:
        return self._aligner.pending


def close_error(code: Optional[int], reason: str, sentinel_sent: bool) -> Optional[BasetenTTSError]:
    """What a close means: None for the normal end of the audio, else the error to raise.

    `code` is None when the connection ended without a close frame.
    """
    if code is None:
        return StreamInterrupted(
            "The connection dropped before the server finished (no close frame): the audio is incomplete."
        )
    if code == NORMAL_CLOSE and sentinel_sent:
        return None
    if code == NORMAL_CLOSE:
        return StreamInterrupted(
            f"The server closed the connection (code {code}) before all the text was sent: "
            "the audio is incomplete."
        )
    if code == GOING_AWAY:
        # The real server ends only with 1000; 1001 is a server or proxy shutting down mid-stream.
        return StreamInterrupted(
            f"The server went away (code {code}{', ' + reason if reason else ''}) before finishing: "
            "the audio is incomplete."
        )
    detail = f": {reason}" if reason else ""
    return ServerError(
        f"The server ended the stream with close code {code}{detail}. The audio is incomplete; "
        "retry, and check the deployment's logs on Baseten if it persists.",
        close_code=code,
    )


# The websocket upgrade (RFC 6455 section 4). websocket-client reads the response one byte per call, which
# costs ~0.25 ms of Python for a 200-byte response (an eighth of the time to first audio on loopback);
# these parse it from whatever the reads brought (docs/performance.md).
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_UPGRADE_RESPONSE = 65536
"""Bytes a response may take before its blank line: more is not a websocket server."""
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class UpgradeResponse(NamedTuple):
    status: int
    headers: Dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    rest: bytes
    """What came after the blank line: the start of the first frame."""


def upgrade_request(url: str, api_key: str, key: str) -> bytes:
    """The HTTP request that opens the websocket. No Origin: this is not a browser."""
    parts = urlsplit(url)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {resource} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             f"Authorization: Api-Key {api_key}", "", ""]
    return "\r\n".join(lines).encode("utf-8")


def parse_upgrade_response(data: bytes) -> Optional[UpgradeResponse]:
    """The response, or None while its header is incomplete. ValueError if it is not HTTP."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_UPGRADE_RESPONSE:
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
    return UpgradeResponse(int(status), headers, data[end + 4:])


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a real websocket server answers `key` with."""
    return base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")


def upgrade_problem(response: UpgradeResponse, key: str) -> Optional[str]:
    """Why a 101 response does not open a websocket we can read, or None if it does."""
    headers = response.headers
    if headers.get("upgrade", "").lower() != "websocket":
        return "no 'Upgrade: websocket' header"
    if "upgrade" not in (token.strip().lower() for token in headers.get("connection", "").split(",")):
        return "no 'Connection: Upgrade' header"
    if headers.get("sec-websocket-accept") != accept_key(key):
        return "a wrong Sec-WebSocket-Accept (not a websocket server, or a proxy in the way)"
    if headers.get("sec-websocket-extensions"):
        return f"an extension we did not ask for ({headers['sec-websocket-extensions']})"
    return None


OPCODE_TEXT = 0x1
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


def client_frame(payload: bytes, mask_key: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2); `mask_key` is 4 fresh random bytes.

    websocket-client's ABNF does the same in ~5 µs a frame; this is a few times faster, which counts
    when a whole text goes out at once, ahead of the first audio."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key_stream = (mask_key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key_stream, "big")).to_bytes(size, "big")
    return header + mask_key + masked


class Deadlines:
    """When audio is owed and by when, from the times words go out and audio comes in.

    Audio is owed once the sentinel is sent, or once `buffer_size` words went out since the last audio
    (the server speaks at least every `buffer_size` words); while a pacing ping is unanswered, audio or
    its pong is. Text still being produced (an LLM) owes nothing, so a slow producer never trips a timeout.
    """

    def __init__(self, buffer_size: int, first_audio_timeout: float, read_timeout: float) -> None:
        self.buffer_size = buffer_size
        self.first_audio_timeout = first_audio_timeout
        self.read_timeout = read_timeout
        self.sentinel_sent = False
        self.pings_outstanding = 0
        self._words_since_audio = 0
        self._owed_since: Optional[float] = None
        self._last_audio: Optional[float] = None

    def word_sent(self, now: float) -> None:
        self._words_since_audio += 1
        if self._owed_since is None and self._words_since_audio >= self.buffer_size:
            self._owed_since = now

    def end_sent(self, now: float) -> None:
        self.sentinel_sent = True
        if self._owed_since is None:
            self._owed_since = now

    def ping_sent(self, now: float) -> None:
        self.pings_outstanding += 1
        if self._owed_since is None:
            self._owed_since = now

    def pong_received(self, now: float, outstanding: int) -> None:
        """One of our pings was answered; `outstanding` are still unanswered."""
        self.pings_outstanding = outstanding
        if self._owed_since is not None:
            self._owed_since = now if self._owes(audio=False) else None

    def audio_received(self, now: float) -> None:
        self._last_audio = now
        self._words_since_audio = 0
        self._owed_since = now if self._owes(audio=True) else None

    def _owes(self, audio: bool) -> bool:
        words_owe = not audio and self._words_since_audio >= self.buffer_size
        return self.sentinel_sent or self.pings_outstanding > 0 or words_owe

    def deadline(self) -> Optional[float]:
        """Monotonic time by which the next frame (or the close) must arrive, or None."""
        if self._owed_since is None:
            return None
        timeout = self.first_audio_timeout if self._last_audio is None else self.read_timeout
        return self._owed_since + timeout

    def describe(self) -> str:
        unanswered = " (and no answer to our ping)" if self.pings_outstanding else ""
        if self._last_audio is None:
            return f"no audio within first_audio_timeout={self.first_audio_timeout:g} s{unanswered}"
        return f"no audio for read_timeout={self.read_timeout:g} s{unanswered}"
