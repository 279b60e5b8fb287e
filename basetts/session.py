"""`Session`: text that arrives over time (tokens from a language model) spoken on one connection."""
from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional

from .audio import Audio, Stats
from .errors import SessionEnded, attach_partial, warn
from .net.conversation import Conversation
from .net.retry import Kept, open_conversation, replaying
from .net.transport import BoundedSocket
from .settings import Settings
from .text import WordSplitter

if TYPE_CHECKING:
    from .net.transport import BoundedSocket
    from .playback import Playback, Player

# Seconds an iteration waits with nothing arriving, in the thread that sends and has not ended the session,
# before it warns that nothing will end the wait.
SELF_WAIT = 5.0

_DONE = object()
_ABANDONED = object()  # the session was closed or garbage-collected: the word feed stops


class _Aborted(Exception):
    """Raised inside the word feed so the writer stops without sending the sentinel."""


class Session:
    """Send fragments with `send()`; leaving the ``with`` block sends the end and waits for the audio.

    Fragments may split words anywhere: whole words go out as soon as they are known complete, and a
    trailing partial word waits for the next fragment. Audio collects in `audio` and can be iterated
    while it arrives; with a `player` (``session(play=True)``) each chunk is also played, and `finish()`
    returns once the last sample has been heard; `playback` pauses, resumes and stops it. Leaving the
    block by an exception, `abort()` or a stop (`playback.stop()`, `Synthesizer.stop()`) sends nothing
    more, closes the connection and keeps the audio: `audio` is then what was heard, `received` all that
    arrived; `send()` after a stop is ignored and `finish()` returns `audio`. Without ``with``, the first
    `send()` connects and `finish()` ends the session.
    """

    def __init__(self, settings: Settings, player: Optional["Player"] = None,
                 take_spare: Optional[Callable[[Settings], Optional["BoundedSocket"]]] = None,
                 on_audio: Optional[Callable[[bytes], None]] = None,
                 release: Optional[Callable[[Settings, "BoundedSocket"], None]] = None) -> None:
        """`take_spare`: gives the connection opened ahead by `Synthesizer.connect()`, if any, at open;
        `release` takes it back at the end when the protocol keeps it alive (HTTP).
        `on_audio(chunk)` runs in the session's receiver thread with each chunk as it arrives."""
        from .playback import Playback

        self.settings = settings
        self.stats = Stats()
        self._player = player
        self._take_spare = take_spare
        self._release = release
        self._on_audio = on_audio
        self._stopped = False  # stop(): send() is ignored from then on
        self._ended_by_user = False  # abort() or stop(): not an error; finish() returns the audio
        self._splitter = WordSplitter(settings.text_format)
        self._given: List[str] = []  # the fragments sent: `text`
        self._words: "queue.Queue[object]" = queue.Queue()
        self._aborted = threading.Event()
        self._chunks: List[bytes] = []
        self._changed = threading.Condition()
        self._ended = False
        self._finishing = False
        self._sender: Optional[int] = None  # the thread that last sent: iterating there cannot end the wait
        self._error: Optional[BaseException] = None
        self._conversation: Optional[Conversation] = None
        self._current: List[Conversation] = []  # the conversation now open (another after a recovery)
        self._handed = [0]  # chunks handed out by iteration: a recovery cannot take those back
        self._receiver: Optional[threading.Thread] = None
        self._closer: Optional[Any] = None  # weakref.finalize: closes everything, once
        self._closing = threading.RLock()  # held while closing (re-entered if a stop comes from within)
        self.playback: Optional["Playback"] = None
        """With ``play=True``: pause, resume, stop, wait, position, heard."""
        if player is not None:
            ref = weakref.ref(self)  # the finalizer holds the playback: it must not hold the session

            def abort() -> None:
                session = ref()
                if session is not None:
                    session.stop()

            self.playback = Playback(player, self.stats, chunks=self._chunks, on_stop=abort)

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> "Session":
        """Connect (``with`` does this; so does the first `send()` or `finish()`)."""

        if self._conversation is not None:
            return self
        if self._finishing or self._aborted.is_set():
            raise SessionEnded("this session has ended; open a new one")
        settings, stats, release, current = self.settings, self.stats, self._release, self._current
        feed = Kept(_Feed(self._words, self._aborted)).since(0)
        started = time.monotonic()  # the stats count from here on every connection
        try:
            spare = self._take_spare(settings) if self._take_spare is not None else None
            # The device opens while the server answers the upgrade (see speak()); no sound card: an
            # AudioDeviceError before any text is sent.
            self._conversation = open_conversation(
                settings, feed, stats, spare, on_upgrade=self._player.open if self._player is not None else None,
                release=release, started=started)
        except BaseException:
            self._aborted.set()  # a session that could not open is over: the next send() says so
            self._close()
            raise
        current.append(self._conversation)

        def reopen(tried: int, words: Iterable[str], resumed_at: int, spare: Optional[BoundedSocket]
                   ) -> Conversation:
            """After a lost connection (`replaying`): the text goes on on a new one (`spare`, if opened ahead)."""
            conversation = open_conversation(settings, words, stats, spare, already=tried, release=release,
                                             resumed_at=resumed_at, started=started)
            current[:] = [conversation]
            return conversation

        take_back = _taker(self.playback, self._changed, self._chunks, self._handed)
        chunks = replaying(reopen, feed, self._aborted, take_back, first=self._conversation)
        # The threads hold no reference to this Session, so one that is dropped unfinished (no `with`,
        # no finish()) is garbage-collected, and the finalizer closes its connection and threads.
        self._receiver = threading.Thread(
            target=_receive, args=(weakref.ref(self), chunks, self._player, self._on_audio),
            name="basetts-session", daemon=True)
        self._closer = weakref.finalize(self, _close, self._words, self._player, current, self._receiver,
                                        self.playback, self._aborted)
        self._closer.atexit = False  # at exit the process lets go of it all; joining could only delay the exit
        self._receiver.start()
        return self

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def send(self, fragment: str) -> None:
        """Queue text; never blocks on the network. Ignored once the session was stopped. Once the connection
        has failed, raises its error (with ``.partial``) and closes the session, instead of queueing text
        nobody will read."""
        if self._stopped:
            return
        if self._finishing or self._aborted.is_set():
            raise SessionEnded("this session has ended; open a new one")
        try:
            self._raise_failure()
        except BaseException:
            self._close()  # the session is over: its threads and connection go now, not at finish()
            raise
        words = self._splitter.feed(fragment)  # checks the fragment before anything is opened
        self._sender = threading.get_ident()
        self._given.append(fragment)
        self.open()
        for word in words:
            self._words.put(word)

    def finish(self) -> Audio:
        """Send the held-back word and the end, wait for the rest of the audio, close; `audio`. Raises on
        failure; after a stop (`abort()`, `playback.stop()`) returns what was heard."""
        if self._ended_by_user:
            self._close()
            return self.audio
        if not self._finishing:
            self.open()  # a session that was never sent anything still ends as the protocol wants
            self._finishing = True
            for word in self._splitter.finish():
                self._words.put(word)
            self._words.put(_DONE)
        try:
            self._wait_receiver()
            if self._player is not None:
                self._player.drain()  # what arrived is played, even when the stream then failed
        finally:
            self._close()
        self._raise_failure()
        return self.audio

    def _raise_failure(self) -> None:
        """The error that ended the stream, with the audio so far (none after a stop, which is no error)."""
        with self._changed:
            error = self._error if self._ended and not self._ended_by_user else None
        if error is not None:
            attach_partial(error, self.audio)  # ours, or an exception from on_audio
            raise error

    def abort(self) -> None:
        """Stop now, from any thread: the sound fades out, nothing more is sent, the connection closes;
        `audio` keeps what was heard (or received, without playback). `send()` then raises."""
        self._ended_by_user = True
        self._aborted.set()
        self._close()

    def stop(self) -> None:
        """Like `abort()`, for a stop from elsewhere (`Synthesizer.stop()`, `playback.stop()`, barge-in):
        the text still being sent is ignored, so the producer's loop needs no change."""
        self._stopped = True
        self.abort()

    @property
    def stopped(self) -> bool:
        """`stop()` was called (or the playback was stopped)."""
        return self._stopped

    # audio -----------------------------------------------------------------------------------------
    @property
    def audio(self) -> Audio:
        """The audio received so far; once playback was stopped (or Ctrl+C came), what was heard."""
        if self.playback is not None and self.playback.stopped:
            with self._changed:
                return self.playback.heard
        return self.received

    @property
    def text(self) -> str:
        """Everything sent so far, as you gave it: the words' spans (`Word.span`) index it."""
        return "".join(self._given)

    @property
    def heard_text(self) -> Optional[str]:
        """The part of `text` said in `audio` (what was heard, after a stop): up to the end of its last word
        heard whole, as you wrote it. Needs word times (Qwen3-TTS with ``word_timestamps=True``): None without."""
        if not self.stats.timeline.words:
            return None
        ends = [word.span[1] for word in self.audio.words if word.span is not None]
        return self.text[:max(ends)] if ends else ""

    @property
    def received(self) -> Audio:
        """All the audio that arrived, heard or not."""
        with self._changed:
            return Audio(b"".join(self._chunks), stats=self.stats)

    def __iter__(self) -> Iterator[bytes]:
        """Chunks as they arrive (from the first), until the end of the stream: the session's end, so iterate
        from another thread than the one sending, or after `finish()`."""
        index = 0
        warned = False
        while True:
            with self._changed:
                since = time.monotonic()
                while index >= len(self._chunks) and not self._ended:
                    self._changed.wait(0.1)
                    if (not warned and not self._finishing and self._sender == threading.get_ident()
                            and time.monotonic() - since > SELF_WAIT):
                        warned = True
                        warn("iterating a session waits for the session's end, and this thread sends its text "
                             "and has not ended it: call finish() (or leave the with block) before iterating, "
                             "iterate from another thread, or give the text to synth.stream(tokens)")
                if index >= len(self._chunks):
                    if self._error is not None and not self._aborted.is_set():
                        raise self._error
                    return
                chunk = self._chunks[index]
                self._handed[0] = max(self._handed[0], index + 1)
            index += 1
            yield chunk

    # internals -------------------------------------------------------------------------------------
    def _wait_receiver(self) -> None:
        receiver = self._receiver
        while receiver is not None and receiver.is_alive():
            receiver.join(0.1)  # short joins keep Ctrl+C responsive

    def _close(self) -> None:
        """Close everything, once; a second caller (finish() while a stop from another thread closes) returns
        only when the first is done, so what it then reads (`audio`: the fade-out heard) is final."""
        with self._closing:
            if self._closer is not None:
                self._closer()  # once: a finalizer runs at most once, here or when the session is collected
            else:
                _close(self._words, self._player, [], None, self.playback)


