"""Qwen3-TTS's streaming websocket (Baseten's fork of vLLM-Omni), sans-I/O: the session config, the text
cut where the server's splitter ends sentences, and what its typed JSON events mean (docs/protocol.md,
"Qwen3-TTS"). One utterance per connection: `input.done` ends the server's session.

Nothing here touches a socket or a thread; `tests/test_qwen3_protocol.py` tests it directly.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from ..audio import Sentence, Timeline, Word
from ..checks import check_int, check_number, is_utf8
from ..errors import (
    BasetenTTSError,
    ConfigurationError,
    ReadTimeout,
    SentenceError,
    ServerError,
    StreamInterrupted,
    VoiceError,
)
from ..pcm import SAMPLE_RATE, SAMPLE_WIDTH
from ..text import Aligner
from .base import Conversing, Outgoing, Spec, close_error
from .websocket import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    FrameReader,
    ProtocolViolation,
    close_frame,
    frames,
    pong,
)

if TYPE_CHECKING:
    from ..audio import Stats

log = logging.getLogger("basetts")

LANGUAGES = ("Auto", "Chinese", "English", "Japanese", "Korean", "German", "French", "Russian", "Portuguese",
             "Spanish", "Italian")
"""The languages the server accepts (exactly these names); another fails every sentence."""
TASK_TYPES = ("Base", "CustomVoice", "VoiceDesign")
SPLIT_GRANULARITIES = ("sentence", "clause")
TIMESTAMP_TRANSPORTS = ("sync", "async")
SENTENCE_ERRORS = ("raise", "collect")

# The server's limits and timers.
CONFIG_TIMEOUT = 10.0
"""Seconds the server waits for session.config after the upgrade; then it ends the session."""
IDLE_TIMEOUT = 30.0
"""Seconds the server waits for the next message once it has nothing to generate; then it ends the session."""
MAX_TEXT_MESSAGE = 128 * 1024
"""Characters of one input.text message (its JSON); a longer one is dropped with an error."""
MAX_BUFFER = 100_000
"""Characters the splitter holds without a sentence end; more ends the session."""
MAX_CONFIG_MESSAGE = 4 * 2 ** 20
"""Characters of session.config (an inline reference clip included)."""
MAX_VOICE_ADD_MESSAGE = 16 * 2 ** 20
MAX_VOICE_FILE = 10 * 2 ** 20
"""Bytes of a voice's audio file."""
VOICE_SECONDS = (1.0, 30.0)
"""The length a voice's (or an inline reference's) audio must have."""
MAX_NEW_TOKENS = 4096
CODEC_HZ = 12
"""Codec frames (tokens) per second of audio (Qwen3-TTS-12Hz, 12.5 rounded down: a bound errs long)."""
MAX_INSTRUCTIONS = 500

DONE = json.dumps({"type": "input.done"})
KEEPALIVE = json.dumps({"type": "input.text", "text": ""})
"""Appends nothing, but is a message: the server's idle timer starts again."""
_PIECE = 8192  # characters of a word per message: even escaped as JSON, far under MAX_TEXT_MESSAGE

_FAILED = re.compile(r"^Generation failed for (sentence|chunk) \d+: ")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
CLAUSE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？，；])")

# What a server of another lineage says (docs/protocol.md, "Lineages").
_UPSTREAM = ("This server is upstream vLLM-Omni (its events carry utterance_index, and it keeps the "
             "connection open across utterances), not Baseten's fork that basetts speaks: deploy truss-examples "
             "qwen/qwen-3-tts-streaming on Baseten's vLLM-Omni.")
_TRUSS_FORK = ("This server is the vLLM-Omni fork the public truss example installs unpinned (it answers "
               "voice.registered), not Baseten's fork that basetts speaks: pin Baseten's vLLM-Omni in the deployment.")


class BufferOverflow(ValueError):
    """More than MAX_BUFFER characters without a sentence end."""


