"""The clients compared: basetts, a bare websocket-client loop (the floor), and the official example.

Each `*_first_byte` returns (seconds to the first audio byte, audio bytes received) and always reads the
stream to its end, so every client does the same work. Times start when the user's call starts.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import h11
import websocket

from basetts import Synthesizer
from basetts.protocols.flush import server_sentences
from basetts.protocols.orpheus_http import prompts
from basetts.text import words_of

SEED = Path(__file__).resolve().parent.parent / ".." / "shared" / "seed" / "example_client.py"
SETTINGS = {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}  # what basetts and the example send
SENTINEL = "__END__"


# bare websocket-client ---------------------------------------------------------------------------------
def _bare_connect(url: str, api_key: str, multithread: bool = False,
                  timeout: Optional[float] = None) -> websocket.WebSocket:
    # create_connection sets TCP_NODELAY by default, as basetts does. No timeout: the floor. With one
    # (as any careful client has), CPython polls before every recv, and the upgrade is read byte by byte.
    return websocket.create_connection(url, header=[f"Authorization: Api-Key {api_key}"], timeout=timeout,
                                       skip_utf8_validation=True, enable_multithread=multithread)


def _bare_drain(ws: websocket.WebSocket) -> int:
    received = 0
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            received += len(frame.data)
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            return received


def bare_first_byte(url: str, api_key: str, text: str, timeout: Optional[float] = None) -> Tuple[float, int]:
    """Connect, send everything, first recv: no threads, no queue, nothing but the library."""
    started = time.perf_counter()
    ws = _bare_connect(url, api_key, timeout=timeout)
    ws.send(json.dumps(SETTINGS))
    for word in text.split():
        ws.send(word)
    ws.send(SENTINEL)
    first = ws.recv()
    elapsed = time.perf_counter() - started
    received = len(first) + _bare_drain(ws)
    ws.close()
    return elapsed, received


def bare_receive_all(url: str, api_key: str, text: str, encoding: Optional[str] = None,
                     timeout: Optional[float] = None) -> Tuple[float, int]:
    """The whole stream: a thread sends words while this one reads (a long text would otherwise
    deadlock: the server stops reading words while its audio is not read). Returns (seconds, bytes)."""
    settings = dict(SETTINGS, **({"encoding": encoding} if encoding else {}))
    return _send_while_reading(url, api_key, [json.dumps(settings), *text.split(), SENTINEL], _bare_drain, timeout)


def _send_while_reading(url: str, api_key: str, messages: List[str], drain: Callable[[websocket.WebSocket], int],
                        timeout: Optional[float] = None) -> Tuple[float, int]:
    """Connect, send `messages` from a thread while this one drains the stream: (seconds, audio bytes)."""
    started = time.perf_counter()
    ws = _bare_connect(url, api_key, multithread=True, timeout=timeout)

    def send() -> None:
        for message in messages:
            ws.send(message)

    writer = threading.Thread(target=send, name="bench-bare-writer", daemon=True)
    writer.start()
    received = drain(ws)
    elapsed = time.perf_counter() - started
    writer.join()
    ws.close()
    return elapsed, received


# basetts ---------------------------------------------------------------------------------------------
def basetts_first_byte(synth: Synthesizer, text: str) -> Tuple[float, int]:
    started = time.perf_counter()
    chunks = synth.stream(text)
    first = next(chunks)
    elapsed = time.perf_counter() - started
    return elapsed, len(first) + sum(len(c) for c in chunks)


def basetts_warm_first_byte(synth: Synthesizer, text: str) -> Tuple[float, int]:
    """After `connect()` (not timed: done while the user is still typing, say)."""
    synth.connect()
    return basetts_first_byte(synth, text)


def basetts_receive_all(synth: Synthesizer, text: str, **overrides: Any) -> Tuple[float, int]:
    started = time.perf_counter()
    received = sum(len(c) for c in synth.stream(text, **overrides))
    return time.perf_counter() - started, received


# Orpheus over HTTP: a bare http.client loop on one kept-alive connection ---------------------------------
class BareHTTP:
    """The floor for orpheus-http: http.client posting the same requests basetts sends (its 280-character
    prompts), one after the other on one kept-alive connection, reading each body to its end."""

    def __init__(self, url: str, api_key: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.headers = {"Authorization": f"Api-Key {api_key}", "Content-Type": "application/json"}

    def _post(self, prompt: str) -> http.client.HTTPResponse:
        self.connection.request("POST", self.path, json.dumps({"prompt": prompt, "voice": "tara"}), self.headers)
        return self.connection.getresponse()

    def first_byte(self, text: str) -> Tuple[float, int]:
        started = time.perf_counter()
        requests = [o.text for o in prompts(text.split(), server_sentences(), whole=True)]
        response = self._post(requests[0])
        first = response.read1(65536)
        elapsed = time.perf_counter() - started
        received = len(first) + len(response.read())
        for prompt in requests[1:]:
            received += len(self._post(prompt).read())
        return elapsed, received

    def receive_all(self, text: str) -> Tuple[float, int]:
        started = time.perf_counter()
        received = sum(len(self._post(o.text).read()) for o in prompts(text.split(), server_sentences(), whole=True))
        return time.perf_counter() - started, received

    def close(self) -> None:
        self.connection.close()


class H11Floor:
    """What h11 and basetts's text layer cost on their own, without the rest of basetts: the same requests and
    the same prompts as basetts (Markdown read, words and spans, pysbd's cuts), framed by h11 on one kept-alive
    socket read in this thread. The row that says how much of basetts's time is its own machinery."""

    def __init__(self, url: str, api_key: str) -> None:
        parts = urlsplit(url)
        self.path, self.host = parts.path, parts.netloc
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.authorization = f"Api-Key {api_key}"
        self.http = h11.Connection(h11.CLIENT)
        self.sentences = server_sentences()

    def _post(self, prompt: str) -> Iterator[bytes]:
        body = json.dumps({"voice": "tara", "prompt": prompt}, ensure_ascii=False).encode("utf-8")
        headers = [("Host", self.host), ("Authorization", self.authorization), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body))), ("User-Agent", "bench")]
        self.sock.sendall(b"".join(self.http.send(event) or b"" for event in (
            h11.Request(method="POST", target=self.path, headers=headers), h11.Data(data=body), h11.EndOfMessage())))
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(65536))
            elif type(event) is h11.Data:
                yield event.data
            elif type(event) is h11.EndOfMessage:
                self.http.start_next_cycle()
                return
            elif type(event) is h11.ConnectionClosed:
                raise ConnectionError("the local server closed the kept-alive connection")

    def first_byte(self, text: str) -> Tuple[float, int]:
        started = time.perf_counter()
        requests = prompts(words_of(text), self.sentences, whole=True)
        audio = self._post(next(requests).text)
        first = next(audio)
        elapsed = time.perf_counter() - started
        received = len(first) + sum(len(data) for data in audio)
        for request in requests:
            received += sum(len(data) for data in self._post(request.text))
        return elapsed, received

    def receive_all(self, text: str) -> Tuple[float, int]:
        started = time.perf_counter()
        received = sum(len(data) for request in prompts(words_of(text), self.sentences, whole=True)
                       for data in self._post(request.text))
        return time.perf_counter() - started, received

    def close(self) -> None:
        self.sock.close()


