"""The local server's Orpheus websocket handler (truss-examples orpheus-3b-websockets): settings first, the
server's flush rule with pysbd's sentences (one action per message, the words it deletes), nothing read while a
segment is generated, close 1000 after the sentinel and 1011 on a bad first message or settings the sampler
refuses; uvicorn's timing around it is `transport`'s."""
from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol

from ..protocols import flush
from ..protocols.orpheus import SENTINEL
from .faults import ConversationRecord, Dropped, Faults
from .transport import Closed, Connection, Idle

if TYPE_CHECKING:
    from .sender import Sender


class Model(Protocol):
    """What the handler reads of its server (a `LocalServer`): the fault plan and the sentence splitter."""

    faults: Faults
    sentences: flush.Sentences

log = logging.getLogger("basetts.server")

DEFAULTS = {"voice": "tara", "max_tokens": 6144, "temperature": 0.6, "top_p": 0.8,
            "repetition_penalty": 1.3, "buffer_size": 10, "encoding": "pcm_s16le"}
HANDLER_ERROR = "Internal Server Error (in model/chainlet)."
"""truss's word for a model that raised: its close reason (1011), and its 500's JSON on the predict route."""


def sampling_problem(settings: Dict[str, Any]) -> Optional[str]:
    """Why the real server's sampler would refuse these settings at its first generation, or None. The
    checks are vLLM's SamplingParams ones (*inferred*: the deployment runs Orpheus on vLLM)."""
    def number(name: str) -> Optional[float]:
        value = settings[name]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    temperature, top_p, penalty = number("temperature"), number("top_p"), number("repetition_penalty")
    max_tokens = settings["max_tokens"]
    if temperature is None or temperature < 0:
        return f"temperature must be a number >= 0, got {settings['temperature']!r}"
    if top_p is None or not 0 < top_p <= 1:
        return f"top_p must be in (0, 1], got {settings['top_p']!r}"
    if penalty is None or penalty <= 0:
        return f"repetition_penalty must be > 0, got {settings['repetition_penalty']!r}"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return f"max_tokens must be an integer >= 1, got {max_tokens!r}"
    return None


def serve(server: Model, connection: Connection, record: ConversationRecord, sender: "Sender") -> None:
    """One websocket conversation, as the model's handler has it."""
    try:
        try:
            first = connection.recv()
            record.first_message_at = time.monotonic()
            params = json.loads(first) if isinstance(first, str) else None
            if not isinstance(params, dict):
                raise ValueError("the first message must be a JSON object")
            record.settings = params
            settings = {**DEFAULTS, **params}
            buffer_size = int(settings["buffer_size"])
        except (ValueError, TypeError):
            connection.close(1011, HANDLER_ERROR)
            record.close_code = 1011
            return
        encoding = str(settings["encoding"])
        problem = sampling_problem(settings)  # raised by the real server at its first generation
        buffer: List[str] = []
        sentences = server.sentences

        def take(final: bool) -> Optional[List[str]]:
            """The real server's flush: the words to speak now, losing what it loses."""
            done = flush.flush(buffer, buffer_size, final, sentences)
            if done is None:
                return None
            if done.lost:
                log.debug("local server: %r removed unspoken, as the real server does", done.lost)
                record.lost.append(done.lost)
            return done.spoken

        def generate(segment: List[str]) -> bool:
            """Speak `segment`; False (after a 1011) when the sampler refuses the settings."""
            if problem is not None:
                log.debug("local server: %s", problem)
                connection.close(1011, HANDLER_ERROR)
                record.close_code = 1011
                return False
            sender.generate(segment, encoding)
            return True
        try:
            while True:
                try:
                    message = connection.recv(server.faults.idle_timeout)
                except Idle:
                    connection.close(1001, "idle timeout")
                    record.close_code = 1001
                    return
                if isinstance(message, bytes):
                    connection.close(1011, HANDLER_ERROR)
                    record.close_code = 1011
                    return
                record.messages.append(message)
                if message == SENTINEL:
                    if sender.faults.silent:
                        connection.recv()  # never answers: waits for the client to give up
                    segment = take(final=True)
                    if segment is None:
                        record.close_code = 1000  # the handler ends; the framework closes
                        return
                    if not generate(segment):
                        return
                    connection.close(1000)
                    record.close_code = 1000
                    record.explicit_close = True
                    return
                buffer.extend(message.strip().split())
                segment = take(final=False)
                if segment is not None and not generate(segment):
                    return
        except Closed:
            # Like the real server: the client left early; it still "generates" what it had.
            record.client_disconnected = True
            segment = take(final=True)
            if segment is not None:
                record.segments.append(segment)
    except Dropped:
        pass
    except Closed:
        record.client_disconnected = True
