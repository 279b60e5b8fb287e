"""The local server's Orpheus over HTTP (truss-examples orpheus-best-performance under truss): POST …/predict,
the key check, the prompt cut into chunks of `max_chunk_size` (280) characters whose audio streams back to back
as headerless 16-bit PCM ("audio/wav") in chunked encoding, X-Baseten-Input-Tokens, a 500 with a text body
when predict() fails before the stream, a response cut off when the engine fails during it, uvicorn's
keep-alive (a connection idle for 5 s is closed). docs/protocol.md, "Orpheus over HTTP", says what each
comes from. A websocket server's predict route answers here too: truss's 500 for a model without predict()."""
from __future__ import annotations

import array
import base64
import json
import re
import socket
import threading
import uuid
from typing import Any, List, Optional, Protocol, Tuple

import h11

from ..pcm import resample, wav_header
from ..protocols.json_audio import CUSTOM, PRESETS, Preset
from ..protocols.xtts import LANGUAGES as XTTS_LANGUAGES
from .faults import ConversationRecord, Dropped, Faults, blackhole, reset
from .orpheus import HANDLER_ERROR


class Endpoint(Protocol):
    """What the predict route reads of its server (a `LocalServer`): its timing, faults and records."""

    protocol: str
    faults: Faults
    legacy: bool
    speed: Optional[float]
    keep_alive: float
    _stopping: threading.Event

    def render(self, words: List[str], encoding: str = "pcm_s16le") -> bytes: ...
    def _refusal(self) -> Optional[Tuple[int, Optional[float]]]: ...
    def _closes_unanswered(self) -> bool: ...
    def _key_ok(self, authorization: str) -> bool: ...
    def _begin(self, record: ConversationRecord) -> int: ...
    def _end(self, record: ConversationRecord) -> None: ...

PATHS = (
    re.compile(r"^/environments/[^/]+/predict$"),
    re.compile(r"^/production/predict$"),
    re.compile(r"^/development/predict$"),
    re.compile(r"^/deployment/[^/]+/predict$"),
    re.compile(r"^/v1/models/[^/]+:predict$"),  # truss's own route, inside the container
)
JSON_AUDIO = {preset.name: preset for preset in PRESETS + (CUSTOM,)}
PROTOCOLS = ("orpheus-http", "xtts-streaming", *JSON_AUDIO)
"""The HTTP deployments this route serves (`LocalServer(protocol=...)`)."""
FLOAT_WAV = ("kokoro", "chatterbox", "sesame")
"""Models whose WAV holds 32-bit float samples (numpy's and torchaudio's for a float array); the rest 16-bit."""
PIPER_RATE = 22050
"""What piper's usual ("medium") voices speak at; the other models speak at 24 kHz."""
MAX_CHUNK_SIZE = 280
"""The model's default `max_chunk_size`: characters per chunk of the prompt it generates in turn."""
DEFAULTS = {"voice": "tara", "max_tokens": 6144, "temperature": 0.6, "top_p": 0.8, "repetition_penalty": 1.1}
KEEP_ALIVE = 5.0
"""uvicorn's timeout_keep_alive, which truss keeps: an idle kept-alive connection is closed after it."""
MAX_BODY = 16 * 2 ** 20
INTERNAL_ERROR = "An internal server error occurred while processing your request {}"
NO_PREDICT = "Unhandled exception: AssertionError: `predict` must only be called if model has it."
"""truss's answer (a 500, JSON) to a POST to the predict route of a model that has only `websocket()`."""


class Stalled(Exception):
    """The model's chunking loop stopped advancing: the real one spins there forever (see `chunk_text`)."""


