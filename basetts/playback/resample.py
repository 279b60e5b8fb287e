"""Resampling 16-bit PCM for a device that will not take 24 kHz, and making any `Audio` playable (16-bit mono)."""
from __future__ import annotations

import array
import os
import sys
from typing import Optional, Union

from ..audio import Audio
from ..errors import ArgumentTypeError, ConfigurationError


class Resampler:
    """Streaming linear-interpolation resampler for mono 16-bit little-endian PCM.

    Linear interpolation is enough for speech between 22.05/24/44.1/48 kHz and needs no dependency;
    state carries across calls so chunk boundaries add no clicks. `flush()` gives the samples held
    back at the end (nothing after the last input sample to interpolate towards).
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        # Output k sits at input position k * from_rate / to_rate, computed exactly in integers (a float
        # step would drift by whole samples over a long stream).
        self._emitted = 0  # outputs so far
        self._base = 0  # input index of _last (the previous chunk's final sample)
        self._last: Optional[int] = None

    def feed(self, pcm: bytes) -> bytes:
        source = _samples(pcm[: len(pcm) - len(pcm) % 2])
        if self._last is not None:
            source.insert(0, self._last)
        out = self._emit(source, len(source) - 1)
        if len(source):
            self._base += len(source) - 1
            self._last = source[-1]
        return _pcm(out)

    def flush(self) -> bytes:
        """The output still owed for the last input sample (held, as nothing follows it); then reset."""
        out = array.array("h")
        if self._last is not None:
            out = self._emit(array.array("h", [self._last, self._last]), 0, hold=True)
        self._emitted, self._base, self._last = 0, 0, None
        return _pcm(out)

    def _emit(self, source: "array.array[int]", limit: int, hold: bool = False) -> "array.array[int]":
        """Outputs whose position falls before source[limit] (or at it, with `hold`); source[0] is input
        number `_base`."""
        out = array.array("h")
        k, base, up, down = self._emitted, self._base, self.from_rate, self.to_rate
        end = base + limit + (1 if hold else 0)
        while True:
            index, remainder = divmod(k * up, down)
            if index >= end:
                break
            a = source[index - base]
            b = source[index - base + 1]
            out.append((2 * (a * down + (b - a) * remainder) + down) // (2 * down))  # rounded to nearest
            k += 1
        self._emitted = k
        return out


def playable(source: Union[Audio, str, "os.PathLike[str]"]) -> Audio:
    """`source` (an `Audio` or a WAV file's path) as 16-bit mono PCM at its own rate, for a player: wider
    or narrower samples are cut or widened, channels are averaged."""
    if isinstance(source, (str, os.PathLike)):
        source = Audio.from_wav(source)
    elif not isinstance(source, Audio):
        raise ArgumentTypeError(f"play() takes an Audio or a WAV file's path, not {type(source).__name__}")
    pcm, width, channels = source.pcm, source.sample_width, source.channels
    if width != 2:
        pcm = _to_16_bit(pcm, width)
    if channels > 1:
        pcm = _to_mono(pcm, channels)
    return Audio(pcm, sample_rate=source.sample_rate, stats=source.stats)


def _to_16_bit(pcm: bytes, width: int) -> bytes:
    """Little-endian PCM of `width` bytes per sample (8-bit unsigned, as WAV has it) as 16-bit."""
    count = len(pcm) // width
    out = bytearray(2 * count)
    if width == 1:
        out[1::2] = pcm[:count].translate(bytes((b ^ 0x80) for b in range(256)))
    elif width in (3, 4):
        out[0::2] = pcm[width - 2:count * width:width]  # the two most significant bytes
        out[1::2] = pcm[width - 1:count * width:width]
    else:
        raise ConfigurationError(f"cannot play {8 * width}-bit samples")
    return bytes(out)


def _to_mono(pcm: bytes, channels: int) -> bytes:
    samples = _samples(pcm[:len(pcm) - len(pcm) % (2 * channels)])
    parts = [samples[c::channels] for c in range(channels)]
    mixed = array.array("h", (sum(group) // channels for group in zip(*parts)))
    return _pcm(mixed)


def _samples(pcm: bytes) -> "array.array[int]":
    samples = array.array("h", pcm)
    if sys.byteorder != "little":  # the PCM is little-endian whatever the machine
        samples.byteswap()
    return samples


def _pcm(samples: "array.array[int]") -> bytes:
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole mono 16-bit PCM buffer."""
    if from_rate == to_rate:
        return pcm
    resampler = Resampler(from_rate, to_rate)
    return resampler.feed(pcm) + resampler.flush()
