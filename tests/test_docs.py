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


def test_the_api_reference_is_generated_from_the_current_docstrings():
    namespace = runpy.run_path(os.path.join(DOCS, "make_api.py"))
    with open(os.path.join(DOCS, "api.md"), encoding="utf-8") as committed:
        assert committed.read() == namespace["render"](), "docs/api.md is stale: run `make docs`"
