"""Orpheus over HTTP (protocol="orpheus-http", a …/predict URL): every call against the local server that imitates
the orpheus-best-performance truss, byte-exact; its errors; keep-alive within a call; text arriving over time."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import wave
from pathlib import Path
from typing import Any, List

import pytest

import basetts
from basetts.protocols.orpheus_http import MAX_PROMPT
from basetts.testing import Faults
from basetts.testing.orpheus_http import INTERNAL_ERROR, Stalled, chunk_text

from .helpers import client_threads, ctrl_c, open_fds, synth_for

TEXT = "Hello there. The model streams raw audio over HTTP, one chunk after another!"


def http_server(serve: Any, **options: Any) -> Any:
    return serve(protocol="orpheus-http", **options)


def test_a_predict_url_means_orpheus_over_http(serve: Any) -> None:
    server = http_server(serve)
    synth = synth_for(server)
    assert synth.settings.protocol == "orpheus-http" and synth.settings.url == server.url
    audio = synth.synthesize(TEXT, temperature=0.5, voice="Leo")
    assert audio.pcm == server.expected_pcm(TEXT)
    record = server.last()
    assert record.path == "/environments/production/predict" and record.status == 200
    assert record.authorization == f"Api-Key {server.api_key}"
    # The prompt whole, the voice, and only the settings given (the server's own defaults for the rest).
    assert record.messages == [TEXT] and record.settings == {"voice": "leo", "temperature": 0.5}
    assert record.segments == [c.split() for c in chunk_text(TEXT)]
    assert audio.stats.bytes_received == len(audio.pcm) and audio.stats.first_byte_time is not None


def test_stream_save_and_synthesize_many(serve: Any, tmp_path: Path) -> None:
    server = http_server(serve)
    synth = synth_for(server)
    chunks = list(synth.stream(TEXT))
    assert b"".join(chunks) == server.expected_pcm(TEXT) and all(len(c) % 2 == 0 for c in chunks)
    path = tmp_path / "out.wav"
    synth.save(TEXT, path)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 24000 and wav.readframes(wav.getnframes()) == server.expected_pcm(TEXT)
    texts = [f"Text number {i}. It has two sentences." for i in range(12)]
    results = list(synth.synthesize_many(texts, concurrency=4))
    assert [r.audio.pcm if r.audio else r.error for r in results] == [server.expected_pcm(t) for t in texts]
    assert client_threads() == []


@pytest.mark.parametrize("sizes", [[1, 2, 1, 4091], [4093, 3, 1, 7], [4096]], ids=["single-bytes", "odd", "windows"])
def test_chunks_cut_anywhere_arrive_sample_aligned(serve: Any, sizes: List[int]) -> None:
    server = http_server(serve, faults=Faults(frame_sizes=sizes))
    chunks = list(synth_for(server).stream(TEXT))
    assert b"".join(chunks) == server.expected_pcm(TEXT) and all(len(c) % 2 == 0 for c in chunks)


def test_a_long_text_goes_in_requests_the_server_takes_whole_on_one_kept_alive_connection(serve: Any) -> None:
    server = http_server(serve)
    text = " ".join(f"Sentence {i} says a few words, then ends." for i in range(300))
    audio = synth_for(server).synthesize(text)
    assert audio.pcm == server.expected_pcm(text)
    prompts = [record.messages[0] for record in server.conversations]
    assert " ".join(prompts) == text  # every word once, in order
    assert all(len(p) <= MAX_PROMPT and p.endswith("ends.") for p in prompts)  # cut where sentences end
    assert all(chunk_text(p) == [p] for p in prompts)  # the server takes each whole: its own cutting can hang
    assert {record.connection for record in server.conversations} == {1}  # one connection, kept alive


def test_the_local_server_hangs_where_the_models_chunking_does_and_basetts_never_sends_such_a_prompt(
        serve: Any) -> None:
    """The model cuts a prompt over 280 characters before a comma and, finding no other cut in the next
    window, loops there forever: this text hangs the real server. basetts's requests never reach that code."""
    text = "A " + "word " * 55 + "the end. Yes, it works."
    assert len(text) > 280
    with pytest.raises(Stalled):
        chunk_text(text)
    server = http_server(serve)
    body = json.dumps({"prompt": text, "voice": "tara"})  # the whole text in one request, as call.py sends it
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.5)
    connection.request("POST", "/environments/production/predict", body,
                       {"Authorization": f"Api-Key {server.api_key}", "Content-Type": "application/json"})
    with pytest.raises(socket.timeout):
        connection.getresponse()  # no answer: the model is stuck in its chunking loop
    connection.close()
    assert "spins" in (server.conversations[-1].error or "")
    server = http_server(serve)
    assert synth_for(server).synthesize(text).pcm == server.expected_pcm(text)
    assert all(record.status == 200 for record in server.conversations)


