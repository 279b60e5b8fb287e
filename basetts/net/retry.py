"""Retries before any audio (which failures are worth another try, how long to wait, and the opener of a
conversation that applies them), and the recovery of a connection lost after audio began (`replaying`)."""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Callable, Deque, Iterable, Iterator, List, Optional, Tuple, TypeVar

from ..audio import Stats
from ..errors import BasetenTTSError, ConnectError, StreamInterrupted, warn
from ..pcm import SAMPLE_RATE, SAMPLE_WIDTH
from ..settings import Settings
from ..text import is_whole
from ..trace import Trace
from .conversation import Conversation
from .spare import Ahead, PartAhead
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


def stale(exc: BaseException, preopened: bool) -> bool:
    """Whether `exc` is a connection opened earlier (kept alive, or connect()'s) that ended as the request (or the
    websocket's first messages) went out, unanswered. That says little of the server: the text goes again at once
    on a new one, as HTTP clients do with a pool's stale connection, neither waiting nor counted among the retries
    (a new connection that fails so is a failure: retried as any)."""
    if preopened and isinstance(exc, (ConnectError, StreamInterrupted)) and exc.unanswered:
        log.debug("the connection opened earlier was closed before the server answered: again on a new one")
        return True
    return False


def open_conversation(settings: Settings, words: Iterable[str], stats: Stats,
                      spare: Optional[BoundedSocket] = None,
                      cancel: Optional[threading.Event] = None, started: Optional[float] = None,
                      on_upgrade: Optional[Callable[[], object]] = None,
                      release: Optional[Callable[[Settings, BoundedSocket], None]] = None,
                      already: int = 0, resumed_at: int = 0) -> Conversation:
    """Connect (on `spare` if given), retrying transient failures (`retrying`). Once `cancel` is set,
    raises `Cancelled` instead of connecting or waiting. `stats` count from `started` (default: now),
    retries and their waits included. `on_upgrade` runs while the server answers the upgrade, before any
    text is sent (see `Conversation`), once per attempt. `release` takes the connection back if the protocol may
    use it again (HTTP keep-alive: `Conversation`). `already`: attempts made before (`replaying`); `resumed_at`: the
    audio made before, when `words` go on from a lost connection."""
    if started is None:
        started = time.monotonic()
    offered = [spare]

    def attempt() -> Conversation:
        sock, offered[0] = offered[0], None  # the spare, for the first attempt only
        try:
            return Conversation(settings, words, stats=stats, sock=sock, started=started,
                                on_upgrade=on_upgrade, release=release, resumed_at=resumed_at).open()
        except ConnectError as exc:
            if not stale(exc, sock is not None):
                raise
        return Conversation(settings, words, stats=stats, sock=None, started=started,
                            on_upgrade=on_upgrade, release=release, resumed_at=resumed_at).open()

    def drop_spare() -> None:
        if offered[0] is not None:
            offered[0].close()

    return retrying(settings, stats, attempt, cancel, drop_spare, already)


