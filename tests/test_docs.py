"""The notebook runs top to bottom against the local server, and shows a player."""
from __future__ import annotations

import os
import runpy

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def test_notebook_runs_top_to_bottom():
    namespace = runpy.run_path(os.path.join(DOCS, "notebook.py"))
    audio = namespace["audio"]
    html = audio._repr_html_()
    assert html.startswith('<audio controls src="data:audio/wav;base64,')
    assert audio.duration > 0
    assert namespace["session"].audio.duration > 0
