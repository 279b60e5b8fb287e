"""Orpheus TTS over HTTP (truss-examples orpheus-best-performance), sans-I/O: one POST per piece of text with
JSON {"prompt", "voice", sampling fields}, answered by a chunked stream of headerless 16-bit PCM
("audio/wav" in name only); an error before the stream is an HTTP status with a text body, one during it
a response cut off before its last chunk (docs/protocol.md, "Orpheus over HTTP").

HTTP/1.1 framing is h11's (the sans-I/O codec under httpx and uvicorn): this module hands it events and
takes events back, so every rule here is tested without a socket, as the websocket's are.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import h11

from .._version import __version__
from ..errors import (
    BasetenTTSError,
    ConnectError,
    FirstAudioTimeout,
    HandshakeTimeout,
    ReadTimeout,
    ServerError,
    StreamInterrupted,
)
from ..text import is_whole
from .base import AudioDecoder, Conversing, Outgoing, Received, Spec, Write
from .flush import Sentences, server_sentences
from .http import REQUEST, status_error
from .orpheus import SERVER_MAX_TOKENS, VOICES, segment_bytes
from .orpheus import SPEC as _ORPHEUS

if TYPE_CHECKING:
    from ..audio import Stats

DEFAULT_VOICE = "tara"
MAX_PROMPT = 280
"""Characters per request, at most: the model's own chunk size (max_chunk_size). A longer prompt the server
cuts into chunks itself, with a rule that never returns for many texts (a chunk it cuts before a comma, where
the next window finds no other place to cut: "…(280 characters)… Yes, it works." is one), hanging the replica;
a prompt this short it takes whole. So basetts cuts the text (at sentence ends, else after a comma, else between
words), and each request's audio plays while the next is made (docs/protocol.md, "Orpheus over HTTP")."""
MAX_HEADER = 65536
"""Bytes a response's head may take: more is not the model's server."""
MAX_ERROR_BODY = 65536
"""Bytes of an error's body kept for its message."""
_FIELDS = ("max_tokens", "temperature", "top_p", "repetition_penalty")
JSON_HINT = (" A deployment that answers JSON with a base64 WAV takes its model's protocol=: 'kokoro', 'chatterbox', "
             "'sesame', 'piper', 'xtts-v2', 'metavoice', or 'json-audio' with response_key= for another.")
"""What to set when a deployment taken for a streamed one answers JSON (json_audio's presets; a test keeps it so)."""
# The websocket's default max_tokens (Settings's): a budget per utterance there, but per 280-character chunk
# here, where the server's own default (6144) is what fits a chunk. Only a value the user chose is sent.
_WEBSOCKET_MAX_TOKENS = 2000
_ENDS = (".", "!", "?", "…", "。", "！", "？")
_PAUSES = (",", ";", ":", "—", "，", "；", "：")
_CLOSERS = "\"'”’)]"


def _may_end_sentence(word: str) -> bool:
    """Whether a sentence splitter could end a sentence after `word` (cheap: most words cannot)."""
    return word.rstrip(_CLOSERS).endswith(_ENDS)


