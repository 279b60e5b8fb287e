"""Many texts: `synthesize_many` runs them as conversations on one I/O thread (`multiplex.Multiplexer`),
at most `concurrency` at a time, yields a `Result` per text in input order (or as completed), and keeps
memory flat however many there are: the texts are read lazily and no result is kept once yielded."""
from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, Mapping, Optional, Set, Tuple, Union

from .audio import Audio
from .errors import ArgumentTypeError, BasetenTTSError, ConfigurationError, StreamInterrupted

if TYPE_CHECKING:
    from .settings import Settings

Item = Union[str, Mapping[str, Any]]
"""A text, or a mapping with "text" and any per-item settings ("voice", ...); "id" and keys starting
with "_" are the caller's, handed back in `Result.item`."""


@dataclasses.dataclass
class Result:
    """One text's outcome: `audio` (None if it failed) or `error` (our exception; None if it worked)."""

    index: int
    text: str
    audio: Optional[Audio]
    error: Optional[BasetenTTSError]
    item: Any = None
    """What was given for this text (a str, or the mapping with its settings and id)."""
    seconds: float = 0.0
    """Wall time this text took, retries included."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class Progress:
    """Where a batch is, given to `progress=` after each result."""

    done: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Texts per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def _settings_of(item: Item) -> Tuple[str, Dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping):
        settings = {k: v for k, v in item.items() if k not in ("text", "id") and not str(k).startswith("_")}
        text = item.get("text")
        if not isinstance(text, str):
            raise ConfigurationError(f"an item needs a 'text' string, got {type(text).__name__}")
        return text, settings
    raise ConfigurationError(f"an item is a str or a mapping with 'text', not {type(item).__name__}")


class _Batch:
    """The texts in flight (at most `concurrency`, on one `Multiplexer`), those waiting their turn, and the
    stop that ends them all at once."""

    def __init__(self, settings: "Settings", concurrency: int, overrides: Dict[str, Any]) -> None:
        from .net.multiplex import Multiplexer, default_connectors

        self.settings = settings
        self.overrides = overrides
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: Deque[Tuple[int, Item, "Future[Result]"]] = collections.deque()
        self.io = Multiplexer(default_connectors(concurrency))

    def submit(self, index: int, item: Item) -> "Future[Result]":
        """A future of the item's `Result`; it starts once fewer than `concurrency` are in flight."""
        future: "Future[Result]" = Future()
        with self._lock:
            self._waiting.append((index, item, future))
        self._pump()
        return future

    def _pump(self) -> None:
        """Start waiting items while there is room (a bad item fails at once and makes room again)."""
        while True:
            with self._lock:
                if not self._waiting or self._running >= self.concurrency or self.stopping.is_set():
                    return
                index, item, future = self._waiting.popleft()
                self._running += 1
            failed = self._start(index, item, future)
            if failed is not None:
                with self._lock:
                    self._running -= 1
                future.set_result(failed)

    def _start(self, index: int, item: Item, future: "Future[Result]") -> Optional[Result]:
        """Hand the item to the multiplexer; its Result at once if it cannot even start."""
        from .text import words_of

        started = time.monotonic()
        text = item if isinstance(item, str) else str(item.get("text", "")) if isinstance(item, Mapping) else ""
        error: BasetenTTSError
        try:
            text, item_settings = _settings_of(item)
            settings = self.settings.replace(**{**self.overrides, **item_settings})
            words = list(words_of(text, settings.text_format))
        except BasetenTTSError as exc:
            error = exc
        except (ValueError, TypeError) as exc:  # bad input or an unknown setting: this item's error only
            error = ConfigurationError(str(exc))
        else:
            def done(audio: Optional[Audio], failure: Optional[BaseException]) -> None:
                if failure is not None and not isinstance(failure, BasetenTTSError):
                    wrapped = StreamInterrupted(f"basetts failed on this text: {failure!r}")
                    wrapped.__cause__ = failure
                    failure = wrapped
                future.set_result(Result(index, text, audio, failure, item, time.monotonic() - started))
                with self._lock:
                    self._running -= 1
                self._pump()

            try:
                self.io.submit(settings, words, done, self.stopping)
                return None
            except RuntimeError:  # the batch is being stopped: the connectors are shut down
                error = BasetenTTSError("The batch was stopped before this text was sent.")
        return Result(index, text, None, error, item, time.monotonic() - started)

    def stop(self) -> None:
        """No more texts start; the ones in flight are closed now; the threads are joined."""
        self.stopping.set()
        self.io.close()


def synthesize_many(settings: "Settings", texts: Iterable[Item], *, concurrency: int = 8, ordered: bool = True,
                    progress: Optional[Callable[[Progress], None]] = None, **overrides: Any) -> Iterator[Result]:
    """See `Synthesizer.synthesize_many`."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    if isinstance(texts, (str, bytes)):
        raise ArgumentTypeError("synthesize_many() takes an iterable of texts; for one text, use synthesize()")
    settings.replace(**overrides)  # an unknown or bad setting for all: an error now, not per item
    batch = _Batch(settings, concurrency, overrides)
    window = 2 * concurrency  # texts read ahead of the oldest one not yet yielded: memory stays flat
    source = iter(texts)
    pending: "Set[Future[Result]]" = set()
    completed: "queue.Queue[Future[Result]]" = queue.Queue()  # each future puts itself here when done: O(1) a result
    finished: Dict[int, Result] = {}
    state = Progress()
    started = time.monotonic()
    next_index = 0  # the next index to read
    next_out = 0  # the next index to yield, when ordered
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) + len(finished) < window:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                future = batch.submit(next_index, item)
                pending.add(future)
                future.add_done_callback(completed.put)
                next_index += 1
            if not pending and not finished:
                return
            ready = []
            if ordered and next_out in finished:
                ready.append(finished.pop(next_out))
            elif pending:
                future = completed.get()
                pending.discard(future)
                result = future.result()
                if ordered:
                    finished[result.index] = result
                    if next_out in finished:
                        ready.append(finished.pop(next_out))
                else:
                    ready.append(result)
            for result in ready:
                next_out += 1
                state.done += 1
                state.failed += result.error is not None
                state.audio_seconds += result.audio.duration if result.audio is not None else 0.0
                state.elapsed = time.monotonic() - started
                if progress is not None:
                    progress(state)
                yield result
    finally:
        batch.stop()  # Ctrl+C, an exception, or the caller leaving the loop: everything closes now
