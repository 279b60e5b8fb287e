"""Retries before any audio: which failures are worth another try, how long to wait, and the opener of a
conversation that applies them."""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from ..audio import Stats
from ..errors import BasetenTTSError
from ..settings import Settings
from .conversation import Conversation
from .transport import BoundedSocket

log = logging.getLogger("basetts")

MAX_RETRY_AFTER = 30.0
"""A Retry-After longer than this is not waited out inside a blocking call: the error is raised instead."""


class Cancelled(Exception):
    """`stop()` came before the conversation was open: nothing more is sent."""


T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Worth another try before any audio: what the error itself says (`BasetenTTSError.retryable`)."""
    return isinstance(exc, BasetenTTSError) and exc.retryable


def retrying(settings: Settings, stats: Stats, attempt: Callable[[], T],
             cancel: Optional[threading.Event] = None, on_cancel: Optional[Callable[[], None]] = None,
             already: int = 0) -> T:
    """`attempt()` (a connection), retried on transient failures (nothing has been sent or heard yet, so
    nothing repeats), waiting as the server asked or with a jittered exponential backoff. Once `cancel` is
    set, raises `Cancelled` (after `on_cancel`) instead of trying or waiting. `already`: attempts made before."""
    for tried in range(already, settings.retries + 1):
        if cancel is not None and cancel.is_set():
            if on_cancel is not None:
                on_cancel()
            raise Cancelled()
        stats.attempts = tried + 1
        try:
            return attempt()
        except BasetenTTSError as exc:
            delay = retry_delay(settings, tried, exc)
            if delay is None:
                raise
            (cancel or threading.Event()).wait(delay)  # stop() ends the wait (and the call) at once
    raise AssertionError("unreachable")


def retry_delay(settings: Settings, tried: int, exc: BaseException) -> Optional[float]:
    """Seconds to wait before trying again after `tried` + 1 attempts failed with `exc` (as the server asked,
    else a jittered exponential backoff, so many clients do not retry in step); None: do not retry. Says so."""
    if not is_transient(exc) or tried >= settings.retries:
        return None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and retry_after > MAX_RETRY_AFTER:
        return None
    delay = retry_after if retry_after is not None else settings.retry_backoff * 2 ** tried * random.uniform(0.5, 1.0)
    # As the server asked: said where users see it (the CLI shows warnings), else only logged.
    log.log(logging.WARNING if retry_after is not None else logging.INFO,
            "retrying in %.2f s (attempt %d of %d): %s", delay, tried + 2, settings.retries + 1, exc)
    return float(delay)


def open_conversation(settings: Settings, words: Iterable[str], stats: Stats,
                      spare: Optional[BoundedSocket] = None,
                      cancel: Optional[threading.Event] = None, started: Optional[float] = None,
                      on_upgrade: Optional[Callable[[], object]] = None,
                      release: Optional[Callable[[Settings, BoundedSocket], None]] = None,
                      already: int = 0) -> Conversation:
    """Connect (on `spare` if given), retrying transient failures (`retrying`). Once `cancel` is set,
    raises `Cancelled` instead of connecting or waiting. `stats` count from `started` (default: now),
    retries and their waits included. `on_upgrade` runs while the server answers the upgrade, before any
    text is sent (see `Conversation`), once per attempt. `release` takes the connection back if the protocol may
    use it again (HTTP keep-alive: `Conversation`). `already`: attempts made before (`replaying`)."""
    if started is None:
        started = time.monotonic()
    offered = [spare]

    def attempt() -> Conversation:
        sock, offered[0] = offered[0], None  # the spare, for the first attempt only
        return Conversation(settings, words, stats=stats, sock=sock, started=started,
                            on_upgrade=on_upgrade, release=release).open()

    def drop_spare() -> None:
        if offered[0] is not None:
            offered[0].close()

    return retrying(settings, stats, attempt, cancel, drop_spare, already)


def replaying(open_: Callable[[int], Conversation], replayable: bool,
              cancel: Optional[threading.Event] = None) -> Iterator[bytes]:
    """The audio of the conversation `open_(attempts made)` opens. One that ends with a retryable error before
    any audio (a close 1012 "Service Restart" or 1013 "Try Again Later") is opened again while the retries
    last, if its words can be sent again whole (`replayable`: a whole text; nothing was spoken, so nothing
    repeats). A `cancel` set during the wait ends the audio there."""
    attempts = 0
    while True:
        conversation = open_(attempts)
        with conversation:
            try:
                yield from conversation.chunks()
                return
            except BasetenTTSError as exc:
                attempts = conversation.stats.attempts
                delay = None if conversation.stats.bytes_received or not replayable else retry_delay(
                    conversation.settings, attempts - 1, exc)
                if delay is None:
                    raise
        if (cancel or threading.Event()).wait(delay):
            return