class _Feed:
    """The session's words as an iterable the writer reads. `ends_on_close`: closing the session puts an item in
    the queue that ends the feed at once, so a close may wait for the writer (unlike a caller's iterable)."""

    ends_on_close = True

    def __init__(self, words: "queue.Queue[object]", aborted: threading.Event) -> None:
        self._words, self._aborted = words, aborted

    def __iter__(self) -> Iterator[str]:
        return _feed(self._words, self._aborted)


def _feed(words: "queue.Queue[object]", aborted: threading.Event) -> Iterator[str]:
    """The words for the writer thread, as send() queues them. Waits on the queue: abort() and close
    put an item in it, so a wait ends at once, and the timeout only bounds the worst case."""
    while True:
        try:
            item = words.get(timeout=1.0)
        except queue.Empty:
            item = None
        if aborted.is_set() or item is _ABANDONED:
            raise _Aborted()
        if item is _DONE:
            return
        if isinstance(item, str):
            yield item


def _taker(playback: Optional["Playback"], changed: threading.Condition, chunks: List[bytes], handed: List[int]
           ) -> Callable[[int], int]:
    """What a recovery may take back of a session's audio (`replaying`): what its player has not played yet, or
    without one, what no iteration has handed out yet."""
    def take_back(count: int) -> int:
        with changed:
            if playback is not None:
                return playback.take_back(count)
            taken = 0
            while taken < count and len(chunks) > handed[0]:
                last = chunks.pop()
                if len(last) > count - taken:
                    chunks.append(last[:len(last) - (count - taken)])
                taken += min(len(last), count - taken)
            return taken

    return take_back


