"""Playback through the sound card: a PyAudio *callback* stream fed from a flat-memory ring buffer.

The caller's thread `feed()`s PCM (volume and resampling happen there, never in the audio callback);
PortAudio's thread runs `_callback`, which only copies whole samples out of the ring, pads silence on
underrun and counts it. Only this module imports PyAudio, and only when playback is asked for, so
`synthesize()`, `stream()` and `save()` work on machines without a sound card.
"""
from __future__ import annotations

import array
import contextlib
import dataclasses
import logging
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

from .audio import Resampler
from .errors import AudioDeviceError
from .protocol import SAMPLE_RATE, SAMPLE_WIDTH

log = logging.getLogger("basetts")

DeviceSpec = Union[int, str, None]
"""An output device: its index, part of its name (case-insensitive), or None for the default."""

DEFAULT_PREBUFFER = 0.1
"""Seconds queued before the sound starts: enough to ride out network jitter, short enough not to be heard."""
MAX_BUFFERED = 4.0
"""Seconds `feed()` lets pile up ahead of the device before it waits: memory stays flat on long texts."""
CALLBACK_SECONDS = 0.02
"""Length of one callback buffer. Small keeps `stop()` and the end of speech prompt; 20 ms is safe on
PulseAudio, ALSA, CoreAudio and WASAPI alike."""

# How often waiting loops look again; a stop wakes them at once through an Event.
_POLL = 0.005
# How often feed() looks for room while the ring is full: seconds of audio are queued ahead of the
# device, so there is no hurry, and waking every _POLL cost a third of speak()'s CPU.
_FULL_WAIT = 0.05
# Beyond the audio still buffered, how long drain() trusts the device to report the end.
_DRAIN_GRACE = 2.0
# Beyond the device's latency, how long a started stream may take no audio before it counts as stuck
# (a sound server that hangs or dies): feed() and drain() then raise instead of waiting forever.
_STALL_GRACE = 2.0
# Before the device has taken any audio: some (Bluetooth headsets, a sound server resuming a suspended
# sink) take seconds to start calling back.
_START_GRACE = 10.0

_INSTALL_HINT = (
    "Install PortAudio and PyAudio: `pip install 'basetts[play]'` (Debian/Ubuntu: `apt-get install "
    "portaudio19-dev` first; macOS: `brew install portaudio`). Or skip the sound card: "
    "`synth.synthesize(text)` or `synth.save(text, 'out.wav')` need neither."
)


def _import_pyaudio() -> Any:
    """PyAudio, or an `AudioDeviceError` that says what to install."""
    try:
        import pyaudio  # type: ignore[import-untyped]
    except ImportError as exc:  # PyAudio missing, or its extension cannot find libportaudio
        raise AudioDeviceError(f"Playback needs PyAudio, which cannot be imported ({exc}). {_INSTALL_HINT}") from None
    return pyaudio


# PortAudio is process-global and its initialise, terminate, open and close are not thread-safe (two
# speak() calls initialising at once abort the process). One shared `PyAudio`, counted, under a lock.
_portaudio_lock = threading.RLock()
_shared_pa: Any = None
_shared_users = 0
# A PortAudio call stuck in a hung sound server holds the lock; nobody waits for it longer than this.
_LOCK_TIMEOUT = 10.0


@contextlib.contextmanager
def _portaudio_locked() -> Iterator[None]:
    """`_portaudio_lock`, or an `AudioDeviceError` if a call stuck in the sound server holds it."""
    if not _portaudio_lock.acquire(timeout=_LOCK_TIMEOUT):
        raise AudioDeviceError("The sound system is not responding (a PortAudio call has been stuck for "
                               f"{_LOCK_TIMEOUT:g} s). Check the sound server, or use synthesize()/save().")
    try:
        yield
    finally:
        _portaudio_lock.release()