def prompts(words: Iterable[str], sentences: Sentences, whole: bool, limit: int = MAX_PROMPT
            ) -> Iterator[Outgoing]:
    """The text's requests, in order, the last one marked, each at most `limit` characters. A whole text
    (`whole`) fills each request up to the limit, cut after its last sentence end (else after a pause, a
    comma or the like, else between words). Text arriving over time goes a sentence at a time, as soon as
    the next one begins (which is when the splitter knows the first has ended, as the websocket server's
    flush rule knows it). A word longer than the limit goes in pieces. Memory holds one request's words.
    Each request says how many words it and those before hold (`Outgoing.through`; None if it ends in a word)."""
    buffer: List[str] = []
    size = -1  # characters of " ".join(buffer)
    given = 0  # words whose every piece is in the buffer or sent
    for long_word in words:
        pieces = (long_word,) if len(long_word) <= limit else [
            long_word[i:i + limit] for i in range(0, len(long_word), limit)]
        for number, word in enumerate(pieces):
            while buffer and size + 1 + len(word) > limit:
                cut = _cut(buffer, sentences)
                yield Outgoing(" ".join(buffer[:cut]), True, through=_through(given, len(buffer) - cut, number > 0))
                buffer = buffer[cut:]
                size = len(" ".join(buffer)) if buffer else -1
            buffer.append(word)
            size += 1 + len(word)
            partial = number < len(pieces) - 1
            given += not partial
            if not whole and len(buffer) >= 2 and _may_end_sentence(buffer[-2]):
                cut = _last_sentence_end(buffer, sentences)
                if cut:
                    yield Outgoing(" ".join(buffer[:cut]), True, through=_through(given, len(buffer) - cut, partial))
                    buffer = buffer[cut:]
                    size = len(" ".join(buffer))
    yield Outgoing(" ".join(buffer), True, last=True, through=given)


def _through(given: int, left: int, partial: bool) -> Optional[int]:
    """The words a request holds with those before, when `left` pieces stay behind it (the last of them part of
    a word still being cut, if `partial`); None if it ends inside that word."""
    if partial and left == 0:
        return None
    return given - left + partial


def _cut(buffer: List[str], sentences: Sentences) -> int:
    """Where a full request ends: after its last sentence, else its last pause, else all of it."""
    if any(_may_end_sentence(word) for word in buffer[:-1]):
        cut = _last_sentence_end(buffer + ["X"], sentences)  # "X": a next sentence begins, as it will
        if cut:
            return cut
    for index in range(len(buffer) - 1, 0, -1):
        if buffer[index - 1].rstrip(_CLOSERS).endswith(_PAUSES):
            return index
    return len(buffer)


def _last_sentence_end(buffer: List[str], sentences: Sentences) -> int:
    """How many of `buffer`'s words end with its last complete sentence (0: none ends before the last word
    or the splitter cut inside a word, where no request can end)."""
    found = sentences(buffer)
    if len(found) < 2:
        return 0
    tail = found[-1]
    cut = len(buffer) - len(tail)
    return cut if tail and 0 < cut < len(buffer) and buffer[cut:] == tail else 0


def request_body(settings: Any, prompt: str) -> Dict[str, Any]:
    """The JSON the model's predict() reads: the prompt, the voice, and the sampling fields the user set."""
    body: Dict[str, Any] = {"prompt": prompt, "voice": settings.voice or DEFAULT_VOICE}
    for name in _FIELDS:
        value = getattr(settings, name)
        if value is not None and not (name == "max_tokens" and value == _WEBSOCKET_MAX_TOKENS):
            body[name] = value
    return body


