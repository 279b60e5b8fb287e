"""The notebook runs top to bottom against the local server, and shows a player; the blocking API works
inside a running event loop, as a Jupyter cell runs inside the kernel's."""
from __future__ import annotations

import ast
import asyncio
import os
import runpy
from typing import List

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


def _locks_in_the_package() -> List[str]:
    """Every lock basetts creates (testing/ aside: the local server is not the SDK), as `Class.attribute` (or
    `module.name` for a module's own); a condition made on a lock already counted is that lock's."""
    package = os.path.join(os.path.dirname(__file__), "..", "basetts")
    found = []

    def is_lock(node: ast.AST) -> bool:
        if isinstance(node, ast.IfExp):
            return is_lock(node.body) or is_lock(node.orelse)
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "threading"
                and (node.func.attr in ("Lock", "RLock") or (node.func.attr == "Condition" and not node.args)))

    for folder, _, files in os.walk(package):
        if os.path.basename(folder) == "testing":
            continue
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for cls in [tree] + [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]:
                owner = cls.name if isinstance(cls, ast.ClassDef) else name[:-3]
                for node in ast.walk(cls):
                    if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                        continue
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                                 and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                        for where, value in pairs:
                            if not is_lock(value):
                                continue
                            if isinstance(where, ast.Attribute) and isinstance(cls, ast.ClassDef):
                                found.append(f"{owner}.{where.attr}")
                            elif isinstance(where, ast.Name) and not isinstance(cls, ast.ClassDef):
                                found.append(f"{owner}.{where.id}")
    return sorted(set(found))


def test_the_design_doc_says_what_every_lock_guards():
    with open(os.path.join(DOCS, "design.md"), encoding="utf-8") as design:
        text = design.read()
    table = text[text.index("## Locks"):]
    table = table[:table.index("\n## ", 1)]
    locks = _locks_in_the_package()
    assert "Conversation._lock" in locks and "Session._changed" in locks and "portaudio._portaudio_lock" in locks
    missing = [lock for lock in locks if f"`{lock}`" not in table]
    assert not missing, f"docs/design.md's Locks table does not say what these guard: {missing}"
