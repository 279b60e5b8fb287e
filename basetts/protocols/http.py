"""What an HTTP status means, for a websocket upgrade and for a POST alike: the `HandshakeError` of its kind
with advice that fits it, and the Retry-After it carries. Sans-I/O: the transport (a refused upgrade) and the
HTTP protocols (a refused request) both map statuses here, so a 401 reads the same whichever was refused."""
from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Dict, Optional

from ..errors import (
    AuthenticationError,
    BasetenTTSError,
    ModelNotFoundError,
    RedirectRefused,
    ServerUnavailable,
    UnexpectedResponse,
)

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
NO_PREDICT = "`predict` must only be called if model has it"
"""What truss says (in a 500) when a POST reaches the predict route of a model that has only a websocket."""
MODEL_FAILED = ("Internal Server Error (in model/chainlet)", "An internal server error occurred while processing")
"""What a 500 says when the model raised: truss's own word, and the Orpheus HTTP model's (its predict() catches)."""
UPGRADE = "the websocket upgrade"
REQUEST = "the request"


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """A Retry-After header in seconds from now: either form RFC 9110 allows (delay-seconds or an HTTP-date);
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP-date is always GMT: one without a zone is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(status: int, headers: Dict[str, str], url: str, refused: str = UPGRADE,
                 body: str = "") -> BasetenTTSError:
    """A refusal (`refused`: the upgrade or the request) as a `HandshakeError` of its kind. `headers` have
    lower-case names; `body` is the start of what the server said, quoted in the message when there is one."""
    retry_after = retry_after_seconds(headers.get("retry-after"))
    said = f' It said: "{body.strip()[:300]}".' if body.strip() else ""
    if status in REDIRECT_STATUSES:
        return RedirectRefused(
            f"The server redirected {refused} (HTTP {status}). basetts does not follow "
            "redirects, so your API key goes only to the URL you configured: check that URL.",
            status=status, headers=headers, retry_after=retry_after)
    if status in (401, 403):
        return AuthenticationError(
            f"The server refused the API key (HTTP {status}). Check BASETEN_API_KEY and that the key "
            "may call this model.", status=status, headers=headers, retry_after=retry_after)
    if status == 404:
        return ModelNotFoundError(
            f"Nothing at {url} (HTTP 404). Check the model id and environment.{said}", status=status,
            headers=headers, retry_after=retry_after)
    if refused == REQUEST and NO_PREDICT in body:
        return UnexpectedResponse(
            f"The deployment at {url} has no predict route: it serves a websocket (HTTP {status}: \"{NO_PREDICT}\"). "
            "Use its …/websocket URL, or its model id, with protocol='orpheus' (or 'qwen3' for Qwen3-TTS).",
            status=status, headers=headers, retry_after=retry_after)
    if refused == REQUEST and status == 500 and any(said_so in body for said_so in MODEL_FAILED):
        return ServerUnavailable(
            f"The model failed on the request (HTTP 500): the deployment's logs say why. A model that is not the "
            f"one protocol= names fails so on a request it cannot read: check protocol= (the README lists which "
            f"deployment speaks what).{said}", status=status, headers=headers, retry_after=retry_after)
    if status == 429 or status >= 500:
        verb = "the connection" if refused == UPGRADE else "the request"
        return ServerUnavailable(
            f"The server refused {verb} with HTTP {status}"
            + (" (overloaded)" if status in (429, 503) else "")
            + (f". It asks to retry after {retry_after:g} s" if retry_after is not None else ". Retry later")
            + f"; a deployment scaled to zero may be starting.{said}",
            status=status, headers=headers, retry_after=retry_after)
    if status == 407:
        advice = ("a proxy between you and the server wants credentials: put them in the proxy URL "
                  "(proxy='http://user:password@host:port', or HTTPS_PROXY)")
    elif refused != UPGRADE:
        advice = ("the deployment did not take the request: check that the URL is the model's predict "
                  "endpoint (…/predict) and that protocol= fits the model")
    elif 200 <= status < 300:
        advice = ("that is a web page, not a websocket: a captive portal (log in to the network) or a proxy "
                  "that does not pass websockets is in the way, or the URL is not the model's websocket")
    else:
        advice = ("the upgrade itself was refused: check that the URL is the model's websocket endpoint "
                  "(…/websocket) and that nothing in the way strips the upgrade")
    return UnexpectedResponse(f"The server answered {refused} with HTTP {status}: {advice}.{said}",
                              status=status, headers=headers, retry_after=retry_after)
