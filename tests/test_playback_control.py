"""The player's controls, on the null sink: `Playback` handles (wait=False), pause and resume, every kind
of stop, the fades, rebuffering after an underrun, `play()` of audio you already have, and `on_audio`.

What the sink's monitor recorded is the evidence: silence where it was paused, the rest after it with
nothing lost or repeated, and no click (a jump to or from silence) where the sound stops or starts.
"""
from __future__ import annotations

import array
import math
import subprocess
import sys
import textwrap
import threading
import time
import wave
from typing import Any, List, Tuple

import pytest

import basetts
from basetts import playback
from basetts.testing import Faults, LocalServer

from .helpers import all_threads_gone, synth_for
from .test_playback import (
    RATE,
    RECORDER_SLACK,
    assert_played_exactly,
    interrupt_while_playing,
    last_sound,
    locate,
    words,
)

pytestmark = pytest.mark.playback

FADE = int(RATE * playback.FADE_SECONDS)
# The edge of a fade: the samples this close to silence must be this quiet (a cliff is not).
EDGE = FADE // 5


def wait_for(condition: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def peak(pcm: bytes) -> int:
    return max(abs(s) for s in array.array("h", pcm))


def assert_fades_out_at(samples: "array.array[int]", silent_from: int, loud: int) -> None:
    """The sound before `silent_from` fades out: its last samples are near silence, and quieter than a
    fade earlier (a cliff would end at full amplitude)."""
    edge = [abs(s) for s in samples[silent_from - EDGE:silent_from]]
    before = [abs(s) for s in samples[silent_from - 3 * FADE:silent_from - 2 * FADE]]
    assert max(edge) <= loud * EDGE * 1.5 / FADE, f"a click where the sound stops: {max(edge)} of {loud}"
    assert max(before) > 2 * max(edge)


def assert_fades_in_at(samples: "array.array[int]", sound_from: int, loud: int) -> None:
    edge = [abs(s) for s in samples[sound_from:sound_from + EDGE]]
    after = [abs(s) for s in samples[sound_from + 2 * FADE:sound_from + 3 * FADE]]
    assert max(edge) <= loud * EDGE * 1.5 / FADE, f"a click where the sound starts: {max(edge)} of {loud}"
    assert max(after) > 2 * max(edge)


def longest_silence(samples: "array.array[int]", start: int) -> Tuple[int, int]:
    """(first silent sample, first sample after) of the longest run of zeros from `start`."""
    best, run = (start, start), None
    for i in range(start, len(samples)):
        if samples[i] == 0:
            run = i if run is None else run
        elif run is not None:
            if i - run > best[1] - best[0]:
                best = (run, i)
            run = None
    return best


def assert_gap_loses_and_repeats_nothing(played: bytes, expected: bytes, min_gap: float) -> Tuple[int, int]:
    """The recording holds `expected` with one silence of at least `min_gap` s inside it, faded on both
    sides: everything before and after it as the server sent it, continuing exactly where it stopped."""
    samples, want = array.array("h", played), array.array("h", expected)
    offset = locate(played, expected)
    assert offset >= 0, "the start of the audio is not in the recording"
    gap_start, gap_end = longest_silence(samples, offset)
    assert gap_end - gap_start >= min_gap * RATE, f"no silence of {min_gap} s: {(gap_end - gap_start) / RATE:.3f}"
    before = gap_start - offset  # expected samples played before the gap
    assert samples[offset:gap_start - FADE] == want[:before - FADE], "the audio before the gap differs"
    probe = played[2 * (gap_end + FADE):2 * (gap_end + FADE + 400)]
    found = expected.find(probe)
    while found >= 0 and found % 2:
        found = expected.find(probe, found + 1)
    assert found >= 0, "the audio after the gap is not the server's"
    resumed = found // 2 - FADE  # the expected sample heard first after the gap
    rest = want[resumed + FADE:]
    assert samples[gap_end + FADE:gap_end + FADE + len(rest)] == rest, "the audio after the gap differs"
    loud = peak(expected)
    # Inside the gap: the fades' last and first samples (0), and whatever of the audio was silent there.
    skipped = want[before:resumed]
    assert resumed >= before, f"{before - resumed} samples played twice across the gap"
    assert len(skipped) <= 4 or max(abs(x) for x in skipped) <= loud // 20, \
        f"{len(skipped)} samples of sound lost in the gap"
    assert_fades_out_at(samples, gap_start, loud)
    assert_fades_in_at(samples, gap_end, loud)
    return gap_start, gap_end


# --- pause and resume ---------------------------------------------------------------------------------------
def test_a_paused_speak_is_silent_then_resumes_exactly_where_it_paused(pulse: Any, serve: Any) -> None:
    server = serve(speed=3.0)
    synth = synth_for(server)
    text = words(60)  # 5 s
    recording = pulse.record()
    handle = synth.speak(text, wait=False)
    assert isinstance(handle, basetts.Playback)
    wait_for(lambda: handle.position > 1.0)
    assert handle.playing and not handle.paused
    handle.pause()
    time.sleep(0.1)  # the fade and what the device had queued
    assert handle.paused and not handle.playing
    held = handle.position
    time.sleep(0.6)
    assert handle.position == held  # nothing taken while paused
    handle.resume()
    audio = handle.wait(20)
    played = recording.stop()
    expected = server.expected_pcm(text)
    assert audio.pcm == expected and handle.done and not handle.stopped  # all heard: nothing lost
    assert_gap_loses_and_repeats_nothing(played, expected, min_gap=0.5)
    assert all_threads_gone() and pulse.sink_inputs() == []


def test_pause_keeps_receiving_and_answering_the_servers_keepalive(pulse: Any, serve: Any) -> None:
    """Paused for four keepalive windows (pings every 0.5 s, 0.5 s to answer) while the server has far more
    audio than the player holds: the reader goes on reading (and answering pings); nothing is closed."""
    # Time compressed 40x: a word is 0.256 s of audio, a segment of 10 words takes 0.064 s to make (2.6 s
    # against the real 20 s keepalive).
    server = serve(samples_per_word=3 * 2048, speed=40.0, ping_interval=0.5, ping_timeout=0.5)
    synth = synth_for(server)
    text = words(200)
    recording = pulse.record()
    handle = synth.speak(text, wait=False, keepalive_timeout=0.5)  # pacing for the server's 0.5 s
    wait_for(lambda: handle.position > 0.5)
    handle.pause()
    time.sleep(2.0)
    record = server.conversations[-1]  # in progress
    ahead = handle.stats.bytes_received / 2 / RATE - handle.heard.duration  # read off the socket
    # Beyond what the player holds, the queue's room (2.7 s): then the writer holds the text back.
    assert ahead > playback.MAX_BUFFERED + 2.0, f"only {ahead:.1f} s received ahead while paused"
    assert record.close_code is None and not record.client_disconnected
    handle.resume()
    wait_for(lambda: handle.position > 5.5)
    handle.stop()
    audio = handle.wait(10)
    recording.stop()
    record.done.wait(5)
    assert record.pings >= 5 and not record.keepalive_timeout and handle.error is None  # answered while paused
    assert server.expected_pcm(text).startswith(audio.pcm) and audio.duration > 5.0
    assert all_threads_gone() and pulse.sink_inputs() == []


# --- stops ----------------------------------------------------------------------------------------------------
def _start(kind: str, synth: basetts.Synthesizer, text: str, server: LocalServer) -> Any:
    if kind == "speak":
        return synth.speak(text, wait=False)
    if kind == "play":  # audio the caller already has: the server's, without waiting 10 s for it at 1x
        return synth.play(basetts.Audio(server.expected_pcm(text)), wait=False)
    session = synth.session(play=True)
    session.send(text)
    return session


@pytest.mark.parametrize("kind", ["speak", "play", "session"])
@pytest.mark.parametrize("how", ["synth.stop", "handle.stop"])
def test_every_stop_fades_out_at_once_and_returns_what_was_heard(pulse: Any, serve: Any, kind: str,
                                                                  how: str) -> None:
    server = serve(speed=1.0)
    synth = synth_for(server)
    text = words(120)  # 10 s
    expected = server.expected_pcm(text)
    started = _start(kind, synth, text, server)
    handle = started.playback if kind == "session" else started
    recording = pulse.record()
    wait_for(lambda: handle.position > 1.0)
    stopped_at = time.monotonic()
    stopper = threading.Thread(target=synth.stop if how == "synth.stop" else handle.stop)
    stopper.start()  # from another thread
    if kind == "session":
        wait_for(lambda: handle.stopped)
        heard = started.finish()  # while the stop still fades out: no error, the audio heard, final
        stopper.join()
        time.sleep(0.3)  # a fade that landed after finish() returned would show now
        assert started.audio.pcm == heard.pcm and started.stopped
        assert len(started.received.pcm) >= len(heard.pcm) and expected.startswith(started.received.pcm)
    else:
        stopper.join()
        heard = handle.wait(5)
    played = recording.stop()
    assert 0.9 < heard.duration < 3.0 and expected.startswith(heard.pcm)
    assert handle.stopped and handle.done and handle.error is None
    samples = array.array("h", played)
    silent_from = last_sound(played) + 1
    assert silent_from - recording.position_at(stopped_at) <= int(0.1 * RATE) + RECORDER_SLACK
    assert_fades_out_at(samples, silent_from, peak(expected))
    assert all_threads_gone() and pulse.sink_inputs() == []
    if kind != "play":
        assert server.last().client_disconnected  # the connection was closed, not played out
        # A stop asked for is no lost connection: nothing is recovered, no connection opened after it.
        assert heard.stats.recoveries == 0 and not [c for c in server.conversations if c.client_disconnected][1:]
        time.sleep(0.2)
        assert server.last() is server.conversations[-1] and server.last().client_disconnected


SESSION_CHILD = textwrap.dedent("""
    import sys, threading, time
    import basetts
    synth = basetts.Synthesizer(url=sys.argv[1], api_key=sys.argv[2])
    session = synth.session(play=True)
    try:
        session.send(" ".join(f"w{i}" for i in range(400)))
        while session.playback.position < 0.5:
            time.sleep(0.01)
        print("PLAYING", flush=True)
        session.finish()
        print("FINISHED")
    except KeyboardInterrupt:
        print("HEARD", session.audio.duration, "RECEIVED", session.received.duration, flush=True)
        print("THREADS", sorted(t.name for t in threading.enumerate()), flush=True)
        raise
""")


def test_ctrl_c_stops_a_session_at_once_keeping_what_was_heard(pulse: Any, serve: Any, tmp_path: Any) -> None:
    server = serve(speed=2.0)
    run = interrupt_while_playing(pulse, server, tmp_path, SESSION_CHILD)
    assert "KeyboardInterrupt" in run.err and "FINISHED" not in run.out
    fields = run.out.split()
    heard, received = float(fields[fields.index("HEARD") + 1]), float(fields[fields.index("RECEIVED") + 1])
    assert 1.0 < heard < 3.0 and received > heard + 1.0  # at 2x, more arrived than was heard
    assert "THREADS ['MainThread']" in run.out
    silent_from = last_sound(run.played) + 1
    assert silent_from - run.recording.position_at(run.interrupted_at) <= int(0.1 * RATE) + RECORDER_SLACK
    assert_fades_out_at(array.array("h", run.played), silent_from, peak(server.expected_pcm(words(400))))


# --- underruns: a fade out, a grown prebuffer, a fade in ---------------------------------------------------
def test_an_underrun_fades_out_rebuffers_with_a_grown_prebuffer_and_fades_back_in(pulse: Any, serve: Any) -> None:
    server = serve(speed=1.0, faults=Faults(stall_after_bytes=4096 * 20, stall_seconds=0.6))
    text = words(40)
    recording = pulse.record()
    audio = synth_for(server).speak(text)
    played = recording.stop()
    expected = server.expected_pcm(text)
    assert audio.pcm == expected
    stats = audio.stats
    assert stats.underruns == 1 and stats.prebuffer == pytest.approx(0.3)
    assert 0.3 <= stats.rebuffer_time < 1.5
    gap_start, gap_end = assert_gap_loses_and_repeats_nothing(played, expected, min_gap=0.3)
    assert (gap_end - gap_start) / RATE >= 0.5  # the stall, then the grown prebuffer filling


# --- handles --------------------------------------------------------------------------------------------------
def test_a_handle_kept_in_a_variable_plays_on_while_other_cells_run(pulse: Any, serve: Any) -> None:
    """Jupyter-style: one cell starts the sound and keeps the handle; later cells synthesize, look at it,
    and finally wait; the sound is whole and no thread outlives it."""
    server = serve(speed=2.0)
    synth = synth_for(server)
    recording = pulse.record()
    handle = synth.speak(words(60), wait=False)  # cell 1
    other = synth.synthesize("another cell")  # cell 2
    assert other.pcm == server.expected_pcm("another cell")
    wait_for(lambda: handle.playing)
    assert "playing" in repr(handle) and handle.position >= 0  # cell 3
    with pytest.raises(basetts.TimeoutError, match="stop"):
        handle.wait(timeout=0.1)  # still playing: a clear error, and it plays on
    audio = handle.wait()  # cell 4
    assert audio.pcm == server.expected_pcm(words(60))
    assert_played_exactly(recording.stop(), audio.pcm)
    assert all_threads_gone() and pulse.sink_inputs() == []


def test_a_background_playback_that_fails_raises_from_wait_with_the_partial_audio(pulse: Any, serve: Any) -> None:
    server = serve(faults=Faults(drop_after_bytes=4096 * 10))
    handle = synth_for(server, recoveries=0).speak(words(40), wait=False)  # the loss itself
    with pytest.raises(basetts.StreamInterrupted) as caught:
        handle.wait(20)
    assert caught.value.partial is not None and len(caught.value.partial.pcm) == 4096 * 10
    assert handle.error is caught.value and handle.done
    assert all_threads_gone() and pulse.sink_inputs() == []


# --- play() what you have ----------------------------------------------------------------------------------------
def sine_wav(path: Any, rate: int, channels: int, seconds: float, frequency: float) -> None:
    frames = array.array("h")
    for i in range(int(rate * seconds)):
        value = int(8000 * math.sin(2 * math.pi * frequency * i / rate))
        frames.extend([value] * channels)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames.tobytes())


