"""What every protocol shares, sans-I/O: the state of one utterance, which takes the server's bytes in and
hands out the bytes to write (`Conversing`), the pacing (`Pacer`), what is owed and by when (`Deadlines`), and
the audio's decoding (`AudioDecoder`). Nothing here touches a socket or a thread, so every rule is tested
directly (tests/test_protocol.py)."""
from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from ..errors import BasetenTTSError, FirstAudioTimeout, ReadTimeout, ServerError, StreamInterrupted
from ..pcm import SAMPLE_WIDTH
from .websocket import (
    GOING_AWAY,
    NORMAL_CLOSE,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    POLICY_VIOLATION,
    PROTOCOL_ERROR,
    UNSUPPORTED_DATA,
    FrameReader,
    ProtocolViolation,
    close_frame,
    close_of,
    frames,
    pong,
)

if TYPE_CHECKING:
    from ..audio import Stats

BATCH_MESSAGES = 64
"""Messages of a whole text written at once, at most (a batch ends sooner at a segment's end)."""

class Outgoing(NamedTuple):
    """One text message, and whether the server will have a segment to generate once it has read it."""

    text: str
    ends_batch: bool
    last: bool = False
    """The message that ends the text (no pacing ping follows it: the server's answer is the audio)."""
    through: Optional[int] = None
    """For a message that ends a unit (a request, a sentence) at the end of a word: how many of the words given
    that unit and the ones before it hold. A connection lost later resumes after it (`Conversing.resume_point`)."""
    more: bool = False
    """On the last message: the text goes on after `through` words, on a new connection (`Conversing.continues`)."""


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
        self.out_bytes = 0
        """Bytes of PCM handed out so far."""

    def feed(self, frame: bytes) -> bytes:
        if not frame:
            return b""  # an empty frame says nothing about the encoding
        if self.encoding is None:
            self.encoding = "pcm_s16le" if len(frame) == self.PCM_WINDOW else "pcm_mulaw"
        pcm = decode_mulaw(frame) if self.encoding == "pcm_mulaw" else self._aligner.feed(frame)
        self.out_bytes += len(pcm)
        return pcm

    @property
    def fell_back(self) -> bool:
        """True when μ-law was asked for but the server sent 16-bit PCM."""
        return self.requested == "pcm_mulaw" and self.encoding == "pcm_s16le"

    @property
    def pending(self) -> bytes:
        return self._aligner.pending


def not_implemented(code: Optional[int], reason: str) -> bool:
    """truss's close of a websocket to a deployment that has none (it serves HTTP only, POST …/predict)."""
    return code == UNSUPPORTED_DATA and "not implemented" in reason.lower()


def serves_http_only(data: bytes) -> bool:
    """Whether the first bytes after an upgrade are truss's "not implemented" close (`not_implemented`)."""
    try:
        messages = FrameReader(2 ** 16).feed(data, 0.0)
    except ProtocolViolation:
        return False
    return any(opcode == OPCODE_CLOSE and not_implemented(*close_of(payload)) for opcode, payload in messages)


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
    if not_implemented(code, reason):
        return ServerError(
            f"This deployment has no websocket (close code {code}{detail}): it serves HTTP only (POST …/predict), "
            "as Orpheus's orpheus-best-performance truss does. Give its predict URL (…/predict), or pass "
            "protocol='orpheus-http' (BASETTS_PROTOCOL=orpheus-http, --protocol orpheus-http).", close_code=code)
    return ServerError(
        f"The server ended the stream with close code {code}{detail}. The audio is incomplete; "
        "retry, and check the deployment's logs on Baseten if it persists.",
        close_code=code,
    )


MIN_PROGRESS = 480
"""Bytes of audio that count as progress against `read_timeout` (10 ms of 16-bit PCM, 20 ms of μ-law; every
server sends far more at once)."""

MIN_KEEPALIVE = 2.0
"""Before the server's first ping: the shortest keepalive timeout assumed for the window's growth (a pong that
waits a fifth of a second behind our batches stops it), however soon after the start."""

