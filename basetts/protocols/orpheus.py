"""Orpheus TTS's websocket (truss-examples orpheus-3b-websockets), sans-I/O: the settings message, one word per
message, the sentinel; audio only, ended by the server's close (docs/protocol.md)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..checks import check_int, check_number
from ..errors import BasetenTTSError, ConfigurationError, ServerError, warn
from ..markdown import EMOTION_TAGS as EMOTION_TAGS  # their public home is basetts.EMOTION_TAGS
from .base import AudioDecoder, Conversing, Outgoing, Spec, Write
from .flush import SegmentModel, safe_pieces

if TYPE_CHECKING:
    from ..audio import Stats

VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
"""The Orpheus voices the Baseten deployment knows; deployments may add more."""

"""Tags Orpheus performs when written inline as words, e.g. ``"That's funny <laugh>"``."""

DEFAULT_VOICE = "tara"
"""Orpheus's voice when none is given."""

ENCODINGS = ("pcm_s16le", "pcm_mulaw")

# Fields that go into the JSON settings message. None means "not set": the server's default applies.
_SERVER_FIELDS = ("voice", "max_tokens", "buffer_size", "temperature", "top_p", "repetition_penalty", "encoding")

SENTINEL = "__END__"
"""The text message that ends the words. The server compares the raw message to it."""


SERVER_MAX_TOKENS = 6144
"""The model's max_tokens when none is sent (truss-examples orpheus-3b-websockets and orpheus-best-performance)."""
TOKENS_PER_FRAME = 7
FRAME_BYTES = 4096
"""Orpheus decodes 7 SNAC tokens into 2048 samples: 4096 bytes of 16-bit PCM."""


