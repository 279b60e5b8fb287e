"""XTTS v2 streaming (truss-examples xtts-streaming), sans-I/O: POST …/predict with {"text", "language"},
answered by raw 16-bit PCM at 24 kHz as the model makes it (truss streams the output of a generator as
application/octet-stream, chunked, no WAV header). The text goes in requests as Orpheus over HTTP cuts it
(`orpheus_http.prompts`: at most 280 characters, at sentence ends), on one kept-alive connection."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List

from ..errors import ConfigurationError
from . import orpheus_http
from .base import Conversing, Spec

if TYPE_CHECKING:
    from ..audio import Stats

LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "ja", "hu", "ko", "hi")
"""The languages XTTS v2 speaks (its `language` codes)."""
DEFAULT_LANGUAGE = "en"
SPEAKER = "Claribel Dervla"
"""The one built-in speaker the truss conditions every request on: it reads no voice from the request."""
REQUEST_SECONDS = 300
"""The most audio one request of at most 280 characters can honestly make (about a second a character)."""


class XTTSStreaming(Spec):
    """XTTS v2 streaming: POST …/predict with the text and its language, answered by streamed PCM."""

    name = "xtts-streaming"
    fields = ("language",)
    upgrades = False
    schemes = ("http", "https")
    spare_max_age = orpheus_http.SPEC.spare_max_age

    def voices(self) -> List[str]:
        return [f"Voices: none to choose: the model speaks as {SPEAKER}, its one built-in speaker"]

    def check(self, settings: Any) -> None:
        if settings.voice is not None:
            raise ConfigurationError(f"protocol='xtts-streaming' speaks with its one built-in speaker ({SPEAKER}): "
                                     "its model reads no voice from the request; leave voice unset")
        if settings.language is not None and settings.language not in LANGUAGES:
            raise ConfigurationError(f"language must be one of XTTS's {', '.join(LANGUAGES)}, "
                                     f"got {settings.language!r}")

    def first_message(self, settings: Any) -> Dict[str, Any]:
        """What every request carries besides its text."""
        return {"language": settings.language or DEFAULT_LANGUAGE}

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        return orpheus_http.Utterance(
            settings.url, settings.api_key, self.first_message(settings), words,
            handshake_timeout=settings.handshake_timeout, first_audio_timeout=settings.first_audio_timeout,
            read_timeout=settings.read_timeout, text_field="text", unit_bytes=REQUEST_SECONDS * 48000)


SPEC = XTTSStreaming()
__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "SPEAKER", "SPEC"]
