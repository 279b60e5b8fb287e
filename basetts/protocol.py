"""The conversation, sans-I/O: what to send, how to re-align and decode what arrives, what a close means.

Nothing here touches a socket or a thread, so every rule is unit-tested directly.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .errors import BasetenTTSError, ServerError, StreamInterrupted, TimeoutError
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
    last: bool = False
    """The message that ends the text (no pacing ping follows it: the server's answer is the audio)."""


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
        for piece in safe_pieces(word, model.context()):
            yield Outgoing(word_message(piece), model.push(piece))
    yield Outgoing(SENTINEL, True, last=True)


class Pacer:
    """How much text may be in flight: a window of batches (the words up to a segment's end) that the
    server has not read yet, one at first.

    The real server reads nothing while it generates, and its websocket layer stops reading the socket
    while a received message waits, so a keepalive pong waits behind every unread word. A ping after
    each batch tells us when the server has read it (its pong comes back only then), and how long that
    took: exactly how long the server's own pong would wait. While that stays under `budget` (a tenth
    of the keepalive timeout) the window grows by one batch, up to `MAX_WINDOW`; past it the window
    halves. So a slow model gets one batch at a time (a pong never waits behind more than the segment
    being generated), a fast one is never kept waiting for words (docs/protocol.md, "Keepalive").
    Before the server is `generating` (until audio has come) the window grows to `EARLY_WINDOW` at most:
    before its first segment the server reads words as fast as they come, and quick pongs then say
    nothing of how long a pong will wait behind a segment being made.
    """

    MAX_WINDOW = 8
    EARLY_WINDOW = 2  # the most before the server generates: see below

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.batch = 1  # the batch the next message belongs to
        self.acknowledged = 0  # the last batch whose ping came back
        self.window = 1
        self.generating = False  # set once audio has come: see the class's docstring
        self._sent: Dict[int, Tuple[float, bool]] = {}  # batch -> (when its ping went out, generating then)

    def may_send(self) -> bool:
        return self.pings_outstanding < self.window

    def end_batch(self, now: float) -> bytes:
        """The ping payload that follows the batch just sent; messages after it form the next batch."""
        payload = str(self.batch).encode("ascii")
        self._sent[self.batch] = (now, self.generating)
        self.batch += 1
        return payload

    @property
    def pings_outstanding(self) -> int:
        return self.batch - 1 - self.acknowledged

    def pong(self, payload: bytes, now: float) -> bool:
        """A pong came back; True if it acknowledges one of our batches (pongs of other pings are not)."""
        try:
            batch = int(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return False
        if not self.acknowledged < batch < self.batch:
            return False
        for read in range(self.acknowledged + 1, batch):  # the server reads in order: these are read too
            self._sent.pop(read, None)
        self.acknowledged = batch
        sent, generating = self._sent.pop(batch)
        if now - sent >= self.budget:
            self.window = max(1, self.window // 2)
        else:
            self.window = min(self.MAX_WINDOW if generating else self.EARLY_WINDOW, self.window + 1)
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


# Parsing a proxy's answer to CONNECT (transport.py): an HTTP response header.
MAX_HTTP_HEADER = 65536
"""Bytes a response may take before its blank line: more is not an HTTP server."""
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


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


OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_OPCODES = (OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG)


class ProtocolViolation(ValueError):
    """The server broke RFC 6455; the message says what it did. `before`: what came whole before it."""

    before: List[Tuple[int, bytes]] = []


class MessageTooBig(ProtocolViolation):
    """A message longer than `max_message_size`."""


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4 (and the IANA registry): the codes a close frame may carry."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameReader:
    """Server bytes in, whole messages and control frames out, checked as RFC 6455 requires of a client.

    Bounded: a message (all its fragments) may be at most `max_size` bytes, refused as soon as a frame
    header announces more, so memory never follows a hostile length; fragments are joined once, at the
    end (linear time). `partial_since` is when the unfinished frame or message began, so the caller can
    bound the whole frame and the whole message, not each read.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: List[bytes] = []
        self._fragments_size = 0
        self._fragment_opcode: Optional[int] = None
        self.partial_since: Optional[float] = None

    def feed(self, data: bytes, now: float) -> List[Tuple[int, bytes]]:
        """(opcode, payload) for each complete message (text or binary, fragments joined) and each
        control frame (ping, pong, close), in order. Raises ProtocolViolation."""
        buffer = self._buffer
        buffer += data
        out: List[Tuple[int, bytes]] = []
        offset = 0
        while True:
            try:
                parsed = self._frame(buffer, offset)
            except ProtocolViolation as exc:
                exc.before = out
                raise
            if parsed is None:
                break
            offset, fin, opcode, payload = parsed
            if opcode >= OPCODE_CLOSE:
                out.append((opcode, payload))
            elif fin and opcode != OPCODE_CONTINUATION:
                out.append((opcode, payload))
            else:
                if opcode != OPCODE_CONTINUATION:
                    self._fragment_opcode = opcode
                self._fragments.append(payload)
                if fin:
                    assert self._fragment_opcode is not None
                    out.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments, self._fragments_size, self._fragment_opcode = [], 0, None
        del buffer[:offset]
        if not buffer and self._fragment_opcode is None:
            self.partial_since = None
        elif self.partial_since is None or (offset and self._fragment_opcode is None):
            self.partial_since = now  # a frame (or a message's first fragment) began: bound from here
        return out

    def _frame(self, buffer: bytearray, offset: int) -> Optional[Tuple[int, bool, int, bytes]]:
        available = len(buffer) - offset
        if available < 2:
            return None
        first, second = buffer[offset], buffer[offset + 1]
        fin, rsv, opcode = bool(first & 0x80), first & 0x70, first & 0x0F
        length, start = second & 0x7F, offset + 2
        if rsv:
            raise ProtocolViolation(f"the server set reserved bits ({rsv >> 4:03b}) with no extension agreed")
        if second & 0x80:
            raise ProtocolViolation("the server masked a frame (a server must not)")
        if opcode not in _OPCODES:
            raise ProtocolViolation(f"the server sent a frame with the reserved opcode {opcode:#x}")
        if opcode >= OPCODE_CLOSE:
            if not fin:
                raise ProtocolViolation("the server fragmented a control frame")
        elif opcode == OPCODE_CONTINUATION and self._fragment_opcode is None:
            raise ProtocolViolation("the server sent a continuation frame with no message to continue")
        elif opcode != OPCODE_CONTINUATION and self._fragment_opcode is not None:
            raise ProtocolViolation("the server began a new message before finishing the last one")
        if length == 126:
            if available < 4:
                return None
            length, start = int.from_bytes(buffer[offset + 2:offset + 4], "big"), offset + 4
        elif length == 127:
            if available < 10:
                return None
            length, start = int.from_bytes(buffer[offset + 2:offset + 10], "big"), offset + 10
            if length >> 63:
                raise ProtocolViolation("the server announced a frame length with the top bit set")
        if opcode >= OPCODE_CLOSE and length > 125:
            raise ProtocolViolation(f"the server sent a control frame of {length} bytes (at most 125)")
        if opcode < OPCODE_CLOSE and self._fragments_size + length > self.max_size:
            raise MessageTooBig(
                f"the server sent a message of over {self.max_size} bytes (a frame of {length}); "
                "raise max_message_size if that is expected")
        end = start + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[start:end])
        if opcode < OPCODE_CLOSE and not (fin and opcode != OPCODE_CONTINUATION):
            self._fragments_size += length  # a fragment: the message's size so far
        elif opcode == OPCODE_CLOSE:
            check_close(payload)
        return end, fin, opcode, payload


def check_close(payload: bytes) -> None:
    """A close frame's payload: empty, or a valid code and a UTF-8 reason."""
    if len(payload) == 1:
        raise ProtocolViolation("the server sent a close frame with a 1-byte payload")
    if payload:
        code = int.from_bytes(payload[:2], "big")
        if not valid_close_code(code):
            raise ProtocolViolation(f"the server closed with code {code}, which is not a valid close code")
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("the server's close reason is not UTF-8") from None


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


class Received(NamedTuple):
    """What one read meant."""

    audio: bytes
    """Whole 16-bit samples, decoded, in order (empty if none)."""
    pongs: List[bytes]
    """Payloads of the server's pings, to answer."""
    acknowledged: bool
    """One of our batches was read by the server: the writer may go on."""
    ended: bool
    """The conversation is over (with `error`, or normally when it is None)."""
    error: Optional[BasetenTTSError]
    close: Optional[Tuple[int, str]] = None
    """The close frame's code and reason, when one came."""


class Conversing:
    """What every protocol's utterance shares, sans-I/O: the pacing (`Pacer`), what the server owes and
    by when (`Deadlines`), the frames (`FrameReader`), pings, pongs and the counts. A protocol
    (`Utterance` for Orpheus, `qwen3.Qwen3Utterance`) says what its messages are and what received
    messages mean. The conversation (connection.py) feeds it the bytes and times it sees; it owns only
    the threads, socket and queue. Not thread-safe: the conversation calls it under one lock."""

    messages: Iterator[Outgoing]
    """Read by the one thread sending at a time (it may wait on the caller's text), never under a lock."""

    def __init__(self, *, buffer_size: int, first_audio_timeout: float, read_timeout: float,
                 max_message_size: int, keepalive_timeout: float) -> None:
        self.pacer = Pacer(budget=keepalive_timeout / 10)
        self.deadlines = Deadlines(buffer_size, first_audio_timeout, read_timeout)
        self.read_timeout = read_timeout
        self.frames = FrameReader(max_message_size)
        self.decoder: "AudioDecoder" = AudioDecoder()
        self.words_sent = 0
        self.messages_sent = 0
        self.all_sent = False
        self.audio_messages = 0
        self.audio_bytes = 0
        self.ended = False
        self.last_sent: Optional[float] = None
        self.progressed = False
        """Set by a protocol when what it received lets the writer go on (like a pong of ours)."""

    # sending ----------------------------------------------------------------------------------------------
    def may_send(self, now: float) -> bool:
        return self.pacer.may_send() and not self.ended

    def end_batch(self, now: float) -> bytes:
        return self.pacer.end_batch(now)

    def sent(self, messages: List[str], ping: Optional[bytes], now: float) -> None:
        """Messages (and a ping) are about to go out: from now on the server owes for them. Counted before
        the write, because the close may come before the write returns."""
        first = self.messages_sent == 0
        last = self.is_last(messages[-1])
        words = len(messages) - first - last - self.uncounted(messages)
        self.messages_sent += len(messages)
        self.words_sent += words
        self.last_sent = now
        self.owe(words, ping is not None, now)
        if ping is not None:
            self.deadlines.ping_sent(now)
        if last:
            self.all_sent = True
            self.deadlines.end_sent(now)

    def owe(self, words: int, batch_ended: bool, now: float) -> None:
        """What the server owes for what was just sent: here, audio every `buffer_size` words."""
        for _ in range(words):
            self.deadlines.word_sent(now)

    def is_last(self, message: str) -> bool:
        """Whether `message` ends the text."""
        raise NotImplementedError

    def uncounted(self, messages: List[str]) -> int:
        """How many of `messages` (besides the first and the last) carry no words."""
        return 0

    def keepalive(self, now: float) -> Optional[str]:
        """A message to send now so that the server does not give up on a quiet client, or None."""
        return None

    # receiving --------------------------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> Received:
        """Bytes from the server (b"" for the end of the connection)."""
        if not data:
            return self._end(self.dropped())
        violation: Optional[ProtocolViolation] = None
        try:
            messages = self.frames.feed(data, now)
        except ProtocolViolation as exc:
            messages, violation = exc.before, exc
        audio: List[bytes] = []
        pongs: List[bytes] = []
        acknowledged = False
        for opcode, payload in messages:
            if opcode == OPCODE_BINARY:
                self.audio_messages += 1
                self.audio_bytes += len(payload)
                self.pacer.generating = True
                self.deadlines.audio_received(now)
                audio.append(self.binary(payload))
            elif opcode == OPCODE_PING:
                pongs.append(payload)
            elif opcode == OPCODE_PONG:
                if self.pacer.pong(payload, now):
                    self.deadlines.pong_received(now, self.pacer.pings_outstanding)
                    acknowledged = True
            elif opcode == OPCODE_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL_CLOSE
                reason = payload[2:].decode("utf-8")
                self.ended = True
                return Received(b"".join(audio), pongs, acknowledged, True, self.closed(code, reason),
                                (code, reason))
            else:
                ended, error = self.text(payload.decode("utf-8", "replace"), now)
                if ended:
                    return self._end(error, b"".join(audio), pongs, acknowledged)
        if violation is not None:
            return self._end(StreamInterrupted(f"The connection failed: {violation}. The audio is incomplete."),
                             b"".join(audio))
        if self.progressed:
            self.progressed, acknowledged = False, True
        return Received(b"".join(audio), pongs, acknowledged, False, None)

    def binary(self, payload: bytes) -> bytes:
        """An audio message: its whole 16-bit samples."""
        return self.decoder.feed(payload)

    def text(self, text: str, now: float) -> Tuple[bool, Optional[BasetenTTSError]]:
        """A text message: (whether the conversation is over, the error if it ended badly)."""
        raise NotImplementedError

    def closed(self, code: int, reason: str) -> Optional[BasetenTTSError]:
        """What the server's close frame means: None for the normal end."""
        return close_error(code, reason, self.deadlines.sentinel_sent)

    def dropped(self) -> Optional[BasetenTTSError]:
        """What the end of the connection without a close frame means."""
        return close_error(None, "", self.deadlines.sentinel_sent)

    def _end(self, error: Optional[BasetenTTSError], audio: bytes = b"", pongs: Optional[List[bytes]] = None,
             acknowledged: bool = False) -> Received:
        self.ended = True
        return Received(audio, pongs or [], acknowledged, True, error)

    def deadline(self) -> Optional[float]:
        """When the next byte must have come: audio owed, or an unfinished frame or message to complete."""
        owed = self.deadlines.deadline()
        started = self.frames.partial_since
        partial = None if started is None else started + self.read_timeout
        return min((d for d in (owed, partial) if d is not None), default=None)

    def timeout_error(self, now: float) -> BasetenTTSError:
        started = self.frames.partial_since
        if started is not None and started + self.read_timeout <= now:
            return TimeoutError(f"A frame or message stalled halfway for read_timeout={self.read_timeout:g} s.")
        return TimeoutError(f"The server stopped sending: {self.deadlines.describe()}.")


class Utterance(Conversing):
    """One Orpheus utterance: settings, one word per message, the sentinel; audio only, ended by a close."""

    def __init__(self, settings_message: Dict[str, Any], words: Iterable[str], *, buffer_size: int,
                 encoding: Optional[str], first_audio_timeout: float, read_timeout: float,
                 max_message_size: int, keepalive_timeout: float = 20.0) -> None:
        super().__init__(buffer_size=buffer_size, first_audio_timeout=first_audio_timeout,
                         read_timeout=read_timeout, max_message_size=max_message_size,
                         keepalive_timeout=keepalive_timeout)
        self.messages = outgoing(settings_message, words, buffer_size)
        self.decoder = AudioDecoder(encoding)

    def is_last(self, message: str) -> bool:
        return message == SENTINEL

    def text(self, text: str, now: float) -> Tuple[bool, Optional[BasetenTTSError]]:
        # The protocol has no text messages: one is an error from a proxy or a newer server.
        return True, ServerError(f"The server sent a message instead of audio: {text[:300]!r}")
