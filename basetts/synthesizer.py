"""`Synthesizer`: the blocking API (synthesize, stream, save, speak) over one conversation per call."""
from __future__ import annotations

import io
import os
import threading
from typing import Any, Iterable, Iterator, Optional, Union

from . import protocol
from .audio import Audio, Stats
from .connection import Conversation, Spare
from .errors import BasetenTTSError
from .settings import Settings

Text = Union[str, Iterable[str]]
"""A whole text, or fragments of it arriving over time (tokens from a language model)."""


def words_of(text: Text) -> Iterable[str]:
    """The words to send: a str is checked and split now; an iterable is split lazily as it yields."""
    if isinstance(text, str):
        return protocol.check_text(text).split()
    if isinstance(text, (bytes, bytearray, memoryview)) or not isinstance(text, Iterable):
        raise TypeError(f"text must be a str or an iterable of str, not {type(text).__name__}")
    return protocol.iter_words(text)


class Synthesizer:
    """Text to speech over Baseten's streaming websocket. Thread-safe: each call is its own connection.

    Settings resolve from arguments, then the environment (``BASETEN_API_KEY``, ``BASETEN_MODEL_ID``,
    ``BASETTS_URL``), then ``.env``. Any setting can also be overridden per call.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        model_id: Optional[str] = None,
        environment: str = "production",
        url: Optional[str] = None,
        voice: str = "tara",
        max_tokens: int = 2000,
        buffer_size: int = 10,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.settings = Settings.resolve(
            api_key, model_id, environment, url, voice=voice, max_tokens=max_tokens,
            buffer_size=buffer_size, connect_timeout=connect_timeout, read_timeout=read_timeout, **options)
        self._spare: Optional[Spare] = None
        self._spare_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Synthesizer(url={self.settings.url!r}, voice={self.settings.voice!r})"

    def connect(self) -> None:
        """Open a connection now, so the next call skips the TCP, TLS and websocket handshakes.

        The server takes one utterance per connection, so this keeps one spare: the next call uses
        it (if fresher than 15 s; else it connects as usual). Call again after each call to stay ready.
        """
        spare = Spare(self.settings)
        with self._spare_lock:
            old, self._spare = self._spare, spare
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the spare connection, if any. Calls made after this still work (they connect)."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()

    def __enter__(self) -> "Synthesizer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take_spare(self, settings: Settings) -> Any:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        return spare.take(settings) if spare is not None else None

    def stream(self, text: Text, **overrides: Any) -> Iterator[bytes]:
        """Yield 16-bit PCM chunks (whole samples) as they arrive. Breaking out early closes the connection.

        On failure the error's ``partial`` is empty: every chunk received was already yielded.
        """
        settings = self.settings.replace(**overrides)
        return self._stream(settings, words_of(text))

    def _stream(self, settings: Settings, words: Iterable[str]) -> Iterator[bytes]:
        with Conversation(settings, words, ws=self._take_spare(settings)) as conversation:
            try:
                yield from conversation.chunks()
            except BasetenTTSError as exc:
                exc.partial = Audio(b"", stats=conversation.stats)
                raise

    def synthesize(self, text: Text, **overrides: Any) -> Audio:
        """The whole utterance as `Audio`, once the server has closed the stream."""
        settings = self.settings.replace(**overrides)
        words = words_of(text)
        stats = Stats()
        # BytesIO, not a list joined at the end: getvalue() hands over its buffer without a copy, so the
        # peak is the PCM once, not twice (docs/performance.md).
        received = io.BytesIO()
        with Conversation(settings, words, stats=stats, ws=self._take_spare(settings)) as conversation:
            try:
                for chunk in conversation.chunks():
                    received.write(chunk)
            except BasetenTTSError as exc:
                exc.partial = Audio(received.getvalue(), stats=stats)
                raise
        return Audio(received.getvalue(), stats=stats)

    def save(self, text: Text, path: Union[str, "os.PathLike[str]"], **overrides: Any) -> Audio:
        """Synthesize and write a WAV file; returns the `Audio` too."""
        audio = self.synthesize(text, **overrides)
        audio.save(path)
        return audio
