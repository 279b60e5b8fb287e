"""Playback: `Synthesizer.speak`, `stop`, `devices` and the `Player` underneath.

Tests marked `playback` play through real PyAudio -> ALSA's pulse plugin -> a PulseAudio null sink
(the `pulse` fixture in conftest.py) and check what the sink's monitor recorded. The rest drive the
`Player` with a fake PortAudio, to pin down the callback's rules exactly.
"""
from __future__ import annotations

import array
import dataclasses
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest

import basetts
import basetts.testing
from basetts import playback
from basetts.playback import Player, player, portaudio
from basetts.playback.resample import resample
from basetts.testing import LocalServer, tone_pcm

from .helpers import client_threads, needs_no_oss_device, no_sound_card_env, synth_for

RATE = 24000
BUFFER = int(RATE * playback.CALLBACK_SECONDS)  # one callback buffer, in samples
# The recorder (parec, 10 ms latency) sees the sink a little late or early; timing claims allow this.
RECORDER_SLACK = int(0.05 * RATE)


def words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


def locate(recording: bytes, expected: bytes) -> int:
    """Sample offset at which `expected` starts in `recording` (found by a distinctive slice); -1 if absent."""
    skip = 400 if len(expected) >= 1200 else 0  # the tones fade in from 0: probe past the fade
    probe = expected[skip:skip + 400]
    index = recording.find(probe)
    while index >= 0 and (index - skip) % 2:
        index = recording.find(probe, index + 1)
    return (index - skip) // 2 if index >= 0 else -1


def last_sound(recording: bytes) -> int:
    samples = array.array("h", recording)
    for index in range(len(samples) - 1, -1, -1):
        if samples[index]:
            return index
    return -1


def assert_played_exactly(recording: bytes, expected: bytes) -> int:
    """`expected` is in the recording sample for sample: in order, nothing lost, no gap inserted."""
    offset = locate(recording, expected)
    assert offset >= 0, "the expected audio was not found in what the sink played"
    played = recording[2 * offset:2 * offset + len(expected)]
    if played != expected:
        got, want = array.array("h", played), array.array("h", expected)
        first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        pytest.fail(f"played audio differs from the server's from sample {first} of {len(want)} "
                    f"({first / RATE:.3f} s in): a gap, a loss or a clipped ending")
    return offset


def tone_frequency(word: str) -> int:
    return 200 + zlib.crc32(word.encode("utf-8")) % 800  # as basetts.testing.server.tone_pcm


def zero_crossing_frequency(samples: "array.array[int]", rate: int) -> float:
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


# --- on a real sound card (PulseAudio null sink) ----------------------------------------------------------
playback_test = pytest.mark.playback


@playback_test
@pytest.mark.parametrize("speed", [None, 3.0], ids=["unpaced", "3x-real-time"])
def test_speak_plays_the_servers_audio_in_order_without_gaps(pulse: Any, serve: Any, speed: Optional[float]) -> None:
    """Faster than real time, the device hears exactly the server's audio: in order, no gap, whole ending."""
    server = serve(speed=speed)
    text = words(40)
    recording = pulse.record()
    audio = synth_for(server).speak(text)
    played = recording.stop()
    expected = server.expected_pcm(text)
    assert_played_exactly(played, expected)
    assert audio.pcm == expected
    stats = audio.stats
    assert stats.bytes_received == len(expected)
    assert stats.first_byte_time is not None and stats.first_sound_time is not None
    assert stats.first_sound_time >= stats.first_byte_time
    assert stats.underruns == 0
    assert stats.real_time_factor(audio.duration) is not None
    assert pulse.sink_inputs() == []  # the PyAudio stream is closed
    assert client_threads() == []


@playback_test
def test_speak_returns_within_one_buffer_of_the_last_sample(pulse: Any, serve: Any) -> None:
    """Not clipped (the whole tail is in the recording, and the stream is closed as speak returns) and
    not late (no silence timer): the recorder is at most one callback buffer past the last sample."""
    server = serve()
    text = words(30)
    recording = pulse.record()
    synth_for(server).speak(text)
    returned_at = time.monotonic()
    played = recording.stop()
    offset = assert_played_exactly(played, server.expected_pcm(text))
    end = offset + len(server.expected_pcm(text)) // 2
    at_return = recording.position_at(returned_at)
    assert at_return >= end - RECORDER_SLACK, f"returned {(end - at_return) / RATE:.3f} s before the end was heard"
    assert at_return - end <= BUFFER + RECORDER_SLACK, f"returned {(at_return - end) / RATE:.3f} s after the end"


