"""`trace=` / BASETTS_TRACE: one JSON line per event of a call, for a bug report; never the key."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

import basetts
from basetts.testing import Faults, LocalServer


def events(path: Any) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_a_trace_has_every_event_of_a_call_and_never_the_key(tmp_path: Any) -> None:
    path = tmp_path / "trace.jsonl"
    with LocalServer(ping_interval=0.05, speed=20) as server:
        synth = basetts.Synthesizer(url=server.url, api_key=server.api_key, trace=str(path))
        text = "One sentence here. And another one after it, a bit longer than ten words."
        synth.synthesize(text)
    lines = events(path)
    names = [line["event"] for line in lines]
    assert names[:3] == ["start", "connect", "open"]
    assert lines[1]["settings"] == {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}
    assert [line["text"] for line in lines if line["event"] == "sent"][1:] == text.split() + ["__END__"]
    assert "ping sent" in names and "pong sent" in names  # our pacing pings; the server's pings answered
    reads = [line for line in lines if line["event"] == "read"]
    assert sum(line["audio"] for line in reads) == len(server.expected_pcm(text))
    assert any(line["acknowledged"] for line in reads)
    closed = [line for line in lines if line["event"] == "closed"]
    assert closed == [{"t": closed[0]["t"], "conversation": lines[0]["conversation"], "event": "closed",
                       "close_code": 1000, "reason": "", "error": None}]
    assert {line["conversation"] for line in lines} == {lines[0]["conversation"]}  # one conversation
    assert names[-1] == "end"
    assert all(b >= a for a, b in zip([line["t"] for line in lines], [line["t"] for line in lines][1:]))
    assert server.api_key not in path.read_text()


def test_conversations_at_once_share_the_trace_each_line_saying_whose_it_is_in_the_order_they_happened(
        tmp_path: Any) -> None:
    """A text in parts (each begun while the part before is heard) and a batch: every line whole, each
    conversation's lines from its start to its end, and the next part's connection traced before the end of the
    part before, as it happened (not when that conversation's lines were flushed)."""
    path = tmp_path / "trace.jsonl"
    text = " ".join(f"Sentence number {i} is a short one." for i in range(20))
    with LocalServer(speed=20) as server:
        synth = basetts.Synthesizer(url=server.url, api_key=server.api_key, trace=str(path))
        synth.synthesize(text)
        parts = len(server.conversations)
        results = list(synth.synthesize_many([f"Text {i} is short." for i in range(12)], concurrency=12))
    assert parts > 2 and all(result.error is None for result in results)
    lines = events(path)
    numbers = list(dict.fromkeys(line["conversation"] for line in lines))
    assert len(numbers) == parts + 12
    for number in numbers:
        own = [line for line in lines if line["conversation"] == number]
        assert [own[0]["event"], own[-1]["event"]] == ["start", "end"] and own[-1]["error"] is None
        assert all(b["t"] >= a["t"] for a, b in zip(own, own[1:]))
    order = [(line["conversation"], line["event"]) for line in lines]
    for first, second in zip(numbers[:parts], numbers[1:parts]):
        assert order.index((second, "connect")) < order.index((first, "end"))


def test_a_failed_call_traces_its_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("BASETTS_TRACE", str(path))  # the environment turns it on too
    with LocalServer(faults=Faults(close_code=1011, close_reason="boom")) as server:
        with pytest.raises(basetts.ServerError):
            basetts.Synthesizer(url=server.url, api_key=server.api_key).synthesize("hello there")
    lines = events(path)
    assert [line for line in lines if line["event"] == "closed"][0]["close_code"] == 1011
    assert "boom" in lines[-1]["error"] and lines[-1]["kind"] == "ServerError"


def test_a_connect_failure_is_traced(tmp_path: Any) -> None:
    path = tmp_path / "refused.jsonl"
    with pytest.raises(basetts.ConnectError):
        basetts.Synthesizer(url="ws://127.0.0.1:9/v1/websocket", api_key="secret-key", retries=0,
                            trace=str(path)).synthesize("hello")
    lines = events(path)
    assert lines[-1]["event"] == "error" and lines[-1]["kind"] == "ConnectError"
    assert "secret-key" not in path.read_text()


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_trace_that_cannot_be_written_is_refused_when_the_synthesizer_is_made(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A trace path in a folder that does not exist, or a folder: said at once, naming the setting and the
    variable, not an OSError from the first call."""
    for path, why in ((tmp_path / "missing" / "trace.jsonl", "does not exist"), (tmp_path, "it is a folder")):
        options: Dict[str, Any] = {"url": "ws://127.0.0.1:1/v1/websocket", "api_key": "k"}
        if where == "environment":
            monkeypatch.setenv("BASETTS_TRACE", str(path))
        else:
            options["trace"] = str(path)
        with pytest.raises(basetts.ConfigurationError, match=f"trace=, or BASETTS_TRACE.*{why}"):
            basetts.Synthesizer(**options)
