"""Files in the format their name says: `save()` and `basetts say -o` write .wav, .pcm, .flac, .ogg, .opus and
.mp3 as the audio arrives (flat memory), check the name before anything is sent, and keep a valid file of
what arrived when the stream fails. Decoded back with soundfile (libsndfile) to check what was written."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tracemalloc
from typing import Any

import numpy
import pytest
import soundfile

import basetts
from basetts import Saved
from basetts.testing import Faults, LocalServer

from .helpers import synth_for

TEXT = " ".join(f"w{i}" for i in range(40))


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_lossless_formats_hold_the_servers_samples_exactly(tmp_path: Any, basetts_server: LocalServer,
                                                          extension: str) -> None:
    path = tmp_path / f"out{extension}"
    saved = synth_for(basetts_server).save(TEXT, path)
    assert isinstance(saved, Saved) and saved.path == str(path)
    samples, rate = soundfile.read(str(path), dtype="int16")
    assert rate == 24000 and samples.tobytes() == basetts_server.expected_pcm(TEXT)
    assert saved.duration == pytest.approx(len(basetts_server.expected_pcm(TEXT)) / 48000)


def test_raw_pcm_is_the_samples_alone(tmp_path: Any, basetts_server: LocalServer) -> None:
    path = tmp_path / "out.pcm"
    synth_for(basetts_server).save(TEXT, path)
    assert path.read_bytes() == basetts_server.expected_pcm(TEXT)


@pytest.mark.parametrize("extension", [".ogg", ".opus", ".mp3"])
def test_lossy_formats_decode_to_the_same_sound(tmp_path: Any, basetts_server: LocalServer, extension: str) -> None:
    path = tmp_path / f"out{extension}"
    synth_for(basetts_server).save(TEXT, path)
    info = soundfile.info(str(path))
    expected = numpy.frombuffer(basetts_server.expected_pcm(TEXT), dtype="<i2").astype(float)
    decoded, _ = soundfile.read(str(path), dtype="int16")
    decoded = decoded.astype(float)
    assert info.samplerate == 24000 and info.channels == 1
    assert abs(len(decoded) - len(expected)) < 0.1 * 24000  # the same length, give or take codec padding
    # The same sound: the best-aligned correlation with what the server sent is high.
    best = max(numpy.corrcoef(expected[:20000], decoded[shift:shift + 20000])[0, 1] for shift in range(0, 2000, 8))
    assert best > 0.9, best


def test_a_name_that_says_no_known_format_is_refused_before_anything_is_sent(
        tmp_path: Any, basetts_server: LocalServer) -> None:
    with pytest.raises(basetts.ConfigurationError, match=r"\.wav, \.pcm.*\.mp3"):
        synth_for(basetts_server).save(TEXT, tmp_path / "out.aiff2")
    assert basetts_server.conversations == [] and not list(tmp_path.iterdir())
    synth_for(basetts_server).save(TEXT, tmp_path / "named.bin", format="wav")  # or say which
    assert (tmp_path / "named.bin").read_bytes()[:4] == b"RIFF"


def test_a_path_that_cannot_be_created_is_refused_before_anything_is_sent(
        tmp_path: Any, basetts_server: LocalServer) -> None:
    """The file is opened only when the first audio comes: a missing folder would be found after the request
    (the server's work lost), so it is checked first; a path that is not one is our type error."""
    synth = synth_for(basetts_server)
    with pytest.raises(basetts.ConfigurationError, match=r"the folder .*missing does not exist"):
        synth.save(TEXT, tmp_path / "missing" / "out.wav")
    (tmp_path / "a.wav").mkdir()
    with pytest.raises(basetts.ConfigurationError, match="it is a folder"):
        synth.save(TEXT, tmp_path / "a.wav")
    with pytest.raises(basetts.ArgumentTypeError, match="path must be a str or an os.PathLike, not int"):
        synth.save(TEXT, 123)  # type: ignore[arg-type]
    assert basetts_server.conversations == []


def test_audio_save_follows_the_same_rule(tmp_path: Any) -> None:
    """`Audio.save()` writes the format the name says (never WAV bytes under another name), or says why not."""
    audio = basetts.Audio(bytes(range(256)) * 96)
    for extension in (".wav", ".flac", ".pcm", ".mp3"):
        audio.save(tmp_path / f"a{extension}")
    assert basetts.Audio.from_wav(str(tmp_path / "a.wav")).pcm == audio.pcm
    assert soundfile.read(str(tmp_path / "a.flac"), dtype="int16")[0].tobytes() == audio.pcm
    assert (tmp_path / "a.pcm").read_bytes() == audio.pcm
    assert soundfile.info(str(tmp_path / "a.mp3")).format == "MP3"
    with pytest.raises(basetts.ConfigurationError, match=r"\.wav, \.pcm"):
        audio.save(tmp_path / "a.aiff2")
    with pytest.raises(basetts.ConfigurationError, match="save it as .wav"):
        basetts.Audio(audio.pcm, channels=2).save(tmp_path / "stereo.mp3")
    audio.save(tmp_path / "named.bin", format="wav")
    assert (tmp_path / "named.bin").read_bytes()[:4] == b"RIFF"


@pytest.mark.parametrize("extension", [".wav", ".flac", ".pcm"])
def test_a_stream_that_breaks_leaves_a_valid_file_of_what_arrived(tmp_path: Any, extension: str) -> None:
    path = tmp_path / f"partial{extension}"
    with LocalServer(faults=Faults(drop_after_bytes=4096 * 5)) as server:
        with pytest.raises(basetts.StreamInterrupted) as caught:
            synth_for(server, recoveries=0).save(TEXT, path)
        arrived = server.expected_pcm(TEXT)[:4096 * 5]
    if extension == ".pcm":
        assert path.read_bytes() == arrived
    else:
        samples, _ = soundfile.read(str(path), dtype="int16")
        assert samples.tobytes() == arrived
    if extension != ".flac":
        assert caught.value.partial is not None and caught.value.partial.pcm == arrived


def test_save_keeps_memory_flat_however_long_the_audio(tmp_path: Any) -> None:
    """Five minutes of audio (14 MB of PCM) go to the file as they arrive: this process's Python
    allocations peak far below the audio's size (synthesize() would hold all of it). The server runs in
    a process of its own, so its copy of the audio does not count."""
    words = 300  # a second each
    server = subprocess.Popen([sys.executable, "-m", "basetts", "serve", "--samples-per-word", "24000",
                               "--api-key", "k"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(3)]
        url = lines[1].split("=", 1)[1].strip()
        synth = basetts.Synthesizer(url=url, api_key="k")
        tracemalloc.start()
        try:
            saved = synth.save(" ".join(f"w{i}" for i in range(words)), tmp_path / "long.wav")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        server.terminate()
        server.wait(10)
    assert saved.duration == pytest.approx(words, abs=0.01)
    pcm_bytes = words * 48000
    assert peak < pcm_bytes / 5, f"peak {peak / 1e6:.1f} MB for {pcm_bytes / 1e6:.0f} MB of audio"
    assert math.isclose(soundfile.info(str(tmp_path / "long.wav")).duration, words, abs_tol=0.01)


# A process whose files cannot grow past CAP bytes (RLIMIT_FSIZE: the kernel refuses the write that would, with
# EFBIG, as a full disk refuses with ENOSPC; Python ignores the SIGXFSZ that comes with it).
CAP = 65536
_CAPPED = """
import json, resource, sys, threading
resource.setrlimit(resource.RLIMIT_FSIZE, ({cap}, {cap}))
import basetts
url, key, path = sys.argv[1:4]
synth = basetts.Synthesizer(url=url, api_key=key, recoveries=0)
try:
    synth.{call}
    print(json.dumps(None))
except BaseException as exc:
    print(json.dumps({{"type": [c.__name__ for c in type(exc).__mro__], "errno": getattr(exc, "errno", None),
                      "message": str(exc), "partial": exc.partial.pcm.hex() if getattr(exc, "partial", None) else "",
                      "threads": [t.name for t in threading.enumerate() if t is not threading.main_thread()]}}))
"""


def _capped(call: str, server: LocalServer, path: Any) -> Any:
    result = subprocess.run([sys.executable, "-c", _CAPPED.format(cap=CAP, call=call), server.url, server.api_key,
                             str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


LONG = " ".join(f"w{i}" for i in range(200))  # 200 tones of 4096 bytes: far past CAP


@pytest.mark.parametrize("extension", [".wav", ".pcm", ".flac", ".mp3"])
def test_a_file_that_cannot_grow_is_an_output_error_and_keeps_what_fitted(tmp_path: Any, basetts_server: LocalServer,
                                                                          extension: str) -> None:
    """A full disk mid-save: our `OutputError` (also an `OSError`, with the system's errno) naming the file, no
    thread left, and the file a valid file of what fitted, which `.partial` holds. An encoder's failure to write
    (libsndfile's, which says only "System error", or nothing at all) is the same error."""
    path = tmp_path / f"capped{extension}"
    error = _capped(f"save({LONG!r}, path)", basetts_server, path)
    assert error is not None, "the save went through past the file size limit"
    assert error["type"][:3] == ["OutputError", "BasetenTTSError", "OSError"]
    assert error["errno"] == 27 and f"Cannot write {path}: File too large" in error["message"]  # EFBIG
    assert [name for name in error["threads"] if name.startswith("basetts")] == []
    expected = basetts_server.expected_pcm(LONG)
    if extension == ".wav":
        samples, rate = soundfile.read(str(path), dtype="int16")  # a valid WAV, its sizes those of what fitted
        assert rate == 24000 and samples.tobytes() == expected[:CAP - 44] == bytes.fromhex(error["partial"])
    elif extension == ".pcm":
        assert path.read_bytes() == expected[:CAP] == bytes.fromhex(error["partial"])
    else:
        assert path.stat().st_size <= CAP


def test_audio_save_and_the_cli_say_which_file_could_not_be_written(tmp_path: Any, basetts_server: LocalServer
                                                                     ) -> None:
    error = _capped(f"synthesize({LONG!r}).save(path)", basetts_server, tmp_path / "whole.wav")
    env = {**os.environ, "BASETEN_API_KEY": basetts_server.api_key}
    assert error["type"][0] == "OutputError" and "whole.wav: File too large" in error["message"]
    limit = f"import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({CAP}, {CAP})); "
    say = subprocess.run(
        [sys.executable, "-c", limit + "sys.argv[0] = 'basetts'; runpy.run_module('basetts', run_name='__main__')",
         "say", "--url", basetts_server.url, "-o", str(tmp_path / "said.wav"), LONG],
        capture_output=True, text=True, timeout=60, env=env)
    assert say.returncode == 1
    assert f"Cannot write {tmp_path / 'said.wav'}: File too large" in say.stderr
    assert f"holds the first {(CAP - 44) / 48000:.1f} s of the audio" in say.stderr
    (tmp_path / "texts.txt").write_text(f"{LONG}\n{LONG}\n")
    batch = subprocess.run(
        [sys.executable, "-c", limit + "sys.argv[0] = 'basetts'; runpy.run_module('basetts', run_name='__main__')",
         "batch", "--url", basetts_server.url, str(tmp_path / "texts.txt"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, env=env)
    assert batch.returncode == 1
    assert "cannot write 000001.wav" in batch.stderr and "File too large; 0 written this run" in batch.stderr
    assert "run the same command again" in batch.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.jsonl"]  # no half file left
