"""XTTS v2 streaming (protocol="xtts-streaming"): every call against the local server that imitates the
xtts-streaming truss ({"text", "language"} in, raw PCM out as application/octet-stream), byte-exact; its checks
and errors. It shares Orpheus over HTTP's requests and driver, so what test_orpheus_http.py proves of those
(keep-alive, chunking, timeouts) is not repeated here."""
from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import pytest

import basetts
from basetts.protocols.orpheus_http import MAX_PROMPT
from basetts.testing import Faults

from .helpers import client_threads, synth_for

TEXT = "Hello there. XTTS streams raw audio back while it speaks, one chunk after another!"


def xtts_server(serve: Any, **options: Any) -> Any:
    return serve(protocol="xtts-streaming", **options)


def xtts(server: Any, **options: Any) -> basetts.Synthesizer:
    return synth_for(server, protocol="xtts-streaming", **options)


def test_every_call_speaks_xtts(serve: Any, tmp_path: Path) -> None:
    server = xtts_server(serve)
    synth = xtts(server, language="de")
    assert synth.settings.url == server.url and server.url.endswith("/predict")
    synth.connect()  # the first call's connection, opened ahead: the request goes on it
    deadline = time.monotonic() + 5
    while server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 1 and not server.conversations
    audio = synth.synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT)
    record = server.last()
    assert server.connections == 1 and record.connection == 1
    assert record.messages == [TEXT] and record.settings == {"language": "de"}  # the text field is "text"
    assert record.status == 200 and record.protocol == "xtts-streaming"
    assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)
    path = tmp_path / "out.wav"
    synth.save(TEXT, path)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 24000 and wav.readframes(wav.getnframes()) == server.expected_pcm(TEXT)
    texts = [f"Text number {i}. It has two sentences." for i in range(6)]
    assert [r.audio.pcm if r.audio else r.error for r in synth.synthesize_many(texts, concurrency=3)] == [
        server.expected_pcm(t) for t in texts]
    with synth.session() as session:
        session.send("The first sentence is here. And ")
        session.send("the second one follows")
    assert session.audio.pcm == server.expected_pcm("The first sentence is here. And the second one follows")
    assert [r.messages for r in server.conversations[-2:]] == [["The first sentence is here."],
                                                               ["And the second one follows"]]
    long = " ".join(f"Sentence {i} says a few words, then ends." for i in range(40))
    assert synth.synthesize(long).pcm == server.expected_pcm(long)
    assert all(len(r.messages[0]) <= MAX_PROMPT for r in server.conversations[-8:])
    assert client_threads() == []


@pytest.mark.playback
def test_speak_plays_xtts(pulse: Any, serve: Any) -> None:
    from .test_playback import assert_played_exactly

    server = xtts_server(serve, speed=3.0)
    recording = pulse.record()
    audio = xtts(server).speak(TEXT)
    assert_played_exactly(recording.stop(), server.expected_pcm(TEXT))
    assert audio.stats.underruns == 0 and pulse.sink_inputs() == [] and client_threads() == []


def test_settings_xtts_cannot_take_are_refused_before_anything_is_sent(serve: Any) -> None:
    server = xtts_server(serve)
    with pytest.raises(basetts.ConfigurationError, match="one built-in speaker"):
        xtts(server, voice="tara")
    with pytest.raises(basetts.ConfigurationError, match="language must be one of XTTS's"):
        xtts(server).synthesize(TEXT, language="English")  # Qwen3's spelling, not XTTS's code
    with pytest.raises(basetts.ConfigurationError, match="protocol='orpheus' only"):
        xtts(server, buffer_size=5)
    with pytest.raises(basetts.ConfigurationError, match="protocol='qwen3' or 'xtts-streaming' or 'xtts-v2' only"):
        synth_for(server, protocol="orpheus-http", language="en")
    assert server.handshakes == 0


def test_its_errors_are_ours_with_the_audio_so_far(serve: Any) -> None:
    failing = xtts_server(serve, faults=Faults(predict_error=True))
    with pytest.raises(basetts.ServerError) as refused:
        xtts(failing, retries=0).synthesize(TEXT)
    assert refused.value.status == 500
    cut = xtts_server(serve, faults=Faults(drop_after_bytes=12288))
    with pytest.raises(basetts.StreamInterrupted) as info:
        xtts(cut).synthesize(TEXT)
    assert info.value.partial.pcm == bytes(cut.last().audio) and len(info.value.partial.pcm) == 12288
    assert client_threads() == []
