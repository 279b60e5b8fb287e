"""`Playback`, the handle users hold on whatever plays, and `play()`: an `Audio` or a WAV file through a `Player`."""
from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from typing import Callable, Iterable, Iterator, List, Literal, Optional, Tuple, Union, overload

from ..audio import Audio, Stats, Word
from ..errors import AudioDeviceError, BasetenTTSError, ConfigurationError, TimeoutError, attach_partial
from ..pcm import SAMPLE_WIDTH
from . import portaudio
from .player import DEFAULT_PREBUFFER, Player
from .portaudio import DeviceSpec, PortAudioHold
from .resample import playable

# Playbacks running in a thread of their own (wait=False): stopped at exit, before the interpreter
# tears down what their threads and PortAudio's callbacks use.
_background: "weakref.WeakSet[Playback]" = weakref.WeakSet()


@atexit.register
def _stop_background() -> None:
    for playback in list(_background):
        playback.stop()
    for playback in list(_background):
        with contextlib.suppress(BaseException):
            playback.wait(2.0)


class Playback:
    """Whatever plays: `speak()`, `play()` and ``session(play=True)`` give one (``wait=False``).

    `pause()`, `resume()` and `stop()` work from any thread; `wait()` blocks until the sound has ended and
    returns the `Audio` heard (raising the error, if it failed). A stop the user asked for is not an
    error. `heard` is the audio played so far, `received` all that arrived.
    """

    def __init__(self, player: Player, stats: Optional[Stats] = None, started: Optional[float] = None,
                 chunks: Optional[List[bytes]] = None, on_stop: Optional[Callable[[], None]] = None) -> None:
        """`chunks`: the list received audio is kept in (a session shares its own); `on_stop`: runs after
        `stop()` silenced the player (a session closes its connection)."""
        self._player = player
        self.stats = stats if stats is not None else Stats()
        self._started = time.monotonic() if started is None else started
        self._chunks: List[bytes] = [] if chunks is None else chunks
        self._on_stop = on_stop
        self._done = threading.Event()
        self._when_done: List[Callable[["Playback"], None]] = []
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        state = ("stopped" if self.stopped else "done" if self.done else "paused" if self.paused
                 else "playing" if self.playing else "starting")
        return f"<Playback {state}, {self.position:.2f} s heard>"

    # control ---------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Fade out and hold the place; the audio keeps arriving (within the memory bound)."""
        self._player.pause()

    def resume(self) -> None:
        """Go on exactly where `pause()` stopped."""
        self._player.resume()

    def stop(self) -> None:
        """Fade out now, play nothing more, close the connection. Not an error: `wait()` returns the audio heard."""
        self._player.stop()
        if self._on_stop is not None:
            self._on_stop()

    def wait(self, timeout: Optional[float] = None) -> Audio:
        """Block until the sound has ended (or was stopped); the `Audio` heard. Raises our error if it
        failed (with ``.partial``), or `basetts.TimeoutError` if `timeout` seconds pass first (it plays on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Still playing after wait(timeout={timeout:g}); playback.stop() ends it.")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()  # done is set as its last step: this returns at once
        if self._error is not None:
            raise self._error
        return self.heard

    # state -----------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The sound has ended: played to the end, stopped, or failed."""
        return self._done.is_set()

    @property
    def playing(self) -> bool:
        """Sound is going to the device now (started, not paused, not over)."""
        return self._player.started and not self._player.paused and not self._player.stopped and not self.done

    @property
    def paused(self) -> bool:
        return self._player.paused and not self.done

    @property
    def stopped(self) -> bool:
        """`stop()` was called (or Ctrl+C came)."""
        return self._player.stopped

    @property
    def error(self) -> Optional[BaseException]:
        """Why it failed, once done; None if it did not."""
        return self._error

    @property
    def position(self) -> float:
        """Seconds of audio handed to the device so far."""
        player = self._player
        return player.played_samples / player.device_rate if player.device_rate else 0.0

    @property
    def heard(self) -> Audio:
        """The audio played so far (all of it, once it ended unstopped)."""
        pcm = b"".join(self._chunks)
        player = self._player
        if not (self.done and not player.stopped):
            played = int(player.played_samples * player.rate / player.device_rate) * SAMPLE_WIDTH
            pcm = pcm[:played]
        return Audio(pcm, sample_rate=self._player.rate, stats=self.stats)

    @property
    def words_heard(self) -> List[Word]:
        """The words heard whole so far (Qwen3-TTS with ``word_timestamps=True``): after a barge-in, exactly
        what the listener got."""
        return self.heard.words

    @property
    def received(self) -> Audio:
        """All the audio that arrived, heard or not."""
        return Audio(b"".join(self._chunks), sample_rate=self._player.rate, stats=self.stats)

    # feeding ---------------------------------------------------------------------------------------
    def take_back(self, count: int) -> int:
        """Remove up to the last `count` bytes fed that have not been played (a connection lost mid-sentence:
        that sentence is made again); the bytes removed. Called from the feeding thread."""
        taken = left = self._player.take_back(count)
        while left:
            last = self._chunks.pop()
            if len(last) > left:
                self._chunks.append(last[:len(last) - left])
            left -= min(left, len(last))
        return taken

    def run(self, chunks: Iterable[bytes], on_audio: Optional[Callable[[bytes], None]] = None) -> Audio:
        """Play `chunks` in this thread until they end or `stop()`, then until the last sample is heard;
        the `Audio` heard. An error of ours carries ``.partial`` (all received, or what was heard if
        stopped). Any other exception (Ctrl+C) silences at once and propagates. Closes the player."""
        player = self._player
        try:
            with contextlib.closing(player):
                error: Optional[BasetenTTSError] = None
                try:
                    for chunk in chunks:
                        self._chunks.append(chunk)
                        if on_audio is not None:
                            on_audio(chunk)
                        if not player.feed(chunk):
                            break  # stop() was called
                except BasetenTTSError as exc:
                    error = exc  # play what did arrive (unless the device itself failed), then report
                except BaseException as exc:
                    player.stop()  # silence now (Ctrl+C, on_audio or the text iterable raising), then close
                    if isinstance(exc, Exception):
                        attach_partial(exc, self.received)
                    raise
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()  # a generator over a connection: closed and its threads joined here
                if not isinstance(error, AudioDeviceError):
                    try:
                        player.drain()
                    except AudioDeviceError as exc:
                        error = error or exc
                if error is not None:
                    error.partial = self.heard if player.stopped else self.received
                    raise error
        except BaseException as exc:
            player.stop()  # silence first, then unwind (stopping twice is harmless)
            self._error = exc
            raise
        finally:
            self._finish_stats()
            self._done.set()
            for callback in self._when_done:
                callback(self)
        return self.heard

    def start(self, chunks: Iterable[bytes], on_audio: Optional[Callable[[bytes], None]] = None) -> "Playback":
        """`run()` in a thread of this handle's (``basetts-playback``); `wait()` joins it."""
        def run() -> None:
            with contextlib.suppress(BaseException):  # kept in self._error, raised by wait()
                self.run(chunks, on_audio)

        self._thread = threading.Thread(target=run, name="basetts-playback", daemon=True)
        _background.add(self)
        self._thread.start()
        return self

    def end(self) -> None:
        """For a player fed elsewhere (a session): the sound has ended; stats filled in, `wait()` returns."""
        self._finish_stats()
        self._done.set()
        for callback in self._when_done:
            callback(self)

    def _finish_stats(self) -> None:
        player, stats = self._player, self.stats
        if player.first_sound_at is not None:
            stats.first_sound_time = max(0.0, player.first_sound_at - self._started)
        stats.underruns = player.underruns
        stats.rebuffer_time = player.rebuffer_seconds
        stats.prebuffer = player.prebuffer


