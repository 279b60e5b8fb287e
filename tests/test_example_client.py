"""The official example client (aiohttp + PyAudio) gets its audio from our LocalServer with only WS_URL
changed, and plays it into the test sound card: the local server speaks the protocol as Baseten does."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from basetts.testing import LocalServer

# The official client is read from the team's checkout at run time: this repository holds only our code.
OFFICIAL = Path(__file__).resolve().parent.parent.parent / "shared" / "seed" / "example_client.py"
SAMPLE = ("Nothing beside remains. Round the decay of that colossal wreck, "
          "boundless and bare, The lone and level sands stretch far away.")


def official_source() -> str:
    if not OFFICIAL.exists():
        pytest.skip(f"the official example client is read from {OFFICIAL}, which is not here: check out the "
                    "team's shared/ folder beside this repository (CI has it) to run this test")
    return OFFICIAL.read_text(encoding="utf-8")


@pytest.mark.playback
def test_the_official_example_client_plays_the_local_servers_audio(pulse: Any, tmp_path: Path) -> None:
    source = official_source()
    changed, count = re.subn(r"(?m)^WS_URL = .*$", "WS_URL = {url!r}", source)
    assert count == 1, "the example no longer has one WS_URL line"
    with LocalServer() as server:
        script = tmp_path / "example_client.py"
        script.write_text(changed.replace("{url!r}", repr(server.url)), encoding="utf-8")
        env = dict(pulse.env, **{"BASETEN-API-KEY": server.api_key})
        recording = pulse.record()
        result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=60)
        played = recording.stop()
        record = server.last()
    assert result.returncode == 0, result.stderr
    assert "Connection error" not in result.stdout, result.stdout
    assert "done" in result.stdout  # (aiohttp ends `async for` at the close without a CLOSE message)
    assert record.settings == {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}
    assert record.words == SAMPLE.split() and record.messages[-1] == "__END__" and record.close_code == 1000
    expected = server.expected_pcm(SAMPLE)
    assert record.bytes_sent == len(expected)
    skip = 800  # the first tone fades in from silence: find the audio by a slice past the fade
    start = played.find(expected[skip:skip + 2400]) - skip
    assert start >= 0 and start % 2 == 0, "the sink did not play the server's audio"
    # All of it, sample for sample, but the last 50 ms: the example closes its blocking PyAudio stream
    # right after the last write, and through ALSA's pulse plugin that loses a few ms of the tail
    # (basetts' speak() does not: test_playback.py checks its ending sample for sample).
    tail = 2 * 1200
    assert played[start:start + len(expected) - tail] == expected[:-tail]
