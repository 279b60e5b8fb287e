"""The test suite's sound setup on a desktop: where a pulse server already answers (PipeWire's on GNOME,
which installing PulseAudio would remove), the playback tests load their null sink into that server,
play and record there, and unload it after, leaving the desktop's own sinks alone. A second PulseAudio
daemon stands in for the desktop's server."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import PulseAudio

ROOT = Path(__file__).resolve().parent.parent


class Desktop(PulseAudio):
    """A pulse server of someone else's: its own sink, none of ours."""

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--system=false", "--use-pid-file=no", "--exit-idle-time=-1",
             "--enable-memfd=no", "-L", "module-null-sink sink_name=desktop_speakers rate=48000",
             "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while self.pactl("info", check=False).returncode != 0:
            assert time.monotonic() < deadline and self._process.poll() is None, "the stand-in did not start"
            time.sleep(0.05)


@pytest.mark.skipif(shutil.which("pulseaudio") is None, reason="needs pulseaudio to stand in for a desktop's server")
def test_the_playback_tests_use_a_pulse_server_that_already_answers() -> None:
    root = tempfile.mkdtemp(prefix="basetts-desktop-")
    desktop = Desktop(root)
    try:
        desktop.start()
        env = {k: v for k, v in os.environ.items() if k != "PULSE_SINK"}
        env["PULSE_SERVER"] = desktop.server
        # The desktop's server tells of every sink and stream coming and going.
        events = subprocess.Popen(["pactl", "subscribe"], env=desktop.env, stdout=subprocess.PIPE, text=True)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/test_playback.py::test_speak_plays_the_servers_audio_in_order_without_gaps[unpaced]"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        finally:
            time.sleep(0.3)
            events.terminate()
            told = events.communicate(timeout=10)[0]
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
        # Our sink was loaded into it and removed, and the tests' streams played there.
        assert "'new' on sink" in told and "'remove' on sink" in told and "'new' on sink-input" in told, told
        sinks = desktop.pactl("list", "short", "sinks").stdout
        assert "desktop_speakers" in sinks and "basetts_null" not in sinks  # ours unloaded, theirs kept
    finally:
        desktop.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "two-workers"])
def test_playback_tests_that_could_not_run_are_said_loudly_at_the_end(tmp_path: Path, workers: list) -> None:
    # No pulse tools on PATH: the playback tests are skipped, and the run ends with a warning naming why,
    # also when pytest-xdist's workers did the skipping (make test runs two).
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("PULSE_SERVER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers,
         "tests/test_playback.py::test_speak_plays_the_servers_audio_in_order_without_gaps"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "WARNING: playback was NOT tested" in result.stdout, result.stdout + result.stderr
    assert "PulseAudio could not start: pulseaudio, pactl, parec not installed" in result.stdout, result.stdout
