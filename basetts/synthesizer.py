"""`Synthesizer`: the blocking API (synthesize, stream, save, speak) over one conversation per call."""
from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, Iterable, Iterator, List, Optional, Union

from . import protocol
from .audio import Audio, Stats
from .connection import Conversation, is_transient
from .errors import BasetenTTSError
from .session import Session
from .settings import Settings

log = logging.getLogger("basetts")

# A Retry-After longer than this is not waited out inside a blocking call: the error is raised instead.
MAX_RETRY_AFTER = 30.0

Text = Union[str, Iterable[str]]
"""A whole text, or fragments of it arriving over time (tokens from a language model)."""


def words_of(text: Text) -> Iterable[str]:
    """The words to send: a str is checked and split now; an iterable is split lazily as it yields."""
    if isinstance(text, str):
        return protocol.check_text(text).split()
    if isinstance(text, (bytes, bytearray, memoryview)) or not isinstance(text, Iterable):
        raise TypeError(f"text must be a str or an iterable of str, not {type(text).__name__}")
    return protocol.iter_words(text)


def open_conversation(settings: Settings, words: Iterable[str], stats: Stats) -> Conversation:
    """Connect, retrying transient failures (nothing has been sent or heard yet, so nothing repeats)."""
    for attempt in range(settings.retries + 1):
        conversation = Conversation(settings, words, stats=stats)
        try:
            return conversation.open()
        except BasetenTTSError as exc:
            retry_after = getattr(exc, "retry_after", None)
            if (attempt == settings.retries or not is_transient(exc)
                    or (retry_after is not None and retry_after > MAX_RETRY_AFTER)):
                raise
            if retry_after is not None:
                delay = retry_after
            else:  # exponential backoff with jitter, so many clients do not retry in step
                delay = settings.retry_backoff * 2 ** attempt * random.uniform(0.5, 1.0)
            log.info("retrying in %.2f s (attempt %d of %d): %s", delay, attempt + 2, settings.retries + 1, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")


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

    def __repr__(self) -> str:
        return f"Synthesizer(url={self.settings.url!r}, voice={self.settings.voice!r})"

    def stream(self, text: Text, **overrides: Any) -> Iterator[bytes]:
        """Yield 16-bit PCM chunks (whole samples) as they arrive. Breaking out early closes the connection.

        On failure the error's ``partial`` is empty: every chunk received was already yielded.
        """
        settings = self.settings.replace(**overrides)
        return self._stream(settings, words_of(text))

    def _stream(self, settings: Settings, words: Iterable[str]) -> Iterator[bytes]:
        with open_conversation(settings, words, Stats()) as conversation:
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
        received: List[bytes] = []
        with open_conversation(settings, words, stats) as conversation:
            try:
                received.extend(conversation.chunks())
            except BasetenTTSError as exc:
                exc.partial = Audio(b"".join(received), stats=stats)
                raise
        return Audio(b"".join(received), stats=stats)

    def session(self, **overrides: Any) -> "Session":
        """Speak text that arrives over time: ``with synth.session() as s: s.send("Hel"); s.send("lo")``."""
        return Session(self.settings.replace(**overrides))

    def save(self, text: Text, path: Union[str, "os.PathLike[str]"], **overrides: Any) -> Audio:
        """Synthesize and write a WAV file; returns the `Audio` too."""
        audio = self.synthesize(text, **overrides)
        audio.save(path)
        return audio