class Utterance(Conversing):
    """One utterance as requests on one kept-alive connection: the next request goes once the one before
    has been answered whole (HTTP/1.1, no pipelining), so its audio still plays while the next is made.
    Each request is a unit: its response's end is where a lost connection resumes."""

    resumable = True
    controls = False

    def __init__(self, url: str, api_key: str, fields: Dict[str, Any], words: Iterable[str], *,
                 handshake_timeout: float, first_audio_timeout: float, read_timeout: float,
                 sentences: Optional[Sentences] = None, text_field: str = "prompt",
                 unit_bytes: Optional[int] = None, answer: Optional[Callable[[bytes], bytes]] = None,
                 max_answer: int = 0, serves: str = "an Orpheus TTS deployment that streams PCM "
                                                     "(orpheus-best-performance)") -> None:
        """`fields`: what every request's JSON carries besides the text, which goes in `text_field`;
        `unit_bytes`: the most audio one request can honestly make (default: Orpheus's, from max_tokens).
        `answer`: for a deployment that answers JSON (not streamed PCM), the audio of one whole answer (at
        most `max_answer` bytes; ValueError if it is not what it should be). `serves`: what the URL should
        be, for the error when the answer is not of that kind."""
        super().__init__(buffer_size=1, first_audio_timeout=first_audio_timeout, read_timeout=read_timeout,
                         max_message_size=MAX_HEADER, keepalive_timeout=20.0)
        parts = urlsplit(url)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host = parts.netloc.rpartition("@")[2]
        self._authorization = f"Api-Key {api_key}"
        self.fields = fields
        self.text_field = text_field
        # Per request: Orpheus cuts a prompt into chunks, but ours are at most one chunk long (MAX_PROMPT).
        self.unit_bytes = unit_bytes or segment_bytes(fields.get("max_tokens", SERVER_MAX_TOKENS))
        self.handshake_timeout = handshake_timeout
        whole = is_whole(words)
        self.messages = prompts(words, sentences or server_sentences(), whole)
        self.decoder = AudioDecoder("pcm_s16le")
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER)
        self.requests = 0
        self.answered = False
        """A 2xx head has come for the first request: the deployment took it (what `open()` waits for)."""
        self.input_tokens: Optional[int] = None
        """The server's X-Baseten-Input-Tokens, summed over the requests (the characters it was given)."""
        self._in_flight = False
        self._sent_at: Optional[float] = None  # when the request in flight went out, until its head came
        self._refusal: Optional[h11.Response] = None  # a non-2xx head, while its body comes
        self._body = bytearray()
        self._clean = False  # ended normally
        self._answer, self._max_answer, self._serves = answer, max_answer, serves
        self._whole = bytearray()  # with `answer`: the answer so far

    def __repr__(self) -> str:
        return f"<orpheus-http Utterance {self.host}{self.target} requests={self.requests}>"

    # sending ----------------------------------------------------------------------------------------------
    def may_send(self, now: float) -> bool:
        return not self.ended and not self._in_flight

    def send(self, messages: List[Outgoing], now: float) -> Write:
        """One request (`take` hands out one prompt at a time), as bytes; none for a text with no words."""
        if not messages:
            return Write(b"", [])
        message = messages[-1]
        if message.last:
            self.all_sent = True
        self.messages_sent += 1
        self.last_sent = now
        if not message.text:
            return Write(b"", [])
        body = json.dumps({**self.fields, self.text_field: message.text}, ensure_ascii=False).encode("utf-8")
        headers = [("Host", self.host), ("Authorization", self._authorization),
                   ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("User-Agent", f"basetts/{__version__}")]
        data = b"".join(self.http.send(event) or b"" for event in (
            h11.Request(method="POST", target=self.target, headers=headers), h11.Data(data=body),
            h11.EndOfMessage()))
        self.words_sent += len(message.text.split())
        self.requests += 1
        self.units_sent += 1
        self.unit_sent(message.through)
        self._in_flight = True
        self._sent_at = now
        return Write(data, [message.text])

    @property
    def finished(self) -> bool:
        """The text had no words: nothing was asked, nothing is owed (the driver ends the stream)."""
        return self.all_sent and self.requests == 0

    @property
    def reusable(self) -> bool:
        """Every response came whole and the server keeps the connection alive, with nothing more on it."""
        http = self.http
        return (self.ended and self._clean and http.our_state is h11.DONE and http.their_state is h11.DONE
                and not http.trailing_data[0])

    def data_to_send(self, now: float) -> Optional[Write]:
        return None  # HTTP has no pings, keepalives or close frames

    def wants_to_send(self, now: float) -> bool:
        return False

    # receiving --------------------------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> Received:
        """Bytes of the responses (b"" for the end of the connection)."""
        audio: List[bytes] = []
        try:
            self.http.receive_data(data)
            while True:
                event = self.http.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                ended = self._event(event, now, audio)
                if ended is not None:
                    return self._over(ended[0], b"".join(audio))
        except h11.RemoteProtocolError as exc:
            return self._over(self._broken(str(exc), bool(data)), b"".join(audio))
        acknowledged, self.progressed = self.progressed, False
        return Received(b"".join(audio), 0, acknowledged, False, None)

    def _event(self, event: Any, now: float, audio: List[bytes]
               ) -> Optional[Tuple[Optional[BasetenTTSError]]]:
        """Handle one h11 event; (the error or None) when the conversation is over, else None."""
        if isinstance(event, h11.Response):
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
            self._sent_at = None
            expected = _is_json(headers) if self._answer is not None else _is_audio(headers)
            if not 200 <= event.status_code < 300 or not expected:
                self._refusal = event
                return None
            self.answered = self.progressed = True  # open() waits for this
            self.deadlines.ping_sent(now)  # audio (or the response's end) is owed from now
            tokens = headers.get("x-baseten-input-tokens", "")
            if tokens.isdigit():
                self.input_tokens = (self.input_tokens or 0) + int(tokens)
        elif isinstance(event, h11.Data):
            if self._refusal is not None:
                if len(self._body) < MAX_ERROR_BODY:
                    self._body += event.data[:MAX_ERROR_BODY - len(self._body)]
                return None
            if self._answer is not None:
                self._whole += event.data
                if len(self._whole) > self._max_answer:
                    return (ServerError(f"The deployment's answer is over {self._max_answer} bytes (twice "
                                        "max_message_size) for one request: refused, not buffered."),)
                return None
            self.audio_messages += 1
            self.audio_bytes += len(event.data)
            if event.data:
                self.deadlines.audio_received(now, len(event.data))
                audio.append(self.decoder.feed(bytes(event.data)))
            excess = self.excess()
            if excess is not None:
                return (excess,)
        elif isinstance(event, h11.EndOfMessage):
            self._in_flight = False
            if self._refusal is not None:
                return (self._refused(),)
            if self._answer is not None:
                try:
                    pcm = self._answer(bytes(self._whole))
                except ValueError as exc:
                    return (ServerError(f"The deployment's answer is not {self._serves}'s: {exc}. Check the URL "
                                        "and protocol=."),)
                self._whole.clear()
                self.audio_messages += 1
                self.audio_bytes += len(pcm)
                if pcm:
                    self.deadlines.audio_received(now, len(pcm))
                    audio.append(self.decoder.feed(pcm))
                excess = self.excess()
                if excess is not None:
                    return (excess,)
            self.deadlines.pong_received(now, 0)  # nothing owed until the next request
            self.unit_done()
            if self.all_sent:
                return (None,)
            if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
                self.http.start_next_cycle()
                self.progressed = True  # the writer may send the next request
            else:
                return (StreamInterrupted(
                    "The server closed the connection after a response, before the rest of the text was "
                    f"sent ({self.requests} request(s) answered): the audio is incomplete."),)
        elif isinstance(event, h11.ConnectionClosed):
            return (self._broken("the connection closed", False),)
        return None

    def _refused(self) -> BasetenTTSError:
        response = self._refusal
        assert response is not None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        body = self._body.decode("utf-8", "replace")
        if 200 <= response.status_code < 300:
            kind = headers.get("content-type", "no content type")
            expected = "JSON" if self._answer is not None else "audio"
            hint = JSON_HINT if self._answer is None and "json" in kind.lower() else ""
            return StreamInterrupted(
                f"The deployment answered with {kind}, not {expected}: is it {self._serves}? Check the URL and "
                f"protocol=.{hint} It said: {body.strip()[:300]!r}")
        return status_error(response.status_code, headers, f"https://{self.host}{self.target}", REQUEST, body)

    def _broken(self, detail: str, got_data: bool) -> BasetenTTSError:
        """The connection ended, or its bytes are not HTTP: what that means where we are."""
        if self._refusal is not None:
            return self._refused()  # an error's body cut short: the status says it all
        if got_data:
            return StreamInterrupted(f"The server's answer is not valid HTTP ({detail}): the audio is incomplete.",
                                     recoverable=False)
        if not self._in_flight:
            return StreamInterrupted("The server closed the connection before the rest of the text was sent: "
                                     "the audio is incomplete.")
        if not self.answered:  # nothing heard yet (a kept-alive connection the server closed as the request went
            # out does this: `open_conversation` then tries again at once on a new one)
            return ConnectError("The connection closed before the server answered the request.", transient=True,
                                unanswered=True)
        if self._sent_at is not None:
            return StreamInterrupted("The connection dropped before the server answered the next request: "
                                     "the audio is incomplete.")
        unread = (" Before any audio: a streaming model fails so on a request it cannot read, so check that protocol="
                  " fits the deployment (the README lists which speaks what)." if not self.audio_bytes else "")
        return StreamInterrupted(
            "The server cut the response off before its end (no final chunk): the audio is incomplete. The "
            f"model failed mid-stream or the connection broke; check the deployment's logs if it persists.{unread}")

    def _over(self, error: Optional[BasetenTTSError], audio: bytes) -> Received:
        self.ended = True
        self._clean = error is None
        return Received(audio, 0, False, True, error)

    # deadlines --------------------------------------------------------------------------------------------
    def deadline(self) -> Optional[float]:
        """While a request waits for its head: `handshake_timeout` (a deployment scaled to zero holds it);
        then audio is owed as over the websocket."""
        if self._sent_at is not None:
            return self._sent_at + self.handshake_timeout
        return self.deadlines.deadline()

    def timeout_error(self, now: float) -> BasetenTTSError:
        if self._sent_at is not None:
            return HandshakeTimeout(f"The server did not answer the request within handshake_timeout="
                                    f"{self.handshake_timeout:g} s.")
        if self.deadlines.first_audio_owed:
            return FirstAudioTimeout(f"The server stopped sending: no audio within first_audio_timeout="
                                     f"{self.first_audio_timeout:g} s.")
        return ReadTimeout(f"The server stopped sending: no audio for read_timeout={self.read_timeout:g} s.")

    @property
    def first_audio_timeout(self) -> float:
        return self.deadlines.first_audio_timeout