@playback_test
def test_speak_starts_before_the_whole_text_arrived(pulse: Any, serve: Any) -> None:
    """Real-time server: sound starts after the prebuffer, long before the stream ends; words in order."""
    server = serve(speed=1.0)
    text = words(20)
    recording = pulse.record()
    audio = synth_for(server).speak(text, prebuffer=0.1)
    played = recording.stop()
    stats = audio.stats
    assert stats.first_sound_time is not None and stats.total_time is not None
    assert stats.first_sound_time < stats.total_time - 1.0  # heard while ~1.5 s were still to come
    position = 0
    for word in text.split():  # every word's tone, in order (real time may leave small gaps)
        found = played.find(tone_pcm(word)[800:1600], position)
        assert found >= 0, f"{word} was not played in order"
        position = found
    assert audio.pcm == server.expected_pcm(text)


@playback_test
def test_a_session_with_play_plays_fragments_as_they_arrive_and_ends_once_heard(pulse: Any, serve: Any) -> None:
    """session(play=True): fragments split mid-word are played as the server's audio for the whole
    words, exactly; leaving the block returns after the last sample, and closes stream and threads."""
    server = serve()
    text = words(30)
    recording = pulse.record()
    with synth_for(server).session(play=True, buffer_size=3) as session:
        for start in range(0, len(text), 7):  # fragments that cut words anywhere
            session.send(text[start:start + 7])
    returned_at = time.monotonic()
    played = recording.stop()
    expected = server.expected_pcm(text)
    offset = assert_played_exactly(played, expected)
    assert session.audio.pcm == expected
    assert recording.position_at(returned_at) >= offset + len(expected) // 2 - RECORDER_SLACK, "ended early"
    assert pulse.sink_inputs() == [] and client_threads() == []


@playback_test
def test_a_session_left_by_an_exception_stops_the_sound(pulse: Any, serve: Any) -> None:
    server = serve(speed=1.0)
    recording = pulse.record()
    with pytest.raises(RuntimeError, match="from the caller"):
        with synth_for(server).session(play=True, buffer_size=1) as session:
            session.send(words(200) + " ")
            deadline = time.monotonic() + 10
            while session.stats.first_byte_time is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
            raise RuntimeError("from the caller")
    left_at = time.monotonic()
    played = recording.stop()
    assert session.audio.pcm and len(session.audio.pcm) < len(server.expected_pcm(words(200)))
    assert last_sound(played) + 1 - recording.position_at(left_at) <= int(0.1 * RATE) + RECORDER_SLACK
    assert pulse.sink_inputs() == [] and client_threads() == []


@playback_test
def test_a_prebuffer_longer_than_the_text_plays_at_the_end(pulse: Any, serve: Any) -> None:
    server = serve()
    recording = pulse.record()
    audio = synth_for(server).speak("short text", prebuffer=10.0)
    assert_played_exactly(recording.stop(), server.expected_pcm("short text"))
    assert audio.duration == pytest.approx(2 * 2048 / 24000)


@playback_test
def test_volume_is_a_software_gain(pulse: Any, serve: Any) -> None:
    server = serve()
    text = words(6)
    recording = pulse.record()
    audio = synth_for(server).speak(text, volume=0.5)
    expected = server.expected_pcm(text)
    assert_played_exactly(recording.stop(), player._scale(expected, 0.5))
    assert audio.pcm == expected  # the Audio is what was received, before the gain


@playback_test
def test_output_device_by_name_and_index_and_a_clear_error(pulse: Any, serve: Any) -> None:
    listed = basetts.devices()
    assert listed and any(device.is_default for device in listed)
    server = serve()
    synth = synth_for(server)
    pulse_device = next(d for d in listed if d.name == "pulse")
    for choice in ("PULS", pulse_device.index, str(pulse_device.index)):
        recording = pulse.record()
        synth.speak("by name", output_device=choice)
        assert_played_exactly(recording.stop(), server.expected_pcm("by name"))
    with pytest.raises(basetts.AudioDeviceError, match="No output device named like 'no such card'.*pulse"):
        synth.speak("never sent", output_device="no such card")
    assert all("never" not in c.words for c in server.conversations)


@playback_test
def test_portaudio_starts_once_per_synthesizer_and_stops_with_it(pulse: Any, serve: Any) -> None:
    """Starting PortAudio probes every device (40 ms here, often far more on a desktop): a Synthesizer
    keeps it started between speak() calls, and close() (or garbage collection) lets it stop."""
    server = serve()
    gc.collect()  # Synthesizers of earlier tests that are only garbage now let go first
    users = portaudio._shared_users
    synth = synth_for(server)
    synth.speak("first call")
    started = portaudio._shared_pa
    assert started is not None and portaudio._shared_users == users + 1  # held between calls, no stream open
    recording = pulse.record()
    synth.speak("second call")
    assert_played_exactly(recording.stop(), server.expected_pcm("second call"))
    assert portaudio._shared_pa is started  # not started again
    synth.close()
    assert portaudio._shared_users == users
    synth.speak("after close")  # starts it again
    assert portaudio._shared_users == users + 1
    del synth  # never closed: collected, it lets go too
    gc.collect()
    assert portaudio._shared_users == users
    assert pulse.sink_inputs() == []


