"""PortAudio, shared by every player in the process: starting and stopping it (counted, under one lock,
fork-safe), quieting ALSA and JACK, and finding output devices.

Only this module imports PyAudio, and only when playback is asked for, so `synthesize()`, `stream()` and
`save()` work on machines without a sound card. `doctor` and `playback` use its public functions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from typing import Any, Callable, Iterator, List, Tuple, Union

from ..errors import ArgumentTypeError, AudioDeviceError

log = logging.getLogger("basetts")

DeviceSpec = Union[int, str, None]
"""An output device: its index, part of its name (case-insensitive), or None for the default."""

_INSTALL_HINT = (
    "Install PortAudio and PyAudio: `pip install pyaudio` (the [play] extra) (Debian/Ubuntu: `apt-get install "
    "portaudio19-dev` first; macOS: `brew install portaudio`). Or skip the sound card: "
    "`synth.synthesize(text)` or `synth.save(text, 'out.wav')` need neither."
)


def import_pyaudio() -> Any:
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
def locked() -> Iterator[None]:
    """`_portaudio_lock`, or an `AudioDeviceError` if a call stuck in the sound server holds it."""
    if not _portaudio_lock.acquire(timeout=_LOCK_TIMEOUT):
        raise AudioDeviceError("The sound system is not responding (a PortAudio call has been stuck for "
                               f"{_LOCK_TIMEOUT:g} s). Check the sound server, or use synthesize()/save().")
    try:
        yield
    finally:
        _portaudio_lock.release()


def in_background(call: Callable[[], None], name: str, wait: float = 1.0) -> None:
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


def acquire() -> Tuple[Any, Any]:
    """(pyaudio module, the process's `PyAudio`); give it back with `release`."""
    global _shared_pa, _shared_users
    pyaudio = import_pyaudio()
    if _inherited_portaudio:
        raise AudioDeviceError(
            "This process was forked from one that had the sound device open (PortAudio cannot be restarted "
            "in a forked child). Play from the parent, or start workers with the 'spawn' method "
            "(multiprocessing.get_context('spawn')); synthesize()/save() work here as usual.")
    with locked():
        if _shared_pa is None:
            _quiet_native_libraries()
            try:
                _shared_pa = pyaudio.PyAudio()
            except Exception as exc:  # noqa: BLE001 - PortAudio's own init failure, rare but possible
                raise AudioDeviceError(f"PortAudio failed to start: {exc}. {_INSTALL_HINT}") from None
        _shared_users += 1
        return pyaudio, _shared_pa


def release(pa: Any) -> None:
    """Terminate PortAudio once its last user is done."""
    global _shared_pa, _shared_users
    with locked():
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
                _, self._pa = acquire()

    def release(self) -> None:
        """Let PortAudio stop once its last Player is done."""
        with self._lock:
            pa, self._pa = self._pa, None
        if pa is not None and self._pid == os.getpid():
            release(pa)


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


def output_devices(pa: Any) -> List[Device]:
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


@contextlib.contextmanager
def started() -> Iterator[Tuple[Any, Any]]:
    """(pyaudio module, the process's `PyAudio`) for the block: PortAudio started, then let go."""
    pyaudio, pa = acquire()
    try:
        yield pyaudio, pa
    finally:
        release(pa)


def devices() -> List[Device]:
    """The audio output devices PortAudio can see, the default one marked. Raises `AudioDeviceError`
    if PyAudio is missing."""
    with started() as (_, pa), locked():
        return output_devices(pa)


def resolve_device(pa: Any, spec: DeviceSpec) -> Device:
    """The device for an index, a name fragment, or None (the default); a clear error if there is none."""
    outputs = output_devices(pa)
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
        raise ArgumentTypeError(f"output_device must be an index, a name or None, not {type(spec).__name__}")
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
    with started() as (_, pa), locked():
        return resolve_device(pa, device)


def supports(pa: Any, pyaudio: Any, device: Device, rate: int) -> bool:
    """Does `device` take mono 16-bit PCM at `rate`?"""
    try:
        return bool(pa.is_format_supported(rate, output_device=device.index, output_channels=1,
                                           output_format=pyaudio.paInt16))
    except ValueError:  # PyAudio's way of saying "not supported"
        return False


def choose_rate(pa: Any, pyaudio: Any, device: Device, rate: int) -> int:
    """`rate` if the device takes it, else the device's default rate (we resample): never fail on rate."""
    if supports(pa, pyaudio, device, rate):
        return rate
    fallback = int(round(device.default_sample_rate))
    log.info("%s cannot play %d Hz; opening it at %d Hz and resampling", device.name, rate, fallback)
    return fallback
