"""`basetts doctor`: check, in order, what speech needs on this machine, one verdict line per check.

PortAudio, the output device, 24 kHz, a short tone actually played, the configuration, and the time to
first audio from the configured endpoint (or the local server when none is configured).
"""
from __future__ import annotations

import array
import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Optional

from ..errors import BasetenTTSError, ConfigurationError
from ..pcm import SAMPLE_RATE

OK, WARN, FAIL = "ok", "warn", "FAIL"
TEXT = "Hello from basetts doctor, checking how soon the first audio arrives."


@dataclasses.dataclass
class Check:
    """One verdict: `status` is OK, WARN (works, with a caveat) or FAIL (with what to do)."""

    name: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:>4}  {self.name}: {self.detail}"


def tone(seconds: float = 0.3, frequency: float = 440.0, rate: int = SAMPLE_RATE) -> bytes:
    """A quiet sine with 10 ms fades (no clicks), as 16-bit PCM."""
    count, fade = int(seconds * rate), int(0.01 * rate)
    samples = array.array("h", (
        int(6000 * min(1.0, i / fade, (count - 1 - i) / fade) * math.sin(2 * math.pi * frequency * i / rate))
        for i in range(count)))
    return samples.tobytes()


def _sound_checks(device: Any) -> Iterator[Check]:
    from ..playback import Player, portaudio

    names = ("output device", "24 kHz", "test tone")
    try:
        pyaudio, pa = portaudio.acquire()
    except BasetenTTSError as exc:
        yield Check("PortAudio", FAIL, str(exc))
        yield from (Check(name, FAIL, "not checked: needs PortAudio") for name in names)
        return
    try:
        yield Check("PortAudio", OK, f"PyAudio {pyaudio.__version__}, {pyaudio.get_portaudio_version_text()}")
        try:
            with portaudio.locked():
                found = portaudio.resolve_device(pa, device)
                native = portaudio.supports(pa, pyaudio, found, SAMPLE_RATE)
        except (BasetenTTSError, TypeError) as exc:
            yield Check("output device", FAIL, str(exc))
            yield from (Check(name, FAIL, "not checked: needs an output device") for name in names[1:])
            return
        yield Check("output device", OK, str(found))
        yield (Check("24 kHz", OK, "the device plays 24000 Hz as sent") if native else
               Check("24 kHz", WARN, f"the device refuses 24000 Hz; basetts resamples to "
                                     f"{found.default_sample_rate:g} Hz (small extra CPU, same sound)"))
        try:
            with Player(device, prebuffer=0.0) as player:
                begun = time.monotonic()
                player.feed(tone())
                player.drain()
            heard = "" if player.first_sound_at is None else \
                f", first sound after {1000 * (player.first_sound_at - begun):.0f} ms"
            yield Check("test tone", OK, f"played 0.3 s at {player.device_rate} Hz{heard}; "
                                         f"underruns {player.underruns}")
        except BasetenTTSError as exc:
            yield Check("test tone", FAIL, str(exc))
    finally:
        portaudio.release(pa)


def _endpoint_checks(make_synthesizer: Callable[..., Any], url: Optional[str], local: bool,
                     protocol: Optional[str] = None) -> Iterator[Check]:
    with contextlib.ExitStack() as stack:
        synth = None
        if not local:
            try:
                synth = make_synthesizer(url=url)
                yield Check("configuration", OK, f"endpoint {synth.settings.url}, protocol "
                                                f"{synth.settings.protocol} (API key set)")
            except ConfigurationError as exc:
                yield Check("configuration", WARN,
                            f"{str(exc).rstrip('.')}. Measuring against the local server instead.")
        if synth is None:
            from ..settings import protocol_from_environment
            from ..testing import LocalServer

            server = stack.enter_context(LocalServer.ready_to_speak(protocol or protocol_from_environment()))
            synth = make_synthesizer(url=server.url, api_key=server.api_key)
            if local:
                yield Check("configuration", OK, f"the local server at {server.url} (--local)")
        protocol = synth.settings.protocol
        try:
            audio = synth.synthesize(TEXT)
        except BasetenTTSError as exc:
            yield Check("time to first audio", FAIL, str(exc))
            return
        stats = audio.stats
        if synth.settings.protocol != protocol:  # only a model id: the first call found out what it speaks
            yield Check("protocol", OK, f"the deployment serves HTTP only (…/predict): basetts speaks "
                        f"{synth.settings.protocol}; set BASETTS_PROTOCOL={synth.settings.protocol} (or use its "
                        "predict URL) to skip that check")
        yield Check("time to first audio", OK,
                    f"{_ms(stats.first_byte_time)} (connected in {_ms(stats.connect_time)}); "
                    f"{audio.duration:.1f} s of audio in {_ms(stats.total_time)}")


def _ms(seconds: Optional[float]) -> str:
    return "?" if seconds is None else f"{1000 * seconds:.0f} ms"


def run(device: Any = None, url: Optional[str] = None, local: bool = False,
        make_synthesizer: Optional[Callable[..., Any]] = None, protocol: Optional[str] = None) -> Iterator[Check]:
    """Every check in order; a failed sound check does not stop the endpoint checks. `protocol`: the local
    server's when one is measured (default: BASETTS_PROTOCOL)."""
    from ..synthesizer import Synthesizer

    yield from _sound_checks(device)
    yield from _endpoint_checks(make_synthesizer or Synthesizer, url, local, protocol)