def test_llm_fragments_go_a_sentence_at_a_time_every_word_once(serve: Any) -> None:
    server = http_server(serve)
    text = "Dr. Smith went to Washington. He met the U.S. team there! Was it fun? Yes, very"
    fragments = [text[i:i + 3] for i in range(0, len(text), 3)]
    audio = synth_for(server).synthesize(iter(fragments))
    assert audio.pcm == server.expected_pcm(text)
    assert [r.messages[0] for r in server.conversations] == [
        "Dr. Smith went to Washington.", "He met the U.S. team there!", "Was it fun?", "Yes, very"]
    assert {record.connection for record in server.conversations} == {1}


def test_a_session_speaks_each_sentence_while_the_next_is_written(serve: Any) -> None:
    server = http_server(serve)
    synth = synth_for(server)
    with synth.session() as session:
        session.send("The first sentence is here. And ")  # the next one begins: the first has ended
        deadline = time.monotonic() + 5
        while not server.conversations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.conversations, "the first sentence was not sent while the text was still coming"
        session.send("the second one follows")
    assert session.audio.pcm == server.expected_pcm("The first sentence is here. And the second one follows")
    assert [r.messages for r in server.conversations] == [["The first sentence is here."],
                                                          ["And the second one follows"]]
    assert client_threads() == []


def test_connect_opens_the_next_calls_connection_ahead(serve: Any) -> None:
    server = http_server(serve)
    synth = synth_for(server)
    synth.connect()
    deadline = time.monotonic() + 5
    while server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 1 and not server.conversations
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert server.connections == 1 and server.last().connection == 1  # the request went on that connection
    synth.close()


def test_calls_reuse_the_connection_kept_alive_and_never_one_the_server_closed(serve: Any) -> None:
    server = http_server(serve, keep_alive=0.3)
    synth = synth_for(server)
    for call in (synth.synthesize, lambda text: b"".join(synth.stream(text)), synth.synthesize):
        call(TEXT)
    assert server.connections == 1 and len(server.conversations) == 3  # the second call paid no handshake
    time.sleep(0.6)  # the server closes the idle connection: the next call sees it and opens another
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert server.connections == 2 and synth.synthesize(TEXT).stats.attempts == 1
    synth.close()  # closes the kept-alive connection
    assert client_threads() == []


def test_a_kept_alive_connection_closed_as_the_request_went_out_is_replaced_at_once(serve: Any, caplog: Any) -> None:
    # The server (or a proxy) closes the idle connection just as the next request goes out, unanswered: that says
    # nothing of the server, so the request goes again at once on a new connection, not counted among the retries
    # (retries=0 still succeeds) and without their backoff. A new connection closed so is a failure: retried.
    server = http_server(serve, faults=Faults(close_on_request=2))
    synth = synth_for(server, retries=0)
    synth.synthesize("First call.")
    caplog.set_level("DEBUG", logger="basetts")
    audio = synth.synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 1
    assert server.connections == 2 and [r.messages for r in server.conversations][1:] == [[TEXT]]
    assert "closed before the server answered: again on a new one" in caplog.text
    assert "retrying in" not in caplog.text
    fresh = http_server(serve, faults=Faults(close_on_request=1))
    with pytest.raises(basetts.ConnectError, match="closed before the server answered"):
        synth_for(fresh, retries=0).synthesize(TEXT)
    fresh = http_server(serve, faults=Faults(close_on_request=1))
    audio = synth_for(fresh, retry_backoff=0.01).synthesize(TEXT)
    assert audio.pcm == fresh.expected_pcm(TEXT) and audio.stats.attempts == 2
    synth.close()
    # Text arriving over time sends its request later, from the reader: the same close is met there, and the same
    # at once on a new connection, with its words, uncounted.
    for feed in ("iterable", "session"):
        server = http_server(serve, faults=Faults(close_on_request=2))
        synth = synth_for(server, retries=0)
        synth.synthesize("First call.")
        if feed == "iterable":
            audio = synth.synthesize(iter([word + " " for word in TEXT.split()]))
        else:
            with synth.session() as session:
                for word in TEXT.split():
                    session.send(word + " ")
            audio = session.audio
        assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 1 and server.connections == 2
        synth.close()


