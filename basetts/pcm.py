"""The audio every protocol delivers, 16-bit mono PCM at 24 kHz, and WAV around it: a header, and a file
written as the audio arrives. Below `audio` and `formats`, which both write WAV."""
from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO, Optional, Union

SAMPLE_RATE = 24000
"""What every protocol delivers: 16-bit mono PCM at 24 kHz."""
SAMPLE_WIDTH = 2
CHANNELS = 1


def wav_header(data_size: Optional[int] = None, sample_rate: int = SAMPLE_RATE, channels: int = CHANNELS,
               sample_width: int = SAMPLE_WIDTH) -> bytes:
    """A 44-byte WAV header. Without `data_size`, the sizes say "unknown" so PCM can be streamed after it
    (browsers and most players then play until the data ends)."""
    size = 0xFFFFFFFF - 36 if data_size is None else data_size
    byte_rate = sample_rate * channels * sample_width
    return (b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 36 + size)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, byte_rate,
                                    channels * sample_width, 8 * sample_width)
            + b"data" + struct.pack("<I", size))


class WavWriter:
    """A WAV file written as the audio arrives (flat memory). The header's sizes are filled in at
    `close()`, so a file closed after a failure is a valid file of what arrived; on a stream that
    cannot seek (a pipe) the header says "length unknown", which players read to the end."""

    def __init__(self, target: Union[str, "os.PathLike[str]", BinaryIO], sample_rate: int = SAMPLE_RATE,
                 channels: int = CHANNELS, sample_width: int = SAMPLE_WIDTH) -> None:
        self._owned = isinstance(target, (str, os.PathLike))
        self._file: BinaryIO = open(target, "wb") if isinstance(target, (str, os.PathLike)) else target
        self._format = (sample_rate, channels, sample_width)
        try:
            self._seekable = self._file.seekable()
        except (AttributeError, OSError, ValueError):
            self._seekable = False
        self.bytes_written = 0
        self._file.write(wav_header(0 if self._seekable else None, sample_rate, channels, sample_width))

    @property
    def duration(self) -> float:
        rate, channels, width = self._format
        return self.bytes_written / (rate * channels * width)

    def write(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self.bytes_written += len(pcm)

    def close(self) -> None:
        """Fill in the sizes (when the file can seek) and close a file this writer opened."""
        if self._file.closed:
            return
        try:
            if self._seekable:
                size = self.bytes_written - self.bytes_written % self._format[2]
                self._file.seek(0)
                self._file.write(wav_header(size, *self._format))
                self._file.seek(0, io.SEEK_END)
            self._file.flush()
        finally:
            if self._owned:
                self._file.close()

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