def _in_background(call: Callable[[], None], name: str, wait: float = 1.0) -> None:
    """Run a PortAudio call that a hung sound server can block forever: wait for it at most `wait`
    seconds, then leave it to finish in its (daemon) thread whenever the server answers."""
    worker = threading.Thread(target=call, name=f"basetts-{name}", daemon=True)
    worker.start()
    worker.join(wait)
    if worker.is_alive():
        log.warning("%s is blocked in the sound server; it finishes in the background", name)


# C callbacks handed to ALSA and JACK: kept alive here for as long as the libraries may call them.
_quiet_handlers: List[Any] = []


def _quiet_native_libraries() -> None:
    """Stop ALSA and JACK printing to stderr while PortAudio probes every device it knows of (a hundred
    lines on a machine without a sound card, none of them actionable): basetts says what matters.
    Left alone when basetts logs at DEBUG, for whoever debugs the sound setup."""
    if _quiet_handlers or log.isEnabledFor(logging.DEBUG):
        return
    import ctypes

    def ignore(*_args: Any) -> None:
        pass

    # ALSA's handler is printf-like (file, line, function, err, fmt, ...); the varargs are not read.
    alsa = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
    jack = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
    for library, setter, prototype in (("libasound.so.2", "snd_lib_error_set_handler", alsa),
                                       ("libjack.so.0", "jack_set_error_function", jack),
                                       ("libjack.so.0", "jack_set_info_function", jack)):
        try:
            install = getattr(ctypes.CDLL(library), setter)
        except (OSError, AttributeError):  # not this platform, or PortAudio built without it
            continue
        handler = prototype(ignore)
        install(handler)
        _quiet_handlers.append(handler)


# Set in a child of fork() whose parent had PortAudio started: the C library's state (its device list,
# its sound-server connections, whose threads did not survive the fork) is the parent's, and PortAudio
# cannot be started afresh over it. Such a child never touches it and says so when asked to play.
_inherited_portaudio = False


def _forget_portaudio_after_fork() -> None:
    """In a child of fork(): nothing of the parent's PortAudio is used (a lock another thread may have
    held included)."""
    global _portaudio_lock, _shared_pa, _shared_users, _inherited_portaudio
    _inherited_portaudio = _inherited_portaudio or _shared_pa is not None
    _portaudio_lock, _shared_pa, _shared_users = threading.RLock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_portaudio_after_fork)


def _open_portaudio() -> Tuple[Any, Any]:
    """(pyaudio module, the process's `PyAudio`); give it back with `_close_portaudio`."""
    global _shared_pa, _shared_users
    pyaudio = _import_pyaudio()
    if _inherited_portaudio:
        raise AudioDeviceError(
            "This process was forked from one that had the sound device open (PortAudio cannot be restarted "
            "in a forked child). Play from the parent, or start workers with the 'spawn' method "
            "(multiprocessing.get_context('spawn')); synthesize()/save() work here as usual.")
    with _portaudio_locked():
        if _shared_pa is None:
            _quiet_native_libraries()
            try:
                _shared_pa = pyaudio.PyAudio()
            except Exception as exc:  # noqa: BLE001 - PortAudio's own init failure, rare but possible
                raise AudioDeviceError(f"PortAudio failed to start: {exc}. {_INSTALL_HINT}") from None
        _shared_users += 1
        return pyaudio, _shared_pa


def _close_portaudio(pa: Any) -> None:
    """Terminate PortAudio once its last user is done."""
    global _shared_pa, _shared_users
    with _portaudio_locked():
        if pa is not _shared_pa:  # not the shared instance (tests pass their own)
            pa.terminate()
            return
        _shared_users -= 1
        if _shared_users == 0:
            _shared_pa = None
            pa.terminate()