def chunk_text(text: str, max_len: int = MAX_CHUNK_SIZE) -> List[str]:
    """The prompt in chunks of at most `max_len` characters, as the model cuts it: at the window's last
    newline if it is past half the window, else after its last sentence end ('.', '?', '!') past a third of
    it, else before its last comma, else at its last space, else where the window ends; each chunk stripped.

    A cut before a comma starts the next window with that comma; when the window has no other place to cut,
    the model's loop cuts there again, at 0, and never ends (its event loop with it). Raises `Stalled` there.
    """
    if len(text) <= max_len:
        return [text]
    chunks: List[str] = []
    start = 0
    while start < len(text):
        window = text[start:start + max_len]
        cut = window.rfind("\n")
        if cut < max_len * 0.5:  # -1 (none) included
            cut = max(window.rfind("."), window.rfind("?"), window.rfind("!"))
            cut = cut + 1 if cut >= 0 else -1
        if cut < max_len * 0.33:
            cut = window.rfind(",")
        if cut < 0:
            cut = window.rfind(" ")
        if cut < 0:
            cut = len(window)
        if cut == 0:
            raise Stalled(f"the chunking loop spins at character {start}")
        piece = text[start:start + cut].strip()
        if piece:
            chunks.append(piece)
        start += cut
        while start < len(text) and text[start].isspace():
            start += 1
    return chunks or [""]


