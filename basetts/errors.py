"""One exception hierarchy: every failure basetts raises is a `BasetenTTSError`."""
from __future__ import annotations

import builtins
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .audio import Audio


class BasetenTTSError(Exception):
    """Base of every basetts error. `partial` holds the audio received before the failure (empty
    `Audio` when none came), so ``exc.partial.pcm`` always works."""

    def __init__(self, message: str, *, partial: Optional["Audio"] = None) -> None:
        super().__init__(message)
        if partial is None:
            from .audio import Audio  # here: audio imports protocol, which imports this module

            partial = Audio()
        self.partial: "Audio" = partial


class ConfigurationError(BasetenTTSError, ValueError):
    """Settings are missing or invalid; nothing was sent."""


class ConnectError(BasetenTTSError):
    """The host could not be reached (DNS, refused, TLS)."""

    def __init__(self, message: str, *, transient: bool = False, partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.transient = transient


class HandshakeError(BasetenTTSError):
    """The server answered the websocket upgrade with an HTTP error status."""

    def __init__(
        self, message: str, *, status: int, retry_after: Optional[float] = None,
        partial: Optional["Audio"] = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.status = status
        self.retry_after = retry_after


class AuthenticationError(HandshakeError):
    """401/403: the API key is missing, wrong, or not allowed to call this model."""


class ModelNotFoundError(HandshakeError):
    """404: no model, environment or deployment at that URL."""


class ServerError(BasetenTTSError):
    """The server failed: 429/5xx at the handshake, or a close with an error code."""

    def __init__(
        self, message: str, *, status: Optional[int] = None, close_code: Optional[int] = None,
        retry_after: Optional[float] = None, partial: Optional["Audio"] = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.status = status
        self.close_code = close_code
        self.retry_after = retry_after


class SentenceError(ServerError):
    """Qwen3-TTS failed one sentence (an unknown voice, a bad language, the model): `index` and `text`
    say which, `server_message` what the server said; ``partial`` holds the audio before it."""

    def __init__(self, message: str, *, index: int, text: str, server_message: str,
                 partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.index = index
        self.text = text
        self.server_message = server_message


class VoiceError(BasetenTTSError):
    """Qwen3-TTS refused a voice request (a name already taken, a clip too short or too long, no
    consent, an unknown name); `server_message` is what it said."""

    def __init__(self, message: str, *, server_message: Optional[str] = None,
                 partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.server_message = server_message


class TimeoutError(BasetenTTSError, builtins.TimeoutError):
    """A connect, handshake or read deadline passed. Also a built-in `TimeoutError`."""


class StreamInterrupted(BasetenTTSError):
    """The connection ended before the server's normal close: the audio is incomplete."""


class AudioDeviceError(BasetenTTSError):
    """Playback is impossible here: no PyAudio/PortAudio, or no usable output device."""


class BasettsWarning(UserWarning):
    """Something to know that does not stop the call: an unknown voice, an encoding the server did not
    honour, a stream that ended mid-sample. Filter it with `warnings.filterwarnings`."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn(message: str) -> None:
    """Tell the user: `warnings.warn` with `BasettsWarning`, attributed to the user's line that led here
    (shown once per place by default), and the log."""
    level, frame = 1, sys._getframe(0)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, BasettsWarning, stacklevel=level)
    logging.getLogger("basetts").warning(message)