class PortAudioHold:
    """Keeps PortAudio started from one `Player` to the next (a Synthesizer has one). Starting it probes
    every device: 40 ms here, often far more on a desktop, before every speak()'s first sound if each
    call started it again. Devices plugged in later are seen after `release()`."""

    def __init__(self) -> None:
        self._pa: Any = None
        self._pid = os.getpid()  # a hold inherited through fork() is the parent's: never touched
        self._lock = threading.Lock()

    def take(self) -> None:
        """Hold PortAudio (already started by the caller's Player), once."""
        with self._lock:
            if self._pid != os.getpid():
                self._pa, self._pid = None, os.getpid()
            if self._pa is None:
                _, self._pa = _open_portaudio()

    def release(self) -> None:
        """Let PortAudio stop once its last Player is done."""
        with self._lock:
            pa, self._pa = self._pa, None
        if pa is not None and self._pid == os.getpid():
            _close_portaudio(pa)


@dataclasses.dataclass(frozen=True)
class Device:
    """One output device as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    max_output_channels: int
    default_sample_rate: float
    is_default: bool = False

    def __str__(self) -> str:
        mark = "  (default)" if self.is_default else ""
        return f"{self.index}: {self.name} [{self.host_api}, {self.default_sample_rate:g} Hz]{mark}"


def _output_devices(pa: Any) -> List[Device]:
    try:
        default = pa.get_default_output_device_info()["index"]
    except (OSError, IOError):
        default = None
    host_apis = {}
    for i in range(pa.get_host_api_count()):
        info = pa.get_host_api_info_by_index(i)
        host_apis[info["index"]] = info["name"]
    found = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxOutputChannels", 0)) < 1:
            continue
        found.append(Device(
            index=int(info["index"]), name=str(info["name"]), host_api=host_apis.get(info["hostApi"], "?"),
            max_output_channels=int(info["maxOutputChannels"]),
            default_sample_rate=float(info["defaultSampleRate"]), is_default=info["index"] == default))
    return found


def devices() -> List[Device]:
    """The audio output devices PortAudio can see, the default one marked. Raises `AudioDeviceError`
    if PyAudio is missing."""
    _, pa = _open_portaudio()
    try:
        with _portaudio_locked():
            return _output_devices(pa)
    finally:
        _close_portaudio(pa)


def _resolve_device(pa: Any, spec: DeviceSpec) -> Device:
    """The device for an index, a name fragment, or None (the default); a clear error if there is none."""
    outputs = _output_devices(pa)
    listing = "; ".join(str(d) for d in outputs) or "none"
    if not outputs:
        raise AudioDeviceError(
            "No audio output device found (PortAudio sees none: no sound card, or no access to the sound "
            "server). Check the sound setup, or use `synth.synthesize(text)` / `synth.save(text, path)`, "
            "which need no sound card.")
    if spec is None:
        for device in outputs:
            if device.is_default:
                return device
        raise AudioDeviceError(f"There is no default output device; pass output_device=. Devices: {listing}")
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise TypeError(f"output_device must be an index, a name or None, not {type(spec).__name__}")
    if isinstance(spec, int):
        for device in outputs:
            if device.index == spec:
                return device
        raise AudioDeviceError(f"No output device with index {spec}. Devices: {listing}")
    wanted = spec.strip().lower()
    exact = [d for d in outputs if d.name.lower() == wanted]
    matches = exact or [d for d in outputs if wanted in d.name.lower()]
    if not matches:
        raise AudioDeviceError(f"No output device named like {spec!r}. Devices: {listing}")
    if len(matches) > 1:
        log.info("output_device=%r matches %d devices; using %s", spec, len(matches), matches[0])
    return matches[0]


def check_output(device: DeviceSpec = None) -> Device:
    """The device `speak()` would use, or an `AudioDeviceError` saying why playback is impossible here.

    For checking before any text is sent (a CLI, a health check)."""
    _, pa = _open_portaudio()
    try:
        with _portaudio_locked():
            return _resolve_device(pa, device)
    finally:
        _close_portaudio(pa)


def _supports(pa: Any, pyaudio: Any, device: Device, rate: int) -> bool:
    try:
        return bool(pa.is_format_supported(rate, output_device=device.index, output_channels=1,
                                           output_format=pyaudio.paInt16))
    except ValueError:  # PyAudio's way of saying "not supported"
        return False


def choose_rate(pa: Any, pyaudio: Any, device: Device, rate: int) -> int:
    """`rate` if the device takes it, else the device's default rate (we resample): never fail on rate."""
    if _supports(pa, pyaudio, device, rate):
        return rate
    fallback = int(round(device.default_sample_rate))
    log.info("%s cannot play %d Hz; opening it at %d Hz and resampling", device.name, rate, fallback)
    return fallback


