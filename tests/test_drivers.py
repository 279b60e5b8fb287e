"""The drivers only move bytes: one scripted server exchange (pings, a fragmented message, an error event, a
close; over HTTP, chunks cut mid-sample and a response cut off) through each of them (a call's threads, the
batch's selector loop, the voices request) gives the same audio, errors, stats and bytes on the wire, because
every rule is the protocol layer's."""
from __future__ import annotations

import json
import socket
from typing import Any, Callable, List, Tuple

import pytest

import basetts
from basetts.protocols.orpheus import SENTINEL

from .helpers import raw_http_server, raw_server, server_frame, synth_for, upgrade_response

TEXT = "one two three four five"  # a single batch: no pacing ping, so the exchange is the same every time
PCM = bytes(range(256)) * 16  # 4096 bytes

Frame = Tuple[int, bytes]


def read_client_frame(connection: socket.socket) -> Frame:
    """One masked client frame, unmasked (the server's side of RFC 6455)."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = connection.recv(size - len(data))
            assert piece, "the client closed the connection"
            data += piece
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    assert second & 0x80, "a client frame must be masked"
    mask = exactly(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(length)))
    return first & 0x0F, payload


def read_until(connection: socket.socket, record: List[Frame], done: Callable[[Frame], bool]) -> None:
    while True:
        frame = read_client_frame(connection)
        record.append(frame)
        if done(frame):
            return


def orpheus_script(record: List[Frame], error_event: bool) -> Callable[[socket.socket, str], None]:
    """The exchange: the words, a ping, a message in two fragments cut mid-sample, a second ping, an empty
    message and the rest; then the normal close, or (`error_event`) a text message, which ends an Orpheus
    conversation with an error."""

    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        read_until(connection, record, lambda frame: frame == (0x1, SENTINEL.encode()))
        connection.sendall(server_frame(b"ping-1", opcode=0x9))
        read_until(connection, record, lambda frame: frame[0] == 0xA)
        connection.sendall(server_frame(PCM[:1001], opcode=0x2, fin=False) + server_frame(PCM[1001:3000], opcode=0x0))
        connection.sendall(server_frame(b"ping-2", opcode=0x9))
        read_until(connection, record, lambda frame: frame[0] == 0xA)
        connection.sendall(server_frame(b"", opcode=0x2) + server_frame(PCM[3000:], opcode=0x2))
        if error_event:
            connection.sendall(server_frame(b"engine failed", opcode=0x1))
        else:
            connection.sendall(server_frame((1000).to_bytes(2, "big"), opcode=0x8))
        read_until(connection, record, lambda frame: frame[0] == 0x8)

    return answer


def by_call(url: str) -> Tuple[Any, Any]:
    synth = basetts.Synthesizer(url=url, api_key="k", retries=0)
    try:
        audio = synth.synthesize(TEXT)
    except basetts.BasetenTTSError as exc:
        return exc.partial, exc
    return audio, None


def by_batch(url: str) -> Tuple[Any, Any]:
    synth = basetts.Synthesizer(url=url, api_key="k", retries=0)
    (result,) = list(synth.synthesize_many([TEXT]))
    return (result.audio, None) if result.ok else (result.error.partial, result.error)


@pytest.mark.parametrize("error_event", [False, True], ids=["close", "error event"])
def test_the_call_and_the_batch_drive_one_exchange_to_the_same_end(error_event: bool) -> None:
    outcomes = []
    for drive in (by_call, by_batch):
        record: List[Frame] = []
        with raw_server(orpheus_script(record, error_event)) as url:
            audio, error = drive(url)
        outcomes.append((audio.pcm, audio.stats.bytes_received, audio.stats.frames_received,
                         None if error is None else (type(error), str(error)), record))
    assert outcomes[0] == outcomes[1]
    pcm, received, frames, error, record = outcomes[0]
    assert pcm == PCM and received == len(PCM) and frames == 3  # the fragments joined, the empty message counted
    if error_event:
        assert error is not None and error[0] is basetts.ServerError and "engine failed" in error[1]
    else:
        assert error is None
    settings = json.loads(record[0][1])
    assert settings["voice"] == "tara"
    assert record[1:] == [(0x1, word.encode()) for word in TEXT.split()] + [
        (0x1, SENTINEL.encode()), (0xA, b"ping-1"), (0xA, b"ping-2"), (0x8, (1000).to_bytes(2, "big"))]


def test_the_voices_request_answers_pings_joins_fragments_and_closes() -> None:
    record: List[Frame] = []
    reply = json.dumps({"type": "voice.list.result", "voices": ["alice"], "uploaded_voices": []}).encode()

    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        read_until(connection, record, lambda frame: frame[0] == 0x1)
        connection.sendall(server_frame(b"ping-1", opcode=0x9))
        read_until(connection, record, lambda frame: frame[0] == 0xA)
        connection.sendall(server_frame(reply[:7], opcode=0x1, fin=False) + server_frame(reply[7:], opcode=0x0))
        read_until(connection, record, lambda frame: frame[0] == 0x8)

    with raw_server(answer) as url:
        voices = basetts.Synthesizer(url=url, api_key="k", protocol="qwen3").voices.list()
    assert [voice.name for voice in voices] == ["alice"]
    assert record == [(0x1, b'{"type": "voice.list"}'), (0xA, b"ping-1"), (0x8, (1000).to_bytes(2, "big"))]


def test_the_voices_request_ends_with_the_servers_error_event() -> None:
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        read_client_frame(connection)
        connection.sendall(server_frame(json.dumps({"type": "error", "message": "no such voice"}).encode(), opcode=0x1))
        read_client_frame(connection)

    with raw_server(answer) as url:
        with pytest.raises(basetts.VoiceError, match="no such voice"):
            basetts.Synthesizer(url=url, api_key="k", protocol="qwen3").voices.remove("bob")


def test_each_driver_reaches_the_local_server_alike(basetts_server: Any) -> None:
    """The same text through both drivers against the real-behaving server: the same bytes and words."""
    synth = synth_for(basetts_server)
    by_thread = synth.synthesize(TEXT)
    (batched,) = list(synth.synthesize_many([TEXT]))
    assert by_thread.pcm == batched.audio.pcm == basetts_server.expected_pcm(TEXT)
    assert basetts_server.conversations[-1].messages == basetts_server.conversations[-2].messages


def test_a_voices_request_with_no_answer_is_a_read_timeout() -> None:
    """The request's deadline is read_timeout's: a `ReadTimeout` (it was once wrapped as a lost connection)."""
    def answer(connection: socket.socket, key: str) -> None:
        connection.sendall(upgrade_response(key))
        read_client_frame(connection)  # the request; no answer
        read_client_frame(connection)  # the close the client ends with

    with raw_server(answer) as url:
        with pytest.raises(basetts.ReadTimeout, match="read_timeout=0.5"):
            basetts.Synthesizer(url=url, api_key="k", protocol="qwen3", read_timeout=0.5).voices.list()


# Orpheus over HTTP: the call reads the first answer in the caller's thread, then in its reader ---------------
HTTP_TEXT = " ".join(f"Sentence {i} says a few words, then ends." for i in range(8))  # two requests
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def read_request(connection: socket.socket) -> bytes:
    """One request's body (its head read up to the blank line, its body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        assert piece, "the client closed the connection"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += connection.recv(65536)
    return body


