"""`Audio`: PCM plus its format, as WAV bytes or a file, a notebook player, and chunks."""
from __future__ import annotations

import base64
import dataclasses
import io
import os
import wave
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple, Union

from . import errors
from .checks import check_int
from .errors import ArgumentTypeError, ConfigurationError
from .formats import AudioWriter, format_of
from .pcm import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, wav_to_pcm
from .pcm import wav_header as wav_header  # its public home (docs/api.md)


class Word(NamedTuple):
    """A word and when it is heard: seconds from the utterance's first sample; `span`: the characters
    [start, end) of the text you gave that it stands for (for fragments, of their concatenation), so
    `text[slice(*word.span)]` is what you wrote (None if the server's word is not among those sent)."""

    text: str
    start: float
    end: float
    span: Optional[Tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class Sentence:
    """A sentence as the server cut and spoke it: seconds from the utterance's first sample, and the
    server's message when it failed (kept with ``sentence_errors="collect"``)."""

    index: int
    text: str
    start: float
    end: float
    error: Optional[str] = None


# A word that ends this close past the audio's end is still in it (the times are rounded).
_TIME_TOLERANCE = 1e-3


class Timeline:
    """The words and sentences of one utterance as their events arrive (Qwen3-TTS), in order. Filled
    by the conversation's reader; read by anyone (appends are atomic)."""

    def __init__(self) -> None:
        self.words: List[Word] = []
        self.sentences: List[Sentence] = []

    def words_until(self, seconds: float) -> List[Word]:
        """The words heard whole in the first `seconds`: ended by then, or in a sentence that had (an
        aligner's last word may end a little past its sentence's audio)."""
        limit = seconds + _TIME_TOLERANCE
        heard_to = max((s.end for s in self.sentences if s.end <= limit), default=0.0)
        return [w for w in self.words if w.end <= limit or w.start < heard_to]

    def sentences_until(self, seconds: float) -> List[Sentence]:
        """The sentences begun in the first `seconds` (or failed there, with no audio), the last cut there."""
        limit = seconds + _TIME_TOLERANCE
        return [dataclasses.replace(s, end=min(s.end, seconds)) for s in self.sentences
                if s.start < seconds or s.end <= limit]

    def shifted(self, seconds: float) -> "Timeline":
        moved = Timeline()
        moved.words = [w._replace(start=w.start + seconds, end=w.end + seconds) for w in self.words]
        moved.sentences = [dataclasses.replace(s, start=s.start + seconds, end=s.end + seconds)
                           for s in self.sentences]
        return moved


@dataclasses.dataclass
class Stats:
    """What one synthesis measured. Times are seconds from the start of the call; None if it never came."""

    connect_time: Optional[float] = None
    first_byte_time: Optional[float] = None
    first_sound_time: Optional[float] = None
    total_time: Optional[float] = None
    bytes_received: int = 0
    frames_received: int = 0
    underruns: int = 0
    encoding: Optional[str] = None
    rebuffer_time: float = 0.0
    """Seconds of silence played while rebuffering after underruns."""
    prebuffer: Optional[float] = None
    """The prebuffer playback ended with: as asked, or grown by underruns."""
    attempts: int = 0
    """Connections tried (1 unless a transient failure was retried)."""
    recoveries: int = 0
    """Connections lost after audio began that the call recovered from (docs/reliability.md)."""
    recovery_time: float = 0.0
    """Seconds those cost: from each loss to the next audio."""
    timeline: Timeline = dataclasses.field(default_factory=Timeline, repr=False, compare=False)
    """Word and sentence times as the server sent them (Qwen3-TTS); `Audio.words` reads them."""

    def real_time_factor(self, duration: float) -> Optional[float]:
        """Wall time over audio time: below 1.0 means faster than real time."""
        if not duration or self.total_time is None:
            return None
        return self.total_time / duration


class Audio:
    """Signed 16-bit little-endian PCM (24 kHz mono by default) and what is known about how it came."""

    def __init__(
        self,
        pcm: bytes = b"",
        sample_rate: int = SAMPLE_RATE,
        channels: int = CHANNELS,
        sample_width: int = SAMPLE_WIDTH,
        stats: Optional[Stats] = None,
    ) -> None:
        if not isinstance(pcm, (bytes, bytearray, memoryview)):  # bytes(3) would be three zero bytes
            raise ArgumentTypeError(f"pcm must be bytes of PCM, not {type(pcm).__name__}")
        check_int("sample_rate", sample_rate, 1)
        check_int("channels", channels, 1)
        check_int("sample_width", sample_width, 1, 4)
        self.pcm = bytes(pcm)
        self.sample_rate = sample_rate
        self.channels = channels
        self.sample_width = sample_width
        self.stats = stats if stats is not None else Stats()

    @property
    def samples(self) -> int:
        """Number of sample frames (one per channel group)."""
        return len(self.pcm) // (self.sample_width * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples / self.sample_rate

    def __len__(self) -> int:
        """Length of the PCM in bytes, like `len(bytes(audio))`."""
        return len(self.pcm)

    def __bytes__(self) -> bytes:
        return self.pcm

    def __bool__(self) -> bool:
        return bool(self.pcm)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Audio):
            return NotImplemented
        return (self.pcm, self.sample_rate, self.channels, self.sample_width) == (
            other.pcm, other.sample_rate, other.channels, other.sample_width)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        return f"<Audio {self.duration:.2f} s, {self.sample_rate} Hz, {layout}, {8 * self.sample_width}-bit>"

    @property
    def words(self) -> List[Word]:
        """Each word with its times (Qwen3-TTS with ``word_timestamps=True``; else empty). For audio cut
        short (a stopped `speak()`, an error's ``partial``), only the words heard whole."""
        return self.stats.timeline.words_until(self.duration)

    @property
    def sentences(self) -> List[Sentence]:
        """Each sentence the server spoke, with its times (Qwen3-TTS; else empty)."""
        return self.stats.timeline.sentences_until(self.duration)

    def __add__(self, other: "Audio") -> "Audio":
        """The two one after the other (same rate, channels and width; a `ValueError` otherwise); the
        second's words and sentences move by the first's length."""
        if not isinstance(other, Audio):
            return NotImplemented
        formats = [(a.sample_rate, a.channels, a.sample_width) for a in (self, other)]
        if formats[0] != formats[1]:
            raise ConfigurationError(f"cannot join audio of different formats (rate, channels, width): {formats}")
        joined = Audio(self.pcm + other.pcm, self.sample_rate, self.channels, self.sample_width)
        later = other.stats.timeline.shifted(self.duration)
        joined.stats.timeline.words = self.words + later.words_until(joined.duration)
        joined.stats.timeline.sentences = self.sentences + later.sentences_until(joined.duration)
        return joined

    def to_numpy(self, dtype: str = "int16") -> Any:
        """The samples as a NumPy array (numpy is optional: installed separately): int16 as sent, or
        float32 in -1..1; shape (samples,) for mono, (samples, channels) otherwise."""
        if dtype not in ("int16", "float32"):
            raise ConfigurationError(f"dtype must be 'int16' or 'float32', got {dtype!r}")
        if self.sample_width != 2:
            raise ConfigurationError(f"to_numpy() reads 16-bit audio; this is {8 * self.sample_width}-bit")
        try:
            import numpy
        except ImportError:
            raise ImportError("Audio.to_numpy() needs NumPy: pip install numpy") from None
        samples = numpy.frombuffer(self.pcm[:self.samples * self.channels * 2], dtype="<i2")
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels)
        return samples.astype(numpy.float32) / 32768.0 if dtype == "float32" else samples.astype(numpy.int16)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        """NumPy's hook: `numpy.asarray(audio)` (and libraries that call it, such as soundfile's `write`) get
        the int16 samples of `to_numpy()`, not an object array."""
        if copy is False:  # NumPy 2's "never copy": the samples are always a new array
            raise ConfigurationError("Audio's samples are made into a new array: a copy cannot be avoided")
        samples = self.to_numpy()
        return samples if dtype is None else samples.astype(dtype)

    def chunks(self, size: int = 4096) -> Iterator[bytes]:
        """The PCM in pieces of `size` bytes (rounded down to whole samples)."""
        frame = self.sample_width * self.channels
        size = max(frame, size - size % frame)
        for start in range(0, len(self.pcm), size):
            yield self.pcm[start:start + size]

    def wav(self) -> bytes:
        """A complete WAV file (RIFF header + PCM) in memory."""
        buffer = io.BytesIO()
        self._write_wav(buffer)
        return buffer.getvalue()

    def save(self, path: Union[str, "os.PathLike[str]"], *, format: Optional[str] = None) -> None:
        """Write a file in the format its name says (or `format`), as `Synthesizer.save()` does: .wav, .pcm;
        .flac, .ogg, .opus, .mp3 with the [formats] extra, else a `ConfigurationError` that names it."""
        extension = format_of(path, format)
        if extension not in (".wav", ".pcm", ".raw") and (self.channels, self.sample_width) != (CHANNELS, SAMPLE_WIDTH):
            raise ConfigurationError(f"{extension} is written from 16-bit mono audio; this is {self.channels} "
                                     f"channel(s) of {8 * self.sample_width}-bit: save it as .wav")
        with AudioWriter(path, extension, self.sample_rate, channels=self.channels,
                         sample_width=self.sample_width) as writer:
            writer.write(self.pcm)

    def _write_wav(self, file: "io.BufferedIOBase | io.BytesIO") -> None:
        with wave.open(file, "wb") as writer:  # type: ignore[arg-type]
            writer.setnchannels(self.channels)
            writer.setsampwidth(self.sample_width)
            writer.setframerate(self.sample_rate)
            writer.writeframes(self.pcm)

    @classmethod
    def from_wav(cls, source: Union[bytes, str, "os.PathLike[str]"]) -> "Audio":
        """Read a WAV file (path or bytes): integer PCM as it is; float samples, or a WAVE_FORMAT_EXTENSIBLE file
        Python's `wave` cannot read, as 16-bit mono (what numpy, soundfile and torchaudio often write). Not one: a
        `ConfigurationError` (a file that cannot be opened: the `OSError` that says why)."""
        if isinstance(source, (bytes, bytearray)):
            file: Any = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):  # not an int: open() would take it for a file descriptor
            file = open(source, "rb")
        else:
            raise ArgumentTypeError(f"from_wav() takes a WAV file's path or its bytes, not {type(source).__name__}")
        try:
            with file, wave.open(file, "rb") as reader:
                return cls(reader.readframes(reader.getnframes()), reader.getframerate(),
                           reader.getnchannels(), reader.getsampwidth())
        except (wave.Error, EOFError) as exc:
            if isinstance(source, (bytes, bytearray)):
                data = bytes(source)
            else:
                with open(source, "rb") as again:
                    data = again.read()
            try:
                pcm, rate = wav_to_pcm(data)
                return cls(pcm, rate)
            except ValueError:
                pass
            name = "the bytes given" if isinstance(source, (bytes, bytearray)) else repr(os.fspath(source))
            why = str(exc) or "it ends too soon"
            raise ConfigurationError(f"{name} is not a WAV file basetts can read ({why})") from None

    def _repr_html_(self) -> str:
        """An HTML5 player for Jupyter, without importing IPython."""
        data = base64.b64encode(self.wav()).decode("ascii")
        return (f'<audio controls src="data:audio/wav;base64,{data}"></audio>'
                f"<div><small>{self.duration:.2f} s, {self.sample_rate} Hz</small></div>")


@dataclasses.dataclass
class Saved:
    """What `Synthesizer.save()` wrote. The audio itself is in the file, not in memory."""

    path: str
    duration: float
    """Seconds of audio written."""
    stats: Stats

    def audio(self) -> Audio:
        """The file's audio read back (WAV and raw PCM only: the others need a decoder)."""
        if self.path.lower().endswith(".wav"):
            return Audio.from_wav(self.path)
        if self.path.lower().endswith((".pcm", ".raw")):
            with open(self.path, "rb") as file:  # what was written, not what the path reads (a device's)
                return Audio(file.read(2 * round(self.duration * SAMPLE_RATE)), stats=self.stats)
        raise ConfigurationError(f"read {self.path} back with a decoder (soundfile.read), not Saved.audio()")


errors.empty_audio = Audio
