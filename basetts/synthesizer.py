"""`Synthesizer`: the blocking API (synthesize, stream, save, speak) over one conversation per call."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    Literal,
    Optional,
    Union,
    overload,
)

from .audio import Audio, Saved, Stats
from .checks import check_callable, check_writable
from .errors import BasetenTTSError, ConfigurationError, OutputError, attach_partial
from .net.retry import Cancelled, open_conversation, replaying
from .net.spare import Idle, Spare, probe
from .session import Session
from .settings import CallSettings, Settings
from .text import Text, words_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .batch import Item, Progress, Result
    from .net.conversation import Conversation
    from .playback import Playback, Player
    from .playback.portaudio import DeviceSpec, PortAudioHold
    from .voices import Voices

log = logging.getLogger("basetts")

class Synthesizer:
    """Text to speech over Baseten's streaming websocket. Thread-safe: each call is its own connection.

    Settings resolve from arguments, then the environment (``BASETEN_API_KEY``, ``BASETEN_MODEL_ID``,
    ``BASETTS_URL``), then ``.env``. The other keywords (`CallSettings`: voice, max_tokens, buffer_size,
    temperature, top_p, repetition_penalty, encoding, connect_timeout, handshake_timeout,
    first_audio_timeout, read_timeout, allow_insecure, retries, retry_backoff, proxy, keepalive_timeout,
    max_message_size, trace; see `Settings`) are this Synthesizer's defaults, and every call takes them
    too, to override them for that call.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        model_id: Optional[str] = None,
        environment: str = "production",
        url: Optional[str] = None,
        **options: Unpack[CallSettings],
    ) -> None:
        self._init(Settings.resolve(api_key, model_id, environment, url, **options))

    def __repr__(self) -> str:
        settings = self.settings
        return f"Synthesizer(url={settings.url!r}, protocol={settings.protocol!r}, voice={settings.voice!r})"

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled (for multiprocessing, a process pool, Dask, Ray): the settings travel, key included, as
        the worker needs them; the spare connection, locks and PortAudio stay behind."""
        return {"settings": self.settings, "guessing": self._guessing}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._init(state["settings"])
        self._guessing = state.get("guessing", False)

    def _init(self, settings: Settings) -> None:
        self.settings = settings
        # What plays now (speak, play, sessions), for stop(); weak: a session dropped unopened is forgotten.
        self._playing: "weakref.WeakSet[Playback]" = weakref.WeakSet()
        self._playing_lock = threading.Lock()
        self._spare: Optional[Spare] = None  # never used in a child of fork(): see Spare
        self._idle = Idle()  # HTTP connections kept alive between calls
        self._guessing = settings.protocol_guessed  # only a model id: the first call checks the protocol
        self._guess_lock = threading.Lock()
        self._spare_lock = threading.Lock()
        self._portaudio: Optional["PortAudioHold"] = None  # once speak() has played: see _player

    def _settled(self, settings: Settings) -> Settings:
        """`settings` for a call, once the deployment's protocol is known. With only a model id, the first
        call opens the websocket and listens one round trip more (`probe`): a deployment that serves HTTP
        only says so at once, and this Synthesizer speaks orpheus-http from then on; a websocket's connection
        is kept for the call. Once per Synthesizer."""
        if not self._guessing:
            return settings
        with self._guess_lock:
            if self._guessing:
                http_only, sock = probe(settings)
                self._guessing = False
                if http_only:
                    log.info("the deployment serves HTTP only (POST …/predict): speaking protocol='orpheus-http'")
                    self.settings = self.settings.replace(protocol="orpheus-http")
                elif sock is not None:
                    with self._spare_lock:
                        old, self._spare = self._spare, Spare(settings, sock)
                    if old is not None:
                        old.close()
        if settings.protocol != self.settings.protocol:
            return settings.replace(protocol=self.settings.protocol)
        return settings

    @property
    def voices(self) -> "Voices":
        """Qwen3-TTS's voices on the deployment: ``synth.voices.list()``, ``.add(name, clip, consent=...)``,
        ``.remove(name)``."""
        from .voices import Voices

        return Voices(self.settings)

    def connect(self) -> None:
        """Open a connection now, so the next call skips the TCP, TLS and websocket handshakes.

        A websocket server takes one utterance per connection, so this keeps one spare: the next call uses
        it (if fresher than 15 s, 7 s for Qwen3, 4 s for orpheus-http; else it connects as usual). Call again
        after each call to stay ready. Over HTTP each call also leaves its connection open for the next.
        """
        spare = Spare(self._settled(self.settings))
        with self._spare_lock:
            old, self._spare = self._spare, spare
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the spare connection, if any, and let PortAudio stop (speak() keeps it started between
        calls). Calls made after this still work."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()
        self._idle.close()
        if self._portaudio is not None:
            self._portaudio.release()

    def _hold(self) -> "PortAudioHold":
        """Keeps PortAudio started for this Synthesizer's next playback, until close() (or until the
        Synthesizer is garbage-collected). No PyAudio: an AudioDeviceError before anything is sent."""
        from .playback.portaudio import PortAudioHold, import_pyaudio

        import_pyaudio()
        with self._spare_lock:
            if self._portaudio is None:
                self._portaudio = PortAudioHold()
                # Not at exit: a PortAudio call stuck in a hung sound server would hold up the exit
                # (and the OS lets go of everything anyway).
                weakref.finalize(self, self._portaudio.release).atexit = False
            return self._portaudio

    def _player(self, output_device: "DeviceSpec", prebuffer: float, volume: float) -> "Player":
        from .playback import Player

        hold = self._hold()
        try:
            return Player(output_device, prebuffer=prebuffer, volume=volume, hold=hold)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def _track(self, playback: "Playback") -> "Playback":
        """Let stop() reach `playback` until it is done."""
        def untrack(done: "Playback") -> None:
            with self._playing_lock:
                self._playing.discard(done)

        playback._when_done.append(untrack)
        with self._playing_lock:
            self._playing.add(playback)
        return playback

    def __enter__(self) -> "Synthesizer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take_spare(self, settings: Settings) -> Any:
        """The connection opened ahead (`connect()`), else one kept alive by an earlier call, else None."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        sock = spare.take(settings) if spare is not None else None
        return sock if sock is not None else self._idle.take(settings)

    def _converse(self, settings: Settings, words: Iterable[str], stats: Stats, spare: Any = None,
                  **options: Any) -> "Conversation":
        """One conversation, open: on `spare` (a long text's next part's), else the connection opened ahead or
        kept alive if there is one, which it hands back for the next call if its protocol keeps it alive
        (`open_conversation`)."""
        settings = self._settled(settings)
        return open_conversation(settings, words, stats, spare if spare is not None else self._take_spare(settings),
                                 release=self._idle.put, **options)

    def _chunks(self, settings: Settings, words: Iterable[str], stats: Stats,
                take_back: Optional[Callable[[int], int]] = None, **options: Any) -> Iterator[bytes]:
        """The audio of `words` (`_converse`) over as many connections as it takes (`replaying`): a whole text
        refused before any audio with a close that asks to come back (1012, 1013) is sent again, one whose
        connection is lost after audio began goes on on a new one. `take_back(count)` removes the last
        `count` bytes handed on, where the caller can (the bytes removed). The stats count from the call's
        start (`started`, default now) on every connection."""
        options.setdefault("started", time.monotonic())
        return replaying(lambda tried, rest, resumed_at, spare: self._converse(
            settings, rest, stats, already=tried, resumed_at=resumed_at, spare=spare, **options), words,
            options.get("cancel"), take_back)

    def stream(self, text: Text, **overrides: Unpack[CallSettings]) -> Generator[bytes, None, None]:
        """Yield 16-bit PCM chunks (whole samples) as they arrive. Breaking out early closes the connection.

        On failure the error's ``partial`` is empty: every chunk received was already yielded.
        """
        settings = self.settings.replace(**overrides)
        return self._stream(settings, words_of(text, settings.text_format))

    def _stream(self, settings: Settings, words: Iterable[str]) -> Generator[bytes, None, None]:
        stats = Stats()
        try:
            yield from self._chunks(settings, words, stats)
        except BasetenTTSError as exc:
            exc.partial = Audio(b"", stats=stats)
            raise

    def synthesize(self, text: Text, *, on_audio: Optional[Callable[[bytes], None]] = None,
                   **overrides: Unpack[CallSettings]) -> Audio:
        """The whole utterance as `Audio`, once the server has closed the stream. `on_audio(chunk)` runs
        in this thread with each chunk as it arrives."""
        check_callable("on_audio", on_audio)
        settings = self.settings.replace(**overrides)
        words = words_of(text, settings.text_format)
        stats = Stats()
        # BytesIO, not a list joined at the end: getvalue() hands over its buffer without a copy, so the
        # peak is the PCM once, not twice (docs/performance.md).
        received = io.BytesIO()

        def take_back(count: int) -> int:
            received.truncate(received.tell() - count)
            received.seek(0, io.SEEK_END)
            return count

        try:
            for chunk in self._chunks(settings, words, stats, take_back):
                received.write(chunk)
                if on_audio is not None:
                    on_audio(chunk)
        except Exception as exc:  # ours, or the text iterable's or on_audio's (reaching the caller as it is)
            attach_partial(exc, Audio(received.getvalue(), stats=stats))
            raise
        return Audio(received.getvalue(), stats=stats)

    def synthesize_many(self, texts: Iterable["Item"], *, concurrency: int = 8, ordered: bool = True,
                        progress: Optional[Callable[["Progress"], None]] = None,
                        **overrides: Unpack[CallSettings]) -> Iterator["Result"]:
        """Many texts, `concurrency` at a time (each one conversation: the deployment sees at most that
        many connections): a `Result` per text (`.index`, `.text`, `.audio`, `.error`), in input order, or
        as each completes with ``ordered=False``. One failure never stops the batch (transient ones are
        retried per text, as any call's). `texts` is read lazily and nothing is kept once yielded, so
        memory stays flat for any number; an item is a str or a mapping with "text" and per-item settings.
        `progress(Progress)` runs in this thread after each result. Leaving the loop (Ctrl+C included)
        closes every connection at once."""
        from .batch import synthesize_many

        self._settled(self.settings)
        return synthesize_many(self.settings, texts, concurrency=concurrency, ordered=ordered, progress=progress,
                               **overrides)

    def session(
        self,
        play: bool = False,
        *,
        output_device: "DeviceSpec" = None,
        prebuffer: float = 0.1,
        volume: float = 1.0,
        on_audio: Optional[Callable[[bytes], None]] = None,
        **overrides: Unpack[CallSettings],
    ) -> Session:
        """Text that arrives over time: ``with synth.session(play=True) as s: s.send("Hel"); s.send("lo")``.

        `play=True` plays the audio as it arrives (options as for `speak()`; `s.playback` pauses, resumes
        and stops it, and so does `stop()`), and leaving the block returns once the last sample has been
        heard; `play=False` only collects it (`s.audio`, ``for``). `on_audio(chunk)` runs in the
        session's receiver thread with each chunk as it arrives.
        """
        check_callable("on_audio", on_audio)
        settings = self._settled(self.settings.replace(**overrides))
        player = self._player(output_device, prebuffer, volume) if play else None
        session = Session(settings, player=player, take_spare=self._take_spare, on_audio=on_audio,
                          release=self._idle.put)
        if session.playback is not None:
            self._track(session.playback)
        return session

    def save(self, text: Text, path: Union[str, "os.PathLike[str]"], *, format: Optional[str] = None,
             on_audio: Optional[Callable[[bytes], None]] = None, **overrides: Unpack[CallSettings]) -> "Saved":
        """Synthesize into a file as the audio arrives (flat memory for any length), in the format its name
        says (.wav, .pcm; .flac, .ogg, .opus, .mp3 with the [formats] extra) or `format`, checked before
        anything is sent. On failure the file holds what arrived (valid), and the error's ``.partial`` is
        that audio for .wav and .pcm. Returns a `Saved` (path, duration, stats)."""
        from .formats import HOLD_SECONDS, AudioWriter, format_of

        extension = format_of(path, format)
        check_writable(path)
        check_callable("on_audio", on_audio)
        settings = self.settings.replace(**overrides)
        words = words_of(text, settings.text_format)
        stats = Stats()
        writer: Optional[AudioWriter] = None

        def take_back(count: int) -> int:
            return writer.take_back(count) if writer is not None else 0

        try:
            for chunk in self._chunks(settings, words, stats, take_back):
                if writer is None:  # the file appears with the first audio
                    writer = AudioWriter(path, extension, hold=HOLD_SECONDS if settings.recoveries else 0.0)
                writer.write(chunk)
                if on_audio is not None:
                    on_audio(chunk)
            if writer is None:
                writer = AudioWriter(path, extension)  # no audio at all: an empty, valid file
            writer.close()  # finishing the file can fail too (a full disk): this call's error then
        except BaseException as exc:  # ours, the text iterable's or on_audio's (reaching the caller as is), Ctrl+C
            if writer is not None:
                with contextlib.suppress(OutputError):
                    writer.close()  # a valid file of what arrived (or fitted); what failed first is raised
                if isinstance(exc, Exception):
                    try:
                        attach_partial(exc, Saved(os.fspath(path), writer.duration, stats).audio())
                    except (ValueError, OSError):  # a compressed format: in the file only
                        attach_partial(exc, Audio(b"", stats=stats))
            raise
        return Saved(os.fspath(path), writer.duration, stats)

    @overload
    def speak(self, text: Text, *, wait: Literal[True] = ..., output_device: "DeviceSpec" = ...,
              prebuffer: float = ..., volume: float = ..., on_audio: Optional[Callable[[bytes], None]] = ...,
              **overrides: Unpack[CallSettings]) -> Audio: ...

    @overload
    def speak(self, text: Text, *, wait: Literal[False], output_device: "DeviceSpec" = ...,
              prebuffer: float = ..., volume: float = ..., on_audio: Optional[Callable[[bytes], None]] = ...,
              **overrides: Unpack[CallSettings]) -> "Playback": ...

    def speak(
        self,
        text: Text,
        *,
        wait: bool = True,
        output_device: "DeviceSpec" = None,
        prebuffer: float = 0.1,
        volume: float = 1.0,
        on_audio: Optional[Callable[[bytes], None]] = None,
        **overrides: Unpack[CallSettings],
    ) -> Union[Audio, "Playback"]:
        """Play `text` on the sound card; return once the device has played the last sample.

        Sound starts once `prebuffer` seconds are queued (or the stream has ended), never after the whole
        text; after an underrun the prebuffer grows. `output_device`: an index or part of a name (see
        `basetts.devices()`); `volume`: 0..1 software gain; `on_audio(chunk)` is called with each 24 kHz
        chunk as it is queued (in this thread; with ``wait=False``, in the playback's). Returns the `Audio`
        played: all of it, or what was heard before a stop (`stop()`, `Playback.stop()`: not an error).
        ``wait=False`` returns a `Playback` at once (pause, resume, stop, wait). Ctrl+C stops the sound at
        once, closes the connection and re-raises `KeyboardInterrupt`. Stream errors carry ``.partial``:
        the audio received (and played) before the failure.
        """
        from .playback import Playback

        started = time.monotonic()  # the stats count from here: opening the device is part of the wait
        check_callable("on_audio", on_audio)
        settings = self.settings.replace(**overrides)
        words = words_of(text, settings.text_format)
        player = self._player(output_device, prebuffer, volume)
        stats = Stats()
        playback = self._track(Playback(player, stats, started))
        chunks = self._spoken(settings, words, stats, started, player, playback.take_back)
        return playback.run(chunks, on_audio) if wait else playback.start(chunks, on_audio)

    def _spoken(self, settings: Settings, words: Iterable[str], stats: Stats, started: float,
                player: "Player", take_back: Optional[Callable[[int], int]] = None) -> Iterator[bytes]:
        """The chunks of one conversation for a player. The device opens while the server answers the
        upgrade: starting PortAudio probes every device (tens of ms, more on many desktops), time the
        network takes anyway; no sound card is an AudioDeviceError before any text is sent. Closing the
        generator closes the connection."""
        try:
            yield from self._chunks(settings, words, stats, take_back, cancel=player.stopped_event, started=started,
                                    on_upgrade=player.open)
        except Cancelled:
            return

    @overload
    def play(self, audio: Union[Audio, str, "os.PathLike[str]"], *, wait: Literal[True] = ...,
             output_device: "DeviceSpec" = ..., prebuffer: float = ..., volume: float = ...) -> Audio: ...

    @overload
    def play(self, audio: Union[Audio, str, "os.PathLike[str]"], *, wait: Literal[False],
             output_device: "DeviceSpec" = ..., prebuffer: float = ..., volume: float = ...) -> "Playback": ...

    def play(self, audio: Union[Audio, str, "os.PathLike[str]"], *, wait: bool = True,
             output_device: "DeviceSpec" = None, prebuffer: float = 0.1,
             volume: float = 1.0) -> Union[Audio, "Playback"]:
        """Play audio you already have (an `Audio`, or a WAV file's path; any rate and channel count) through
        the same player as `speak()`; `stop()` stops it too. Returns as `speak()` does."""
        from .playback import playback_of

        if isinstance(audio, (str, os.PathLike)):  # the file's trouble is said before the sound card's
            audio = Audio.from_wav(audio)
        try:
            playback, chunks = playback_of(audio, output_device=output_device, prebuffer=prebuffer,
                                           volume=volume, hold=self._hold())
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._track(playback)
        return playback.run(chunks) if wait else playback.start(chunks)

    def stop(self) -> None:
        """Stop everything this Synthesizer plays (`speak()`, `play()`, sessions with ``play=True``), from
        any thread: the sound fades out at once and each blocking call returns the `Audio` heard so far."""
        with self._playing_lock:
            playbacks = list(self._playing)
        for playback in playbacks:
            playback.stop()
