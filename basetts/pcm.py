"""The audio every protocol delivers, 16-bit mono PCM at 24 kHz, and WAV around it: a header, a file
written as the audio arrives, a WAV of any sample format read back as that PCM; resampling. Below `audio`,
`formats` and the protocols, which all use it."""
from __future__ import annotations

import array
import errno
import io
import os
import struct
import sys
from typing import BinaryIO, Optional, Tuple, Union

from .errors import ConfigurationError

SAMPLE_RATE = 24000
"""What every protocol delivers: 16-bit mono PCM at 24 kHz."""
SAMPLE_WIDTH = 2
CHANNELS = 1


def wav_header(data_size: Optional[int] = None, sample_rate: int = SAMPLE_RATE, channels: int = CHANNELS,
               sample_width: int = SAMPLE_WIDTH, float_samples: bool = False) -> bytes:
    """A 44-byte WAV header (integer PCM, or IEEE float with `float_samples`). Without `data_size`, the sizes
    say "unknown" so PCM can be streamed after it (browsers and most players then play until the data ends)."""
    size = 0xFFFFFFFF - 36 if data_size is None else data_size
    byte_rate = sample_rate * channels * sample_width
    return (b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 36 + size)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 3 if float_samples else 1, channels, sample_rate, byte_rate,
                                    channels * sample_width, 8 * sample_width)
            + b"data" + struct.pack("<I", size))


def cut_end(file: BinaryIO, count: int) -> int:
    """Cut the last `count` bytes off a seekable file being written."""
    end = file.seek(0, io.SEEK_END)
    file.seek(end - count)
    file.truncate()
    return count


class PcmWriter:
    """Raw PCM written to a file as the audio arrives (flat memory). A file it opens is unbuffered, so
    `bytes_written` is what the file holds even when a write fails (a full disk takes what fits), and
    `close()` leaves it whole samples: a valid file of what arrived, or of what fitted."""

    def __init__(self, target: Union[str, "os.PathLike[str]", BinaryIO], sample_width: int = SAMPLE_WIDTH) -> None:
        self._owned = isinstance(target, (str, os.PathLike))
        self._file: BinaryIO = open(target, "wb", buffering=0) if isinstance(target, (str, os.PathLike)) else target
        self._width = sample_width
        try:
            self._seekable = self._file.seekable()
        except (AttributeError, OSError, ValueError):
            self._seekable = False
        self.bytes_written = 0

    def write(self, pcm: bytes) -> None:
        view = memoryview(pcm)
        while view:  # an unbuffered file may take part of it
            count = self._file.write(view)
            count = len(view) if count is None else count
            if not count:
                raise OSError(errno.EIO, "the file took none of the bytes written")
            self.bytes_written += count
            view = view[count:]

    def take_back(self, count: int) -> int:
        """Remove the last `count` bytes of audio written, if the file can seek; the bytes removed."""
        if not self._seekable:
            return 0
        count = cut_end(self._file, min(count, self.bytes_written))
        self.bytes_written -= count
        return count

    def _finish(self) -> None:
        if self._seekable and self.bytes_written % self._width:  # a write cut short mid-sample
            self.take_back(self.bytes_written % self._width)

    def close(self) -> None:
        """Finish the file (whole samples; a WAV's sizes) and close it if this writer opened it."""
        if self._file.closed:
            return
        try:
            self._finish()
            self._file.flush()
        finally:
            if self._owned:
                self._file.close()

    def __enter__(self) -> "PcmWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WavWriter(PcmWriter):
    """A WAV file written as the audio arrives. The header's sizes are filled in at `close()`, so a file
    closed after a failure is a valid file of what arrived; on a stream that cannot seek (a pipe) the header
    says "length unknown", which players read to the end."""

    def __init__(self, target: Union[str, "os.PathLike[str]", BinaryIO], sample_rate: int = SAMPLE_RATE,
                 channels: int = CHANNELS, sample_width: int = SAMPLE_WIDTH) -> None:
        super().__init__(target, channels * sample_width)
        self._format = (sample_rate, channels, sample_width)
        try:
            self.write(wav_header(0 if self._seekable else None, sample_rate, channels, sample_width))
        except BaseException:
            if self._owned:
                self._file.close()
            raise
        self.bytes_written = 0  # audio only

    @property
    def duration(self) -> float:
        rate, channels, width = self._format
        return self.bytes_written / (rate * channels * width)

    def _finish(self) -> None:
        super()._finish()
        if self._seekable:
            self._file.seek(0)
            self._file.write(wav_header(self.bytes_written, *self._format))  # over bytes already there
            self._file.seek(0, io.SEEK_END)


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


def to_16_bit(pcm: bytes, width: int) -> bytes:
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


def to_mono(pcm: bytes, channels: int) -> bytes:
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


def wav_to_pcm(data: bytes) -> Tuple[bytes, int]:
    """A WAV file's audio as 16-bit mono PCM, and its rate: 8-, 16-, 24- or 32-bit integer or 32- or 64-bit
    float samples (what numpy and torchaudio write), any channels (averaged). ValueError if it is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    offset, fmt, samples = 12, b"", None
    while offset + 8 <= len(data) and samples is None:
        kind, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8:offset + 8 + size]  # a streamed WAV's "unknown" size: the rest
        if kind == b"fmt ":
            fmt = body
        elif kind == b"data":
            samples = body
        offset += 8 + size + (size & 1)
    if len(fmt) < 16 or samples is None:
        raise ValueError("a WAV file without its fmt or data chunk")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the format is its sub-format's
        tag = struct.unpack_from("<H", fmt, 24)[0]
    width = bits // 8
    if channels < 1 or rate < 1 or width < 1:
        raise ValueError(f"a WAV file with {channels} channel(s) of {bits}-bit samples at {rate} Hz")
    samples = samples[:len(samples) - len(samples) % (width * channels)]
    if tag == 3 and width in (4, 8):
        floats = array.array("f" if width == 4 else "d", samples)
        if sys.byteorder != "little":
            floats.byteswap()
        # Scaled by 32768 (as torchaudio's int16 <-> float is), so 16-bit audio written as float comes back exact.
        pcm = _pcm(array.array("h", (32767 if x >= 32767 / 32768 else -32768 if x <= -1.0 else int(round(x * 32768))
                                     if x == x else 0 for x in floats)))
    elif tag == 1 and width in (1, 2, 3, 4):
        pcm = samples if width == 2 else to_16_bit(samples, width)
    else:
        raise ValueError(f"a WAV file of sample format {tag} ({bits}-bit): neither integer PCM nor float")
    return (to_mono(pcm, channels) if channels > 1 else pcm), rate