class Splitter:
    """Where the server ends sentences (the rule of its text_splitter.py, written here): after . ! or ?
    and whitespace (which it drops), or right after 。！？ (and ，； when splitting by clause). A piece
    under 2 characters waits for the next one and is joined to it without the whitespace; the rest waits
    for more text, or the end. Each sentence is stripped."""

    MIN_LENGTH = 2

    def __init__(self, clause: bool = False) -> None:
        self.pattern = CLAUSE_END if clause else SENTENCE_END
        self.buffer = ""
        self._clean = True  # the buffer holds no sentence end: only new text can make one

    def add(self, text: str) -> List[str]:
        """The sentences `text` completes. BufferOverflow past MAX_BUFFER characters held (the session ends)."""
        if not text:
            return []
        if len(self.buffer) + len(text) > MAX_BUFFER:
            raise BufferOverflow(f"Text buffer exceeded maximum size ({MAX_BUFFER} chars). "
                                 "Consider adding sentence-ending punctuation to your input.")
        if self._clean and not self.pattern.search(self.buffer[-1:] + text):
            self.buffer += text  # the same answer as splitting it all, in time linear in the text
            return []
        self.buffer += text
        parts = self.pattern.split(self.buffer)
        if len(parts) == 1:
            return []
        sentences: List[str] = []
        carry = ""
        for part in parts[:-1]:
            part, carry = carry + part, ""
            stripped = part.strip()
            if len(stripped) >= self.MIN_LENGTH:
                sentences.append(stripped)
            elif stripped:
                carry = part
        self.buffer = carry + parts[-1]
        self._clean = not self.pattern.search(self.buffer)
        return sentences

    def flush(self) -> Optional[str]:
        """What is left, as the last sentence, at input.done."""
        rest, self.buffer, self._clean = self.buffer.strip(), "", True
        return rest or None


def text_message(text: str) -> str:
    return json.dumps({"type": "input.text", "text": text}, ensure_ascii=False)


def outgoing(config: Dict[str, Any], words: Iterable[str], clause: bool = False,
             completes: Optional[Callable[[str, List[str], Optional[int]], None]] = None) -> Iterator[Outgoing]:
    """Every message of one session: session.config, each word with the space after it (the server
    appends text as it comes, and a sentence ends once the space after its "." is there), input.done.
    `ends_batch` marks the words after which the server generates (our copy of its splitter), where the
    pacing's batches end. A text with more than MAX_BUFFER characters without a sentence end is a
    `ConfigurationError` before they go out: the server would end the session. `completes(message,
    sentences, through)` hears of each message after which the server has those sentences to generate (and the
    words given through the last of them, if it ends a word; at input.done, the rest, as no sentence to predict)."""
    yield Outgoing(json.dumps(config, ensure_ascii=False), False)
    splitter = Splitter(clause)
    given = 0  # words whose every piece has been taken
    for word in words:
        pieces = [word[i:i + _PIECE] for i in range(0, len(word), _PIECE)] or [""]
        pieces[-1] += " "
        for number, piece in enumerate(pieces):
            try:
                sentences = splitter.add(piece)
            except BufferOverflow:
                raise ConfigurationError(
                    f"The text runs over {MAX_BUFFER} characters without a sentence end (. ! ? 。！？ followed "
                    "by a space): the Qwen3 server holds at most that much and would end the session. "
                    "Add punctuation.") from None
            message = text_message(piece)
            given += number == len(pieces) - 1
            if sentences and completes is not None:
                # The last sentence ends with this word when the splitter holds nothing after it.
                at_word_end = number == len(pieces) - 1 and not splitter.buffer.strip()
                completes(message, sentences, given if at_word_end else None)
            yield Outgoing(message, bool(sentences))
    rest = splitter.flush()
    if rest and completes is not None:
        completes(DONE, [rest], given)
    yield Outgoing(DONE, True, last=True)


# session.config ---------------------------------------------------------------------------------------------
_CONFIG_FIELDS = ("voice", "task_type", "language", "instructions", "max_new_tokens", "initial_codec_chunk_frames",
                  "ref_text", "x_vector_only_mode", "split_granularity")