def test_a_kept_alive_connection_is_never_used_after_fork(serve: Any) -> None:
    import os

    server = http_server(serve)
    synth = synth_for(server)
    synth.synthesize(TEXT)
    pid = os.fork()
    if pid == 0:  # the child: its own connection, the parent's left alone
        try:
            ok = synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.connections == 2
    synth.synthesize(TEXT)  # the parent's connection still works: the child did not touch it
    assert server.connections == 2


@pytest.mark.playback
def test_speak_plays_the_streamed_pcm(pulse: Any, serve: Any) -> None:
    from .test_playback import assert_played_exactly

    server = http_server(serve, speed=3.0)
    recording = pulse.record()
    audio = synth_for(server).speak(TEXT)
    played = recording.stop()
    assert_played_exactly(played, server.expected_pcm(TEXT))
    assert audio.stats.underruns == 0 and pulse.sink_inputs() == [] and client_threads() == []


# errors -------------------------------------------------------------------------------------------------
def test_a_wrong_key_is_an_authentication_error_not_retried(serve: Any) -> None:
    server = http_server(serve)
    with pytest.raises(basetts.AuthenticationError, match="HTTP 401") as info:
        basetts.Synthesizer(url=server.url, api_key="wrong", retries=3).synthesize(TEXT)
    assert info.value.status == 401 and server.handshakes == 1 and info.value.partial.pcm == b""


def test_an_unknown_path_is_model_not_found(serve: Any) -> None:
    server = http_server(serve)
    url = server.url.replace("/environments/production/", "/nowhere/")
    with pytest.raises(basetts.ModelNotFoundError, match="HTTP 404"):
        basetts.Synthesizer(url=url, api_key=server.api_key, protocol="orpheus-http").synthesize(TEXT)