# Qwen3-TTS: a bare websocket-client loop speaking its protocol ----------------------------------------
QWEN3_CONFIG = {"type": "session.config", "voice": "bench", "response_format": "pcm", "stream_audio": True}


def _qwen3_messages(text: str) -> List[str]:
    return ([json.dumps(QWEN3_CONFIG)] + [json.dumps({"type": "input.text", "text": word + " "})
                                          for word in text.split()] + [json.dumps({"type": "input.done"})])


def _qwen3_drain(ws: websocket.WebSocket, first: Optional[List[float]] = None) -> int:
    """Audio bytes until session.done; `first` gets the time of the first audio."""
    received = 0
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            if first is not None and not first:
                first.append(time.perf_counter())
            received += len(frame.data)
        elif opcode == websocket.ABNF.OPCODE_TEXT and b'"session.done"' in frame.data:
            return received
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            return received


def bare_qwen3_first_byte(url: str, api_key: str, text: str) -> Tuple[float, int]:
    """Connect, send everything, read to session.done: the floor for Qwen3-TTS."""
    started = time.perf_counter()
    ws = _bare_connect(url, api_key)
    for message in _qwen3_messages(text):
        ws.send(message)
    first: List[float] = []
    received = _qwen3_drain(ws, first)
    ws.close()
    return first[0] - started, received