def _receive(ref: "weakref.ref[Session]", chunks: Iterator[bytes], player: Optional["Player"],
             on_audio: Optional[Callable[[bytes], None]]) -> None:
    """The receiver thread: chunks into the session (while it exists), `on_audio` and the player."""
    error: Optional[BaseException] = None
    try:
        for chunk in chunks:
            session = ref()
            if session is None:
                return  # dropped unfinished: its finalizer closes everything
            with session._changed:
                session._chunks.append(chunk)
                session._changed.notify_all()
            del session  # hold it no longer than needed: the user may drop it meanwhile
            if on_audio is not None:
                on_audio(chunk)
            if player is not None:
                player.feed(chunk)  # waits while the player's buffer is full: back-pressure
    except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish() or iteration
        error = exc
    finally:
        session = ref()
        if session is not None:
            with session._changed:
                if error is not None:
                    session._error = error
                session._ended = True
                session._changed.notify_all()


def _close(words: "queue.Queue[object]", player: Optional["Player"], current: List[Conversation],
           receiver: Optional[threading.Thread], playback: Optional["Playback"] = None,
           aborted: Optional[threading.Event] = None) -> None:
    """Stop the word feed, silence the player, close the connection, join the receiver, close the player."""
    words.put(_ABANDONED)  # the writer's wait for a word ends now (after _DONE it is never read)
    if player is not None:
        player.stop()  # silence first (Ctrl+C, an exception): closing may wait on threads
    if aborted is not None and receiver is not None and receiver.is_alive():
        aborted.set()  # closed before its end: a connection lost now is not recovered
    for conversation in list(current):
        conversation.close()
    if receiver is not None and receiver is not threading.current_thread():
        receiver.join(2.0)
    if player is not None:
        player.close()
    if playback is not None:
        playback.end()