class Kept:
    """Words of text arriving over time (an iterable), kept from where the text may resume on (`forget`), so
    that a new connection can send them again (`since`). One thread at a time takes from the iterable: a
    conversation given up may still be waiting in it, and what it takes is kept for the next."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words = words
        self._source: Optional[Iterator[str]] = None
        self._kept: List[str] = []
        self._first = 0  # the index of _kept[0] among the text's words
        self._lock = threading.Lock()  # the list: held for a list operation only
        self._pulling = threading.Lock()  # the iterable: held while it is asked for a word (it may wait)
        self._keeping = True

    def since(self, start: int) -> "_Since":
        """The text's words from the `start`th on: those kept, then the iterable's."""
        return _Since(self, start)

    def forget(self, before: int) -> None:
        """The words before the `before`th will not be sent again."""
        with self._lock:
            if before > self._first:
                del self._kept[:before - self._first]
                self._first = before

    @property
    def keeping(self) -> bool:
        """Whether words are kept to be sent again (not after `forget_all`)."""
        return self._keeping

    def forget_all(self) -> None:
        """Nothing will be sent again (no recovery is possible): keep no word from now on."""
        with self._lock:
            self._keeping = False
            self._first += len(self._kept)
            self._kept.clear()

    def _word(self, index: int) -> Optional[str]:
        kept = self._at(index)
        if kept is not None:
            return kept
        with self._pulling:  # one thread in the iterable at a time, and `forget` never waits for it
            kept = self._at(index)  # another thread took it meanwhile
            if kept is not None:
                return kept
            if self._source is None:
                self._source = iter(self._words)
            word = next(self._source, None)
            if word is not None:
                with self._lock:
                    if self._keeping:
                        self._kept.append(word)
                    else:
                        self._first += 1
            return word

    def _at(self, index: int) -> Optional[str]:
        with self._lock:
            at = index - self._first
            return self._kept[at] if 0 <= at < len(self._kept) else None


class _Since:
    """An iterable of the kept text's words from one on; a session's feed's `ends_on_close` shows through."""

    def __init__(self, kept: Kept, start: int) -> None:
        self._kept, self._start = kept, start
        self.ends_on_close = getattr(kept._words, "ends_on_close", False)

    def __iter__(self) -> Iterator[str]:
        index = self._start
        while True:
            word = self._kept._word(index)
            if word is None:
                return
            index += 1
            yield word


Opener = Callable[[int, Iterable[str], int, Optional[BoundedSocket]], Conversation]
"""Opens the conversation of `words` (attempts made before, the words, the audio made before them, and a
connection opened for it, or None)."""

DROPS_WINDOW = 10.0
"""Seconds: this many connections lost within it (`MAX_DROPS`) mean a server that drops at once: no recovery."""
MAX_DROPS = 3


def replaying(open_: Opener, words: Iterable[str], cancel: Optional[threading.Event] = None,
              take_back: Optional[Callable[[int], int]] = None, first: Optional[Conversation] = None
              ) -> Iterator[bytes]:
    """The audio of `words`, over as many conversations as it takes (`open_`).

    Before any audio, one that ends with a retryable error (a close 1012 "Service Restart" or 1013 "Try Again
    Later", a drop before any message) is opened again while the retries last, if its words can be sent again
    (a whole text, or text arriving over time while its words are kept).
    After audio began, a connection lost (`BasetenTTSError.recoverable`) is recovered, `recoveries` times at
    most: the text goes on, on a new connection, after the last unit whose audio came whole (the protocol's
    `resume_point`), and the audio after that point is taken back from the caller (`take_back(count)` says how
    much it could: what it could not is heard again, and said; a protocol that knows no units resumes only
    when everything can be taken back). A text's next part (`Conversing.continues`) gets its connection opened
    while the current part is heard (`Ahead`), and so does a recovery that comes first; a whole text's next part
    is begun on it too (`PartAhead`), and waits while a recovery makes the current part again (which ends where it
    begins: the server speaks no word twice). A `cancel` set meanwhile
    ends the audio there. `first`: the first conversation, opened already on `words` (a `Kept`'s, for text
    arriving over time: `Session`)."""
    whole = is_whole(words)
    kept = words._kept if isinstance(words, _Since) else None if whole else Kept(words)
    offset = 0  # where the current conversation's words begin among the text's
    if kept is not None and not isinstance(words, _Since):
        words = kept.since(0)
    attempts = 0
    delivered = 0  # bytes of audio the caller holds
    began_at = 0  # where the current conversation's audio begins among them
    lost: Optional[BasetenTTSError] = None  # the loss being recovered from
    lost_at = 0.0
    drops: Deque[float] = collections.deque(maxlen=MAX_DROPS)
    stats: Optional[Stats] = None
    part = False  # the conversation to open carries the next part of the text (`Conversing.continues`)
    ahead: Optional[Ahead] = None  # the next part's connection (a whole text's: its conversation), being opened
    delay: Optional[float] = 0.0
    forgiven = False  # a stale connection's failure was not counted (`stale`)
    try:
        while True:
            conversation, ahead = _next(open_, words, attempts, began_at, stats, lost, part, first, ahead, offset)
            first = None
            settings, stats = conversation.settings, conversation.stats
            if kept is not None and (settings.recoveries == 0 or (not conversation.resumable and take_back is None)):
                kept.forget_all()  # no recovery, or no unit to resume at and nothing to take back
            with conversation:
                try:
                    for chunk in conversation.chunks():
                        if lost is not None:
                            stats.recovery_time += time.monotonic() - lost_at
                            lost = None
                        if kept is not None:
                            kept.forget(offset + conversation.resume_point[0])
                        if ahead is None and conversation.continues:
                            ahead = _ahead(conversation, words, offset, stats)  # the part's text is all sent
                        delivered += len(chunk)
                        yield chunk
                    if not conversation.continues:
                        return
                    done_words = conversation.resume_point[0]
                    offset += done_words
                    words = list(words)[done_words:] if kept is None else kept.since(offset)
                    began_at, part, delay = delivered, True, 0.0
                except BasetenTTSError as exc:
                    attempts = stats.attempts
                    if cancel is not None and cancel.is_set():
                        raise
                    if not conversation.audio_out and lost is None and not part:
                        # Nothing heard: a whole text goes again as it is; text arriving over time, from what was
                        # kept of it (all of it: nothing is forgotten before audio), unless nothing is kept.
                        again = whole or (kept is not None and kept.keeping)
                        if again and not forgiven and stale(exc, conversation.preopened):
                            # Once a call (the next may take another kept-alive connection, as stale): not counted,
                            # the next attempt has its number.
                            attempts, delay, forgiven = attempts - 1, 0.0, True
                        else:
                            delay = retry_delay(settings, attempts - 1, exc) if again else None
                        if delay is None:
                            raise
                        if kept is not None:
                            words = kept.since(offset)
                    else:
                        part = False
                        resume = _resumption(conversation, exc, drops, delivered - began_at, take_back)
                        if resume is None:
                            raise
                        (done_words, _), taken = resume
                        delivered -= taken
                        offset += done_words
                        words = list(words)[done_words:] if kept is None else kept.since(offset)
                        began_at = delivered
                        if lost is None:
                            lost, lost_at = exc, time.monotonic()
                        stats.recoveries += 1
                        delay = backoff(settings, stats.recoveries)
                        trace_recovery(settings, exc, offset, delivered, taken, conversation.trace)
            if delay and (cancel or threading.Event()).wait(delay):
                return
            if cancel is not None and cancel.is_set():
                return
    finally:
        if ahead is not None:
            ahead.close()


