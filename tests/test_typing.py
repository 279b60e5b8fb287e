"""Per-call settings are typed: mypy completes and checks them (a misspelt setting is an error before
anything runs), and the examples type-check as users' code."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import basetts
from basetts.settings import CallSettings, Settings

ROOT = Path(__file__).resolve().parent.parent


def mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    source = tmp_path / "user_code.py"
    source.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_mypy_catches_a_misspelt_or_mistyped_setting_and_passes_the_right_ones(tmp_path: Path) -> None:
    result = mypy(tmp_path, """
        from basetts import Audio, Playback, Synthesizer

        synth = Synthesizer(url="ws://127.0.0.1:1/x", api_key="k", voice="leo", read_timeout=5.0)
        audio: Audio = synth.synthesize("hi", voice="mia", buffer_size=3, on_audio=print)
        playback: Playback = synth.speak("hi", wait=False, temperature=0.5)
        heard: Audio = synth.speak("hi")
        synth.speak("hi", voise="leo")
        synth.synthesize("hi", max_tokens="many")
    """)
    errors = [line.split(":", 3)[1:] for line in result.stdout.splitlines() if ": error:" in line]
    assert {int(line) for line, _, _ in errors} == {8, 9}, result.stdout  # the right calls pass
    assert any('"voise"' in message and 'did you mean "voice"' in message for line, _, message in errors
               if line == "8"), result.stdout
    assert any("max_tokens" in message for line, _, message in errors if line == "9"), result.stdout


def test_the_call_settings_are_exactly_the_settings_a_call_can_change() -> None:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(Settings)} - {"url", "api_key"}
    assert set(CallSettings.__annotations__) == fields
    with pytest.raises(TypeError, match="voise"):
        basetts.Synthesizer(url="ws://127.0.0.1:1/x", api_key="k").synthesize("hi", voise="leo")  # type: ignore


def test_the_examples_type_check() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "examples"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout
