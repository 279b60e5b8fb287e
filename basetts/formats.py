"""Audio files in the format their name says, written as the audio arrives (flat memory).

.wav and .pcm (raw 16-bit) need nothing; .flac, .ogg (Vorbis), .opus (Ogg Opus) and .mp3 go through
soundfile (libsndfile, whose wheels write all of these: the `[formats]` extra), imported only for them.
A file closed after a failure is a valid file of what arrived.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .errors import ArgumentTypeError, ConfigurationError, OutputError
from .pcm import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, PcmWriter, WavWriter

PathLike = Union[str, "os.PathLike[str]"]

# Extension -> (libsndfile format, subtype); None for the ones written without a dependency.
FORMATS: Dict[str, Optional[Tuple[str, str]]] = {
    ".wav": None, ".pcm": None, ".raw": None,
    ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
_NEEDS_EXTRA = "pip install soundfile (the [formats] extra)"


def format_of(path: PathLike, given: Optional[str] = None) -> str:
    """The extension `path` will be written as (or `given`: "wav", "mp3", ...), checked before anything is
    synthesized: a `ConfigurationError` for an unknown one, or for one whose library is missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a str or an os.PathLike, not {type(path).__name__}")
    extension = f".{given.lower().lstrip('.')}" if given else os.path.splitext(os.fspath(path))[1].lower()
    if extension not in FORMATS:
        known = ", ".join(FORMATS)
        raise ConfigurationError(f"Cannot write {os.fspath(path)!r}: basetts writes {known} (by the file's "
                                 "extension, or the format given)")
    if FORMATS[extension] is not None:
        try:
            import soundfile  # type: ignore[import-untyped]  # noqa: F401
        except (ImportError, OSError) as exc:
            raise ConfigurationError(f"Writing {extension} files needs soundfile ({exc}): {_NEEDS_EXTRA}; "
                                     ".wav and .pcm need nothing") from None
    return extension


HOLD_SECONDS = 60.0
"""Audio an encoder is fed this late when the file may have to give some back (`AudioWriter(hold=)`): more than a
unit of text makes (an HTTP request, a sentence, a part of a text over Orpheus's websocket), so what a lost
connection makes again is taken back out before it is encoded, in 2.9 MB at most."""