def _scale(pcm: bytes, gain: float) -> bytes:
    """Software volume on 16-bit PCM. gain <= 1, so no clipping is possible."""
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder != "little":
        samples.byteswap()
    scaled = array.array("h", [int(s * gain) for s in samples])
    if sys.byteorder != "little":
        scaled.byteswap()
    return scaled.tobytes()


class Player:
    """One output stream: `feed()` PCM from one thread while PortAudio's callback plays it.

    Use as a context manager. The stream starts once `prebuffer` seconds are queued (or at `end()`);
    `drain()` returns when the device has played the last sample; `stop()` (any thread) silences at once.
    Counters: `underruns` (callbacks that found the buffer empty before the end), `played_samples`
    (input samples handed to the device), `first_sound_at` (monotonic time the first sample is heard).
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        *,
        rate: int = SAMPLE_RATE,
        prebuffer: float = DEFAULT_PREBUFFER,
        volume: float = 1.0,
        max_buffered: float = MAX_BUFFERED,
        device_rate: Optional[int] = None,
        hold: Optional[PortAudioHold] = None,
    ) -> None:
        """`device_rate` forces the rate the device is opened at (None: `rate` if the device takes it).
        `hold` keeps PortAudio started after this player closes, for the next one."""
        if isinstance(volume, bool) or not isinstance(volume, (int, float)) or not 0.0 <= volume <= 1.0:
            raise ValueError(f"volume must be a number from 0 to 1, got {volume!r}")
        if (isinstance(prebuffer, bool) or not isinstance(prebuffer, (int, float))
                or not math.isfinite(prebuffer) or prebuffer < 0):
            raise ValueError(f"prebuffer must be a number of seconds >= 0, got {prebuffer!r}")
        self.device_spec = device
        self.rate = rate
        self.prebuffer = float(prebuffer)
        self.volume = float(volume)
        self.max_buffered = max(float(max_buffered), self.prebuffer + 1.0)
        self._forced_rate = device_rate
        self._hold = hold
        self.device: Optional[Device] = None
        self.device_rate = rate
        self.underruns = 0
        self.played_samples = 0  # device samples taken from the ring (silence padding excluded)
        self.first_sound_at: Optional[float] = None
        self._pyaudio: Any = None
        self._pa: Any = None
        self._stream: Any = None
        self._resampler: Optional[Resampler] = None
        self._stream_lock = threading.Lock()  # stream start/abort/close; never taken by the callback
        self._stopped = threading.Event()
        self._started = False
        self._input_done = False  # set after the last write: the callback then ends at an empty ring
        self._tail_until: Optional[float] = None  # when the last sample is heard: stream time, or frames
        self._tail_by_clock = True
        self._latency_frames = 0
        self._callback_error: Optional[BaseException] = None
        self._stalled = False  # the device stopped taking audio: see _check_progress
        # (bytes read by the callback, monotonic time that count was first seen), once playing
        self._progress: Optional[Tuple[int, float]] = None
        self._odd = b""  # half a sample, waiting for its other half
        self._ring = bytearray()
        self._ring_view = memoryview(self._ring)
        self._written = 0  # bytes ever written; only the feeding thread changes it
        self._read = 0  # bytes ever read; only the callback changes it
        self._out = bytearray()
        self._out_view = memoryview(self._out)
        self._silence = b""

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> "Player":
        """Find the device and open the stream (not started yet); again, a no-op. Raises `AudioDeviceError`."""
        if self._stream is not None:
            return self
        self._pyaudio, self._pa = _open_portaudio()
        try:
            with _portaudio_locked():
                self._open_device()
            if self._hold is not None:
                self._hold.take()
        except OSError as exc:
            self.close()
            raise AudioDeviceError(f"Cannot open {self.device}: {exc}. Try another output_device= "
                                   "(see basetts.devices()), or use synthesize()/save().") from None
        except BaseException:
            self.close()
            raise
        if self.device_rate != self.rate:
            # Linear interpolation (basetts.audio.Resampler): no dependency, streaming without clicks at
            # chunk edges, and ample for speech whose energy sits far below either Nyquist frequency.
            self._resampler = Resampler(self.rate, self.device_rate)
        log.debug("playing on %s at %d Hz", self.device, self.device_rate)
        return self

    def _open_device(self) -> None:
        """Resolve the device and open the stream at 24 kHz, or at the device's own rate if it refuses."""
        self.device = _resolve_device(self._pa, self.device_spec)
        self.device_rate = self._forced_rate or choose_rate(self._pa, self._pyaudio, self.device, self.rate)
        try:
            self._open_stream()
        except OSError as exc:
            fallback = int(round(self.device.default_sample_rate))
            if self._forced_rate or fallback == self.device_rate:
                raise
            log.info("%s refused %d Hz (%s); trying %d Hz", self.device.name, self.device_rate, exc, fallback)
            self.device_rate = fallback
            self._open_stream()

    def _open_stream(self) -> None:
        frames = max(64, int(self.device_rate * CALLBACK_SECONDS))
        capacity = int(self.max_buffered * self.device_rate) * SAMPLE_WIDTH + 2 * frames * SAMPLE_WIDTH
        self._ring = bytearray(capacity)
        self._ring_view = memoryview(self._ring)
        self._out = bytearray(4 * frames * SAMPLE_WIDTH)  # PortAudio may ask for more than it was told
        self._out_view = memoryview(self._out)
        self._silence = bytes(len(self._out))
        self.frames_per_buffer = frames
        self._stream = self._pa.open(
            format=self._pyaudio.paInt16, channels=1, rate=self.device_rate, output=True,
            output_device_index=self.device.index if self.device else None,
            frames_per_buffer=frames, start=False, stream_callback=self._callback)
        # Fallback for backends without timestamps: this much silence after the end flushes the device.
        self._latency_frames = int(self._output_latency() * self.device_rate) + frames

    def close(self) -> None:
        """Abort the stream if it still plays, close it, terminate PortAudio. Idempotent."""
        with self._stream_lock:
            stream, self._stream = self._stream, None
            pa, self._pa = self._pa, None

        def release() -> None:
            if stream is not None:
                try:
                    with _portaudio_locked():
                        stream.close()  # discards pending buffers, like an abort
                except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
                    log.debug("closing the stream: %s", exc)
            if pa is not None:
                try:
                    _close_portaudio(pa)
                except AudioDeviceError as exc:
                    log.warning("PortAudio left open: %s", exc)

        if self._stalled:  # a hung sound server may never answer the close
            _in_background(release, "stream-close")
        else:
            release()

    def __enter__(self) -> "Player":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # the feeding thread -----------------------------------------------------------------------------
    @property
    def buffered_seconds(self) -> float:
        """Audio queued but not yet handed to the device."""
        return (self._written - self._read) / SAMPLE_WIDTH / self.device_rate

    @property
    def stopped(self) -> bool:
        """True once `stop()` was called."""
        return self._stopped.is_set()

    @property
    def stopped_event(self) -> threading.Event:
        """Set by `stop()`: for waits that `stop()` must end."""
        return self._stopped

    def feed(self, pcm: bytes) -> bool:
        """Queue 16-bit PCM at `rate` (whole samples). Waits while `max_buffered` seconds are queued.

        Returns False, without queueing, once the player was stopped.
        """
        if self._stopped.is_set():
            return False
        if self._odd or len(pcm) % SAMPLE_WIDTH:  # keep samples whole across calls
            pcm = self._odd + pcm
            cut = len(pcm) - len(pcm) % SAMPLE_WIDTH
            pcm, self._odd = pcm[:cut], pcm[cut:]
        if self.volume != 1.0:
            pcm = _scale(pcm, self.volume)
        if self._resampler is not None:
            pcm = self._resampler.feed(pcm)
        return self._push(pcm)

    def _push(self, pcm: bytes) -> bool:
        """Copy device-rate PCM into the ring, waiting for room; start once the prebuffer is queued."""
        view = memoryview(pcm)
        while view:
            free = len(self._ring) - (self._written - self._read)
            if free < SAMPLE_WIDTH:
                if not self._started:
                    self._start()  # a buffer smaller than the prebuffer must not wait forever
                if self._stopped.wait(_FULL_WAIT):
                    return False
                self._raise_callback_error()
                self._check_progress()
                continue
            count = min(len(view), free - free % SAMPLE_WIDTH)
            self._write(view[:count])
            view = view[count:]
            if not self._started and self.buffered_seconds >= self.prebuffer:
                self._start()
        return not self._stopped.is_set()

    def _write(self, data: memoryview) -> None:
        size = len(self._ring)
        start = self._written % size
        first = min(len(data), size - start)
        self._ring_view[start:start + first] = data[:first]
        if first < len(data):
            self._ring_view[0:len(data) - first] = data[first:]
        self._written += len(data)  # published last: the callback only reads up to here

    def end(self) -> None:
        """No more input: start if the prebuffer was never reached; the callback completes when empty."""
        if self._resampler is not None and not self._input_done:
            self._push(self._resampler.flush())  # the resampler's last samples
        self._input_done = True
        if not self._started and self._written and not self._stopped.is_set():
            self._start()

    def _start(self) -> None:
        with self._stream_lock:
            if self._started or self._stream is None or self._stopped.is_set():
                return
            self._started = True
            self._stream.start_stream()
        log.debug("playback started with %.3f s buffered", self.buffered_seconds)

    def drain(self) -> None:
        """`end()`, then wait until the device has played the last sample (or `stop()` was called).

        The callback completes only once PortAudio's clock says the last sample reached the speaker
        (see `_callback`), and the stream goes inactive after that: no fixed sleeps, no silence timers.
        """
        self.end()
        if not self._started:
            return
        deadline = None
        while not self._stopped.is_set():
            self._raise_callback_error()
            with self._stream_lock:
                active = self._stream is not None and self._stream.is_active()
            if not active:
                break
            if self._read < self._written:
                self._check_progress()  # still playing audio, as long as the device takes it
                deadline = None
            elif deadline is None:
                deadline = time.monotonic() + self._output_latency() + _DRAIN_GRACE
            elif time.monotonic() > deadline:
                log.warning("the audio device did not report the end of playback; stopping it")
                break
            self._stopped.wait(_POLL)
        self._raise_callback_error()

    def _check_progress(self) -> None:
        """Raise `AudioDeviceError` if the device has taken no audio for its latency plus _STALL_GRACE
        while audio waits (a sound server that hangs or dies never calls back again)."""
        now = time.monotonic()
        if self._progress is None or self._progress[0] != self._read or not self._started:
            self._progress = (self._read, now)
            return
        since = self._progress[1]
        if now - since > self._output_latency() + (_STALL_GRACE if self._read else _START_GRACE):
            self._stalled = True
            raise AudioDeviceError(
                f"The audio device stopped playing: it has taken no audio for {now - since:.1f} s "
                "(the sound server hung or died?). Check the sound setup, or use synthesize()/save().")

    def _output_latency(self) -> float:
        with self._stream_lock:
            try:
                return float(self._stream.get_output_latency()) if self._stream is not None else 0.0
            except Exception:  # noqa: BLE001
                return 0.0

    def stop(self) -> None:
        """Silence now, from any thread: abort the stream (pending buffers are dropped) and wake waiters."""
        self._stopped.set()
        if self._stalled:
            return  # the device plays nothing; close() lets go of it without waiting on the sound server
        with self._stream_lock:
            stream = self._stream
            if stream is None or not self._started:
                return
            try:
                abort = getattr(self._pyaudio._portaudio, "abort_stream", None)
                if abort is not None:
                    abort(stream._stream)
                else:
                    stream.stop_stream()
            except Exception as exc:  # noqa: BLE001 - already stopped or closed: nothing to silence
                log.debug("aborting the stream: %s", exc)

    def _raise_callback_error(self) -> None:
        error = self._callback_error
        if error is not None:
            self._callback_error = None
            raise AudioDeviceError(f"The audio callback failed: {error!r}") from error

    # PortAudio's thread -----------------------------------------------------------------------------
    def _callback(self, in_data: Optional[bytes], frame_count: int, time_info: Mapping[str, float],
                  status: int) -> Tuple[bytes, int]:
        """Copy whole samples from the ring into one output buffer. Never blocks, never raises: an
        exception here would be injected into the main thread by PyAudio."""
        pyaudio = self._pyaudio
        try:
            wanted = frame_count * SAMPLE_WIDTH
            if wanted > len(self._out):  # PortAudio asked for more than it was told: grow, once
                self._out = bytearray(wanted)
                self._out_view = memoryview(self._out)
                self._silence = bytes(wanted)
            done = self._input_done  # read before the ring: data written before `done` is then visible
            available = self._written - self._read
            count = min(available, wanted)
            count -= count % SAMPLE_WIDTH
            if count:
                size = len(self._ring)
                start = self._read % size
                first = min(count, size - start)
                self._out_view[:first] = self._ring_view[start:start + first]
                if first < count:
                    self._out_view[first:count] = self._ring_view[:count - first]
                self._read += count
                self.played_samples += count // SAMPLE_WIDTH
                if self.first_sound_at is None:
                    self.first_sound_at = _heard_at(time_info)
            if count < wanted:
                self._out_view[count:wanted] = self._silence[:wanted - count]
                if not done:
                    self.underruns += 1
                elif self._tail_until is None:
                    # The last sample is in this buffer. Keep the stream running on silence until the
                    # device has played it: PortAudio backends (ALSA's pulse plugin among them) may
                    # drop what is still queued when the callback completes.
                    self._tail_until = self._last_sample_heard(time_info, count // SAMPLE_WIDTH)
                if done and self._tail_done(time_info, wanted // SAMPLE_WIDTH):
                    return bytes(self._out_view[:wanted]), pyaudio.paComplete
            return bytes(self._out_view[:wanted]), pyaudio.paContinue
        except BaseException as exc:  # noqa: BLE001 - reported to the feeding thread, never raised here
            self._callback_error = exc
            return b"", pyaudio.paAbort

    def _last_sample_heard(self, time_info: Mapping[str, float], frames: int) -> float:
        """When the end is heard: a stream time if PortAudio gives timestamps, else frames of silence."""
        now = time_info.get("current_time", 0.0)
        dac = time_info.get("output_buffer_dac_time", 0.0)
        if now > 0 and 0 <= dac - now < 1.0:
            self._tail_by_clock = True
            return dac + frames / self.device_rate
        self._tail_by_clock = False
        return float(self._latency_frames + frames)

    def _tail_done(self, time_info: Mapping[str, float], frames: int) -> bool:
        """Has the device played the last sample? (Called once per callback after the end.)"""
        if self._tail_until is None:
            return True
        if self._tail_by_clock:
            return time_info.get("current_time", 0.0) >= self._tail_until
        self._tail_until -= frames
        return self._tail_until <= 0


def _heard_at(time_info: Mapping[str, float]) -> float:
    """Monotonic time at which this buffer's first sample reaches the speaker, from PortAudio's clock."""
    now = time.monotonic()
    ahead = time_info.get("output_buffer_dac_time", 0.0) - time_info.get("current_time", 0.0)
    return now + ahead if 0.0 <= ahead < 1.0 else now
