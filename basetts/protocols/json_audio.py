"""Baseten's text-to-speech trusses that answer JSON holding a base64 WAV (truss-examples kokoro, chatterbox-tts,
sesame-csm-1b, piper-tts, xtts-v2-truss, metavoice-1b), sans-I/O: POST …/predict with the text and the model's
own fields, answered once the audio is made by {"<key>": "<base64 WAV>"} (metavoice: the bare base64 string).
The WAV, 16-bit or float, at the model's rate, becomes the 24 kHz 16-bit mono every protocol delivers. The
text goes in requests as Orpheus over HTTP cuts it (`orpheus_http.prompts`: at sentence ends), so the first
sentence plays while the next is made, on one kept-alive connection. A preset per model, read from its
model.py; `json-audio` describes a deployment of the same shape that has none (docs/protocol.md)."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set, Tuple

from ..errors import ConfigurationError, warn
from ..pcm import SAMPLE_RATE, resample, wav_to_pcm
from ..text import is_whole
from . import orpheus_http, xtts
from .base import Conversing, Spec

if TYPE_CHECKING:
    from ..audio import Stats

REQUEST_SECONDS = 300
"""The most audio one request (whole sentences, at most `orpheus_http.MAX_PROMPT` characters, so each plays
while the next is made: these models answer only once a request's audio is whole) can honestly make."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """How one model's predict() reads its request and answers: the fields named in its model.py."""

    name: str
    model: str
    """Its folder in truss-examples."""
    response_key: Optional[str] = "output"
    """Where the base64 WAV is in the JSON answer (None: the answer is the base64 string itself)."""
    text_field: str = "text"
    voice_field: Optional[str] = None
    """Where `voice` goes (None: the model reads no voice, and voice= is refused)."""
    voice_is_number: bool = False
    voices: Tuple[str, ...] = ()
    """Every voice its model has (the first its default): another is sent with a warning, as Orpheus's are."""
    default_voice: Optional[str] = None
    """Its default voice, when it has others it does not list (XTTS's built-in speakers)."""
    language_field: Optional[str] = None
    shell_quoted: bool = False
    """The model puts the text in a shell command between single quotes: an apostrophe would end it."""


PRESETS: Tuple[Preset, ...] = (
    Preset("kokoro", "kokoro", response_key="base64", voice_field="voice", voices=(
        "af", "af_bella", "af_sarah", "af_nicole", "af_sky", "am_adam", "am_michael", "bf_emma", "bf_isabella",
        "bm_george", "bm_lewis")),
    Preset("chatterbox", "chatterbox-tts", response_key="audio"),
    Preset("sesame", "sesame-csm-1b", voice_field="speaker", voice_is_number=True),
    Preset("piper", "piper-tts", shell_quoted=True),
    Preset("xtts-v2", "xtts-v2-truss", voice_field="speaker_voice", default_voice=xtts.SPEAKER,
           language_field="language"),
    Preset("metavoice", "metavoice-1b", response_key=None, text_field="prompt"),
)
CUSTOM = Preset("json-audio", "", response_key="output", voice_field="voice")
"""A deployment of the same shape without a preset: `text_field`, `response_key` and `request_fields` say it."""
_warned: Set[Tuple[str, str]] = set()  # (preset, voice): an unknown voice is said once


def decode_answer(body: bytes, key: Optional[str]) -> bytes:
    """The audio of one answer, as 24 kHz 16-bit mono PCM (ValueError, saying what was wrong, if it is not one)."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise ValueError(f"the answer is not JSON: {body[:120]!r}") from None
    encoded = answer if key is None else answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(encoded, str):
        keys = f"its keys: {', '.join(map(str, answer))}" if isinstance(answer, dict) else type(answer).__name__
        raise ValueError(f"the answer has no base64 audio at {key!r} ({keys})" if key is not None
                         else f"the answer is not a base64 string ({keys})")
    try:
        wav = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the answer's audio is not valid base64") from None
    pcm, rate = wav_to_pcm(wav)
    return pcm if rate == SAMPLE_RATE else resample(pcm, rate, SAMPLE_RATE)


class JsonAudio(Spec):
    """One model that answers JSON with a base64 WAV: its preset says where everything goes."""

    upgrades = False
    schemes = ("http", "https")
    spare_max_age = orpheus_http.SPEC.spare_max_age

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self.name = preset.name
        custom = ("text_field", "response_key", "request_fields")
        self.fields = custom if preset is CUSTOM else ("language",) if preset.language_field else ()

    def voices(self) -> List[str]:
        preset = self.preset
        if preset.voice_field is None:
            return [f"Voices: none to choose: its model ({preset.model}) reads no voice from the request"]
        if preset.voice_is_number:
            return ["Voices: a speaker number: 0 (the default), 1, …"]
        if preset is CUSTOM:
            return ['Voices: the deployment\'s own (voice= goes in the request\'s "voice" field)']
        if preset.default_voice is not None:
            return [f"Voices: {preset.default_voice!r} (the default), or another of its model's built-in speakers"]
        return [f"Voices: {' '.join(preset.voices)} (the first is the default)"]

    def check(self, settings: Any) -> None:
        preset = self.preset
        if settings.voice is not None:
            if preset.voice_field is None:
                raise ConfigurationError(f"protocol={preset.name!r}: its model ({preset.model}) reads no voice from "
                                         "the request; leave voice unset")
            if preset.voice_is_number and not settings.voice.isdigit():
                raise ConfigurationError(f"protocol={preset.name!r}: voice is the model's speaker number (0, 1, …), "
                                         f"got {settings.voice!r}")
            if preset.voices and settings.voice not in preset.voices and (preset.name, settings.voice) not in _warned:
                _warned.add((preset.name, settings.voice))  # once: every call checks its settings
                warn(f"voice {settings.voice!r} is not one of {preset.model}'s voices {', '.join(preset.voices)}; "
                     "sending it anyway")
        if preset.language_field and settings.language is not None and settings.language not in xtts.LANGUAGES:
            raise ConfigurationError(f"language must be one of XTTS's {', '.join(xtts.LANGUAGES)}, "
                                     f"got {settings.language!r}")
        if preset is CUSTOM:
            for name in ("text_field", "response_key"):
                value = getattr(settings, name)
                if value is not None and (not isinstance(value, str) or not value):
                    raise ConfigurationError(f"{name} must be a JSON key (a non-empty str), got {value!r}")
            fields = settings.request_fields
            if fields is not None:
                if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
                    raise ConfigurationError(f"request_fields must be a dict of JSON fields, got {fields!r}")
                try:
                    json.dumps(fields)
                except (TypeError, ValueError) as exc:
                    raise ConfigurationError(f"request_fields must be JSON: {exc}") from None

    def first_message(self, settings: Any) -> Dict[str, Any]:
        """What every request carries besides its text."""
        preset = self.preset
        fields: Dict[str, Any] = dict(settings.request_fields or {}) if preset is CUSTOM else {}
        if preset.voice_field and settings.voice is not None:
            fields[preset.voice_field] = int(settings.voice) if preset.voice_is_number else settings.voice
        if preset.language_field and settings.language is not None:
            fields[preset.language_field] = settings.language
        return fields

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        preset = self.preset
        if preset.shell_quoted:  # "don't" would end the model's '…' and fail the request: a typographic one
            words = _apostrophes(words)
        key = settings.response_key or preset.response_key if preset is CUSTOM else preset.response_key
        return orpheus_http.Utterance(
            settings.url, settings.api_key, self.first_message(settings), words,
            handshake_timeout=settings.handshake_timeout, first_audio_timeout=settings.first_audio_timeout,
            read_timeout=settings.read_timeout,
            text_field=(settings.text_field or preset.text_field) if preset is CUSTOM else preset.text_field,
            unit_bytes=REQUEST_SECONDS * 2 * SAMPLE_RATE, answer=lambda body: decode_answer(body, key),
            max_answer=settings.max_message_size * 2, serves=f"a {preset.model or 'JSON-audio'} deployment")


def _apostrophes(words: Iterable[str]) -> Iterable[str]:
    replaced = (word.replace("'", "\u2019") for word in words)
    return list(replaced) if is_whole(words) else replaced


SPECS: List[JsonAudio] = [JsonAudio(preset) for preset in PRESETS + (CUSTOM,)]
__all__ = ["CUSTOM", "PRESETS", "SPECS", "Preset", "decode_answer"]