ALLOWANCE_SLACK = 4
"""How many times the audio a unit's token budget can make (max_tokens: `Conversing.unit_bytes`) a server may
send before it is called broken."""


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
        self.units_owed = 0
        """Units sent whose end has not come (Qwen3's sentences): audio is owed while there are any."""
        self._words_since_audio = 0
        self._owed_since: Optional[float] = None
        self._last_audio: Optional[float] = None
        self._unprogressed = 0  # audio bytes since the last progress

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

    def units(self, now: float, owed: int) -> None:
        """`owed` units are sent and not done: while there are, the server owes audio (a server gone silent
        mid-sentence is found by `read_timeout`, though the rest of the text waits for that sentence)."""
        self.units_owed = owed
        if owed and self._owed_since is None:
            self._owed_since = now
        elif not owed and not self._owes(audio=True):
            self._owed_since = None  # nothing owed until more text goes

    def pong_received(self, now: float, outstanding: int) -> None:
        """One of our pings was answered; `outstanding` are still unanswered."""
        self.pings_outstanding = outstanding
        if self._owed_since is not None:
            self._owed_since = now if self._owes(audio=False) else None

    def audio_received(self, now: float, size: int = MIN_PROGRESS) -> None:
        """`size` bytes of audio came. The first audio ends the wait for it; after that, progress (the deadline
        moves on) needs MIN_PROGRESS bytes since the last: a server trickling a byte at a time makes none."""
        self._unprogressed += size
        if self._unprogressed < MIN_PROGRESS and self._last_audio is not None:
            return
        self._unprogressed = 0
        self._last_audio = now
        self._words_since_audio = 0
        self._owed_since = now if self._owes(audio=True) else None

    def _owes(self, audio: bool) -> bool:
        words_owe = not audio and self._words_since_audio >= self.buffer_size
        return self.sentinel_sent or self.pings_outstanding > 0 or self.units_owed > 0 or words_owe

    @property
    def first_audio_owed(self) -> bool:
        return self._last_audio is None

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
    pings: int
    """How many pings the server sent (the latest is answered: `Conversing.data_to_send`)."""
    acknowledged: bool
    """One of our batches was read by the server (or a protocol event lets more go): the writer may go on."""
    ended: bool
    """The conversation is over (with `error`, or normally when it is None)."""
    error: Optional[BasetenTTSError]
    close: Optional[Tuple[int, str]] = None
    """The close frame's code and reason, when one came."""


class Write(NamedTuple):
    """Bytes to write, and what they are (for the trace)."""

    data: bytes
    messages: List[str]
    """The text messages among them."""
    ping: Optional[bytes] = None
    """The pacing ping's payload, when one follows the messages."""
    pong: Optional[bytes] = None
    """The payload of the server's ping this answers."""
    close: bool = False