def test_the_predict_route_answers_other_methods_as_fastapi_and_serves_on(serve: Any) -> None:
    """HEAD and GET on the predict path: 405 (HEAD: the head alone), on the same kept-alive connection, which
    then takes a POST; a websocket server's predict path answers them the same way."""
    for server in (http_server(serve), serve()):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for method in ("HEAD", "GET"):
            connection.request(method, "/environments/production/predict")
            response = connection.getresponse()
            body = response.read()
            assert (response.status, response.getheader("Allow")) == (405, "POST")
            assert body == (b"" if method == "HEAD" else b'{"detail":"Method Not Allowed"}')
        connection.request("POST", "/environments/production/predict", json.dumps({"prompt": TEXT}),
                           {"Authorization": f"Api-Key {server.api_key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == (200 if server.protocol == "orpheus-http" else 500)
        response.read()
        connection.close()
        assert server.connections == 1


def test_a_deployment_starting_up_is_retried_before_any_audio(serve: Any) -> None:
    server = http_server(serve, faults=Faults(handshake_status=503, handshake_failures=2, retry_after=0.01))
    audio = synth_for(server, retries=3).synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT) and audio.stats.attempts == 3


def test_predict_failing_is_a_server_error_quoting_the_models_text(serve: Any) -> None:
    server = http_server(serve, faults=Faults(predict_error=True))
    with pytest.raises(basetts.ServerError) as info:
        synth_for(server, retries=1, retry_backoff=0.01).synthesize(TEXT)
    assert info.value.status == 500 and server.handshakes == 2  # a 5xx before audio is retried once
    assert INTERNAL_ERROR.format("")[:40] in str(info.value)


@pytest.mark.parametrize("faults", [Faults(drop_after_bytes=12288), Faults(drop_after_bytes=12288, close_code=1011)],
                         ids=["reset", "engine-fails-mid-stream"])
def test_a_response_cut_off_keeps_the_audio_so_far(serve: Any, faults: Faults) -> None:
    server = http_server(serve, faults=faults)
    with pytest.raises(basetts.StreamInterrupted, match="cut the response off|dropped|closed") as info:
        synth_for(server).synthesize(TEXT)
    assert info.value.partial.pcm == bytes(server.last().audio) and len(info.value.partial.pcm) == 12288
    assert client_threads() == []


def test_a_server_that_stalls_after_the_head_times_out(serve: Any) -> None:
    server = http_server(serve, faults=Faults(silent=True))
    with pytest.raises(basetts.FirstAudioTimeout, match="first_audio_timeout=0.3"):
        synth_for(server, first_audio_timeout=0.3).synthesize(TEXT)


def test_ctrl_c_while_the_first_audio_is_awaited_returns_at_once(serve: Any) -> None:
    """The calling thread itself waits for the first audio over HTTP: Ctrl+C there ends the call at once and leaves
    no thread or socket behind."""
    from .test_warmup import client_sockets_open

    server = http_server(serve, faults=Faults(silent=True))  # the head, then nothing
    synth = synth_for(server, first_audio_timeout=30)
    # Once the request has come, the calling thread has sent it and waits for the answer.
    with ctrl_c(lambda: server.begun > 0) as interrupted, pytest.raises(KeyboardInterrupt):
        synth.synthesize(TEXT)
    returned = time.monotonic()
    assert returned - interrupted[0] < 1.0  # sanity bound: not first_audio_timeout
    assert client_threads() == [] and client_sockets_open(server) == 0  # (the server's side waits, silent)


def test_a_server_that_never_answers_the_request_is_a_handshake_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: List[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/environments/production/predict"
    with pytest.raises(basetts.HandshakeTimeout, match="handshake_timeout=0.3"):
        basetts.Synthesizer(url=url, api_key="k", handshake_timeout=0.3, retries=0).synthesize(TEXT)
    listener.close()
    for sock in accepted:
        sock.close()


def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(basetts.ConnectError):
        basetts.Synthesizer(url=f"http://127.0.0.1:{port}/production/predict", api_key="k",
                            retries=0).synthesize(TEXT)


def test_a_json_answer_is_not_taken_for_audio() -> None:
    """A deployment of another model (JSON with base64 audio) at a predict URL: said, not played as noise."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        sock, _ = listener.accept()
        sock.recv(65536)
        body = json.dumps({"audio": "UklGRg=="}).encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.close()

    threading.Thread(target=answer, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/production/predict"
    with pytest.raises(basetts.StreamInterrupted, match="application/json, not audio") as caught:
        basetts.Synthesizer(url=url, api_key="k").synthesize(TEXT)
    listener.close()
    # What to set instead: every JSON preset by name (a model id alone finds only that it is predict-only).
    from basetts.protocols.json_audio import PRESETS

    assert all(f"'{preset.name}'" in str(caught.value) for preset in PRESETS) and "'json-audio'" in str(caught.value)


def test_a_whole_text_is_read_without_a_writer_thread_and_waits_for_a_consumer_that_is_behind(serve: Any) -> None:
    """The first audio is read in the caller's thread (no thread is started before it); each next request goes
    from the reader or the consumer, never from a thread of its own; and a consumer that falls behind holds the
    next request back, so what waits in memory is the audio of the request already made (ROOM_BYTES)."""
    server = http_server(serve, samples_per_word=24000)  # a second a word: each request's audio is megabytes
    text = " ".join(f"Sentence {i} says a few words, then ends." for i in range(20))
    synth = synth_for(server)
    synth.synthesize("Warm up.")  # the call below goes on this kept-alive connection
    chunks = synth.stream(text)
    received = [next(chunks)]
    assert client_threads() == []
    received.append(next(chunks))  # the reader starts and reads the first answer whole
    time.sleep(0.5)
    assert server.begun == 2  # the warm-up and the first request: the next waits for the consumer
    seen = set()
    for chunk in chunks:
        received.append(chunk)
        seen.update(client_threads())
    assert b"".join(received) == server.expected_pcm(text)
    assert seen == {"basetts-reader"}
    assert " ".join(record.messages[0] for record in server.conversations[1:]) == text  # every word once


def test_no_threads_or_sockets_left_after_many_calls(serve: Any) -> None:
    server = http_server(serve)
    synth = synth_for(server)
    synth.synthesize(TEXT)
    before = open_fds()
    for _ in range(30):
        synth.synthesize(TEXT)
        list(synth.stream(iter(["One. ", "Two."])))
    time.sleep(0.1)
    assert client_threads() == [] and open_fds() - before == set()


def test_a_websocket_to_the_http_deployment_says_it_serves_http(serve: Any) -> None:
    server = http_server(serve)
    url = server.url.replace("http://", "ws://").replace("/predict", "/websocket")
    with pytest.raises(basetts.ServerError, match=r"no websocket.*HTTP only"):
        basetts.Synthesizer(url=url, api_key=server.api_key, protocol="orpheus").synthesize(TEXT)


def test_a_post_to_a_websocket_deployment_says_it_serves_a_websocket_and_is_not_retried(serve: Any) -> None:
    """truss answers a POST to a websocket-only model's predict route with a 500 (its predict() asserts there is
    one): a configuration error, said as one, not a deployment to wait for. vllm-omni's server has no such route."""
    server = serve()
    url = server.url.replace("ws://", "http://").replace("/websocket", "/predict")
    with pytest.raises(basetts.UnexpectedResponse, match=r"has no predict route: it serves a websocket.*"
                                                         r"protocol='orpheus'") as info:
        basetts.Synthesizer(url=url, api_key=server.api_key, retries=3).synthesize(TEXT)
    assert info.value.status == 500 and server.handshakes == 1 and info.value.partial.pcm == b""
    assert basetts.Synthesizer(url=server.url, api_key=server.api_key).synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    qwen3 = serve(protocol="qwen3", voices=("v",))
    url = qwen3.url.replace("ws://", "http://").replace("/websocket", "/predict")
    with pytest.raises(basetts.ModelNotFoundError, match="HTTP 404"):
        basetts.Synthesizer(url=url, api_key=qwen3.api_key, protocol="orpheus-http").synthesize(TEXT)
    assert client_threads() == []


# which deployment a model id is ----------------------------------------------------------------------------
@pytest.fixture
def model_ids(monkeypatch: Any) -> Any:
    """Model ids that name local servers: Baseten's host names (the one thing that cannot exist here) point
    at 127.0.0.1, with Baseten's paths."""
    import basetts.settings

    servers = {}

    def url(model_id: str, environment: str = "production", protocol: str = "orpheus") -> str:
        server = servers[model_id]
        scheme, endpoint = ("http", "predict") if protocol == "orpheus-http" else ("ws", "websocket")
        return f"{scheme}://127.0.0.1:{server.port}/environments/{environment}/{endpoint}"

    monkeypatch.setattr(basetts.settings, "baseten_url", url)
    monkeypatch.delenv("BASETTS_URL", raising=False)
    monkeypatch.delenv("BASETTS_PROTOCOL", raising=False)
    return servers


def test_a_model_id_of_an_http_deployment_is_found_out_once_and_remembered(serve: Any, model_ids: Any) -> None:
    server = http_server(serve)
    model_ids["http1"] = server
    synth = basetts.Synthesizer(model_id="http1", api_key=server.api_key)
    assert synth.settings.protocol == "orpheus" and synth.settings.url.startswith("ws://")  # a guess, so far
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert synth.settings.protocol == "orpheus-http" and synth.settings.url == server.url
    assert server.conversations[0].close_code == 1003  # the probe: the websocket truss closes at once
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert [r.status for r in server.conversations[1:]] == [200, 200]  # two requests, no second probe
    assert sum(r.close_code == 1003 for r in server.conversations) == 1


def test_a_model_id_of_a_websocket_deployment_costs_no_extra_connection(serve: Any, model_ids: Any) -> None:
    server = serve()
    model_ids["ws1"] = server
    synth = basetts.Synthesizer(model_id="ws1", api_key=server.api_key)
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert synth.settings.protocol == "orpheus" and server.handshakes == 1  # the probe's connection spoke
    synth.synthesize(TEXT)
    assert server.handshakes == 2
    explicit = basetts.Synthesizer(model_id="ws1", api_key=server.api_key, protocol="orpheus")
    explicit.synthesize(TEXT)
    assert server.handshakes == 3  # said outright: nothing to find out


def test_a_batch_retries_a_refused_request_before_any_audio(serve: Any) -> None:
    """synthesize_many: a 503 answering a text's request (over HTTP, after the connection opened) is tried
    again, as a call's is; a 401 is not."""
    server = http_server(serve, faults=Faults(handshake_status=503, handshake_failures=2, retry_after=0.01))
    texts = [f"Text {i}. Spoken." for i in range(4)]
    results = list(synth_for(server, retries=3).synthesize_many(texts, concurrency=2))
    assert [r.audio.pcm if r.audio else r.error for r in results] == [server.expected_pcm(t) for t in texts]
    assert sum(r.audio.stats.attempts for r in results if r.audio) == len(texts) + 2
    wrong = basetts.Synthesizer(url=server.url, api_key="wrong", retries=3)
    before = server.handshakes
    refused = list(wrong.synthesize_many(texts[:1]))
    assert isinstance(refused[0].error, basetts.AuthenticationError) and server.handshakes == before + 1
