"""The trusses that answer JSON with a base64 WAV (kokoro, chatterbox, sesame, piper, xtts-v2, metavoice, and
json-audio for one without a preset): every call against the local server that imitates each (its request
fields, its answer's key, float samples, piper's 22.05 kHz), byte-exact where the format is lossless; the WAV
reader; their checks and errors. They share Orpheus over HTTP's requests and driver (test_orpheus_http.py)."""
from __future__ import annotations

import array
import base64
import json
import struct
import time
import wave
from pathlib import Path
from typing import Any

import pytest

import basetts
from basetts.pcm import resample, wav_header, wav_to_pcm
from basetts.protocols.json_audio import PRESETS, decode_answer
from basetts.testing import Faults
from basetts.testing.orpheus_http import PIPER_RATE, wav_of

from .helpers import client_threads, synth_for
from .test_cli import read_wav, run

TEXT = "Hello there, it's a test. The model answers once the audio is whole!"
NAMES = [preset.name for preset in PRESETS] + ["json-audio"]


def expected(server: Any, protocol: str, text: str) -> bytes:
    """What a client gets: the server's audio, through piper's rate and back (linear, not lossless)."""
    if protocol == "piper":
        pcm = server.expected_pcm(text.replace("'", "\u2019"))
        return resample(resample(pcm, 24000, PIPER_RATE), PIPER_RATE, 24000)
    return server.expected_pcm(text)


@pytest.mark.parametrize("protocol", NAMES)
def test_every_call_speaks_each_model(serve: Any, tmp_path: Path, protocol: str) -> None:
    server = serve(protocol=protocol)
    synth = synth_for(server, protocol=protocol)
    synth.connect()  # the first call's connection, opened ahead: the request goes on it
    deadline = time.monotonic() + 5
    while server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 1 and not server.conversations
    assert synth.synthesize(TEXT).pcm == expected(server, protocol, TEXT)
    assert server.connections == 1 and server.last().connection == 1
    text_sent = TEXT.replace("'", "\u2019") if protocol == "piper" else TEXT  # piper's shell quoting
    assert server.last().messages == [text_sent] and server.last().settings == {}
    assert b"".join(synth.stream(TEXT)) == expected(server, protocol, TEXT)
    synth.save(TEXT, tmp_path / "out.wav")
    assert read_wav(tmp_path / "out.wav") == expected(server, protocol, TEXT)
    with synth.session() as session:
        for token in ("The first", " sentence is here. And", " the second"):
            session.send(token)
    assert session.audio.pcm == b"".join(expected(server, protocol, t) for t in ("The first sentence is here.",
                                                                                 "And the second"))
    results = list(synth.synthesize_many([TEXT, "Another one."], concurrency=2))
    assert [r.audio.pcm if r.audio else r.error for r in results] == [expected(server, protocol, t)
                                                                       for t in (TEXT, "Another one.")]
    assert client_threads() == []


@pytest.mark.playback
def test_speak_plays_each_answer_once_it_is_there(pulse: Any, serve: Any) -> None:
    from .test_playback import assert_played_exactly

    # each answer comes once its audio is made, at 3x real time (words of 25 ms: 1.6 s in all)
    server = serve(protocol="kokoro", speed=3.0, samples_per_word=600)
    recording = pulse.record()
    audio = synth_for(server, protocol="kokoro").speak(TEXT + " A second request follows it. " * 8)
    assert_played_exactly(recording.stop(), server.expected_pcm(TEXT + " A second request follows it. " * 8))
    assert len(server.conversations) == 2 and audio.stats.underruns == 0
    assert pulse.sink_inputs() == [] and client_threads() == []


def test_each_models_own_fields_and_a_long_text_in_requests_on_one_connection(serve: Any) -> None:
    for protocol, options, settings in (("kokoro", {"voice": "af_bella"}, {"voice": "af_bella"}),
                                        ("sesame", {"voice": "1"}, {"speaker": 1}),
                                        ("xtts-v2", {"voice": "Ana Florence", "language": "de"},
                                         {"speaker_voice": "Ana Florence", "language": "de"}),
                                        ("json-audio", {"request_fields": {"speed": 1.2}}, {"speed": 1.2})):
        server = serve(protocol=protocol)
        synth_for(server, protocol=protocol, **options).synthesize(TEXT)
        assert server.last().settings == settings
    # json-audio described as another model: chatterbox's answer key, metavoice's text field
    chatterbox = serve(protocol="chatterbox")
    assert synth_for(chatterbox, protocol="json-audio", response_key="audio").synthesize(TEXT).pcm == \
        chatterbox.expected_pcm(TEXT)
    metavoice = serve(protocol="metavoice")
    with pytest.raises(basetts.ServerError, match="no base64 audio at 'output' \\(str\\)"):
        synth_for(metavoice, protocol="json-audio", text_field="prompt").synthesize(TEXT)
    assert metavoice.last().messages == [TEXT]  # it read the text where it was put
    server = serve(protocol="kokoro")
    long = " ".join(f"Sentence {i} says a few words, then ends." for i in range(30))
    assert synth_for(server, protocol="kokoro").synthesize(long).pcm == server.expected_pcm(long)
    records = server.conversations[-5:]
    assert len(records) == 5 and len({r.connection for r in records}) == 1  # kept alive, one request at a time
    assert all(len(r.messages[0]) <= 280 for r in records)