def bare_qwen3_receive_all(url: str, api_key: str, text: str) -> Tuple[float, int]:
    """The whole stream, a thread sending while this one reads (as `bare_receive_all`)."""
    return _send_while_reading(url, api_key, _qwen3_messages(text), _qwen3_drain)


# the official aiohttp example -----------------------------------------------------------------------
class _Sink:
    """Stands in for the PyAudio output stream: notes when the first audio is written, counts bytes."""

    def __init__(self) -> None:
        self.first: Optional[float] = None
        self.received = 0

    def write(self, data: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.received += len(data)

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        pass


class OfficialClient:
    """The seed's `stream_tts`, executed from ../shared/seed/example_client.py at run time.

    BENCHMARK ONLY: the source is read and executed unchanged except for what a benchmark must change,
    all done from outside: `pyaudio` is a stub module whose stream's `write` is a sink, `WS_URL` and
    `API_KEY` point at the local server, and `print` (its progress messages, one per audio message) is
    silenced so terminal output does not count against it.
    """

    def __init__(self, url: str, api_key: str) -> None:
        self.sink = _Sink()
        self.namespace = self._load(url, api_key)

    def _load(self, url: str, api_key: str) -> Dict[str, Any]:
        source = SEED.read_text()
        sink = self

        class _PyAudio:
            def open(self, **kwargs: Any) -> _Sink:
                return sink.sink

            def terminate(self) -> None:
                pass

        stub = types.ModuleType("pyaudio")
        stub.paInt16 = 8  # type: ignore[attr-defined]
        stub.PyAudio = _PyAudio  # type: ignore[attr-defined]
        namespace: Dict[str, Any] = {"__name__": "bench_official_client", "print": lambda *a, **k: None}
        saved = sys.modules.get("pyaudio")
        sys.modules["pyaudio"] = stub
        try:
            exec(compile(source, str(SEED), "exec"), namespace)
        finally:
            if saved is None:
                del sys.modules["pyaudio"]
            else:
                sys.modules["pyaudio"] = saved
        namespace["WS_URL"], namespace["API_KEY"] = url, api_key
        return namespace

    def first_byte(self, text: str) -> Tuple[float, int]:
        self.sink = _Sink()
        stream_tts: Callable[[str], Any] = self.namespace["stream_tts"]

        async def timed() -> float:
            started = time.perf_counter()  # inside the loop: asyncio.run's own start is not charged
            await stream_tts(text)
            return started

        started = asyncio.run(timed())
        if self.sink.first is None:
            raise RuntimeError("the official client received no audio (its errors are printed, and we silence print)")
        return self.sink.first - started, self.sink.received


def check_seed() -> Optional[str]:
    """None if the official client can run here, else why not."""
    if not SEED.is_file():
        return f"{SEED} not found"
    try:
        import aiohttp  # noqa: F401
        import dotenv  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[dev]')"
    return None


def words(count: int, vocabulary: int = 40, sentence: int = 0) -> str:
    """`count` words from a small vocabulary (the server caches each word's tone), no early sentence
    end unless `sentence` > 0 (then a full stop every `sentence` words), a full stop at the end."""
    pool: List[str] = [f"word{i}" for i in range(vocabulary)]
    out = []
    for i in range(count):
        word = pool[i % vocabulary]
        if (sentence and (i + 1) % sentence == 0) or i == count - 1:
            word += "."
        out.append(word)
    return " ".join(out)


_ANSWER = (
    "## Getting started\n\nHere is **what to do** first, step by step:\n\n"
    "1. Install it with `pip install basetts`.\n2. Read [the guide](https://example.com/docs/guide) 🚀\n"
    "- Keep *one* connection per call; see https://www.example.com/a/b?c=1.\n\n"
    "| Setting | Default |\n|---|---|\n| voice | tara |\n\n"
    "```python\nprint('hello')\n```\n\n"
    "That's it! <laugh> Plain prose follows, as most of an answer is: the model explains what it did, "
    "why it matters, and what comes next, in sentences of ordinary length.\n\n"
)


def markdown_answer(characters: int) -> str:
    """A language model's answer (headings, lists, code, links, a table, emoji, prose) of about `characters`."""
    return _ANSWER * max(1, characters // len(_ANSWER))