def _is_json(headers: Dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower().endswith("json")


def _is_audio(headers: Dict[str, str]) -> bool:
    """The model's stream says "audio/wav" (or octet-stream through truss); a JSON or text body is not audio."""
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return not (kind.startswith("text/") or kind.endswith("json"))


class OrpheusHTTP(Spec):
    """Orpheus's performance-optimised deployment: POST …/predict, answered by streamed PCM."""

    name = "orpheus-http"
    fields = ("max_tokens", "temperature", "top_p", "repetition_penalty")
    upgrades = False
    schemes = ("http", "https")
    spare_max_age = 4.0
    """uvicorn closes a kept-alive connection idle for 5 s (its timeout_keep_alive): a spare older than
    this may be closing as the request goes out."""

    def voice(self, voice: Optional[str]) -> Optional[str]:
        return _ORPHEUS.voice(voice)

    def voices(self) -> List[str]:
        return _ORPHEUS.voices()

    def check(self, settings: Any) -> None:
        _ORPHEUS.check(settings)

    def first_message(self, settings: Any) -> Dict[str, Any]:
        """What every request carries besides its prompt."""
        body = request_body(settings, "")
        del body["prompt"]
        return body

    def utterance(self, settings: Any, words: Iterable[str], stats: "Stats") -> Conversing:
        return Utterance(settings.url, settings.api_key, self.first_message(settings), words,
                         handshake_timeout=settings.handshake_timeout,
                         first_audio_timeout=settings.first_audio_timeout, read_timeout=settings.read_timeout)


SPEC = OrpheusHTTP()
__all__ = ["DEFAULT_VOICE", "MAX_PROMPT", "SPEC", "VOICES", "Utterance", "prompts", "request_body"]