def _ahead(conversation: Conversation, words: Iterable[str], offset: int, stats: Stats) -> Ahead:
    """The next part's connection, opened now that the current part's text is all sent; a whole text's next part
    is begun on it (`PartAhead`): it can be cut from the text at once. `offset`: where the current part begins."""
    through = conversation.part_words
    if not is_whole(words) or through is None:
        return Ahead(conversation.settings)
    return PartAhead(conversation.settings, list(words)[through:], offset + through, stats, conversation.started)


def _next(open_: Opener, words: Iterable[str], attempts: int, began_at: int, stats: Optional[Stats],
          lost: Optional[BasetenTTSError], part: bool, first: Optional[Conversation], ahead: Optional[Ahead],
          offset: int) -> Tuple[Conversation, Optional[Ahead]]:
    """The next conversation of `replaying`: after a loss, a part's end, or the first (given, or opened now); on
    the connection opened ahead, if there is one, or the part begun on it (`offset`: where it must begin). With
    it, the part begun ahead that still waits: after a loss, for the current part made again."""
    if isinstance(ahead, PartAhead):
        if lost is not None and stats is not None:
            return _reopen(open_, words, began_at, stats, f"{lost} A new connection to finish it failed"), ahead
        begun = ahead.take_part(offset, began_at) if part else None
        if begun is not None:
            return begun, None
        ahead.close()  # it failed, or begins elsewhere: the part opens its own connection
        ahead = None
    spare = ahead.take() if ahead is not None else None
    if lost is not None and stats is not None:
        return _reopen(open_, words, began_at, stats, f"{lost} A new connection to finish it failed", spare=spare), None
    if part and stats is not None:
        return _reopen(open_, words, began_at, stats, "A new connection for the rest of the text failed (a long "
                       "text goes on several, one after another)", count=False, spare=spare), None
    if first is not None:
        if spare is not None:
            spare.close()
        return first, None
    return open_(attempts, words, 0, spare), None


