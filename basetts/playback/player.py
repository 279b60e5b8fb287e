"""Playback: `Player`, a PyAudio *callback* stream fed from a `Ring`, and `Playback`, the handle users hold.

The feeding thread `feed()`s PCM (volume and resampling happen there, never in the audio callback);
PortAudio's thread runs `_callback`, which copies whole samples out of the ring, fades in and out (stop,
pause, an underrun: never a click) and pads silence. PortAudio itself (starting it, devices) is
`portaudio.py`'s.
"""
from __future__ import annotations

import array
import logging
import math
import sys
import threading
import time
from typing import Any, Mapping, Optional, Tuple

from ..errors import AudioDeviceError, ConfigurationError
from ..pcm import SAMPLE_RATE, SAMPLE_WIDTH
from . import portaudio
from .portaudio import Device, DeviceSpec, PortAudioHold
from .resample import Resampler
from .ring import Ring

log = logging.getLogger("basetts")

DEFAULT_PREBUFFER = 0.1
"""Seconds queued before the sound starts: enough to ride out network jitter, short enough not to be heard."""
MAX_PREBUFFER = 1.0
"""After an underrun the prebuffer grows, for the rest of the utterance, up to this (or the one asked for)."""
PREBUFFER_STEP = 0.2
"""An underrun grows the prebuffer by at least this, and at least doubles it."""
MAX_BUFFERED = 4.0
"""Seconds `feed()` lets pile up ahead of the device before it waits: memory stays flat on long texts."""
CALLBACK_SECONDS = 0.02
"""Length of one callback buffer. Small keeps `stop()` and the end of speech prompt; 20 ms is safe on
PulseAudio, ALSA, CoreAudio and WASAPI alike."""
FADE_SECONDS = 0.005
"""Fade out on stop, pause and underrun, and in on resume and after an underrun: no click, nothing heard late."""

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
# Beyond the device's latency, how long close() waits for a stop's fade-out to be heard.
_FADE_GRACE = 0.25


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
    `drain()` returns when the device has played the last sample; `stop()`, `pause()` and `resume()` work
    from any thread and fade (`FADE_SECONDS`). After an underrun the callback stays silent until the
    (grown) prebuffer is queued again, then fades in. Counters: `underruns`, `rebuffer_seconds` (silence
    played while rebuffering), `played_samples` (device samples taken from the ring), `first_sound_at`
    (monotonic time the first sample is heard), `prebuffer` (as grown).
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
        """`rate`: of the PCM fed (mono 16-bit). `device_rate` forces the rate the device is opened at
        (None: `rate` if the device takes it). `hold` keeps PortAudio started after this player closes."""
        if isinstance(volume, bool) or not isinstance(volume, (int, float)) or not 0.0 <= volume <= 1.0:
            raise ConfigurationError(f"volume must be a number from 0 to 1, got {volume!r}")
        if (isinstance(prebuffer, bool) or not isinstance(prebuffer, (int, float))
                or not math.isfinite(prebuffer) or prebuffer < 0):
            raise ConfigurationError(f"prebuffer must be a number of seconds >= 0, got {prebuffer!r}")
        self.device_spec = device
        self.rate = rate
        self.prebuffer = float(prebuffer)
        self.volume = float(volume)
        self.max_buffered = max(float(max_buffered), self.prebuffer + 1.0)
        self.max_prebuffer = max(self.prebuffer, min(MAX_PREBUFFER, self.max_buffered / 2))
        self._forced_rate = device_rate
        self._hold = hold
        self.device: Optional[Device] = None
        self.device_rate = rate
        self.underruns = 0
        self.rebuffer_seconds = 0.0
        self.played_samples = 0  # device samples taken from the ring (silence padding excluded)
        self.first_sound_at: Optional[float] = None
        self._pyaudio: Any = None
        self._pa: Any = None
        self._stream: Any = None
        self._resampler: Optional[Resampler] = None
        self._stream_lock = threading.Lock()  # stream start/close; never taken by the callback
        self._stopped = threading.Event()
        self._paused = False
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
        self._ring = Ring(SAMPLE_WIDTH)
        self._out = bytearray()
        self._out_view = memoryview(self._out)
        self._out_samples = memoryview(self._out).cast("h")
        self._silence = memoryview(b"")
        self._splice: Optional[int] = None  # a ring position where a unit heard in part is cut (`take_back`)
        self._spliced_out = False  # the callback faded out before the splice, in the buffer before it
        # Callback state: the fade position in samples (_fade: fully audible, 0: silent), rebuffering.
        self._fade = max(1, int(FADE_SECONDS * rate))
        self._level = self._fade
        self._rebuffering = False
        self._calls = 0  # callbacks that took nothing from the ring (paused, rebuffering): still alive

    # lifecycle -------------------------------------------------------------------------------------
    def open(self) -> "Player":
        """Find the device and open the stream (not started yet); again, a no-op. Raises `AudioDeviceError`."""
        if self._stream is not None:
            return self
        self._pyaudio, self._pa = portaudio.acquire()
        try:
            with portaudio.locked():
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
        """Resolve the device and open the stream at `rate`, or at the device's own rate if it refuses."""
        self.device = portaudio.resolve_device(self._pa, self.device_spec)
        self.device_rate = self._forced_rate or portaudio.choose_rate(self._pa, self._pyaudio, self.device, self.rate)
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
        self._ring = Ring(int(self.max_buffered * self.device_rate) * SAMPLE_WIDTH + 2 * frames * SAMPLE_WIDTH,
                          SAMPLE_WIDTH)
        self._grow_out(4 * frames * SAMPLE_WIDTH)  # PortAudio may ask for more than it was told
        self._fade = self._level = max(1, int(FADE_SECONDS * self.device_rate))
        self.frames_per_buffer = frames
        self._stream = self._pa.open(
            format=self._pyaudio.paInt16, channels=1, rate=self.device_rate, output=True,
            output_device_index=self.device.index if self.device else None,
            frames_per_buffer=frames, start=False, stream_callback=self._callback)
        # Fallback for backends without timestamps: this much silence after the end flushes the device.
        self._latency_frames = int(self._output_latency() * self.device_rate) + frames

    def _grow_out(self, size: int) -> None:
        self._out = bytearray(size)
        self._out_view = memoryview(self._out)
        self._out_samples = self._out_view.cast("h")
        self._silence = memoryview(bytes(size))

    def close(self) -> None:
        """Let a stop's fade-out be heard, then close the stream and let PortAudio go. Idempotent."""
        if self._stopped.is_set() and not self._stalled:
            self._wait_inactive(self._output_latency() + _FADE_GRACE)
        with self._stream_lock:
            stream, self._stream = self._stream, None
            pa, self._pa = self._pa, None

        def release() -> None:
            if stream is not None:
                try:
                    with portaudio.locked():
                        stream.close()  # discards pending buffers, like an abort
                except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
                    log.debug("closing the stream: %s", exc)
            if pa is not None:
                try:
                    portaudio.release(pa)
                except AudioDeviceError as exc:
                    log.warning("PortAudio left open: %s", exc)

        if self._stalled:  # a hung sound server may never answer the close
            portaudio.in_background(release, "stream-close")
        else:
            release()

    def _wait_inactive(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self._stream_lock:
                if not self._started or self._stream is None or not self._stream.is_active():
                    return
            time.sleep(_POLL)

    def __enter__(self) -> "Player":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # control, from any thread ----------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        """True once `stop()` was called."""
        return self._stopped.is_set()

    @property
    def stopped_event(self) -> threading.Event:
        """Set by `stop()`: for waits that `stop()` must end."""
        return self._stopped

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def started(self) -> bool:
        """The stream has started (the prebuffer was reached, or the input ended)."""
        return self._started

    def stop(self) -> None:
        """Fade out now and play nothing more; wakes every wait. `close()` lets the fade be heard."""
        self._stopped.set()

    def pause(self) -> None:
        """Fade out and play silence, keeping the place; the stream stays open (and `feed()` fills it)."""
        self._paused = True

    def resume(self) -> None:
        """Fade back in where `pause()` left off."""
        self._progress = None  # time paused is not a stalled device
        self._paused = False

    # the feeding thread -----------------------------------------------------------------------------
    @property
    def buffered_seconds(self) -> float:
        """Audio queued but not yet handed to the device."""
        return self._ring.available / SAMPLE_WIDTH / self.device_rate

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

    def take_back(self, count: int) -> int:
        """Remove up to the last `count` bytes fed that the device has not taken yet, but for a margin the
        callback may be reading (two of its largest buffers); the bytes removed. None behind a resampler, whose
        state has run on: 0 (the restart that follows still joins with a fade)."""
        ring = self._ring
        if self._resampler is not None or self._odd:
            if count and ring.written > ring.read:
                if self._resampler is not None:
                    self._push(self._resampler.flush())  # the old sound's last samples: the join is exact
                self._splice = ring.written
            return 0
        margin = 2 * len(self._out) if self._started else 0
        removable = max(0, min(count, ring.written - ring.read - margin))
        removable -= removable % SAMPLE_WIDTH
        ring.written -= removable  # only this (the writing) thread moves it
        if removable < count and ring.written > ring.read:
            # What comes next restarts a unit partly heard: the callback fades out into the splice and in
            # after it, so the jump between two sounds is no click.
            self._splice = ring.written
        return removable

    def _push(self, pcm: bytes) -> bool:
        """Copy device-rate PCM into the ring, waiting for room; start once the prebuffer is queued."""
        view = memoryview(pcm)
        while view:
            taken = self._ring.write(view)
            view = view[taken:]
            if not self._started and self.buffered_seconds >= self.prebuffer:
                self._start()
            if view:
                if not self._started:
                    self._start()  # a buffer smaller than the prebuffer must not wait forever
                if self._stopped.wait(_FULL_WAIT):
                    return False
                self._raise_callback_error()
                self._check_progress()
        return not self._stopped.is_set()

    def end(self) -> None:
        """No more input: start if the prebuffer was never reached; the callback completes when empty."""
        if self._resampler is not None and not self._input_done:
            self._push(self._resampler.flush())  # the resampler's last samples
        self._input_done = True
        if not self._started and self._ring.written and not self._stopped.is_set():
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
        While paused, it waits for `resume()` (or `stop()`).
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
            if self._ring.available or self._paused:
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
        while audio waits (a sound server that hangs or dies never calls back again). Paused or
        rebuffering, the callback takes nothing by design; its calls are what count then."""
        now = time.monotonic()
        progress = self._ring.read + self._calls
        if self._progress is None or self._progress[0] != progress or not self._started:
            self._progress = (progress, now)
            return
        since = self._progress[1]
        if now - since > self._output_latency() + (_STALL_GRACE if self._ring.read else _START_GRACE):
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

    def _raise_callback_error(self) -> None:
        error = self._callback_error
        if error is not None:
            self._callback_error = None
            raise AudioDeviceError(f"The audio callback failed: {error!r}") from error

    # PortAudio's thread -----------------------------------------------------------------------------
    def _callback(self, in_data: Optional[bytes], frame_count: int, time_info: Mapping[str, float],
                  status: int) -> Tuple[bytes, int]:
        """Fill one output buffer from the ring, fading where the sound starts or stops. Never blocks,
        never raises: an exception here would be injected into the main thread by PyAudio."""
        pyaudio = self._pyaudio
        try:
            wanted = frame_count * SAMPLE_WIDTH
            if wanted > len(self._out):  # PortAudio asked for more than it was told: grow, once
                self._grow_out(wanted)
            done = self._input_done  # read before the ring: data written before `done` is then visible
            ring, fade = self._ring, self._fade
            stopping = self._stopped.is_set()
            quiet = stopping or self._paused
            if self._rebuffering and (done or ring.available >= self._prebuffer_bytes()):
                self._rebuffering = False
            count = 0
            if self._level == 0 and (quiet or self._rebuffering):
                self._calls += 1  # silence: nothing taken, the place kept
                if self._rebuffering and not quiet:
                    self.rebuffer_seconds += frame_count / self.device_rate
            elif quiet:  # stop or pause: the next few milliseconds, faded out
                count = ring.read_into(self._out_view, min(wanted, self._level * SAMPLE_WIDTH))
                self._ramp(0, count // SAMPLE_WIDTH, self._level, 0)
                self._level = 0
            else:
                start = ring.read
                count = ring.read_into(self._out_view, wanted)
                samples = count // SAMPLE_WIDTH
                if self._splice is not None:
                    self._fade_splice(start, samples)
                if self._level < fade:  # resuming: fade in
                    rise = min(samples, fade - self._level)
                    self._ramp(0, rise, self._level, self._level + rise)
                    self._level += rise
                if not done and ring.available < fade * SAMPLE_WIDTH:
                    # Running dry (less than a fade left): fade out the end of what there is, and wait
                    # for more than before.
                    tail = min(samples, fade)
                    self._ramp(samples - tail, samples, fade, 0)
                    self._level = 0
                    self._underrun()
            if count:
                self.played_samples += count // SAMPLE_WIDTH
                if self.first_sound_at is None:
                    self.first_sound_at = _heard_at(time_info)
            if count < wanted:
                self._out_view[count:wanted] = self._silence[:wanted - count]
            flag = pyaudio.paContinue
            if (stopping and self._level == 0) or (done and not ring.available):
                if self._tail_until is None:
                    # The last sample is in this buffer. Keep the stream running on silence until the
                    # device has played it: PortAudio backends (ALSA's pulse plugin among them) may
                    # drop what is still queued when the callback completes.
                    self._tail_until = self._last_sample_heard(time_info, count // SAMPLE_WIDTH)
                if self._tail_done(time_info, frame_count):
                    flag = pyaudio.paComplete
            return bytes(self._out_view[:wanted]), flag
        except BaseException as exc:  # noqa: BLE001 - reported to the feeding thread, never raised here
            self._callback_error = exc
            return b"", pyaudio.paAbort

    def _fade_splice(self, start: int, samples: int) -> None:
        """Fade out into the splice and in after it, in the output buffer of `samples` read from ring position
        `start`: a unit restarted after a lost connection joins what was heard of it without a click."""
        splice, fade = self._splice, self._fade
        assert splice is not None
        end = start + samples * SAMPLE_WIDTH
        if splice < end:
            at = max(0, splice - start) // SAMPLE_WIDTH
            if self._spliced_out:  # faded out already: what is left before the splice stays silent
                self._out_view[:at * SAMPLE_WIDTH] = self._silence[:at * SAMPLE_WIDTH]
            else:
                self._ramp(max(0, at - fade), at, fade, 0)
            self._ramp(at, min(samples, at + fade), 0, fade)
            self._splice, self._spliced_out = None, False
        elif not self._spliced_out and splice - end < fade * SAMPLE_WIDTH:
            tail = min(samples, fade)  # too close to fade before it in the next buffer: fade out here
            self._ramp(samples - tail, samples, fade, 0)
            self._spliced_out = True

    def _ramp(self, start: int, end: int, from_level: int, to_level: int) -> None:
        """Scale output samples [start, end) linearly from from_level/_fade to to_level/_fade."""
        span = end - start
        if span <= 0:
            return
        samples, fade = self._out_samples, self._fade
        for i in range(span):
            level = from_level + (to_level - from_level) * (i + 1) // span if to_level < from_level else \
                from_level + (to_level - from_level) * i // span
            samples[start + i] = samples[start + i] * level // fade

    def _underrun(self) -> None:
        """The ring ran dry before the end: count it, grow the prebuffer, rebuffer."""
        self.underruns += 1
        self._rebuffering = True
        self.prebuffer = min(self.max_prebuffer, max(2 * self.prebuffer, self.prebuffer + PREBUFFER_STEP))

    def _prebuffer_bytes(self) -> int:
        return int(self.prebuffer * self.device_rate) * SAMPLE_WIDTH

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