def test_play_plays_an_audio_exactly_and_a_stereo_16khz_wav_resampled(pulse: Any, serve: Any, tmp_path: Any) -> None:
    server = serve()
    synth = synth_for(server)
    audio = synth.synthesize(words(20))
    recording = pulse.record()
    heard = synth.play(audio)
    assert heard.pcm == audio.pcm
    assert_played_exactly(recording.stop(), audio.pcm)

    path = tmp_path / "stereo.wav"
    sine_wav(path, 16000, 2, 1.0, 440.0)
    recording = pulse.record()
    heard = basetts.play(str(path))
    played = array.array("h", recording.stop())
    assert heard.sample_rate == 16000 and heard.duration == pytest.approx(1.0, abs=0.01)
    sound = [i for i, s in enumerate(played) if abs(s) > 1000]
    assert (sound[-1] - sound[0]) / RATE == pytest.approx(1.0, abs=0.02)  # the right length at 24 kHz
    crossings = sum(1 for a, b in zip(played[sound[0]:sound[-1]], played[sound[0] + 1:sound[-1]]) if (a < 0) != (b < 0))
    assert crossings / 2 / ((sound[-1] - sound[0]) / RATE) == pytest.approx(440, rel=0.02)  # the right pitch
    assert all_threads_gone() and pulse.sink_inputs() == []


