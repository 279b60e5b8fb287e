"""Audio: format, WAV, player HTML, chunks; the resampler; the streaming WAV header."""
from __future__ import annotations

import array
import base64
import math
import struct

import pytest

import basetts
from basetts import Audio
from basetts.audio import wav_header
from basetts.playback.resample import Resampler, resample


def sine(frequency: float, rate: int, seconds: float) -> bytes:
    return array.array("h", (int(10000 * math.sin(2 * math.pi * frequency * i / rate))
                             for i in range(int(rate * seconds)))).tobytes()


def zero_crossings(pcm: bytes) -> int:
    samples = array.array("h")
    samples.frombytes(pcm)
    return sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))


def test_format_and_duration():
    audio = Audio(b"\x01\x00" * 24000)
    assert (audio.sample_rate, audio.channels, audio.sample_width) == (24000, 1, 2)
    assert audio.duration == 1.0 and audio.samples == 24000 and len(audio) == 48000
    assert bytes(audio) == audio.pcm and audio and not Audio()
    assert repr(audio) == "<Audio 1.00 s, 24000 Hz, mono, 16-bit>"


def test_wav_round_trip(tmp_path):
    audio = Audio(sine(440, 24000, 0.3))
    assert Audio.from_wav(audio.wav()) == audio
    audio.save(tmp_path / "a.wav")
    assert Audio.from_wav(tmp_path / "a.wav") == audio
    assert audio.wav()[:4] == b"RIFF" and audio.wav()[8:12] == b"WAVE"
    # A float WAV (numpy's, soundfile's, torchaudio's), which Python's wave cannot read, comes as 16-bit mono, exact
    # for 16-bit audio written as float (from_wav's files go to play() too).
    import array

    from basetts.pcm import wav_header
    floats = array.array("f", (s / 32768 for s in array.array("h", audio.pcm))).tobytes()
    (tmp_path / "float.wav").write_bytes(wav_header(len(floats), sample_width=4, float_samples=True) + floats)
    assert Audio.from_wav(tmp_path / "float.wav") == audio


def test_notebook_player_embeds_the_wav():
    audio = Audio(sine(440, 24000, 0.1))
    html = audio._repr_html_()
    encoded = html.split("base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(encoded) == audio.wav()


@pytest.mark.parametrize("size", [1, 2, 3, 4096, 10**6])
def test_chunks_are_whole_samples_and_complete(size):
    audio = Audio(sine(300, 24000, 0.2))
    chunks = list(audio.chunks(size))
    assert b"".join(chunks) == audio.pcm
    assert all(len(c) % 2 == 0 for c in chunks)


def test_streaming_wav_header():
    header = wav_header()
    assert len(header) == 44 and header[:4] == b"RIFF" and header[36:40] == b"data"
    assert struct.unpack("<I", header[40:44])[0] > 2**31  # "unknown length": play until the data ends
    assert wav_header(48000) == Audio(b"\x00" * 48000).wav()[:44]


@pytest.mark.parametrize("to_rate", [44100, 48000, 16000])
def test_resampler_keeps_pitch_and_duration(to_rate):
    pcm = sine(500, 24000, 1.0)
    out = resample(pcm, 24000, to_rate)
    assert len(out) // 2 == to_rate  # exactly one second: nothing held back at the end
    assert abs(zero_crossings(out) - zero_crossings(pcm)) <= 2  # same frequency


def test_streaming_resampler_matches_the_whole_buffer():
    pcm = sine(700, 24000, 0.5)
    whole = resample(pcm, 24000, 48000)
    resampler = Resampler(24000, 48000)
    pieces = b"".join(resampler.feed(pcm[i:i + 998]) for i in range(0, len(pcm), 998)) + resampler.flush()
    assert pieces == whole


def test_resampling_rounds_to_nearest_and_keeps_the_last_sample():
    """Halfway values round to nearest (not towards zero), negative as positive, and the flush emits the
    output owed for the last input sample."""
    pcm = struct.pack("<3h", -3, -4, 7)
    assert struct.unpack("<6h", resample(pcm, 24000, 48000)) == (-3, -3, -4, 2, 7, 7)
    assert resample(struct.pack("<2h", -32768, 32767), 24000, 48000) == struct.pack("<4h", -32768, 0, 32767, 32767)


def test_audio_joins_and_gives_its_samples_as_numpy() -> None:
    import array

    import numpy

    first, second = Audio(array.array("h", [0, 16384, -32768]).tobytes()), Audio(array.array("h", [5]).tobytes())
    joined = first + second
    assert joined.pcm == first.pcm + second.pcm and joined.duration == pytest.approx(4 / 24000)
    with pytest.raises(ValueError, match="different formats"):
        first + Audio(b"\x00\x00", sample_rate=16000)
    assert joined.to_numpy().tolist() == [0, 16384, -32768, 5] and joined.to_numpy().dtype == numpy.int16
    assert joined.to_numpy("float32").tolist() == [0.0, 0.5, -1.0, 5 / 32768]
    stereo = Audio(array.array("h", [1, 2, 3, 4]).tobytes(), channels=2)
    assert stereo.to_numpy().shape == (2, 2)
    # numpy.asarray (what soundfile.write, librosa and matplotlib call) gets the samples, not an object array.
    assert numpy.asarray(joined).tolist() == [0, 16384, -32768, 5] and numpy.asarray(joined).dtype == numpy.int16
    assert numpy.asarray(joined, dtype=numpy.float64).dtype == numpy.float64 and numpy.array(stereo).shape == (2, 2)
    with pytest.raises(ValueError, match="copy"):
        numpy.asarray(joined, copy=False)
    with pytest.raises(ValueError, match="dtype"):
        joined.to_numpy("float64")


def test_what_is_not_audio_is_said_as_ours(tmp_path) -> None:
    """Audio(3) would be three zero bytes, from_wav(1) would read (and close) file descriptor 1: both refused;
    what is not a WAV file is a ConfigurationError that says so, a missing one the OSError that says why."""
    with pytest.raises(basetts.ArgumentTypeError, match="pcm must be bytes"):
        basetts.Audio(3)  # type: ignore[arg-type]
    with pytest.raises(basetts.ConfigurationError, match="sample_rate must be an integer >= 1"):
        basetts.Audio(b"", sample_rate=0)
    with pytest.raises(basetts.ArgumentTypeError, match="takes a WAV file's path or its bytes, not int"):
        basetts.Audio.from_wav(1)  # type: ignore[arg-type]
    for source in (b"RIFFxx", b"not a wav file at all"):
        with pytest.raises(basetts.ConfigurationError, match=r"is not a WAV file basetts can read \(.+\)"):
            basetts.Audio.from_wav(source)
    with pytest.raises(FileNotFoundError):
        basetts.Audio.from_wav(tmp_path / "missing.wav")