def _opened(player: Player, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Open the device (its errors raised before any audio), then the chunks."""
    player.open()
    yield from chunks


def playback_of(source: Union[Audio, str, "os.PathLike[str]"], *, output_device: DeviceSpec = None,
                prebuffer: float = DEFAULT_PREBUFFER, volume: float = 1.0,
                hold: Optional[PortAudioHold] = None) -> Tuple[Playback, Iterator[bytes]]:
    """A `Playback` of an `Audio` or a WAV file (any rate, channels and width: made 16-bit mono, then
    resampled to what the device takes), and the chunks for its `run()` or `start()`."""
    audio = playable(source)  # what is wrong with the file is said first: it is the caller's to mend either way
    portaudio.import_pyaudio()
    player = Player(output_device, rate=audio.sample_rate, prebuffer=prebuffer, volume=volume, hold=hold)
    return Playback(player, Stats()), _opened(player, audio.chunks(4096))


@overload
def play(source: Union[Audio, str, "os.PathLike[str]"], *, wait: Literal[True] = ...,
         output_device: DeviceSpec = ..., prebuffer: float = ..., volume: float = ...) -> Audio: ...


@overload
def play(source: Union[Audio, str, "os.PathLike[str]"], *, wait: Literal[False],
         output_device: DeviceSpec = ..., prebuffer: float = ..., volume: float = ...) -> Playback: ...


def play(source: Union[Audio, str, "os.PathLike[str]"], *, wait: bool = True, output_device: DeviceSpec = None,
         prebuffer: float = DEFAULT_PREBUFFER, volume: float = 1.0) -> Union[Audio, Playback]:
    """Play an `Audio` or a WAV file on the sound card (`Synthesizer.play` does the same, and its `stop()`
    reaches it). `wait=True`: the `Audio` heard, once heard; `wait=False`: a `Playback` at once."""
    try:
        playback, chunks = playback_of(source, output_device=output_device, prebuffer=prebuffer, volume=volume)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return playback.run(chunks) if wait else playback.start(chunks)