@playback_test
def test_the_device_opens_while_the_server_answers_the_upgrade(pulse: Any, serve: Any, caplog: Any) -> None:
    """PortAudio's start (it probes every device) overlaps the network: the upgrade request goes out
    first, then the device opens, then the words go. The first call in a process pays that start."""
    server = serve()
    caplog.set_level(logging.DEBUG, logger="basetts")
    recording = pulse.record()
    synth_for(server).speak("overlapped start")
    assert_played_exactly(recording.stop(), server.expected_pcm("overlapped start"))
    steps = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith(("upgrade request sent", "playing on", "upgrade answered"))]
    assert [step.split()[1] for step in steps] == ["request", "on", "answered:"], steps


@playback_test
def test_on_audio_sees_every_chunk_and_its_exception_stops_cleanly(pulse: Any, serve: Any) -> None:
    server = serve()
    synth = synth_for(server)
    chunks: List[bytes] = []
    audio = synth.speak(words(10), on_audio=chunks.append)
    assert b"".join(chunks) == audio.pcm

    class Boom(Exception):
        pass

    def explode(chunk: bytes) -> None:
        if len(chunks) > 2:
            raise Boom()
        chunks.append(chunk)

    chunks.clear()
    slow = serve(speed=1.0)
    with pytest.raises(Boom):
        synth_for(slow).speak(words(100), on_audio=explode)
    assert slow.last().client_disconnected  # the socket was closed early
    assert pulse.sink_inputs() == []
    assert client_threads() == []


@playback_test
def test_stop_from_another_thread_silences_at_once_and_returns_what_was_heard(pulse: Any, serve: Any) -> None:
    server = serve(speed=1.0)
    synth = synth_for(server)
    text = words(200)  # 20 s
    recording = pulse.record()
    stopped_at: List[float] = []

    def stop_later() -> None:
        time.sleep(1.0)
        stopped_at.append(time.monotonic())
        synth.stop()

    stopper = threading.Thread(target=stop_later)
    stopper.start()
    audio = synth.speak(text)
    returned_at = time.monotonic()
    stopper.join()
    played = recording.stop()
    expected = server.expected_pcm(text)
    assert 0.5 < audio.duration < 5.0
    assert expected.startswith(audio.pcm)  # the start of the text, in order
    offset = locate(played, expected)
    assert offset >= 0
    silent_from = last_sound(played) + 1
    heard = played[2 * offset:2 * silent_from]
    assert audio.pcm.startswith(heard[:len(heard) - len(heard) % 2 - 2 * BUFFER])
    # Measured on the recording: the sound ended within 100 ms of stop().
    assert silent_from - recording.position_at(stopped_at[0]) <= int(0.1 * RATE) + RECORDER_SLACK
    assert returned_at - stopped_at[0] < 1.0  # sanity bound: the reader's poll, not a hang
    assert pulse.sink_inputs() == []
    assert client_threads() == []
    assert server.last().client_disconnected


@playback_test
def test_stop_stops_every_speak_in_progress_on_that_synthesizer(pulse: Any, serve: Any) -> None:
    server = serve(speed=1.0)
    synth = synth_for(server)
    results: List[basetts.Audio] = []
    callers = [threading.Thread(target=lambda: results.append(synth.speak(words(100)))) for _ in range(2)]
    for caller in callers:
        caller.start()
    time.sleep(1.0)
    synth.stop()
    for caller in callers:
        caller.join(5)
    assert len(results) == 2 and all(0 < audio.duration < 5.0 for audio in results)
    assert pulse.sink_inputs() == [] and client_threads() == []


@playback_test
def test_a_broken_stream_plays_what_arrived_then_raises_with_partial(pulse: Any, serve: Any) -> None:
    server = serve(faults=basetts.testing.Faults(drop_after_bytes=5 * 4096))
    text = words(20)
    recording = pulse.record()
    with pytest.raises(basetts.StreamInterrupted) as caught:
        synth_for(server, recoveries=0).speak(text)  # the loss itself (tests/test_recovery.py: mended)
    arrived = server.expected_pcm(text)[:5 * 4096]
    assert caught.value.partial is not None and caught.value.partial.pcm == arrived
    assert_played_exactly(recording.stop(), arrived)
    assert pulse.sink_inputs() == [] and client_threads() == []


CHILD = textwrap.dedent("""
    import sys, threading, time
    import basetts
    synth = basetts.Synthesizer(url=sys.argv[1], api_key=sys.argv[2])
    first = []
    def on_audio(chunk):
        if not first:
            first.append(1)
            print("PLAYING", flush=True)
    try:
        synth.speak(" ".join(f"w{i}" for i in range(400)), on_audio=on_audio)
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("THREADS", sorted(t.name for t in threading.enumerate()), flush=True)
        raise
""")


@dataclasses.dataclass
class Interrupted:
    """What a child that played, then got Ctrl+C, left: its exit, output, and what the sink recorded."""

    returncode: int
    out: str
    err: str
    played: bytes
    recording: Any
    interrupted_at: float
    exited_at: float


