"""The examples, run as a user runs them, checked against the local server's exact audio."""
from __future__ import annotations

import importlib.util
import os
import runpy
import socket
import subprocess
import sys

import pytest
from flask import Flask  # a dev dependency: a missing Flask is a failure, not a skip

import basetts
from basetts.audio import wav_header
from basetts.testing import Faults, LocalServer, tone_pcm

from .test_cli import needs_no_oss_device, no_sound_card_env, read_wav

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
# The audio the examples' own `--local` server (tone engine, default settings) gives for a text.
expected_pcm = LocalServer().expected_pcm


def run_example(script: str, *args: str, cwd, env: dict = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BASETEN", "BASETTS"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=environment)


def run_playing(pulse, script: str, cwd) -> "tuple[subprocess.CompletedProcess[str], bytes]":
    """Run an example with `--local` against the test PulseAudio; its result and what the sink played."""
    recording = pulse.record()
    result = run_example(script, "--local", cwd=cwd, env=pulse.env)
    played = recording.stop()
    assert result.returncode == 0, result.stderr
    return result, played


# --- examples/say.py --------------------------------------------------------------------------------------
SPOKEN = "Hello! This sentence is spoken as it is generated."
SAVED = "And this one goes to a file."


@pytest.mark.playback
def test_say_plays_one_sentence_and_saves_the_other(pulse, tmp_path):
    result, played = run_playing(pulse, "say.py", tmp_path)
    assert expected_pcm(SPOKEN) in played  # every sample, in order
    assert read_wav(tmp_path / "example.wav") == expected_pcm(SAVED)
    assert result.stdout.strip() == f"saved {len(expected_pcm(SAVED)) / 48000:.1f} s to example.wav"


@needs_no_oss_device
def test_say_without_a_sound_card_says_so_and_still_saves(tmp_path):
    result = run_example("say.py", "--local", cwd=tmp_path, env=no_sound_card_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("not playing: No audio output device found")
    assert read_wav(tmp_path / "example.wav") == expected_pcm(SAVED)


# --- examples/llm_session.py ------------------------------------------------------------------------------
def llm_answer() -> str:
    """The text the example's fake language model streams."""
    return "".join(runpy.run_path(os.path.join(EXAMPLES, "llm_session.py"))["fake_llm"]())


def test_llm_session_without_playing_saves_the_answer(tmp_path):
    result = run_example("llm_session.py", "--local", "--no-play", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = expected_pcm(llm_answer())
    assert read_wav(tmp_path / "answer.wav") == expected
    assert result.stdout.strip() == f"saved {len(expected) / 48000:.1f} s to answer.wav"


@pytest.mark.playback
def test_llm_session_plays_the_answer(pulse, tmp_path):
    result, played = run_playing(pulse, "llm_session.py", tmp_path)
    # The server speaks each segment as soon as the words trickling in complete it, so the sound card
    # may wait (silence) between segments: every word's audio is played whole, in order.
    position = 0
    for word in llm_answer().split():
        found = played.find(tone_pcm(word), position)
        assert found >= 0, f"{word!r} was not played whole, or not in order"
        position = found + len(tone_pcm(word))
    assert result.stdout.strip() == f"spoke {len(expected_pcm(llm_answer())) / 48000:.1f} s of audio"


@needs_no_oss_device
def test_llm_session_without_a_sound_card_says_what_to_do(tmp_path):
    result = run_example("llm_session.py", "--local", cwd=tmp_path, env=no_sound_card_env(tmp_path))
    assert result.returncode == 1
    assert "not playing: No audio output device found" in result.stderr and "--no-play" in result.stderr
    assert "Traceback" not in result.stderr


# --- examples/flask_stream.py -----------------------------------------------------------------------------
def flask_app(monkeypatch, server: LocalServer) -> Flask:
    """The example's `app`, imported as `flask --app` would, configured through the environment."""
    monkeypatch.setenv("BASETTS_URL", server.url)
    monkeypatch.setenv("BASETEN_API_KEY", server.api_key)
    return load_flask_example(monkeypatch)


def load_flask_example(monkeypatch=None) -> Flask:
    if monkeypatch is not None:
        monkeypatch.delenv("BASETEN_MODEL_ID", raising=False)
    spec = importlib.util.spec_from_file_location("flask_stream", os.path.join(EXAMPLES, "flask_stream.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["flask_stream"] = module
    spec.loader.exec_module(module)
    return module.app


def test_flask_example_streams_mp3_that_decodes_to_the_servers_audio(monkeypatch, basetts_server):
    import io

    import numpy
    import soundfile

    text = "Streamed to the browser while it is generated."
    response = flask_app(monkeypatch, basetts_server).test_client().get("/speak", query_string={"text": text})
    assert response.status_code == 200 and response.mimetype == "audio/mpeg" and response.is_streamed
    decoded, rate = soundfile.read(io.BytesIO(response.get_data()), dtype="int16")
    expected = numpy.frombuffer(basetts_server.expected_pcm(text), dtype="<i2").astype(float)
    assert rate == 24000 and len(decoded) >= len(expected) * 0.9
    best = max(numpy.corrcoef(expected[:12000], decoded[shift:shift + 12000].astype(float))[0, 1]
               for shift in range(0, 2400, 4))
    assert best > 0.9, best


def test_flask_example_without_the_formats_extra_streams_the_exact_audio_as_wav(monkeypatch, basetts_server):
    text = "Streamed to the browser while it is generated."
    app = flask_app(monkeypatch, basetts_server)
    monkeypatch.setattr(sys.modules["flask_stream"], "MP3", False)  # as where soundfile is not installed
    response = app.test_client().get("/speak", query_string={"text": text})
    assert response.status_code == 200
    assert response.mimetype == "audio/wav"
    assert response.is_streamed
    body = response.get_data()
    assert body[:44] == wav_header()
    assert body[44:] == basetts_server.expected_pcm(text)


def test_flask_example_page_points_its_audio_element_at_the_endpoint(monkeypatch, basetts_server):
    page = flask_app(monkeypatch, basetts_server).test_client().get("/", query_string={"text": "a <b> & c"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and '<audio id="speech"' in html
    assert "/speak?text=a+%3Cb%3E+%26+c" in html and 'value="a &lt;b&gt; &amp; c"' in html  # escaped


@pytest.mark.parametrize("query", [{}, {"text": "  "}], ids=["missing", "blank"])
def test_flask_example_refuses_a_request_without_text(monkeypatch, basetts_server, query):
    response = flask_app(monkeypatch, basetts_server).test_client().get("/speak", query_string=query)
    assert response.status_code == 400
    assert basetts_server.conversations == []


def test_flask_example_stops_the_synthesis_when_the_client_goes_away(monkeypatch):
    text = " ".join(f"word{i}" for i in range(40))  # 4 s of audio, sent in real time
    with LocalServer(speed=1.0) as server:
        response = flask_app(monkeypatch, server).test_client().get("/speak", query_string={"text": text})
        body = iter(response.response)
        assert len(next(body)) > 0 and len(next(body)) > 0  # audio is flowing
        response.close()  # what the WSGI server does when the browser goes away
        record = server.last(timeout=10)
    assert record.client_disconnected
    assert record.bytes_sent < len(server.expected_pcm(text))


@pytest.mark.parametrize("faults, status, says", [
    (Faults(handshake_status=401), 502, "API key"),
    (Faults(handshake_status=403), 502, "API key"),
    (Faults(handshake_status=404), 502, "BASETEN_MODEL_ID"),
    (Faults(handshake_status=503, retry_after=60), 503, "overloaded"),
    (Faults(handshake_status=429, retry_after=45), 503, "overloaded"),
    (Faults(text_frame="model crashed"), 502, "failed"),
], ids=["401", "403", "404", "503", "429", "error-message"])
def test_flask_example_answers_a_backend_failure_with_an_honest_status(monkeypatch, faults, status, says):
    with LocalServer(faults=faults) as server:
        response = flask_app(monkeypatch, server).test_client().get("/speak", query_string={"text": "hello there"})
    assert response.status_code == status, response.get_data(as_text=True)
    assert says in response.get_data(as_text=True) and response.mimetype == "text/plain"
    if faults.retry_after is not None:
        assert response.headers["Retry-After"] == str(int(faults.retry_after))
    else:
        assert "Retry-After" not in response.headers


def test_flask_example_answers_504_when_the_backend_never_speaks(monkeypatch):
    with LocalServer(faults=Faults(silent=True)) as server:
        app = flask_app(monkeypatch, server)
        module = sys.modules["flask_stream"]
        module.synth = basetts.Synthesizer(url=server.url, api_key=server.api_key, first_audio_timeout=0.5)
        response = app.test_client().get("/speak", query_string={"text": "hello there"})
    assert response.status_code == 504 and "in time" in response.get_data(as_text=True)


def test_flask_example_answers_502_when_nothing_listens(monkeypatch):
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    monkeypatch.setenv("BASETTS_URL", f"ws://127.0.0.1:{port}/v1/websocket")
    monkeypatch.setenv("BASETEN_API_KEY", "k")
    app = load_flask_example()
    sys.modules["flask_stream"].synth = basetts.Synthesizer(retries=0)
    response = app.test_client().get("/speak", query_string={"text": "hello there"})
    assert response.status_code == 502 and "cannot be reached" in response.get_data(as_text=True)


def test_flask_example_cuts_the_response_short_when_the_stream_breaks_after_the_first_audio(monkeypatch):
    with LocalServer(faults=Faults(drop_after_bytes=4096 * 3)) as server:
        response = flask_app(monkeypatch, server).test_client().get(
            "/speak", query_string={"text": " ".join(f"w{i}" for i in range(20))})
        assert response.status_code == 200
        with pytest.raises(basetts.StreamInterrupted):
            response.get_data()  # the WSGI server sees the error and drops the connection: no complete file


# --- examples/batch_processes.py and examples/batch_dask.py ---------------------------------------------------
@pytest.mark.parametrize("script", ["batch_processes.py", "batch_dask.py"])
def test_a_batch_over_processes_or_dask_matches_a_single_synthesize_of_each_text(tmp_path, basetts_server, script):
    texts = [f"text number {i} for the workers" for i in range(6)]
    env = {**os.environ, "BASETTS_URL": basetts_server.url, "BASETEN_API_KEY": basetts_server.api_key}
    env.pop("BASETEN_MODEL_ID", None)
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), str(tmp_path / "out"), *texts],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    synth = basetts.Synthesizer(url=basetts_server.url, api_key=basetts_server.api_key)
    for i, text in enumerate(texts):
        assert read_wav(tmp_path / "out" / f"{i:06d}.wav") == synth.synthesize(text).pcm, text
