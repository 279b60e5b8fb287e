"""pytest fixtures for your own tests: a real local TTS server and a Synthesizer pointed at it.

Installed as a pytest plugin with basetts; use the fixtures by name:

    def test_greeting(basetts_synthesizer):
        assert basetts_synthesizer.synthesize("Hello").duration > 0

`basetts_qwen3_server` and `basetts_qwen3_synthesizer` are the same for Qwen3-TTS (word timestamps on,
one voice, "test", already added); `basetts_http_server` and `basetts_http_synthesizer` for Orpheus over HTTP
(a …/predict deployment). `basetts_make_server(**options)` starts a `LocalServer` of any protocol and options
(`protocol="kokoro"`, `speed=1.0`, `faults=...`); the servers it started stop after the test.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from ..synthesizer import Synthesizer
from .server import LocalServer


@pytest.fixture
def basetts_make_server() -> Iterator[Callable[..., LocalServer]]:
    """A function that starts a `LocalServer` with the options given (`LocalServer(**options)`); every server it
    started is stopped after the test."""
    servers: List[LocalServer] = []

    def make(**options: Any) -> LocalServer:
        server = LocalServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def basetts_server() -> Iterator[LocalServer]:
    """A `LocalServer` on 127.0.0.1 (tone engine, as fast as it can), stopped after the test."""
    with LocalServer() as server:
        yield server


@pytest.fixture
def basetts_synthesizer(basetts_server: LocalServer) -> Iterator[Synthesizer]:
    """A `Synthesizer` that talks to `basetts_server`, closed after the test."""
    with Synthesizer(url=basetts_server.url, api_key=basetts_server.api_key) as synth:
        yield synth


@pytest.fixture
def basetts_qwen3_server() -> Iterator[LocalServer]:
    """A Qwen3-TTS `LocalServer` (the Base model, with its aligner) with one voice, "test", added."""
    with LocalServer(protocol="qwen3", voices=("test",)) as server:
        yield server


@pytest.fixture
def basetts_qwen3_synthesizer(basetts_qwen3_server: LocalServer) -> Iterator[Synthesizer]:
    """A `Synthesizer` that speaks Qwen3-TTS to `basetts_qwen3_server`, with voice "test" and word timings."""
    with Synthesizer(url=basetts_qwen3_server.url, api_key=basetts_qwen3_server.api_key, protocol="qwen3",
                     voice="test", word_timestamps=True) as synth:
        yield synth


@pytest.fixture
def basetts_http_server() -> Iterator[LocalServer]:
    """An Orpheus-over-HTTP `LocalServer` (POST …/predict, streamed PCM; tone engine, as fast as it can)."""
    with LocalServer(protocol="orpheus-http") as server:
        yield server


@pytest.fixture
def basetts_http_synthesizer(basetts_http_server: LocalServer) -> Iterator[Synthesizer]:
    """A `Synthesizer` that posts to `basetts_http_server` (its …/predict URL says protocol="orpheus-http"),
    closed after the test: its kept-alive connection is not left open."""
    with Synthesizer(url=basetts_http_server.url, api_key=basetts_http_server.api_key) as synth:
        yield synth