class Conversing:
    """One utterance, sans-I/O: bytes in (`receive`), bytes out (`take` + `send` for the text, `fill` for a
    whole text at once, `data_to_send` for pongs, keepalives and the close), times in (`deadline`,
    `timeout_error`). It owns every rule: the framing, the pacing (`Pacer`), what the server owes and by when
    (`Deadlines`), which ping to answer, when to answer a close. A protocol (`orpheus.Utterance`,
    `qwen3.Qwen3Utterance`) says what its messages are and what received messages mean. A driver (net/) only
    moves the bytes, waits and wakes. Not thread-safe: a driver with several threads calls it under one lock,
    except `take`, which only reads the text (it may wait for the caller's iterable) and which one thread at
    a time calls, outside the lock (a whole text, which never waits, may be read under it: `fill`, `prepare`)."""

    messages: Iterator[Outgoing]
    """Read by `take` (or a test), never under a lock."""
    answered = True
    """The server took the conversation (a websocket's is taken at the upgrade; an HTTP request at its head)."""
    controls = True
    """It may owe the server something besides the text (`data_to_send`: pongs, keepalives, the close's answer);
    HTTP owes nothing, so a driver need not ask."""

    def __init__(self, *, buffer_size: int, first_audio_timeout: float, read_timeout: float,
                 max_message_size: int, keepalive_timeout: float) -> None:
        self.pacer = Pacer(budget=keepalive_timeout / 10)
        self.keepalive_timeout = keepalive_timeout
        """The most the server's keepalive timeout is assumed to be; its pings may show it is less (`learn`)."""
        self.keepalive_budget = keepalive_timeout / 10
        """How long what we send may wait unread: a tenth of the keepalive timeout assumed (`learn`)."""
        self.ping_interval: Optional[float] = None
        """The shortest time seen between the server's keepalive pings (the first counted from our first send)."""
        self._began: Optional[float] = None  # our first send: the connection was opened just before
        self._last_ping: Optional[float] = None
        self.deadlines = Deadlines(buffer_size, first_audio_timeout, read_timeout)
        self.read_timeout = read_timeout
        self.frames = FrameReader(max_message_size)
        self.decoder: "AudioDecoder" = AudioDecoder()
        self.heard = False  # a message from the server (audio or text; pings and pongs are not the model's)
        self.words_sent = 0
        self.messages_sent = 0
        self.units_sent = 0
        """Units sent that the server generates apart (segments, sentences, requests): what it may answer."""
        self.unit_bytes: Optional[int] = None
        """The most audio one unit can honestly make (its token budget); None: not bounded."""
        self.resume_point = (0, 0)
        """(words, PCM bytes): the words given whose units' audio has all come, at a word's end, and the audio
        handed out up to there. After a lost connection the text resumes there on a new one (`net/retry.py`)."""
        self._units: Deque[Optional[int]] = collections.deque()  # units sent, not done: their `through`
        self.continues = False
        """This conversation carries a part of the text: once it ends normally, the words after its
        `resume_point` go on on a new connection (the drivers open it)."""
        self.part_words: Optional[int] = None
        """Once a part's last message is sent (`continues`): the words of the text it carries, where the next
        part begins (`resume_point` reaches it when the part ends normally)."""
        self.all_sent = False
        self.audio_messages = 0
        self.audio_bytes = 0
        self.ended = False
        self.last_sent: Optional[float] = None
        self.progressed = False
        """Set by a protocol when what it received lets the writer go on (like a pong of ours)."""
        self._held: Optional[Outgoing] = None  # taken from `messages` but left for the next write
        self._ping: Optional[bytes] = None  # the latest ping not yet answered
        self._close: Optional[int] = None  # the close code to answer with, once the server ended

    # sending ----------------------------------------------------------------------------------------------
    def may_send(self, now: float) -> bool:
        return self.pacer.may_send() and not self.ended

    def learn(self, now: float, pinged: bool = False) -> None:
        """What the server's keepalive may be, from its pings. A server pings every interval and gives about as
        long for the answer (uvicorn: 20 s and 20 s), so the shortest interval seen bounds the timeout assumed
        (`keepalive_timeout` at most; the budgets are a tenth of it). Before its first ping, the time it has not
        pinged for (MIN_KEEPALIVE at least) bounds it for the window's growth, so the window grows only while
        our batches are read at once: a deployment configured otherwise needs no setting."""
        if self._began is None:
            return
        if pinged:
            interval = now - (self._last_ping if self._last_ping is not None else self._began)
            self.ping_interval = interval if self.ping_interval is None else min(self.ping_interval, interval)
            self._last_ping = now
            self.keepalive_budget = min(self.keepalive_timeout, self.ping_interval) / 10
        bound = self.ping_interval if self.ping_interval is not None else max(MIN_KEEPALIVE, now - self._began)
        self.pacer.budget = min(self.keepalive_timeout, bound) / 10

    def take(self, eager: bool, max_bytes: Optional[int] = None) -> List[Outgoing]:
        """The next messages to write at once: up to a batch's end (where the server will generate), at most
        `BATCH_MESSAGES` (or `max_bytes` on the wire) for a whole text (`eager`); for text arriving over time,
        each message as soon as it comes. Reads the text, which may wait for the caller's iterable."""
        taken: List[Outgoing] = []
        size = 0
        while True:
            message, self._held = self._held, None
            if message is None:
                message = next(self.messages, None)
                if message is None:
                    return taken
            size += len(message.text.encode("utf-8")) + 14  # the frame header and mask, at most
            if taken and max_bytes is not None and size > max_bytes:
                self._held = message  # the next write sends it
                return taken
            taken.append(message)
            if (message.ends_batch and not message.last) or not eager or len(taken) >= BATCH_MESSAGES:
                return taken

    def prepare(self) -> None:
        """Read the next message from a whole text now (it cannot wait), while the server is busy with the one
        before, so that `take` costs nothing when it is due (an HTTP request's text is cut with pysbd)."""
        if self._held is None:
            self._held = next(self.messages, None)

    def send(self, messages: List[Outgoing], now: float) -> Write:
        """`messages` (from `take`) as frames, with the pacing ping after a batch's end; counted as sent now."""
        texts = [message.text for message in messages]
        if not texts:
            return Write(b"", [])
        last = messages[-1]
        ping = self.pacer.end_batch(now) if last.ends_batch and not last.last else None
        self.units_sent += sum(message.ends_batch for message in messages)
        self.sent(texts, ping, now)
        return Write(frames(texts, ping), texts, ping)

    def fill(self, now: float) -> List[Write]:
        """A whole text's batches, as many as the pacing allows now."""
        writes: List[Write] = []
        while not self.all_sent and self.may_send(now):
            messages = self.take(eager=True)
            if not messages:
                break
            writes.append(self.send(messages, now))
        return writes

    resumable = False
    """The protocol knows where each unit's audio ends (`unit_done`), so a lost connection resumes at the last
    one done; else only from the start (`resume_point` stays (0, 0))."""

    def resume_from(self, pcm_bytes: int) -> None:
        """This utterance goes on from `pcm_bytes` of audio an earlier connection made (its times count on)."""

    def unit_sent(self, through: Optional[int]) -> None:
        """A unit went out (`Outgoing.through`: None when it ends inside a word)."""
        if self.resumable:
            self._units.append(through)

    def unit_done(self) -> None:
        """The oldest unit sent has all its audio: the text may resume after it, if it ends a word."""
        if self._units:
            through = self._units.popleft()
            if through is not None:
                self.resume_point = (through, self.decoder.out_bytes)

    def sent(self, messages: List[str], ping: Optional[bytes], now: float) -> None:
        """Messages (and a ping) are about to go out: from now on the server owes for them. Counted before
        the write, because the close may come before the write returns."""
        first = self.messages_sent == 0
        if first:
            self._began = now
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

    def end_batch(self, now: float) -> bytes:
        return self.pacer.end_batch(now)

    def data_to_send(self, now: float) -> Optional[Write]:
        """What must go out besides the text, or None: the answer to the server's latest ping (RFC 6455 lets a
        client answer only the latest, so a ping flood costs nothing), the protocol's keepalive message when
        one is due, and the answer to the server's close. Call it only when the write cannot block (a pong
        must never wait behind text the server is not reading)."""
        data: List[bytes] = []
        messages: List[str] = []
        payload, self._ping = self._ping, None
        if payload is not None:
            data.append(pong(payload))
        keepalive = None if self.ended else self.keepalive(now)
        if keepalive is not None:
            self.sent([keepalive], None, now)
            messages.append(keepalive)
            data.append(frames([keepalive]))
        code, self._close = self._close, None
        if code is not None:
            data.append(close_frame(code))
        if not data:
            return None
        return Write(b"".join(data), messages, pong=payload, close=code is not None)

    @property
    def reusable(self) -> bool:
        """The conversation ended normally and its connection may carry the next one (HTTP keep-alive)."""
        return False

    @property
    def finished(self) -> bool:
        """The conversation ended on our side with nothing owed (an HTTP text with no words: no request):
        the driver ends it without reading."""
        return False

    def wants_to_send(self, now: float) -> bool:
        """`data_to_send` has something now: a pong or a close answer waits, or a keepalive is due."""
        return self._ping is not None or self._close is not None or (
            not self.ended and self.keepalive(now) is not None)

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
            return self._end(self.dropped(), answer=None)
        violation: Optional[ProtocolViolation] = None
        try:
            messages = self.frames.feed(data, now)
        except ProtocolViolation as exc:
            messages, violation = exc.before, exc
        audio: List[bytes] = []
        pings = 0
        acknowledged = False
        for opcode, payload in messages:
            if opcode in (OPCODE_BINARY, OPCODE_TEXT):
                self.heard = True
            if opcode == OPCODE_BINARY:
                stray = self.unexpected_audio()
                if stray is not None:
                    return self._end(stray, b"".join(audio), pings, acknowledged, answer=POLICY_VIOLATION)
                self.audio_messages += 1
                self.audio_bytes += len(payload)
                if payload:  # an empty message is no progress: it resets no deadline
                    self.pacer.generating = True
                    self.deadlines.audio_received(now, len(payload))
                audio.append(self.binary(payload))
                excess = self.excess()
                if excess is not None:
                    return self._end(excess, b"".join(audio), pings, acknowledged, answer=POLICY_VIOLATION)
            elif opcode == OPCODE_PING:
                pings += 1
                self._ping = payload
                self.learn(now, pinged=True)
            elif opcode == OPCODE_PONG:
                self.learn(now)
                if self.pacer.pong(payload, now):
                    self.deadlines.pong_received(now, self.pacer.pings_outstanding)
                    acknowledged = True
            elif opcode == OPCODE_CLOSE:
                code, reason = close_of(payload)
                return self._end(self.closed(code, reason), b"".join(audio), pings, acknowledged, (code, reason))
            else:
                ended, error = self.text(payload.decode("utf-8", "replace"), now)
                if ended:
                    return self._end(error, b"".join(audio), pings, acknowledged)
        if violation is not None:
            return self._end(StreamInterrupted(f"The connection failed: {violation}. The audio is incomplete.",
                                               recoverable=False),
                             b"".join(audio), pings, answer=PROTOCOL_ERROR)
        if self.progressed:
            self.progressed, acknowledged = False, True
        return Received(b"".join(audio), pings, acknowledged, False, None)

    def excess(self) -> Optional[BasetenTTSError]:
        """The error when the server has sent more audio than the units sent can make (`unit_bytes` each, with
        ALLOWANCE_SLACK), so a server gone wrong cannot fill the memory; else None."""
        if self.unit_bytes is None:
            return None
        allowed = ALLOWANCE_SLACK * self.unit_bytes * max(1, self.units_sent)
        if self.audio_bytes <= allowed:
            return None
        return ServerError(
            f"The server sent {self.audio_bytes / 1e6:.1f} MB of audio for {max(1, self.units_sent)} unit(s) of text, "
            f"over {ALLOWANCE_SLACK} times what their token budget can make (max_tokens; Qwen3: max_new_tokens): it "
            "is broken, or something in the way is. The audio so far is in .partial.")

    def unexpected_audio(self) -> Optional[BasetenTTSError]:
        """The error when an audio message cannot come now, as the protocol has it (a server that speaks
        another protocol); None when it can."""
        return None

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
        """What the end of the connection without a close frame means: before the server sent any message (audio
        or text; a close would have said why), nothing was made of the text, so the call may go again
        (`unanswered`)."""
        error = close_error(None, "", self.deadlines.sentinel_sent)
        if isinstance(error, StreamInterrupted) and not self.heard:
            error.unanswered = True
        return error

    def _end(self, error: Optional[BasetenTTSError], audio: bytes = b"", pings: int = 0, acknowledged: bool = False,
             close: Optional[Tuple[int, str]] = None, answer: Optional[int] = NORMAL_CLOSE) -> Received:
        """The conversation is over: a close answers the server's (or ends it after an event that ended it, or
        after a violation, with 1002); none after a drop, where nothing can be written."""
        self.ended = True
        self._close = answer
        return Received(audio, pings, acknowledged, True, error, close)

    def deadline(self) -> Optional[float]:
        """When the next byte must have come: audio owed, or an unfinished frame or message to complete."""
        owed = self.deadlines.deadline()
        started = self.frames.partial_since
        partial = None if started is None else started + self.read_timeout
        return min((d for d in (owed, partial) if d is not None), default=None)

    def expired(self, now: float) -> Optional[BasetenTTSError]:
        """The timeout error if a deadline has passed, whatever came meanwhile (pings are not audio)."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self.timeout_error(now)

    def timeout_error(self, now: float) -> BasetenTTSError:
        started = self.frames.partial_since
        if started is not None and started + self.read_timeout <= now:
            return ReadTimeout(f"A frame or message stalled halfway for read_timeout={self.read_timeout:g} s.")
        timeout = FirstAudioTimeout if self.deadlines.first_audio_owed else ReadTimeout
        return timeout(f"The server stopped sending: {self.deadlines.describe()}.")


SPARE_MAX_AGE = 15.0
"""Seconds a connection opened ahead (`Synthesizer.connect`) may wait: uvicorn pings every 20 s and an idle
spare has no reader to answer, and a gateway may drop idle connections sooner."""


class Spec:
    """One protocol as the rest of basetts sees it: its name, the settings only it has and their checks,
    its first message and the state machine of one utterance. `settings` is a `Settings` (this layer sits
    below it, so it reads the fields it needs by name). protocols/__init__.py lists every Spec."""

    name = ""
    fields: Tuple[str, ...] = ()
    """Settings that only this protocol has: refused with another, naming this one."""
    spare_max_age = SPARE_MAX_AGE
    upgrades = True
    """A websocket's: the transport upgrades the connection. An HTTP protocol's requests go on it as it is."""
    schemes: Tuple[str, str] = ("ws", "wss")
    """Its URL's schemes: (unencrypted, encrypted)."""

    def voice(self, voice: Optional[str]) -> Optional[str]:
        """The voice as the server knows it."""
        return voice

    def voices(self) -> List[str]:
        """What `voice=` takes here, as lines for `basetts voices` (from the model's code: nothing is asked)."""
        return ["Voices: the deployment's own (voice= is sent as it is)"]

    def check(self, settings: Any) -> None:
        """Its own settings' values, as its server checks them (ConfigurationError), before anything is sent."""

    def first_message(self, settings: Any) -> Dict[str, Any]:
        raise NotImplementedError

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        raise NotImplementedError
