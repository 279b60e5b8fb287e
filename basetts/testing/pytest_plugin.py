"""pytest fixtures for your own tests: a real local TTS server and a Synthesizer pointed at it.

Installed as a pytest plugin with basetts; use the fixtures by name:

    def test_greeting(basetts_synthesizer):
        assert basetts_synthesizer.synthesize("Hello").duration > 0
"""
from __future__ import annotations

from typing import Iterator

import pytest

from ..synthesizer import Synthesizer
from .server import LocalServer


@pytest.fixture
def basetts_server() -> Iterator[LocalServer]:
    """A `LocalServer` on 127.0.0.1 (tone engine, as fast as it can), stopped after the test."""
    with LocalServer() as server:
        yield server


@pytest.fixture
def basetts_synthesizer(basetts_server: LocalServer) -> Synthesizer:
    """A `Synthesizer` that talks to `basetts_server`."""
    return Synthesizer(url=basetts_server.url, api_key=basetts_server.api_key)