def _reopen(open_: Opener, words: Iterable[str], began_at: int, stats: Stats, failed: str, count: bool = True,
            spare: Optional[BoundedSocket] = None) -> Conversation:
    """The conversation that goes on after a loss or a part, with the retries of a new call (its attempts add to
    the call's, its first too if `count`); a refusal ends the call: StreamInterrupted, `failed` and why."""
    before = stats.attempts - (not count)
    try:
        return open_(0, words, began_at, spare)
    except BasetenTTSError as exc:
        raise StreamInterrupted(f"{failed}: {exc}") from exc
    finally:
        stats.attempts += before


def _resumption(conversation: Conversation, exc: BasetenTTSError, drops: Deque[float], held: int,
                take_back: Optional[Callable[[int], int]]) -> Optional[Tuple[Tuple[int, int], int]]:
    """Whether and where the lost `conversation` resumes: ((words, bytes) of it done, bytes taken back from
    the caller, who holds `held` bytes of its audio), or None when the call ends with `exc`."""
    done = conversation.resume_point
    taken = recovery(conversation.settings, conversation.stats, exc, drops, conversation.resumable, done[1], held,
                     take_back)
    return None if taken is None else (done, taken)


def recovery(settings: Settings, stats: Stats, exc: BasetenTTSError, drops: Deque[float], resumable: bool,
             done: int, held: int, take_back: Optional[Callable[[int], int]]) -> Optional[int]:
    """The rule of recovery, for every driver: whether a connection lost with `exc` is recovered, when the
    caller holds `held` bytes of its audio of which `done` end its last unit done; the bytes `take_back` took
    back after those, or None (the call ends with `exc`)."""
    if not exc.recoverable or settings.recoveries == 0:
        return None
    if stats.recoveries >= settings.recoveries:
        warn(f"the connection was lost again after {settings.recoveries} recoveries (recoveries="
             f"{settings.recoveries}): giving up; the error carries the audio so far")
        return None
    now = time.monotonic()
    drops.append(now)
    if len(drops) == MAX_DROPS and now - drops[0] < DROPS_WINDOW:
        warn(f"the server dropped {MAX_DROPS} connections within {DROPS_WINDOW:g} s: not trying again")
        return None
    excess = held - done
    taken = take_back(excess) if take_back is not None and excess > 0 else 0
    if taken < excess:
        if not resumable:
            return None  # it knows no units: only the whole of it, taken back, can be made again
        warn(f"the connection was lost mid-sentence; {(excess - taken) / (SAMPLE_RATE * SAMPLE_WIDTH):.2f} s "
             "already handed on are heard again from the start of that sentence (or part of a long text)")
    return taken


def backoff(settings: Settings, recoveries: int) -> float:
    """Seconds before the connection of the `recoveries`th recovery: none for the first (a blip is mended at
    once), then the retries' backoff, doubled each time."""
    return 0.0 if recoveries <= 1 else settings.retry_backoff * 2 ** (recoveries - 2)


def trace_recovery(settings: Settings, exc: BasetenTTSError, words: int, at: int, taken: int,
                   trace: Optional[Trace] = None) -> None:
    """Says a recovery: an INFO line, and a `recovery` event in the trace, among the lost conversation's lines
    (`trace`: its own, or the settings' file under its number once it is closed)."""
    log.info("connection lost (%s); resuming after %d word(s), %.1f s of audio, on a new one",
             exc, words, at / (SAMPLE_RATE * SAMPLE_WIDTH))
    if trace is not None and trace.on:
        trace.event("recovery", error=str(exc), kind=type(exc).__name__, words_done=words, audio_bytes=at,
                    taken_back=taken)
        return
    trace = Trace.open(settings, None if trace is None else trace.number)
    try:
        trace.event("recovery", error=str(exc), kind=type(exc).__name__, words_done=words, audio_bytes=at,
                    taken_back=taken)
    finally:
        trace.close()