def interrupt_while_playing(pulse: Any, server: LocalServer, tmp_path: Any, source: str) -> Interrupted:
    """Run `source` (given the server's URL and key) until it prints PLAYING, let it play 1 s, send SIGINT."""
    script = tmp_path / "child.py"
    script.write_text(source)
    recording = pulse.record()
    child = subprocess.Popen([sys.executable, str(script), server.url, server.api_key],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pulse.env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "PLAYING"
        time.sleep(1.0)  # well into the sound
        interrupted_at = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        exited_at = time.monotonic()
    finally:
        if child.poll() is None:
            child.kill()
    return Interrupted(child.returncode, out, err, recording.stop(), recording, interrupted_at, exited_at)


@playback_test
def test_ctrl_c_stops_sound_closes_everything_and_raises_keyboard_interrupt(
        pulse: Any, serve: Any, tmp_path: Any) -> None:
    server = serve(speed=1.0)
    run = interrupt_while_playing(pulse, server, tmp_path, CHILD)
    assert run.returncode in (-signal.SIGINT, 128 + signal.SIGINT, 1), run.err
    assert "KeyboardInterrupt" in run.err
    assert "THREADS ['MainThread']" in run.out  # writer and reader joined; no thread left behind
    assert "FINISHED" not in run.out
    assert run.exited_at - run.interrupted_at < 5.0  # sanity bound
    assert locate(run.played, server.expected_pcm(words(400))) >= 0
    silent_from = last_sound(run.played) + 1
    assert silent_from - run.recording.position_at(run.interrupted_at) <= int(0.1 * RATE) + RECORDER_SLACK
    assert server.last().client_disconnected


@playback_test
def test_a_device_that_refuses_24khz_gets_resampled_audio(pulse: Any, serve: Any, monkeypatch: Any) -> None:
    """ALSA's pulse plugin takes any rate, so the refusal is made at PortAudio's capability check;
    from there on it is real: the device opens at its default rate (44.1 kHz), we resample, PulseAudio
    plays into a 48 kHz sink, and every word is heard at its pitch and length."""
    module = pulse.load_sink("basetts_48k", 48000)
    try:
        monkeypatch.setenv("PULSE_SINK", "basetts_48k")
        real_supports = portaudio.supports
        monkeypatch.setattr(portaudio, "supports",
                            lambda pa, pyaudio, device, rate: rate != RATE and real_supports(pa, pyaudio, device, rate))
        server = serve()
        text = words(8, prefix="tone")
        recording = pulse.record("basetts_48k", 48000)
        audio = synth_for(server).speak(text)
        played = array.array("h", recording.stop())
    finally:
        pulse.unload(module)
    assert audio.pcm == server.expected_pcm(text)
    loud = [i for i, s in enumerate(played) if abs(s) > 500]
    start = loud[0]
    per_word = 2 * server.samples_per_word  # 24 kHz -> 48 kHz
    assert (loud[-1] - start) == pytest.approx(8 * per_word, abs=200)
    for index, word in enumerate(text.split()):
        middle = played[start + index * per_word + 600:start + (index + 1) * per_word - 600]
        assert zero_crossing_frequency(middle, 48000) == pytest.approx(tone_frequency(word), rel=0.04, abs=15), word


@playback_test
def test_player_resamples_to_a_forced_device_rate_exactly(pulse: Any, serve: Any, monkeypatch: Any) -> None:
    """24 -> 48 kHz through our linear resampler reaches a 48 kHz sink untouched: compare sample for sample."""
    module = pulse.load_sink("basetts_48k_exact", 48000)
    try:
        monkeypatch.setenv("PULSE_SINK", "basetts_48k_exact")
        server = serve()
        text = words(10)
        recording = pulse.record("basetts_48k_exact", 48000)
        with Player(device_rate=48000) as player:
            for chunk in synth_for(server).stream(text):
                player.feed(chunk)
            player.drain()
        played = recording.stop()
    finally:
        pulse.unload(module)
    expected = resample(server.expected_pcm(text), RATE, 48000)
    offset = locate(played, expected)
    assert offset >= 0
    assert played[2 * offset:2 * offset + len(expected)] == expected  # to the last sample


def _run(code: str, env: Optional[Mapping[str, str]] = None) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@needs_no_oss_device
def test_no_output_device_is_a_clear_error_before_any_text_is_sent(serve: Any, tmp_path: Any) -> None:
    """No sound server reachable and no sound card PortAudio can name: it lists no output at all."""
    server = serve()
    result = _run(f"""
        import basetts
        synth = basetts.Synthesizer(url={server.url!r}, api_key={server.api_key!r})
        try:
            synth.speak("hello there")
        except basetts.AudioDeviceError as exc:
            print("ERROR", exc)
    """, env=no_sound_card_env(tmp_path))
    assert "ERROR No audio output device found" in result.stdout, result.stdout + result.stderr
    assert "synthesize" in result.stdout and "save" in result.stdout
    # The device is opened while the server answers the upgrade: a connection may have been opened,
    # but no settings and no word went out on it.
    assert all(c.settings is None and c.messages == [] for c in server.conversations), server.conversations


# --- without PyAudio -------------------------------------------------------------------------------------
def test_synthesize_stream_and_save_never_import_pyaudio(serve: Any, tmp_path: Any) -> None:
    server = serve()
    result = _run(f"""
        import sys
        import basetts
        synth = basetts.Synthesizer(url={server.url!r}, api_key={server.api_key!r})
        synth.synthesize("one two")
        list(synth.stream("one two"))
        synth.save("one two", {str(tmp_path / 'out.wav')!r})
        print(sorted(m for m in sys.modules if m.startswith(("pyaudio", "_portaudio"))))
    """)
    assert result.stdout.strip() == "[]", result.stderr


def test_without_pyaudio_speak_says_what_to_install(serve: Any, tmp_path: Any) -> None:
    server = serve()
    result = _run(f"""
        import sys
        sys.modules["pyaudio"] = None  # as if PyAudio were not installed
        import basetts
        synth = basetts.Synthesizer(url={server.url!r}, api_key={server.api_key!r})
        print(len(synth.synthesize("still works")))
        for call in (lambda: synth.speak("hi"), basetts.devices):
            try:
                call()
            except basetts.AudioDeviceError as exc:
                print("ERROR", exc)
        for missing in ({str(tmp_path / 'missing.wav')!r}, {str(tmp_path)!r}):  # the file's trouble, said first
            for play in (synth.play, basetts.play):
                try:
                    play(missing)
                except OSError as exc:
                    print("FILE", type(exc).__name__)
    """)
    lines = result.stdout.splitlines()
    assert lines[0] == str(len(server.expected_pcm("still works"))), result.stderr
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 2
    for error in errors:
        assert "pip install pyaudio" in error and "portaudio" in error.lower()
        assert "synthesize" in error and "save" in error
    assert len(server.conversations) == 1  # speak() sent nothing
    assert [line for line in lines if line.startswith("FILE")] == ["FILE FileNotFoundError"] * 2 + \
        ["FILE IsADirectoryError"] * 2


# --- the Player's rules, with a fake PortAudio -------------------------------------------------------------
class FakeStream:
    def __init__(self, options: Dict[str, Any]) -> None:
        self.options = options
        self.callback = options["stream_callback"]
        self.started = False
        self.finished = False
        self.closed = False
        self.clock = 100.0

    def start_stream(self) -> None:
        self.started = True

    def is_active(self) -> bool:
        return self.started and not self.finished and not self.closed

    def get_output_latency(self) -> float:
        return 0.05

    def close(self) -> None:
        self.closed = True

    def pull(self, frames: int, ahead: float = 0.05) -> Any:
        """What PortAudio's thread does: call back for `frames`, the DAC `ahead` seconds later."""
        data, flag = self.callback(None, frames, {"current_time": self.clock,
                                                 "output_buffer_dac_time": self.clock + ahead}, 0)
        self.clock += frames / self.options["rate"]
        if flag != FAKE_PYAUDIO.paContinue:
            self.finished = True
        return data, flag


class FakePortAudio:
    def __init__(self, rates: Any = (24000, 44100, 48000)) -> None:
        self.rates = rates
        self.stream: Optional[FakeStream] = None
        self.terminated = False

    def get_default_output_device_info(self) -> Dict[str, Any]:
        return {"index": 0}

    def get_host_api_count(self) -> int:
        return 1

    def get_host_api_info_by_index(self, index: int) -> Dict[str, Any]:
        return {"index": 0, "name": "Fake"}

    def get_device_count(self) -> int:
        return 2

    def get_device_info_by_index(self, index: int) -> Dict[str, Any]:
        return [
            {"index": 0, "name": "Fake speakers", "hostApi": 0, "maxOutputChannels": 2, "defaultSampleRate": 48000.0},
            {"index": 1, "name": "Fake mic", "hostApi": 0, "maxOutputChannels": 0, "defaultSampleRate": 48000.0},
        ][index]

    def is_format_supported(self, rate: int, **options: Any) -> bool:
        if rate not in self.rates:
            raise ValueError("Invalid sample rate")
        return True

    def open(self, **options: Any) -> FakeStream:
        self.stream = FakeStream(options)
        return self.stream

    def terminate(self) -> None:
        self.terminated = True


FAKE_PYAUDIO = SimpleNamespace(paInt16=8, paContinue=0, paComplete=1, paAbort=2,
                               _portaudio=SimpleNamespace(abort_stream=lambda stream: None))


@pytest.fixture
def fake_pa(monkeypatch: Any) -> FakePortAudio:
    pa = FakePortAudio()
    monkeypatch.setattr(portaudio, "acquire", lambda: (FAKE_PYAUDIO, pa))
    return pa


def test_devices_lists_only_outputs(fake_pa: FakePortAudio) -> None:
    listed = basetts.devices()
    assert [d.name for d in listed] == ["Fake speakers"] and listed[0].is_default
    assert "Fake speakers" in str(listed[0]) and fake_pa.terminated
    assert portaudio.check_output("speak").index == 0
    with pytest.raises(basetts.AudioDeviceError, match="index 5"):
        portaudio.check_output(5)


def pcm_of(*values: int) -> bytes:
    return array.array("h", values).tobytes()


def test_an_underrun_fades_out_rebuffers_a_grown_prebuffer_and_fades_back_in(fake_pa: FakePortAudio) -> None:
    fade = int(RATE * playback.FADE_SECONDS)  # 120 samples
    with Player(prebuffer=0.1) as player:
        stream = fake_pa.stream
        assert stream is not None and stream.options["rate"] == RATE
        player.feed(pcm_of(*[10000] * 2000))
        assert not stream.started  # 2000 samples < 0.1 s
        player.feed(pcm_of(*[10000] * 401))
        assert stream.started
        data, flag = stream.pull(2000)
        assert data == pcm_of(*[10000] * 2000) and flag == FAKE_PYAUDIO.paContinue
        data, flag = stream.pull(480)  # 401 samples left: they play, their last 5 ms fading to 0
        played = array.array("h", data)
        assert played[:401 - fade].tolist() == [10000] * (401 - fade)
        tail = played[401 - fade:401].tolist()
        assert tail == sorted(tail, reverse=True) and tail[-1] == 0 and tail[0] > 9800
        assert all(b - a <= 10000 // fade + 1 for a, b in zip(tail[1:], tail))  # no step: a ramp
        assert played[401:].tolist() == [0] * 79 and flag == FAKE_PYAUDIO.paContinue
        assert player.underruns == 1 and player.prebuffer == pytest.approx(0.3)
        # Rebuffering: silence, nothing taken, until 0.3 s are queued again.
        player.feed(pcm_of(*[7000] * 7000) + b"\x58")  # half a sample waits for its other half
        assert array.array("h", stream.pull(480)[0]).tolist() == [0] * 480
        assert player.rebuffer_seconds == pytest.approx(480 / RATE)
        player.feed(b"\x1b" + pcm_of(*[7000] * 199))  # 0x1b58 = 7000: the split sample, whole
        resumed = array.array("h", stream.pull(480)[0]).tolist()
        assert resumed[0] == 0 and resumed[fade - 1] < 7000 and resumed[fade:] == [7000] * (480 - fade)
        assert resumed[:fade] == sorted(resumed[:fade])  # faded in
        assert player.played_samples == 2000 + 401 + 480 and player.underruns == 1


@pytest.mark.parametrize("frames", [480, 500, 475], ids=["at-a-buffer-start", "mid-buffer", "40-samples-in"])
def test_a_unit_restarted_after_a_lost_connection_joins_what_was_heard_without_a_click(
        fake_pa: FakePortAudio, frames: int) -> None:
    """`take_back` keeps what the callback may be reading; what follows it (the unit again, from its start) is
    spliced on with a fade out into the splice and in after it, wherever the splice falls among the device's
    buffers (`frames` each: 3840 samples after the splice is made, it falls at a buffer's start, in the middle
    of one, or too early in one to fade out there: the buffer before fades out)."""
    fade = int(RATE * playback.FADE_SECONDS)
    with Player(prebuffer=0.1) as player:
        stream = fake_pa.stream
        assert stream is not None
        player.feed(pcm_of(*[10000] * 9600))
        out = array.array("h", stream.pull(480)[0]).tolist()
        taken = player.take_back(2 * (9600 - 480))  # all of it not heard yet, if it could
        assert 0 < taken < 2 * (9600 - 480)  # a margin stays: that much is heard again
        kept = 9600 - taken // 2
        player.feed(pcm_of(*[-10000] * 4800))  # the unit again, as another sound
        player.end()
        while len(out) < kept + 4800 + 480:
            out += array.array("h", stream.pull(frames)[0]).tolist()
    steps = [abs(b - a) for a, b in zip(out, out[1:kept + 4800])]  # the sound's own end is abrupt: not ours
    assert max(steps) <= 10000 // fade * 3, "a step: a click at the splice"
    assert out[kept - 2 * fade] == 10000 and out[kept + fade] == -10000  # within a fade or two either side
    assert out[kept] == 0  # silent at the splice itself


def test_behind_a_resampler_nothing_is_taken_back_but_the_restart_still_joins_without_a_click(
        fake_pa: FakePortAudio) -> None:
    """A device that cannot play 24 kHz: the resampler's state has run on, so nothing is taken back, but what
    follows (the unit again) joins what was queued with the same fades, after the resampler's last samples."""
    fade = int(48000 * playback.FADE_SECONDS)
    with Player(prebuffer=0.1, device_rate=48000) as player:
        stream = fake_pa.stream
        assert stream is not None and stream.options["rate"] == 48000
        player.feed(pcm_of(*[10000] * 9600))  # 0.4 s: 19200 samples at the device's rate
        out = array.array("h", stream.pull(960)[0]).tolist()
        assert player.take_back(2 * 9000) == 0
        player.feed(pcm_of(*[-10000] * 4800))
        player.end()
        while len(out) < 19200 + 9600 + 960:
            out += array.array("h", stream.pull(1000)[0]).tolist()
    kept = 19200
    steps = [abs(b - a) for a, b in zip(out, out[1:kept + 9000])]
    assert max(steps) <= 10000 // fade * 3, "a step: a click at the splice"
    assert out[kept - 2 * fade] == 10000 and out[kept + fade] == -10000 and out[kept] == 0


def test_the_end_is_not_an_underrun_and_completes_only_once_heard(fake_pa: FakePortAudio) -> None:
    with Player(prebuffer=1.0) as player:
        stream = fake_pa.stream
        assert stream is not None
        player.feed(b"\x05\x00" * 100)
        player.end()  # shorter than the prebuffer: starts at the end
        assert stream.started
        data, flag = stream.pull(480, ahead=0.05)  # the last sample is heard 0.05 + 100/24000 s later
        assert data.startswith(b"\x05\x00" * 100) and flag == FAKE_PYAUDIO.paContinue
        flags = [stream.pull(480, ahead=0.05)[1] for _ in range(4)]
        # Complete once the clock passed the last sample's DAC time (~0.054 s: the third 20 ms buffer).
        assert flags[:2] == [FAKE_PYAUDIO.paContinue] * 2 and flags[2] == FAKE_PYAUDIO.paComplete
        assert player.underruns == 0
        player.drain()  # inactive now: returns at once


def test_the_callback_never_raises(fake_pa: FakePortAudio) -> None:
    with Player(prebuffer=0) as player:
        stream = fake_pa.stream
        assert stream is not None
        player.feed(b"\x01\x00" * 10)
        player._ring = None  # type: ignore[assignment]  # break it
        data, flag = stream.pull(480)
        assert (data, flag) == (b"", FAKE_PYAUDIO.paAbort)
        with pytest.raises(basetts.AudioDeviceError, match="audio callback failed"):
            player.drain()


def test_feed_waits_while_seconds_are_buffered_and_stop_releases_it(fake_pa: FakePortAudio) -> None:
    with Player(prebuffer=0, max_buffered=1.0) as player:
        stream = fake_pa.stream
        assert stream is not None
        done = threading.Event()
        results: List[bool] = []

        def produce() -> None:
            results.append(player.feed(b"\x01\x00" * RATE * 3))  # 3 s into a 1 s buffer
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.2)
        assert not done.is_set()  # waiting for room, memory flat
        assert player.buffered_seconds <= 1.1
        for _ in range(int(1.5 * RATE / 480)):
            stream.pull(480)
        assert not done.is_set()
        player.stop()
        producer.join(2)
        assert done.is_set() and results == [False]
        assert player.feed(b"\x01\x00") is False


def test_a_device_without_24khz_opens_at_its_default_rate_and_resamples(fake_pa: FakePortAudio) -> None:
    fake_pa.rates = (48000,)
    with Player(prebuffer=0) as player:
        stream = fake_pa.stream
        assert stream is not None and stream.options["rate"] == 48000 and player.device_rate == 48000
        player.feed(tone_pcm("hello"))
        assert player.buffered_seconds == pytest.approx(2048 / 24000, abs=0.001)


def test_bad_options_are_configuration_errors(fake_pa: FakePortAudio) -> None:
    with LocalServer() as server:
        synth = synth_for(server)
        for options in ({"volume": 1.5}, {"volume": -0.1}, {"prebuffer": -1}, {"prebuffer": float("nan")}):
            with pytest.raises(basetts.ConfigurationError):
                synth.speak("hello", **options)
        assert server.conversations == []


@playback_test
def test_on_audio_raising_silences_at_once_even_while_the_text_iterable_waits(pulse: Any, serve: Any) -> None:
    """The sound stops when the exception happens, not after the connection's threads are joined (the
    writer is inside the caller's iterable, waiting for its next word)."""
    server = serve(speed=4.0)  # the player gets ahead of the device: ~1 s queued when on_audio raises

    def text() -> Iterator[str]:
        yield words(20) + " "  # two segments, 2 s of audio
        time.sleep(1.5)  # a language model thinking: the writer thread waits here
        yield words(10, prefix="late")

    class Boom(Exception):
        pass

    chunks: List[bytes] = []
    raised_at: List[float] = []

    def explode(chunk: bytes) -> None:
        chunks.append(chunk)
        if len(chunks) == 16:
            raised_at.append(time.monotonic())
            raise Boom()

    recording = pulse.record()
    with pytest.raises(Boom):
        synth_for(server).speak(text(), on_audio=explode)
    played = recording.stop()
    assert locate(played, b"".join(chunks)[:2400]) >= 0  # it was playing
    silent_from = last_sound(played) + 1
    assert silent_from - recording.position_at(raised_at[0]) <= int(0.1 * RATE) + RECORDER_SLACK
    assert pulse.sink_inputs() == []


@playback_test
@pytest.mark.parametrize("failure", ["hangs", "dies"])
def test_a_sound_server_that_hangs_or_dies_mid_speak_is_an_error_with_all_the_audio(
        pulse: Any, serve: Any, tmp_path: Any, monkeypatch: Any, failure: str) -> None:
    """A device that stops taking audio (its sound server hung or killed) must not hang speak(): an
    `AudioDeviceError` carrying every byte received."""
    from .conftest import PulseAudio

    private = PulseAudio(str(tmp_path / "pulse"))
    private.start()
    monkeypatch.setenv("PULSE_SERVER", private.server)
    server = serve()
    text = words(300)  # 30 s, unpaced: more than the player buffers, so feed() waits on the device
    result: Dict[str, Any] = {}

    def run() -> None:
        try:
            result["audio"] = synth_for(server).speak(text)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            result["error"] = exc

    speaker = threading.Thread(target=run)
    try:
        speaker.start()
        time.sleep(1.0)
        assert private._process is not None
        os.kill(private._process.pid, signal.SIGSTOP if failure == "hangs" else signal.SIGKILL)
        speaker.join(30)
        assert not speaker.is_alive(), "speak() hung with its sound server"
    finally:
        if failure == "hangs" and private._process is not None:
            os.kill(private._process.pid, signal.SIGCONT)
        speaker.join(10)
        private.stop()
    error = result.get("error")
    assert isinstance(error, basetts.AudioDeviceError), result
    assert "stopped playing" in str(error)
    assert len(error.partial.pcm) > 2 * RATE  # more than the second it played
    assert server.expected_pcm(text).startswith(error.partial.pcm)
    time.sleep(1.0)  # a close left to finish in the background does so once the server answers
    assert client_threads() == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("basetts-stream")] == []


