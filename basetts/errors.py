"""One exception hierarchy: every failure basetts raises is a `BasetenTTSError`."""
from __future__ import annotations

import builtins
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from .audio import Audio


def _unset() -> "Audio":
    raise AssertionError("basetts.audio sets errors.empty_audio when it is imported")


empty_audio: Callable[[], "Audio"] = _unset
"""Makes the empty `Audio` of an error with none: set by audio.py, a layer above (it raises these errors)."""


_secrets: Tuple[str, ...] = ()
MIN_SECRET = 8
"""A key shorter than this (a test's "k") is not looked for: it would blank ordinary words."""
MAX_SECRETS = 64
REDACTED = "[redacted]"


def keep_secret(value: str) -> None:
    """Look for `value` (an API key in use) in everything a server says before it is shown, stored or logged."""
    global _secrets
    if len(value) >= MIN_SECRET and value not in _secrets:
        _secrets = (_secrets + (value,))[-MAX_SECRETS:]  # a new tuple: readers never see one half-changed


def redact(text: str) -> str:
    """`text` with every key in use replaced: a server may echo the request (its Authorization header) in a
    close reason, an error body or a header, and what it says reaches messages, traces and logs."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            record.msg, record.args = redact(message), ()
        return True


logging.getLogger("basetts").addFilter(_Redacting())

RETRY_CLOSE_CODES = (1012, 1013)
"""Close codes that ask the client to come back: "Service Restart" and "Try Again Later"."""
RECOVER_CLOSE_CODES = (1006, 1011, *RETRY_CLOSE_CODES)
"""Close codes after which a new connection may finish the text (`BasetenTTSError.recoverable`)."""


class BasetenTTSError(Exception):
    """Base of every basetts error. `partial` holds the audio received before the failure (empty
    `Audio` when none came), so ``exc.partial.pcm`` always works. `retryable`: whether the same call may
    succeed if tried again (what basetts's own retries read, before any audio). `recoverable`: whether the
    connection was lost in a way a new one may mend once audio has begun (what its recovery reads)."""

    def __init__(self, message: str, *, partial: Optional["Audio"] = None) -> None:
        super().__init__(redact(message))  # it may quote the server, and the server may echo the key
        self.partial: "Audio" = partial if partial is not None else empty_audio()

    @property
    def retryable(self) -> bool:
        return False

    @property
    def recoverable(self) -> bool:
        return False

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickled whole (to a worker process and back), though the subclasses' constructors take keywords."""
        state = dict(self.__dict__)
        if isinstance(self, OSError):  # fields of OSError's own, not in __dict__ (None: never set)
            fields = {"errno": self.errno, "strerror": self.strerror, "filename": self.filename}
            state.update({name: value for name, value in fields.items() if value is not None})
        return _restore, (type(self), self.args, state)


def _restore(cls: type, args: Tuple[Any, ...], state: Dict[str, Any]) -> BaseException:
    exc: BaseException = cls.__new__(cls, *args)
    exc.args = args
    for name, value in state.items():
        setattr(exc, name, value)
    return exc


class ConfigurationError(BasetenTTSError, ValueError):
    """Settings are missing or invalid; nothing was sent."""


class InvalidText(ConfigurationError):
    """The text cannot be spoken (empty, or not valid unicode); nothing was sent. Also a `ValueError`."""


class ArgumentTypeError(ConfigurationError, TypeError):
    """An argument of the wrong type (text that is not a str, an unknown setting); nothing was sent. Also a
    `TypeError`, as Python's own for a wrong argument."""


class ConnectError(BasetenTTSError):
    """The host could not be reached (DNS, refused, TLS). `unanswered`: an HTTP connection closed before the server
    answered the request sent on it (what a kept-alive connection the server closed meanwhile does)."""

    def __init__(self, message: str, *, transient: bool = False, unanswered: bool = False,
                 partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.transient = transient
        self.unanswered = unanswered

    @property
    def retryable(self) -> bool:
        return self.transient

    @property
    def recoverable(self) -> bool:
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
        """429/5xx, and a close with 1012 "Service Restart" or 1013 "Try Again Later" (RFC 6455 7.4.1)."""
        if self.close_code in RETRY_CLOSE_CODES:
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)

    @property
    def recoverable(self) -> bool:
        """A close that says the server (not the text) failed: 1011 (an error, uvicorn's keepalive timeout),
        1012, 1013, or 1006 from something in the way."""
        return self.close_code in RECOVER_CLOSE_CODES


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
        self.headers: Dict[str, str] = {name: redact(value) for name, value in (headers or {}).items()}
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
        self.server_message = redact(server_message)


class VoiceError(BasetenTTSError):
    """Qwen3-TTS refused a voice request (a name already taken, a clip too short or too long, no
    consent, an unknown name); `server_message` is what it said."""

    def __init__(self, message: str, *, server_message: Optional[str] = None,
                 partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self.server_message = None if server_message is None else redact(server_message)


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

    @property
    def recoverable(self) -> bool:
        return True


class StreamInterrupted(BasetenTTSError):
    """The connection ended before the server's normal close: the audio is incomplete. `recoverable` unless
    what ended it would end a new connection too (a server breaking the protocol) or was ours (a close).
    `unanswered`: it dropped before the server sent any message (audio or text: a replica gone, a proxy closing
    it), so the same call may succeed on a new connection (`retryable`)."""

    def __init__(self, message: str, *, recoverable: bool = True, unanswered: bool = False,
                 partial: Optional["Audio"] = None) -> None:
        super().__init__(message, partial=partial)
        self._recoverable = recoverable
        self.unanswered = unanswered

    @property
    def retryable(self) -> bool:
        return self.unanswered

    @property
    def recoverable(self) -> bool:
        return self._recoverable


class SessionEnded(BasetenTTSError, RuntimeError):
    """`send()` or `finish()` on a session that has ended: open a new one. Also a `RuntimeError`."""


class AudioDeviceError(BasetenTTSError):
    """Playback is impossible here: no PyAudio/PortAudio, or no usable output device."""


class OutputError(BasetenTTSError, OSError):
    """The audio could not be written to its file (a full disk, a file gone, the encoder failing): `path`, and
    the system's `errno` and `strerror` when it said why. Also an `OSError`. The file is left a valid file of
    what fitted in it, which ``partial`` holds (.wav and .pcm)."""

    def __init__(self, path: str, cause: BaseException, *, partial: Optional["Audio"] = None) -> None:
        why = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(f"Cannot write {path}: {why}", partial=partial)
        self.path = self.filename = path
        self.errno = getattr(cause, "errno", None)
        self.strerror = why

    def __str__(self) -> str:
        return str(self.args[0])  # OSError's own would be "[Errno 28] ...: 'path'" once errno is set


def attach_partial(exc: BaseException, partial: "Audio") -> None:
    """Give `exc` the audio received before it as ``.partial``: ours always carry it; another exception (the
    caller's text iterable or callback raised it) reaches the caller unchanged but for this attribute."""
    try:
        exc.partial = partial  # type: ignore[attr-defined]
    except AttributeError:
        pass  # an exception class with __slots__: it stays as it was


class BasettsWarning(UserWarning):
    """Something to know that does not stop the call: an unknown voice, an encoding the server did not
    honour, a stream that ended mid-sample. Filter it with `warnings.filterwarnings`."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn(message: str) -> None:
    """Tell the user: `warnings.warn` with `BasettsWarning`, attributed to the user's line that led here
    (shown once per place by default), and the log."""
    message = redact(message)
    level, frame = 1, sys._getframe(0)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, BasettsWarning, stacklevel=level)
    logging.getLogger("basetts").warning(message)