class AudioWriter:
    """`write(pcm)` 16-bit mono PCM as it arrives; `close()` finishes a valid file. A context manager.

    `hold`: seconds of audio an encoder (.flac, .ogg, .opus, .mp3) is fed late, so that `take_back` can remove
    them (.wav and .pcm files are cut back in place); 0 for a listener, who must get the audio at once.
    A failure to write (a full disk, the encoder's) is an `OutputError`; the file is then still finished, a
    valid file of what fitted (.wav and .pcm exactly)."""

    def __init__(self, target: Union[PathLike, BinaryIO], extension: str, sample_rate: int = SAMPLE_RATE,
                 hold: float = 0.0, channels: int = CHANNELS, sample_width: int = SAMPLE_WIDTH) -> None:
        """`channels` and `sample_width` other than mono 16-bit: .wav and .pcm only."""
        self.extension = extension
        self.sample_rate = sample_rate
        self._frame = channels * sample_width
        self.name = (os.fspath(target) if isinstance(target, (str, os.PathLike))
                     else str(getattr(target, "name", "the output")))
        self._held = bytearray()  # audio not yet fed to the encoder
        self._hold = int(hold * sample_rate) * 2
        self._encoded = 0  # bytes of audio given to the encoder, or held for it
        self._closed = False
        self._pcm: Optional[PcmWriter] = None
        self._file: Optional[_Checked] = None
        self._encoder: Any = None
        spec = FORMATS[extension]
        try:
            if spec is None:
                self._pcm = (WavWriter(target, sample_rate, channels, sample_width) if extension == ".wav"
                             else PcmWriter(target, self._frame))
            else:
                import soundfile  # type: ignore[import-untyped]

                if isinstance(target, (str, os.PathLike)):
                    self._file = _Checked(target)
                self._encoder = soundfile.SoundFile(self._file or target, "w", samplerate=sample_rate,
                                                    channels=CHANNELS, format=spec[0], subtype=spec[1])
        except (OSError, RuntimeError) as exc:  # RuntimeError: soundfile's (libsndfile's) errors
            if self._file is not None:
                self._file.close()
            raise self._failure(exc) from exc

    @property
    def bytes_written(self) -> int:
        """Bytes of audio in the file (an encoder's: given to it, or held for it)."""
        return self._pcm.bytes_written if self._pcm is not None else self._encoded

    @property
    def duration(self) -> float:
        return self.bytes_written / self._frame / self.sample_rate

    def write(self, pcm: bytes) -> None:
        try:
            if self._pcm is not None:
                self._pcm.write(pcm)
                return
            if self._hold:
                self._held += pcm
                if len(self._held) > self._hold:
                    ready = len(self._held) - self._hold
                    self._encode(bytes(self._held[:ready]))
                    del self._held[:ready]
            else:
                self._encode(pcm)
            self._encoded += len(pcm)
        except (OSError, RuntimeError) as exc:
            raise self._failure(exc) from exc

    def _encode(self, pcm: bytes) -> None:
        try:
            self._encoder.buffer_write(pcm, dtype="int16")
        except Exception:
            if self._file is not None and self._file.error is not None:  # what its failure came from
                raise self._file.error from None
            raise
        if self._file is not None and self._file.error is not None:  # an encoder may not notice a short write
            raise self._file.error

    def take_back(self, count: int) -> int:
        """Remove the last `count` bytes of audio written where the format allows (.wav and .pcm to a file
        that can seek; for an encoder, what it is still held back from it: `hold`); the bytes removed."""
        if self._pcm is not None:
            return self._pcm.take_back(count)
        taken = min(count, len(self._held))
        del self._held[len(self._held) - taken:]
        self._encoded -= taken
        return taken

    def close(self) -> None:
        """Finish the file; once (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pcm is not None:
                self._pcm.close()
                return
            try:
                if self._held and (self._file is None or self._file.error is None):
                    held, self._held = bytes(self._held), bytearray()
                    self._encode(held)
            finally:
                try:
                    self._encoder.close()
                finally:
                    if self._file is not None:
                        self._file.close()
            if self._file is not None and self._file.error is not None:
                raise self._file.error
        except (OSError, RuntimeError) as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> OutputError:
        cause = self._file.error if self._file is not None and self._file.error is not None else exc
        return OutputError(self.name, cause)

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type: Optional[type], *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:  # what went wrong first is what the caller hears of
            with contextlib.suppress(OutputError):
                self.close()


class _Checked:
    """The file an encoder (libsndfile) writes through: a write that fails is kept in `error`, for the writer
    to raise as ours, and is a short write to the encoder (an exception cannot cross into its C code)."""

    def __init__(self, path: PathLike) -> None:
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by close()
        self.error: Optional[OSError] = None

    def write(self, data: bytes) -> int:
        view, written = memoryview(data), 0
        while self.error is None and written < len(view):
            try:
                count = self._file.write(view[written:])
            except OSError as exc:
                self.error = exc
                break
            if not count:
                self.error = OSError(errno.EIO, "the file took none of the bytes written")
            written += count or 0
        return written

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer) or 0

    def close(self) -> None:
        self._file.close()


class _Pipe:
    """A write-only file for libsndfile that hands on what it writes. libsndfile seeks back only to touch
    up a header at the end (MP3's): such late writes cannot reach a listener and are dropped."""

    def __init__(self) -> None:
        self._pieces: List[bytes] = []
        self._end = 0
        self._position = 0

    def take(self) -> bytes:
        data, self._pieces = b"".join(self._pieces), []
        return data

    def write(self, data: bytes) -> int:
        if self._position == self._end:
            self._pieces.append(bytes(data))
            self._end += len(data)
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._end}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        return b""


def encoded(chunks: Iterable[bytes], extension: str = ".mp3", sample_rate: int = SAMPLE_RATE) -> Iterator[bytes]:
    """`chunks` of 16-bit mono PCM as a stream of encoded audio, each piece as soon as the encoder gives
    it: MP3 for an HTTP response a browser plays while it arrives (browsers wait for a WAV of unknown
    length). Needs soundfile (the [formats] extra); `format_of` checks that first."""
    spec = FORMATS[format_of("stream" + extension)]
    if spec is None or spec[0] != "MP3":
        raise ConfigurationError(f"encoded() streams .mp3 (libsndfile writes {extension} only to a file)")
    import soundfile  # type: ignore[import-untyped]

    pipe = _Pipe()
    # Constant, highest bitrate: a browser reads a stream in 32 kB blocks before it starts, and at a
    # speech VBR's ~6 kB/s that would be the first five seconds.
    encoder = soundfile.SoundFile(pipe, "w", samplerate=sample_rate, channels=CHANNELS, format=spec[0],
                                  subtype=spec[1], compression_level=0.0, bitrate_mode="CONSTANT")
    try:
        for chunk in chunks:
            encoder.buffer_write(chunk, dtype="int16")
            piece = pipe.take()
            if piece:
                yield piece
    finally:
        encoder.close()
    yield pipe.take()
