"""One exception hierarchy: every failure basetts raises is a `BasetenTTSError`."""
from __future__ import annotations

import builtins
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional

if TYPE_CHECKING:
    from .audio import Audio


def _unset() -> "Audio":
    raise AssertionError("basetts.audio sets errors.empty_audio when it is imported")


empty_audio: Callable[[], "Audio"] = _unset
"""Makes the empty `Audio` of an error with none: set by audio.py, a layer above (it raises these errors)."""


class BasetenTTSError(Exception):
    """Base of every basetts error. `partial` holds the audio received before the failure (empty
    `Audio` when none came), so ``exc.partial.pcm`` always works. `retryable`: whether the same call may
    succeed if tried again (what basetts's own retries read, before any audio)."""

    def __init__(self, message: str, *, partial: Optional["Audio"] = None) -> None:
        super().__init__(message)
        self.partial: "Audio" = partial if partial is not None else empty_audio()

    @property
    def retryable(self) -> bool:
        return False


class ConfigurationError(BasetenTTSError, ValueError):
    """Settings are missing or invalid; nothing was sent."""


class InvalidText(ConfigurationError):
    """The text cannot be spoken (empty, or not valid unicode); nothing was sent. Also a `ValueError`."""


class ArgumentTypeError(ConfigurationError, TypeError):
    """An argument of the wrong type (text that is not a str, an unknown setting); nothing was sent. Also a
    `TypeError`, as Python's own for a wrong argument."""


class ConnectError(BasetenTTSError):
    """The host could not be reached (DNS, refused, TLS)."""

    def __init__(self, message: str, *, transient: bool = False, partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.transient = transient

    @property
    def retryable(self) -> bool:
        return self.transient


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

    @property
    def retryable(self) -> bool:
        return self.status is not None and (self.status == 429 or self.status >= 500)


class HandshakeError(BasetenTTSError):
    """The server (or something in the way) answered the websocket upgrade with an HTTP status instead of
    101: `status`, its `headers` (lower-case names) and `retry_after` (seconds, from either form of the
    Retry-After header; None when absent)."""

    def __init__(
        self, message: str, *, status: int, headers: Optional[Mapping[str, str]] = None,
        retry_after: Optional[float] = None, partial: Optional["Audio"] = None,
    ) -> None:
        BasetenTTSError.__init__(self, message, partial=partial)
        self.status = status
        self.headers: Dict[str, str] = dict(headers or {})
        self.retry_after = retry_after


class AuthenticationError(HandshakeError):
    """401/403: the API key is missing, wrong, or not allowed to call this model."""


class ModelNotFoundError(HandshakeError):
    """404: no model, environment or deployment at that URL."""


class _RefusedByServer(HandshakeError, ServerError):  # type: ignore[misc]  # status: never None here
    """A refused upgrade that is also a `ServerError`, as such refusals were before they had classes."""

    def __init__(self, message: str, *, status: int, headers: Optional[Mapping[str, str]] = None,
                 retry_after: Optional[float] = None, partial: Optional["Audio"] = None) -> None:
        HandshakeError.__init__(self, message, status=status, headers=headers, retry_after=retry_after,
                                partial=partial)
        self.close_code = None


class ServerUnavailable(_RefusedByServer):
    """429 or 5xx at the upgrade: the deployment is overloaded, starting from zero, or failing. Retried
    before any audio (as long as its Retry-After is short); also a `ServerError`."""

    @property
    def retryable(self) -> bool:
        return True


class RedirectRefused(HandshakeError, ConnectError):
    """3xx: a redirect, never followed, so the key goes only to the URL configured. Also a `ConnectError`."""

    def __init__(self, message: str, *, status: int, headers: Optional[Mapping[str, str]] = None,
                 retry_after: Optional[float] = None, partial: Optional["Audio"] = None) -> None:
        HandshakeError.__init__(self, message, status=status, headers=headers, retry_after=retry_after,
                                partial=partial)
        self.transient = False


class UnexpectedResponse(_RefusedByServer):
    """Any other status: a 2xx page (a captive portal, a proxy that does not pass websockets), a 4xx refusal
    of the upgrade itself (400, 405, 407, 426). Not retried: trying again gets the same answer. Also a
    `ServerError`, as it was before it had a class of its own."""

    @property
    def retryable(self) -> bool:
        return False


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
    """A deadline passed. Also a built-in `TimeoutError`. The subclasses say which phase's: each is bounded
    by the setting of its name."""


class ConnectTimeout(TimeoutError):
    """No TCP connection (to the server or the proxy) within `connect_timeout`."""


class HandshakeTimeout(TimeoutError):
    """The proxy tunnel, TLS or the websocket upgrade took longer than `handshake_timeout` (a deployment
    starting from zero holds the upgrade: that is what the long default is for)."""


class FirstAudioTimeout(TimeoutError):
    """The server owed the first audio for `first_audio_timeout` without sending any."""


class ReadTimeout(TimeoutError):
    """After audio began, the server owed more (or an answer, or the rest of a frame) for `read_timeout`."""


class StreamInterrupted(BasetenTTSError):
    """The connection ended before the server's normal close: the audio is incomplete."""


class SessionEnded(BasetenTTSError, RuntimeError):
    """`send()` or `finish()` on a session that has ended: open a new one. Also a `RuntimeError`."""


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
