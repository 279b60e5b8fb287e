"""The notebook runs top to bottom against the local server, and shows a player; the blocking API works
inside a running event loop, as a Jupyter cell runs inside the kernel's."""
from __future__ import annotations

import asyncio
import os
import runpy

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def test_notebook_runs_top_to_bottom():
    namespace = runpy.run_path(os.path.join(DOCS, "notebook.py"))
    audio = namespace["audio"]
    html = audio._repr_html_()
    assert html.startswith('<audio controls src="data:audio/wav;base64,')
    assert audio.duration > 0
    assert namespace["session"].audio.duration > 0


def in_a_running_loop(cell):
    """Run `cell()` (plain blocking code) the way Jupyter runs a cell: inside a running asyncio loop."""
    async def kernel():
        asyncio.get_running_loop()  # raises unless a loop is running
        return cell()

    return asyncio.run(kernel())


def test_synthesize_stream_and_session_work_inside_a_running_event_loop(basetts_server, basetts_synthesizer):
    text = "Called from a notebook cell."
    expected = basetts_server.expected_pcm(text)
    assert in_a_running_loop(lambda: basetts_synthesizer.synthesize(text)).pcm == expected
    assert in_a_running_loop(lambda: b"".join(basetts_synthesizer.stream(text))) == expected

    def session_cell():
        with basetts_synthesizer.session() as session:
            for token in ["Called fr", "om a note", "book cell."]:
                session.send(token)
        return session.audio

    assert in_a_running_loop(session_cell).pcm == expected


@pytest.mark.playback
def test_speak_works_inside_a_running_event_loop(pulse, basetts_server, basetts_synthesizer):
    text = "Played from a notebook cell."
    recording = pulse.record()
    audio = in_a_running_loop(lambda: basetts_synthesizer.speak(text))
    played = recording.stop()
    expected = basetts_server.expected_pcm(text)
    assert audio.pcm == expected
    assert expected in played  # every sample reached the sound card, in order


def test_the_api_reference_is_generated_from_the_current_docstrings():
    namespace = runpy.run_path(os.path.join(DOCS, "make_api.py"))
    with open(os.path.join(DOCS, "api.md"), encoding="utf-8") as committed:
        assert committed.read() == namespace["render"](), "docs/api.md is stale: run `make docs`"