class Stream:
    """One response's body, as `Sender` sends audio: each `send` a chunk of the chunked body."""

    def __init__(self, sock: socket.socket, http: h11.Connection) -> None:
        self.sock = sock
        self.http = http

    def send(self, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            self.sock.sendall(self.http.send(h11.Data(data=data)) or b"")
        except OSError:
            raise Dropped() from None

    def close(self, code: int = 1011, reason: str = "") -> None:
        """The engine failed mid-stream: uvicorn ends the connection without the body's last chunk."""
        self.end("eof")

    def end(self, how: str = "reset") -> None:
        if how == "reset":  # a crashed server or a broken network: a TCP reset
            return reset(self.sock)
        if how == "blackhole":  # a path that died: nothing more either way, until the client gives up
            return blackhole(self.sock)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(server: Endpoint, sock: socket.socket, received: bytes, number: int) -> None:
    """Requests on one connection until the client closes it, it idles past KEEP_ALIVE, or the server stops."""
    from .sender import Sender

    http = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
    http.receive_data(received)
    sock.settimeout(server.keep_alive)
    while not server._stopping.is_set():
        try:
            request, body = _read_request(sock, http)
        except h11.RemoteProtocolError:  # not HTTP: uvicorn's 400, then the connection closes
            _bad_request(sock, http)
            return
        except OSError:
            return
        if request is None or server._closes_unanswered():
            return  # the caller closes the connection
        record = ConversationRecord(path=request.target.decode("latin-1"), authorization=_header(
            request, b"authorization"), protocol=server.protocol)
        record.connection = number
        faults = server.faults.for_conversation(server._begin(record))
        try:
            _answer(server, sock, http, request, body, record, Sender, faults)
        except Dropped:
            return
        finally:
            server._end(record)
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            return
        http.start_next_cycle()


def _read_request(sock: socket.socket, http: h11.Connection) -> Tuple[Optional[h11.Request], bytes]:
    """The next request and its body; (None, b"") once the client has closed or gone quiet."""
    request: Optional[h11.Request] = None
    body = bytearray()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                return None, b""  # kept alive too long: uvicorn closes it
            http.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            if len(body) + len(event.data) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None, b""


def _bad_request(sock: socket.socket, http: h11.Connection) -> None:
    """uvicorn's answer to bytes that are not an HTTP request (h11 lets a server answer after the client's error)."""
    events = (h11.Response(status_code=400, headers=[("Content-Type", "text/plain; charset=utf-8"),
                                                      ("Connection", "close")]),
              h11.Data(data=b"Invalid HTTP request received."), h11.EndOfMessage())
    try:
        sock.sendall(b"".join(http.send(event) or b"" for event in events))
    except (OSError, h11.LocalProtocolError):
        pass  # the client is gone, or the head was half sent: nothing more to say


def _header(request: h11.Request, name: bytes) -> Optional[str]:
    for key, value in request.headers:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _respond(sock: socket.socket, http: h11.Connection, record: ConversationRecord, status: int, body: bytes,
             content_type: str, headers: Tuple[Tuple[str, str], ...] = (), head_only: bool = False) -> None:
    """One whole answer; `head_only` (a HEAD request's): the head alone, its Content-Length included, as uvicorn's."""
    record.status = status
    response = h11.Response(status_code=status, headers=[
        ("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
    events = (response, h11.EndOfMessage()) if head_only else (response, h11.Data(data=body), h11.EndOfMessage())
    sock.sendall(b"".join(http.send(event) or b"" for event in events))


def _answer(server: Endpoint, sock: socket.socket, http: h11.Connection, request: h11.Request, body: bytes,
            record: ConversationRecord, sender_class: Any, faults: Faults) -> None:
    path = request.target.decode("latin-1").split("?", 1)[0]
    refusal = server._refusal()
    if refusal is not None:
        status, retry_after = refusal
        extra = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
        _respond(sock, http, record, status, b"Refused by fault injection.\n", "text/plain", extra)
        return
    head = request.method == b"HEAD"
    if not any(p.match(path) for p in PATHS):
        _respond(sock, http, record, 404, b'{"detail":"Not Found"}', "application/json", head_only=head)
        return
    if request.method != b"POST":  # FastAPI's answer on a POST route
        _respond(sock, http, record, 405, b'{"detail":"Method Not Allowed"}', "application/json", (("Allow", "POST"),),
                 head_only=head)
        return
    if not server._key_ok(record.authorization or ""):
        _respond(sock, http, record, 401, json.dumps({"error": "Invalid API key"}).encode(), "application/json")
        return
    if server.protocol == "qwen3":  # vllm-omni's server has no such route (FastAPI's answer)
        _respond(sock, http, record, 404, b'{"detail":"Not Found"}', "application/json")
        return
    try:
        model_input = json.loads(body)
    except ValueError as exc:  # truss's InputParsingError
        message = {"error": f"Invalid JSON payload: {exc}"}
        _respond(sock, http, record, 400, json.dumps(message).encode(), "application/json")
        return
    if server.protocol == "orpheus":  # a websocket model under truss: its predict() asserts there is one
        _respond(sock, http, record, 500, json.dumps({"error": NO_PREDICT}).encode(), "application/json",
                 (("X-BASETEN-ERROR-SOURCE", "04"), ("X-BASETEN-ERROR-CODE", "500")))
        return
    if server.protocol == "xtts-streaming":
        _answer_xtts(server, sock, http, model_input, record, sender_class, faults)
        return
    if server.protocol in JSON_AUDIO:
        _answer_json(server, sock, http, model_input, record, JSON_AUDIO[server.protocol], faults)
        return
    request_id = str(model_input.get("request_id") or uuid.uuid4()) if isinstance(model_input, dict) else "?"
    prompt = model_input.get("prompt") if isinstance(model_input, dict) else None
    if not isinstance(prompt, str) or server.faults.predict_error:  # predict() raised: its except's 500
        _respond(sock, http, record, 500, INTERNAL_ERROR.format(request_id).encode(), "text/plain; charset=utf-8",
                 (("X-BASETEN-ERROR-SOURCE", "04"), ("X-BASETEN-ERROR-CODE", "700")))  # truss adds them
        return
    record.settings = {k: v for k, v in model_input.items() if k != "prompt"}
    record.messages.append(prompt)
    settings = {**DEFAULTS, **model_input}
    from .orpheus import sampling_problem

    problem = sampling_problem(settings)
    max_chunk = model_input.get("max_chunk_size", MAX_CHUNK_SIZE)
    try:
        chunks = chunk_text(prompt, max_chunk if isinstance(max_chunk, int) and max_chunk > 0 else MAX_CHUNK_SIZE)
    except Stalled as exc:  # the real server hangs before its answer's head (and stops serving)
        record.error = str(exc)
        server._stopping.wait()
        raise Dropped() from None
    record.status = 200
    sock.sendall(http.send(h11.Response(status_code=200, headers=[
        ("Content-Type", "audio/wav"), ("X-Baseten-Input-Tokens", str(len(prompt)))])) or b"")
    stream = Stream(sock, http)
    sender = sender_class(server, stream, record, faults)
    for chunk in chunks:
        if problem is not None:  # the engine refuses the sampling settings at its first generation
            record.close_code = 500
            stream.close()
            raise Dropped()
        if faults.silent:  # the head went out; the audio never comes
            server._stopping.wait()
            raise Dropped()
        sender.generate(chunk.split(), "pcm_s16le")
    sock.sendall(http.send(h11.EndOfMessage()) or b"")


def _model_raised(sock: socket.socket, http: h11.Connection, record: ConversationRecord) -> None:
    """truss's answer when predict() raises (a model other than Orpheus's, which answers with its own 500 text):
    its UserCodeError, a 500 whose JSON says only that the model failed (the logs say why)."""
    _respond(sock, http, record, 500, json.dumps({"error": HANDLER_ERROR}).encode(), "application/json",
             (("X-BASETEN-ERROR-SOURCE", "04"), ("X-BASETEN-ERROR-CODE", "600")))


def _answer_xtts(server: Endpoint, sock: socket.socket, http: h11.Connection, model_input: Any,
                 record: ConversationRecord, sender_class: Any, faults: Faults) -> None:
    """The xtts-streaming truss: predict() is a generator, so truss answers 200 (application/octet-stream) before
    the model runs; text the model cannot take (none, or a language it does not know) cuts the body off."""
    if not isinstance(model_input, dict) or server.faults.predict_error:
        _model_raised(sock, http, record)
        return
    text, language = model_input.get("text"), model_input.get("language", "en")
    record.settings = {k: v for k, v in model_input.items() if k != "text"}
    record.status = 200
    sock.sendall(http.send(h11.Response(status_code=200, headers=[("Content-Type", "application/octet-stream")]))
                 or b"")
    stream = Stream(sock, http)
    if not isinstance(text, str) or language not in XTTS_LANGUAGES:  # the generator raises at its first step
        record.close_code = 500
        stream.close()
        raise Dropped()
    record.messages.append(text)
    if faults.silent:
        server._stopping.wait()
        raise Dropped()
    sender_class(server, stream, record, faults).generate(text.split(), "pcm_s16le")
    sock.sendall(http.send(h11.EndOfMessage()) or b"")


def _answer_json(server: Endpoint, sock: socket.socket, http: h11.Connection, model_input: Any,
                 record: ConversationRecord, preset: Preset, faults: Faults) -> None:
    """A truss whose predict() returns JSON with a base64 WAV: one answer once the audio is made (at `speed`,
    the time it takes), or truss's 500 when predict() raises (no text; piper: an apostrophe, which ends the
    shell command the model builds; kokoro: a voice it has no voicepack for)."""
    text = model_input.get(preset.text_field) if isinstance(model_input, dict) else None
    voice = model_input.get(preset.voice_field or "", None) if isinstance(model_input, dict) else None
    fails = (server.faults.predict_error or (preset.shell_quoted and "'" in str(text))
             or (bool(preset.voices) and voice is not None and str(voice) not in preset.voices))
    if not isinstance(text, str) or fails:
        _model_raised(sock, http, record)
        return
    record.settings = {k: v for k, v in model_input.items() if k != preset.text_field}
    record.messages.append(text)
    pcm = server.render(text.split())
    record.audio.extend(pcm)
    if server.speed is not None:
        server._stopping.wait(len(pcm) / 48000 / server.speed)
    wav = wav_of(pcm, preset.name)
    encoded = base64.b64encode(wav).decode("ascii")
    body = json.dumps(encoded if preset.response_key is None else {preset.response_key: encoded}).encode()
    if faults.drop_after_bytes is not None:  # the answer cut after that many bytes of its body
        record.status, record.faulted = 200, True
        sock.sendall(b"".join(http.send(event) or b"" for event in (
            h11.Response(status_code=200, headers=[("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body)))]),
            h11.Data(data=body[:faults.drop_after_bytes]))))
        Stream(sock, http).end(faults.cut)
        raise Dropped()
    _respond(sock, http, record, 200, body, "application/json")


def wav_of(pcm: bytes, protocol: str) -> bytes:
    """The WAV a model of `protocol` writes for 24 kHz 16-bit `pcm`: float samples or piper's rate."""
    if protocol in FLOAT_WAV:
        floats = array.array("f", (s / 32768 for s in array.array("h", pcm))).tobytes()
        return wav_header(len(floats), sample_width=4, float_samples=True) + floats
    rate = PIPER_RATE if protocol == "piper" else 24000
    pcm = resample(pcm, 24000, rate)
    return wav_header(len(pcm), rate) + pcm


__all__ = ["DEFAULTS", "INTERNAL_ERROR", "KEEP_ALIVE", "MAX_CHUNK_SIZE", "NO_PREDICT", "PATHS", "PROTOCOLS", "Stalled",
           "chunk_text", "serve", "wav_of"]