def test_basetts_play_on_the_command_line(pulse: Any, tmp_path: Any) -> None:
    path = tmp_path / "tone.wav"
    sine_wav(path, 24000, 1, 0.5, 300.0)
    recording = pulse.record()
    done = subprocess.run([sys.executable, "-m", "basetts", "play", str(path)], env=pulse.env,
                          capture_output=True, text=True, timeout=30)
    played = recording.stop()
    assert done.returncode == 0, done.stderr
    assert "played 0.5 s" in done.stderr
    with open(path, "rb") as file, wave.open(file) as reader:
        assert locate(played, reader.readframes(reader.getnframes())) >= 0
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    for name, message in (("bad.wav", "not a WAV file"), ("missing.wav", "no such file")):
        failed = subprocess.run([sys.executable, "-m", "basetts", "play", str(tmp_path / name)], env=pulse.env,
                                capture_output=True, text=True, timeout=30)
        assert failed.returncode == 2 and message in failed.stderr


# --- on_audio everywhere ---------------------------------------------------------------------------------------
def test_on_audio_sees_every_chunk_of_synthesize_save_and_session_in_the_documented_thread(
        serve: Any, tmp_path: Any) -> None:
    server = serve()
    synth = synth_for(server)
    text = words(30)
    for call in ("synthesize", "save", "session"):
        seen: List[bytes] = []
        threads: List[str] = []

        def on_audio(chunk: bytes, seen: List[bytes] = seen, threads: List[str] = threads) -> None:
            seen.append(chunk)
            threads.append(threading.current_thread().name)

        if call == "synthesize":
            audio = synth.synthesize(text, on_audio=on_audio)
            expected_thread = threading.current_thread().name
        elif call == "save":
            audio = synth.save(text, tmp_path / "out.wav", on_audio=on_audio).audio()
            expected_thread = threading.current_thread().name
        else:
            with synth.session(on_audio=on_audio) as session:
                session.send(text)
            audio = session.audio
            expected_thread = "basetts-session"
        assert b"".join(seen) == audio.pcm == server.expected_pcm(text), call
        assert len(seen) > 1 and set(threads) == {expected_thread}, call