@playback_test
def test_stop_during_a_retry_wait_returns_at_once_and_sends_nothing(pulse: Any, serve: Any) -> None:
    server = serve(faults=basetts.testing.Faults(handshake_status=503, handshake_failures=1, retry_after=20))
    synth = synth_for(server)
    result: List[Any] = []
    speaker = threading.Thread(target=lambda: result.append(synth.speak(words(5))))
    speaker.start()
    while server.handshakes == 0:
        time.sleep(0.01)
    time.sleep(0.2)  # now in the 20 s Retry-After wait
    synth.stop()
    speaker.join(5)
    assert not speaker.is_alive(), "stop() did not end the retry wait"
    assert result[0].pcm == b""
    assert server.handshakes == 1 and server.conversations == []  # no second attempt, no word sent


@playback_test
def test_32_threads_speaking_at_once_each_get_their_own_audio(pulse: Any, serve: Any) -> None:
    """One Synthesizer, 32 threads in speak() at once: 32 streams on the sound card, each call returning
    exactly its own text's audio, and every stream closed afterwards."""
    server = serve(samples_per_word=1200)
    synth = synth_for(server)
    texts = [words(8, prefix=f"t{i}w") for i in range(32)]
    results: Dict[int, bytes] = {}
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = synth.speak(texts[i]).pcm
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for i, text in enumerate(texts):
        assert results[i] == server.expected_pcm(text), f"thread {i} got someone else's audio"
    assert pulse.sink_inputs() == []
    assert client_threads() == []


def test_a_device_slow_to_start_is_waited_for_but_one_that_stops_is_an_error(fake_pa: FakePortAudio) -> None:
    """No callback for 3 s after the start (a Bluetooth headset waking up) is not a stall; once audio
    flowed, no callback for the latency + 2 s is one, and feed() raises instead of waiting forever."""
    with Player(prebuffer=0, max_buffered=1.0) as player:
        stream = fake_pa.stream
        assert stream is not None
        outcome: List[Any] = []

        def produce() -> None:
            try:
                outcome.append(player.feed(b"\x01\x00" * RATE * 3))  # 3 s into a 1 s buffer: it must wait
            except basetts.AudioDeviceError as exc:
                outcome.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(3.0)  # the device has not called back once yet
        assert outcome == [], outcome
        for _ in range(int(0.5 * RATE / 480)):  # it wakes up and plays half a second...
            stream.pull(480)
        producer.join(10)  # ...then never calls back again
        assert not producer.is_alive(), "feed() waited forever on a device that stopped"
    assert len(outcome) == 1 and isinstance(outcome[0], basetts.AudioDeviceError), outcome
    assert "stopped playing" in str(outcome[0])