def session_config(settings: Any) -> Dict[str, Any]:
    """The first message: streamed 16-bit PCM (the server's default is one WAV per sentence), and every
    field set, no others."""
    config: Dict[str, Any] = {"type": "session.config", "response_format": "pcm", "stream_audio": True}
    for name in _CONFIG_FIELDS:
        value = getattr(settings, name)
        if value is not None:
            config[name] = value
    if settings.ref_audio is not None:
        config["ref_audio"] = ref_audio_uri(settings.ref_audio)
    if settings.word_timestamps:
        config["timestamp_type"] = "word"
        config["timestamp_transport_strategy"] = settings.timestamp_transport or "sync"
    return config


_MAGIC = ((b"RIFF", "wav"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"ID3", "mp3"), (b"\xff\xfb", "mp3"),
          (b"\xff\xf3", "mp3"), (b"\xff\xf2", "mp3"))
MIME_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


def audio_format(data: bytes) -> str:
    """"wav", "flac", "ogg" or "mp3", from the file's first bytes; ConfigurationError for anything else."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    raise ConfigurationError("reference audio must be a WAV, FLAC, Ogg or MP3 file (its first bytes say "
                             f"neither: {data[:8]!r})")


def audio_bytes(source: Any) -> bytes:
    """A file's bytes from an `Audio` (as WAV), bytes, or a path."""
    from ..audio import Audio

    if isinstance(source, Audio):
        return source.wav()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as file:
                return file.read(MAX_VOICE_FILE + 1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read the reference audio {os.fspath(source)!r}: {exc.strerror}") from None
    raise ConfigurationError(f"reference audio must be a path, bytes, an Audio or a URL, not {type(source).__name__}")


def ref_audio_uri(source: Any) -> str:
    """What session.config's ref_audio takes: an http(s) URL as given, a data: URI as given, and anything
    else (a path, bytes, an `Audio`) as a data: URI (the server refuses bare base64)."""
    if isinstance(source, str) and source.startswith(("http://", "https://", "data:")):
        return source
    data = audio_bytes(source)
    uri = f"data:{MIME_TYPES[audio_format(data)]};base64,{base64.b64encode(data).decode('ascii')}"
    if len(uri) > MAX_CONFIG_MESSAGE - 64 * 1024:
        raise ConfigurationError(
            f"ref_audio is {len(data) / 2 ** 20:.1f} MB: the server takes at most 4 MiB of session config "
            f"(about 3 MB of audio). Use a shorter clip ({VOICE_SECONDS[0]:g}-{VOICE_SECONDS[1]:g} s), a URL, "
            "or add it once as a voice (synth.voices.add).")
    return uri


def session_error(message: str, idle_timeout: float = IDLE_TIMEOUT) -> ServerError:
    """The server's error that ended its session, as ours, saying what to change."""
    if message.startswith("Timestamps requested"):
        return ServerError(f"word_timestamps=True, but this deployment has no word aligner (the server says: "
                           f"{message}). Deploy it with FORCED_ALIGNER_MODEL set, or leave word_timestamps off.")
    if message.startswith("Timeout waiting for session.config"):
        return ServerError(f"The Qwen3 server ended the session: {message} (it waits {CONFIG_TIMEOUT:g} s after "
                           "the upgrade). The audio is incomplete; retry.")
    if message.startswith("Idle timeout"):
        return ServerError(f"The Qwen3 server ended the session: {message} (after {idle_timeout:g} s without a "
                           "message; basetts sends a keepalive well before, so something held it back). "
                           "The audio is incomplete.")
    if message.startswith("Invalid session config"):
        return ServerError(f"The Qwen3 server refused the settings: {message}")
    return ServerError(f"The Qwen3 server ended the session: {message}. The audio is incomplete.")


class Qwen3Utterance(Conversing):
    """One Qwen3-TTS session: what to send (`outgoing`), and what its events mean. Audio is 16-bit PCM
    between a sentence's audio.start and audio.done; sentences and word times go into `timeline`, in
    seconds from the session's first sample (the server's word times already count from there). The
    normal end is session.done: the close after it (or its absence) changes nothing. Each sentence is a
    unit: its audio.done is where a lost connection resumes."""

    resumable = True

    def __init__(self, config: Dict[str, Any], words: Iterable[str], *, timeline: Timeline,
                 first_audio_timeout: float, read_timeout: float, max_message_size: int,
                 keepalive_timeout: float = 20.0, sentence_errors: str = "raise",
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(buffer_size=1, first_audio_timeout=first_audio_timeout, read_timeout=read_timeout,
                         max_message_size=max_message_size, keepalive_timeout=keepalive_timeout)
        # Taken messages that end sentences: (the message, the sentences' texts, `Outgoing.through` of the last).
        self._completing: Deque[Tuple[str, List[str], Optional[int]]] = collections.deque()
        self.timestamps = config.get("timestamp_type") is not None
        self._aligner = Aligner() if self.timestamps else None  # the server's words back to the text given
        if self._aligner is not None:
            words = self._aligner.track(words)
        self.messages = outgoing(config, words, clause=config.get("split_granularity") == "clause",
                                 completes=lambda *completed: self._completing.append(completed))
        self._owed: Deque[Tuple[int, float]] = collections.deque()  # sentences sent, not done: (characters, when)
        self._last_done = 0.0
        self._rate: Optional[float] = None  # the server's seconds of generation per character, as measured
        self.timeline = timeline
        self.sentence_errors = sentence_errors
        self.idle_timeout = idle_timeout
        self.done = False
        self._sentence: Optional[Sentence] = None  # begun: its start, and the error said during it
        self._samples = 0
        self._first_index = 0  # a resumed session's sentences count on from those before (`resume_from`)
        self._shift = 0.0  # and its word times from where it resumed
        self.unit_bytes = (config.get("max_new_tokens") or MAX_NEW_TOKENS) * SAMPLE_RATE * 2 // CODEC_HZ

    # sending ----------------------------------------------------------------------------------------------
    def may_send(self, now: float) -> bool:
        """As the pacing allows, and only if what is sent now would not wait long unread. The server reads
        no message while it generates, and uvicorn reads nothing behind an unread message, pongs
        included: text sent ahead holds our keepalive pong until the sentences before it are generated
        (fatal past 20 s: a long sentence, a slow model). So text goes ahead only while those sentences'
        generation, predicted from the server's measured speed, ends within the pacing's budget; else
        it waits for their audio.done (one round trip per sentence)."""
        return super().may_send(now) and self.predicted_wait(now) < self.keepalive_budget

    def predicted_wait(self, now: float) -> float:
        """Seconds until the server has generated every sentence sent (0 when it waits for text)."""
        if not self._owed:
            return 0.0
        if self._rate is None:
            return float("inf")  # its speed is not known yet: wait for the first sentence
        begun = max(self._owed[0][1], self._last_done)
        total = sum(characters for characters, _ in self._owed) * self._rate * self.MARGIN
        return max(0.0, total - (now - begun))

    MARGIN = 1.5  # the prediction's allowance: a sentence may take longer than the average per character

    def sent(self, messages: List[str], ping: Optional[bytes], now: float) -> None:
        for message in messages:  # the messages that end sentences, matched as the very objects taken
            if self._completing and self._completing[0][0] is message:
                _, texts, through = self._completing.popleft()
                if message is not DONE:  # the last sentence: nothing waits to be predicted behind it
                    self._owed.extend((len(text), now) for text in texts)
                    self.deadlines.units(now, len(self._owed))
                for _ in texts[1:]:
                    self.unit_sent(None)  # ends inside the message
                self.unit_sent(through)
        super().sent(messages, ping, now)

    def is_last(self, message: str) -> bool:
        return message == DONE

    def uncounted(self, messages: List[str]) -> int:
        return messages.count(KEEPALIVE)

    def owe(self, words: int, batch_ended: bool, now: float) -> None:
        """A completed sentence owes its audio (the server generates it at once), however long the rest
        of the text takes to come."""
        if batch_ended:
            self.deadlines.word_sent(now)

    def resume_from(self, pcm_bytes: int) -> None:
        """This session goes on from `pcm_bytes` of audio made on an earlier connection: the timeline keeps
        what ended there, and this session's times and sentence numbers count on from it."""
        self._samples = pcm_bytes // SAMPLE_WIDTH
        self._shift = self.seconds
        self.timeline.words[:] = self.timeline.words_until(self._shift)
        self.timeline.sentences[:] = [s for s in self.timeline.sentences if s.end <= self._shift + 1e-9]
        self._first_index = len(self.timeline.sentences)

    def keepalive(self, now: float) -> Optional[str]:
        """An empty input.text once a third of the server's idle timeout has passed since we last sent
        (a producer pausing, a paused player holding the text back), so the session lives on."""
        quiet = self.last_sent is not None and now - self.last_sent >= self.idle_timeout / 3
        return KEEPALIVE if quiet and not self.all_sent and not self.ended else None

    # receiving --------------------------------------------------------------------------------------------
    def unexpected_audio(self) -> Optional[BasetenTTSError]:
        """The server sends a sentence's audio between its audio.start and audio.done, always: audio outside
        a sentence comes from a server that speaks another protocol (Orpheus's, which answers words with it)."""
        if self._sentence is not None:
            return None
        return ServerError("The server sent audio outside a sentence (no audio.start before it): it does not speak "
                           "Qwen3-TTS's protocol. An Orpheus TTS deployment takes protocol='orpheus' (the default).")

    def binary(self, payload: bytes) -> bytes:
        pcm = self.decoder.feed(payload)
        self._samples += len(pcm) // 2
        return pcm

    @property
    def seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def text(self, text: str, now: float) -> Tuple[bool, Optional[BasetenTTSError]]:
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return True, ServerError(f"The server sent a message that is not a Qwen3-TTS event: {text[:300]!r}")
        kind = event.get("type")
        if "utterance_index" in event:
            return True, ServerError(_UPSTREAM)
        if kind == "audio.start":
            return self._start(event)
        if kind == "audio.done":
            return self._done(event, now)
        if kind == "timestamps":
            if "error" in event:
                log.warning("the server could not align sentence %s: %s", event.get("sentence_index"),
                            event.get("error"))
            self._words(event.get("timestamp_info"))
            return False, None
        if kind == "error":
            message = str(event.get("message", ""))
            if self._sentence is not None:  # said during a sentence: its audio.done (error: true) follows
                self._sentence = dataclasses.replace(self._sentence, error=message)
                return False, None
            return True, session_error(message, self.idle_timeout)
        if kind == "session.done":
            if not self.all_sent:
                return True, StreamInterrupted("The server ended the session before all the text was sent: "
                                               "the audio is incomplete.")
            self.done = True
            return True, None
        if kind == "voice.registered":
            return True, ServerError(_TRUSS_FORK)
        log.debug("ignoring a Qwen3 event of type %r", kind)
        return False, None

    def _start(self, event: Dict[str, Any]) -> Tuple[bool, Optional[BasetenTTSError]]:
        audio_format, rate = event.get("format", "pcm"), event.get("sample_rate", SAMPLE_RATE)
        if audio_format != "pcm" or rate != SAMPLE_RATE:
            return True, ServerError(f"The server sends {audio_format} audio at {rate} Hz, not the streamed 24 kHz "
                                     "PCM asked for (stream_audio): a server too old for basetts.")
        index = event.get("sentence_index")
        self._sentence = Sentence(index + self._first_index if isinstance(index, int) else len(self.timeline.sentences),
                                  str(event.get("sentence_text", "")), self.seconds, self.seconds)
        return False, None

    def _measured(self, now: float) -> None:
        """A sentence's audio.done: how long the server took per character (a running average)."""
        if not self._owed:
            return
        characters, sent_at = self._owed.popleft()
        took = max(0.0, now - max(sent_at, self._last_done)) / max(1, characters)
        self._rate = took if self._rate is None else 0.5 * self._rate + 0.5 * took
        self._last_done = now
        self.deadlines.units(now, len(self._owed))

    def _done(self, event: Dict[str, Any], now: float) -> Tuple[bool, Optional[BasetenTTSError]]:
        begun = self._sentence or Sentence(len(self.timeline.sentences), "", self.seconds, self.seconds)
        self._sentence = None
        failed = bool(event.get("error"))
        error = _FAILED.sub("", begun.error or "the server marked it failed") if failed else None
        self.timeline.sentences.append(dataclasses.replace(begun, end=self.seconds, error=error))
        self._measured(now)
        self.progressed = True  # text held back may go now
        self._words(event.get("timestamp_info"))
        self.unit_done()
        if error is not None and self.sentence_errors == "raise":
            hint = (" This model clones voices: pass voice= (one added with synth.voices.add; the CLI: --voice, one "
                    "added with basetts voices add), or ref_audio= and ref_text=." if "requires 'ref_audio'" in error
                    else "")
            return True, SentenceError(
                f"The server failed sentence {begun.index} ({begun.text[:60]!r}): {error}.{hint} "
                "Pass sentence_errors='collect' to go on past failed sentences.",
                index=begun.index, text=begun.text, server_message=error)
        return False, None

    def _words(self, info: Any) -> None:
        alignment = info.get("word_alignment") if isinstance(info, dict) else None
        if not isinstance(alignment, dict):
            return
        for text, start, end in zip(alignment.get("words") or [], alignment.get("word_start_times_seconds") or [],
                                    alignment.get("word_end_times_seconds") or []):
            span = self._aligner.span_of(str(text)) if self._aligner is not None else None
            self.timeline.words.append(Word(str(text), float(start) + self._shift, float(end) + self._shift, span))

    def closed(self, code: int, reason: str) -> Optional[BasetenTTSError]:
        if self.done:
            return None
        if code == 1000:
            return StreamInterrupted("The server closed the connection (code 1000) before its session.done: "
                                     "the audio is incomplete.")
        return close_error(code, reason, False)

    def dropped(self) -> Optional[BasetenTTSError]:
        if self.done:
            return None
        return StreamInterrupted("The connection dropped before the server's session.done (no close frame): "
                                 "the audio is incomplete.", unanswered=not self.heard)


# voices -------------------------------------------------------------------------------------------------
def voice_add_message(name: str, audio: bytes, consent: str, ref_text: Optional[str] = None,
                      description: Optional[str] = None) -> str:
    message: Dict[str, Any] = {"type": "voice.add", "name": name, "consent": consent,
                               "audio_data": base64.b64encode(audio).decode("ascii"),
                               "audio_format": audio_format(audio)}
    if ref_text is not None:
        message["ref_text"] = ref_text
    if description is not None:
        message["speaker_description"] = description
    return json.dumps(message, ensure_ascii=False)


def voice_reply(text: str, wanted: str) -> Optional[Dict[str, Any]]:
    """The reply to a voice.* request (of result type `wanted`), or None for another event; an `error`
    event or a refusal raises `VoiceError` with the server's words."""
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise ServerError(f"The server sent a message that is not a Qwen3-TTS event: {text[:300]!r}")
    kind = event.get("type")
    if kind == "voice.registered":
        raise ServerError(_TRUSS_FORK)
    if kind == "error":
        raise VoiceError(f"The server refused: {event.get('message', '')}", server_message=str(event.get("message")))
    if kind != wanted:
        return None
    if event.get("success", True) is False:
        message = str(event.get("error", "refused"))
        raise VoiceError(f"The server refused: {message}", server_message=message)
    return event


class VoiceRequest:
    """One voice.* request and its reply, sans-I/O: the request's frame out, the server's bytes in (its pings
    answered, its close an error), the reply once it comes. No session is started: the server answers
    voice.* before any config."""

    def __init__(self, message: str, wanted: str, *, max_message_size: int, read_timeout: float) -> None:
        self.wanted = wanted
        self.read_timeout = read_timeout
        self.frames = FrameReader(max_message_size)
        self._out = [frames([message])]
        self._closed = False
        self.reply: Optional[Dict[str, Any]] = None

    def data_to_send(self) -> bytes:
        """The request, then pongs and the close, as they become due."""
        data, self._out = b"".join(self._out), []
        return data

    def receive(self, data: bytes, now: float) -> Optional[Dict[str, Any]]:
        """The reply once it has come, else None; the server's refusal as `VoiceError`, a close or a drop
        before the reply as `StreamInterrupted`."""
        if not data:
            raise StreamInterrupted("The connection dropped before the server answered.")
        try:
            messages = self.frames.feed(data, now)
        except ProtocolViolation as exc:
            raise StreamInterrupted(f"The connection failed: {exc}.") from None
        for opcode, payload in messages:
            if opcode == OPCODE_PING:
                self._out.append(pong(payload))
            elif opcode == OPCODE_CLOSE:
                raise StreamInterrupted("The server closed the connection before answering.")
            elif opcode == OPCODE_TEXT:
                reply = voice_reply(payload.decode("utf-8", "replace"), self.wanted)
                if reply is not None:
                    self.reply = reply
                    return reply
        return None

    def finish(self) -> bytes:
        """The close that ends the request's connection, whatever happened (once)."""
        if self._closed:
            return b""
        self._closed = True
        return close_frame()

    def timeout_error(self) -> ReadTimeout:
        return ReadTimeout(f"No answer to {self.wanted.rsplit('.', 1)[0]} within read_timeout={self.read_timeout:g} s.")


class Qwen3(Spec):
    name = "qwen3"
    fields = ("language", "instructions", "task_type", "ref_audio", "ref_text", "x_vector_only_mode",
              "word_timestamps", "timestamp_transport", "split_granularity", "max_new_tokens",
              "initial_codec_chunk_frames", "sentence_errors", "idle_timeout")
    spare_max_age = min(Spec.spare_max_age, CONFIG_TIMEOUT - 3.0)
    """The server gives up on a connection without its config after CONFIG_TIMEOUT."""

    def check(self, settings: Any) -> None:
        """Its values as the server checks them."""
        for name, allowed in (("language", LANGUAGES), ("task_type", TASK_TYPES),
                              ("timestamp_transport", TIMESTAMP_TRANSPORTS),
                              ("split_granularity", SPLIT_GRANULARITIES),
                              ("sentence_errors", SENTENCE_ERRORS)):
            value = getattr(settings, name)
            if value is not None and value not in allowed:
                raise ConfigurationError(f"{name} must be one of {', '.join(allowed)} (exactly), got {value!r}")
        if settings.max_new_tokens is not None:
            check_int("max_new_tokens", settings.max_new_tokens, 1)
            if settings.max_new_tokens > MAX_NEW_TOKENS:
                raise ConfigurationError(f"max_new_tokens must be at most {MAX_NEW_TOKENS}, "
                                         f"got {settings.max_new_tokens}")
        if settings.initial_codec_chunk_frames is not None:
            check_int("initial_codec_chunk_frames", settings.initial_codec_chunk_frames, 0)
        for name in ("instructions", "ref_text"):
            value = getattr(settings, name)
            if value is not None and (not isinstance(value, str) or not is_utf8(value)):
                raise ConfigurationError(f"{name} must be text")
        if settings.instructions is not None and len(settings.instructions) > MAX_INSTRUCTIONS:
            raise ConfigurationError(f"instructions must be at most {MAX_INSTRUCTIONS} characters, "
                                     f"got {len(settings.instructions)}")
        for name in ("x_vector_only_mode", "word_timestamps"):
            value = getattr(settings, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        check_number("idle_timeout", settings.idle_timeout, low=0.0, high=1e6, required=True)
        if settings.timestamp_transport is not None and not settings.word_timestamps:
            raise ConfigurationError("timestamp_transport needs word_timestamps=True")

    def first_message(self, settings: Any) -> Dict[str, Any]:
        return session_config(settings)

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        return Qwen3Utterance(
            session_config(settings), words, timeline=stats.timeline,
            first_audio_timeout=settings.first_audio_timeout, read_timeout=settings.read_timeout,
            max_message_size=settings.max_message_size, keepalive_timeout=settings.keepalive_timeout,
            sentence_errors=settings.sentence_errors, idle_timeout=settings.idle_timeout)


SPEC = Qwen3()