def test_a_wav_of_any_sample_format_is_read_as_16_bit_mono() -> None:
    pcm = array.array("h", [0, 1, -1, 32767, -32768, 12345]).tobytes()
    assert wav_to_pcm(wav_of(pcm, "kokoro")) == (pcm, 24000)  # float samples, exactly
    assert wav_to_pcm(wav_header(len(pcm)) + pcm) == (pcm, 24000)
    stereo = array.array("h", [100, 300, -100, -300]).tobytes()
    assert wav_to_pcm(wav_header(len(stereo), 22050, channels=2) + stereo) == (
        array.array("h", [200, -200]).tobytes(), 22050)
    doubles = array.array("d", [0.5, -2.0, float("nan")]).tobytes()
    header = (b"RIFF" + struct.pack("<I", 4 + 8 + 40 + 8 + len(doubles)) + b"WAVE" + b"fmt " + struct.pack("<I", 40)
              + struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 16000 * 8, 8, 64, 22, 64, 4)
              + struct.pack("<H", 3) + bytes(14) + b"data" + struct.pack("<I", len(doubles)))
    assert wav_to_pcm(header + doubles) == (array.array("h", [16384, -32768, 0]).tobytes(), 16000)
    for bad in (b"", b"RIFF\0\0\0\0WAVE", b"OggS" + bytes(40), wav_header(4, sample_width=3)[:20]):
        with pytest.raises(ValueError):
            wav_to_pcm(bad)
    assert decode_answer(json.dumps({"output": base64.b64encode(wav_of(pcm, "piper")).decode()}).encode(),
                         "output") == resample(resample(pcm, 24000, PIPER_RATE), PIPER_RATE, 24000)
    for body, key, message in ((b"<html>", "output", "not JSON"), (b'{"audio": "x"}', "output", "keys: audio"),
                               (b'{"output": "!!"}', "output", "not valid base64"), (b"[1]", None, "list")):
        with pytest.raises(ValueError, match=message):
            decode_answer(body, key)


def test_settings_a_model_cannot_take_are_refused_before_anything_is_sent(serve: Any) -> None:
    server = serve(protocol="piper")
    with pytest.raises(basetts.ConfigurationError, match="piper-tts.*reads no voice"):
        synth_for(server, protocol="piper", voice="amy")
    with pytest.raises(basetts.ConfigurationError, match="speaker number"):
        synth_for(server, protocol="sesame", voice="tara")
    with pytest.raises(basetts.ConfigurationError, match="protocol='json-audio' only"):
        synth_for(server, protocol="kokoro", response_key="audio")
    with pytest.raises(basetts.ConfigurationError, match="request_fields must be JSON"):
        synth_for(server, protocol="json-audio", request_fields={"x": object()})
    with pytest.raises(basetts.ConfigurationError, match="language must be one of XTTS's"):
        synth_for(server, protocol="xtts-v2", language="English")
    with pytest.warns(basetts.BasettsWarning, match="'tara' is not one of kokoro's voices af, af_bella"):
        tara = synth_for(server, protocol="kokoro", voice="tara")  # sent all the same
    assert repr(tara).endswith("/predict', protocol='kokoro', voice='tara')")  # a predict URL alone says orpheus-http
    assert server.handshakes == 0
    kokoro = serve(protocol="kokoro")  # its model looks for voices/tara.pt: predict() raises, truss's 500
    with pytest.raises(basetts.ServerError, match="HTTP 500"):
        synth_for(kokoro, protocol="kokoro", voice="tara", retries=0).synthesize(TEXT)


def test_its_errors_are_ours(serve: Any) -> None:
    failing = serve(protocol="kokoro", faults=Faults(predict_error=True))
    with pytest.raises(basetts.ServerError) as refused:
        synth_for(failing, protocol="kokoro", retries=0).synthesize(TEXT)
    assert refused.value.status == 500
    other = serve(protocol="chatterbox")  # answers at "audio": read as kokoro's ("base64"), it is not kokoro
    with pytest.raises(basetts.ServerError, match="not a kokoro deployment's.*keys: audio"):
        synth_for(other, protocol="kokoro").synthesize(TEXT)
    streaming = serve(protocol="xtts-streaming")  # reads "text" too, but streams PCM
    with pytest.raises(basetts.StreamInterrupted, match="octet-stream, not JSON: is it a kokoro deployment"):
        synth_for(streaming, protocol="kokoro").synthesize(TEXT)
    assert client_threads() == []


def test_the_cli_serves_and_says_with_a_preset(tmp_path: Path, serve: Any) -> None:
    server = serve(protocol="metavoice")
    result = run("say", "Hi from the shell.", "-o", str(tmp_path / "o.wav"), "--url", server.url,
                 "--protocol", "metavoice", env={"BASETEN_API_KEY": server.api_key})
    assert result.returncode == 0, result.stderr
    with wave.open(str(tmp_path / "o.wav")) as file:
        assert file.readframes(file.getnframes()) == server.expected_pcm("Hi from the shell.")
    assert server.last().messages == ["Hi from the shell."]