def http_script(record: List[str], cut: bool) -> Callable[[socket.socket], None]:
    """Two requests on one connection: the first answered in pieces (a chunk cut mid-sample, a chunk's size line
    apart from its data), the second whole, or (`cut`) cut off before its last chunk."""

    def answer(connection: socket.socket) -> None:
        record.append(json.loads(read_request(connection))["prompt"])
        connection.sendall(HEAD)
        connection.sendall(chunk(PCM[:1001]))
        connection.sendall(b"%x\r\n" % 2000)
        connection.sendall(PCM[1001:3001] + b"\r\n")
        connection.sendall(chunk(PCM[3001:]) + b"0\r\n\r\n")
        record.append(json.loads(read_request(connection))["prompt"])
        connection.sendall(HEAD + chunk(PCM[:1001]))
        if not cut:
            connection.sendall(chunk(PCM[1001:]) + b"0\r\n\r\n")
            connection.recv(1)  # until the client lets the kept-alive connection go

    return answer


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut off"])
def test_the_call_and_the_batch_drive_one_http_exchange_to_the_same_end(cut: bool) -> None:
    """The call reads the first answer in the caller's thread and the rest in its reader; the batch in its loop."""
    outcomes = []
    for drive in ("call", "stream", "batch"):
        record: List[str] = []
        with raw_http_server(http_script(record, cut)) as url:
            synth = basetts.Synthesizer(url=url, api_key="k", retries=0, recoveries=0)
            error: Any = None
            if drive == "batch":
                (result,) = list(synth.synthesize_many([HTTP_TEXT]))
                audio, error = (result.audio, None) if result.ok else (result.error.partial, result.error)
            else:
                try:
                    audio = (synth.synthesize(HTTP_TEXT) if drive == "call"
                             else basetts.Audio(b"".join(synth.stream(HTTP_TEXT)), stats=basetts.Stats()))
                except basetts.BasetenTTSError as exc:
                    audio, error = exc.partial, exc
            synth.close()
        outcomes.append((audio.pcm if drive != "stream" or error is None else None, audio.stats.bytes_received,
                         None if error is None else (type(error), str(error)), record))
    call, streamed, batch = outcomes
    assert call == batch and call[2:] == streamed[2:]
    pcm, received, error, record = call
    assert " ".join(record) == HTTP_TEXT and len(record) == 2
    if cut:
        assert pcm == PCM + PCM[:1000] and received == len(PCM) + 1001
        assert error is not None and error[0] is basetts.StreamInterrupted
    else:
        assert pcm == streamed[0] == PCM * 2 and received == 2 * len(PCM) and error is None