def segment_bytes(max_tokens: int) -> int:
    """The most audio one segment (prompt) can make within its `max_tokens`."""
    return -(-max_tokens // TOKENS_PER_FRAME) * FRAME_BYTES


def word_message(word: str) -> str:
    """The text message for one word. A word that *is* the sentinel goes out padded: spoken, not ending."""
    return f" {word}" if word == SENTINEL else word


PART_WORDS = 60
"""Words one connection carries, about (~25 s of speech), when the text may go on on another: the server marks
no segment's end in its audio, but its close marks the end of everything sent before the sentinel, so a long
text goes as parts, each ended at a segment's end, and a connection lost resumes at its part's start
(docs/reliability.md, "Recovery"). Each part costs a new connection; a loss costs at most one part again."""


def outgoing(settings_message: Dict[str, Any], words: Iterable[str], buffer_size: int = 10,
             part_words: Optional[int] = None) -> Iterator[Outgoing]:
    """Every message of one conversation, in order: settings, one word per message, sentinel.

    One word per message matters: the server takes at most one flush action per message, so words sent
    together can stay in its buffer and never be spoken. A word in which pysbd finds a sentence end goes
    out in pieces cut there (the server would delete words otherwise). `ends_batch` marks where our copy
    of the server's flush rule says it will speak: the pacing's batches end there (see `Pacer`). With
    `part_words`, the sentinel comes at the first segment's end after that many words if more follow
    (`Outgoing.more`): the rest goes on a new connection, from the word not sent (it was read from `words`).
    """
    yield Outgoing(json.dumps(settings_message, ensure_ascii=False), False)
    model = SegmentModel(buffer_size)
    given = 0
    for word in words:
        pieces = safe_pieces(word, model.context())
        if part_words is not None and given >= max(part_words, 1) and model.ends_before(pieces[0]):
            yield Outgoing(SENTINEL, True, last=True, through=given, more=True)
            return
        for piece in pieces:
            yield Outgoing(word_message(piece), model.push(piece))
        given += 1
    yield Outgoing(SENTINEL, True, last=True, through=given)


class Utterance(Conversing):
    """One Orpheus utterance, or one part of it (`part_words`): settings, one word per message, the sentinel;
    audio only, ended by a close. The part is the unit: its close is where a lost connection resumes."""

    resumable = True

    def __init__(self, settings_message: Dict[str, Any], words: Iterable[str], *, buffer_size: int,
                 encoding: Optional[str], first_audio_timeout: float, read_timeout: float,
                 max_message_size: int, keepalive_timeout: float = 20.0, part_words: Optional[int] = None) -> None:
        super().__init__(buffer_size=buffer_size, first_audio_timeout=first_audio_timeout,
                         read_timeout=read_timeout, max_message_size=max_message_size,
                         keepalive_timeout=keepalive_timeout)
        self.messages = outgoing(settings_message, words, buffer_size, part_words)
        self.decoder = AudioDecoder(encoding)
        self.unit_bytes = segment_bytes(settings_message.get("max_tokens", SERVER_MAX_TOKENS))

    def is_last(self, message: str) -> bool:
        return message == SENTINEL

    def send(self, messages: List[Outgoing], now: float) -> Write:
        if messages and messages[-1].last:
            self.unit_sent(messages[-1].through)
            self.continues = messages[-1].more
            self.part_words = messages[-1].through
        return super().send(messages, now)

    def closed(self, code: int, reason: str) -> Optional[BasetenTTSError]:
        error = super().closed(code, reason)
        if error is None:
            self.unit_done()  # everything sent before the sentinel has been spoken
        return error

    def text(self, text: str, now: float) -> Tuple[bool, Optional[BasetenTTSError]]:
        # The protocol has no text messages: one is an error from a proxy, a newer server, or another protocol's.
        hint = (" It answers as Qwen3-TTS does: a Qwen3-TTS deployment takes protocol='qwen3'."
                if "session.config" in text else "")
        return True, ServerError(f"The server sent a message instead of audio: {text[:300]!r}.{hint}")


_warned_voices: Set[str] = set()


class Orpheus(Spec):
    name = "orpheus"
    fields = ("max_tokens", "buffer_size", "temperature", "top_p", "repetition_penalty", "encoding")

    def voice(self, voice: Optional[str]) -> Optional[str]:
        """"Tara" is tara: the model knows "tara"."""
        if isinstance(voice, str) and voice not in VOICES and voice.strip().lower() in VOICES:
            return voice.strip().lower()
        return voice

    def voices(self) -> List[str]:
        return ["Voices:       " + " ".join(VOICES), "Emotion tags: " + " ".join(EMOTION_TAGS)]

    def check(self, settings: Any) -> None:
        voice = settings.voice
        if voice is not None and voice not in VOICES and voice not in _warned_voices:
            _warned_voices.add(voice)  # once per voice: every call validates its settings
            warn(f"voice {voice!r} is not one of the Orpheus voices {', '.join(VOICES)}; sending it anyway")
        check_int("max_tokens", settings.max_tokens, 1)
        check_int("buffer_size", settings.buffer_size, 1)
        check_number("temperature", settings.temperature, low=0.0, low_open=False)
        check_number("top_p", settings.top_p, low=0.0, high=1.0)
        check_number("repetition_penalty", settings.repetition_penalty, low=0.0)
        if settings.encoding is not None and settings.encoding not in ENCODINGS:
            raise ConfigurationError(f"encoding must be one of {ENCODINGS}, got {settings.encoding!r}")

    def first_message(self, settings: Any) -> Dict[str, Any]:
        """Every field set, and no others (the server defaults the rest); the voice first, as the example."""
        message = {name: getattr(settings, name) for name in _SERVER_FIELDS if getattr(settings, name) is not None}
        message.setdefault("voice", DEFAULT_VOICE)
        return {"voice": message.pop("voice"), **message}

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        return Utterance(
            self.first_message(settings), words, buffer_size=settings.buffer_size, encoding=settings.encoding,
            first_audio_timeout=settings.first_audio_timeout, read_timeout=settings.read_timeout,
            max_message_size=settings.max_message_size, keepalive_timeout=settings.keepalive_timeout,
            part_words=PART_WORDS if settings.recoveries else None)


SPEC = Orpheus()
