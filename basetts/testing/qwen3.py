"""The local server's Qwen3-TTS handler: Baseten's fork of vLLM-Omni (`serving_speech_stream.py`) as the
real one behaves, with the tone engine instead of a model.

What it reproduces (docs/protocol.md, "Qwen3-TTS"): voice.* requests before and after the config; the
config within `config_timeout` of the upgrade, checked as the server's pydantic model checks it; the
server's sentence splitter (`basetts.qwen3.Splitter`), each sentence generated as soon as it is complete,
nothing read meanwhile; audio.start / binary PCM / audio.done per sentence, word times counted from the
session's first sample (sync: in audio.done; async: `timestamps` events before session.done); errors as
`error` events: per sentence (an unknown voice, a bad language, a Base model without a reference) or
ending the session (a bad config, the config deadline, the idle timeout, a binary message, an over-full
buffer, timestamps without an aligner), after which the connection ends as `session_end` says; session.done
and close 1000 after input.done. Voices live in the `LocalServer` (one replica), lost when it stops.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
import wave
from typing import Any, Dict, List, NoReturn, Optional, Protocol, Tuple

from ..pcm import SAMPLE_RATE
from ..protocols.qwen3 import (
    CONFIG_TIMEOUT,
    IDLE_TIMEOUT,
    LANGUAGES,
    MAX_CONFIG_MESSAGE,
    MAX_NEW_TOKENS,
    MAX_TEXT_MESSAGE,
    MAX_VOICE_ADD_MESSAGE,
    MAX_VOICE_FILE,
    TASK_TYPES,
    VOICE_SECONDS,
    BufferOverflow,
    Splitter,
)
from .faults import ConversationRecord, Faults
from .sender import Sender
from .transport import Closed, Connection, Idle

log = logging.getLogger("basetts.server")

SESSION_ENDS = ("drop", "close", "open")
"""How a connection ends after an error that ends the session: the handler returns without closing, and
what follows depends on the server's framework: no close frame (as the issue's deployments show), a
close 1000 (uvicorn 0.40's), or nothing until the client closes (older uvicorn keeps it open)."""
_FORMATS = ("wav", "pcm", "flac", "mp3", "aac", "opus")
_MIME = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "aac": "audio/aac",
         "webm": "audio/webm", "mp4": "audio/mp4"}


class Replica(Protocol):
    """What a Qwen3 session reads of its server (a `LocalServer`): one replica's model and voices."""

    aligner: bool
    config_timeout: float
    idle_timeout: float
    faults: Faults
    session_end: str
    speakers: Tuple[str, ...]
    task_type: str
    voices: Dict[str, Dict[str, Any]]

    def render(self, words: List[str], encoding: str = "pcm_s16le") -> bytes: ...


class SessionEnded(Exception):
    """An error event that ends the session was sent."""


def config_problem(message: Dict[str, Any]) -> Optional[str]:
    """Why the server's config model refuses `message`, or None (unknown fields are ignored)."""
    def kind(name: str, types: Tuple[type, ...], allowed: Optional[Tuple[Any, ...]] = None) -> Optional[str]:
        value = message.get(name)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in types:
            return f"{name}: Input should be a valid {types[0].__name__}"
        if not isinstance(value, types):
            return f"{name}: Input should be a valid {types[0].__name__}"
        if allowed is not None and value not in allowed:
            return f"{name}: Input should be {' or '.join(repr(a) for a in allowed)}"
        return None

    checks = [kind("model", (str,)), kind("voice", (str,)), kind("task_type", (str,), TASK_TYPES),
              kind("language", (str,)), kind("instructions", (str,)), kind("response_format", (str,), _FORMATS),
              kind("speed", (float, int)), kind("max_new_tokens", (int,)), kind("initial_codec_chunk_frames", (int,)),
              kind("ref_audio", (str,)), kind("ref_text", (str,)), kind("x_vector_only_mode", (bool,)),
              kind("stream_audio", (bool,)), kind("split_granularity", (str,), ("sentence", "clause")),
              kind("timestamp_type", (str,), ("word",)),
              kind("timestamp_transport_strategy", (str,), ("sync", "async"))]
    problem = next((c for c in checks if c is not None), None)
    if problem is not None:
        return problem
    speed = message.get("speed", 1.0)
    if speed is not None and not 0.25 <= speed <= 4.0:
        return "speed: Input should be between 0.25 and 4"
    if message.get("max_new_tokens") is not None and message["max_new_tokens"] < 1:
        return "max_new_tokens: Input should be greater than or equal to 1"
    if message.get("initial_codec_chunk_frames") is not None and message["initial_codec_chunk_frames"] < 0:
        return "initial_codec_chunk_frames: Input should be greater than or equal to 0"
    if message.get("stream_audio"):
        if message.get("response_format", "wav") != "pcm":
            return ("Value error, WebSocket streaming audio (stream_audio=true) requires response_format='pcm'. "
                    f"Got response_format='{message.get('response_format', 'wav')}'.")
        if speed is not None and speed != 1.0:
            return "Value error, Speed adjustment is not supported when stream_audio=true. Set speed=1.0 or omit it."
    return None


class Qwen3Session:
    """One connection's session, run in the connection's handler thread."""

    def __init__(self, server: "Replica", connection: Connection, record: ConversationRecord,
                 sender: Sender) -> None:
        self.server = server
        self.connection = connection
        self.record = record
        self.sender = sender
        self.config: Dict[str, Any] = {}
        self.offset = 0.0  # seconds of audio sent in this session: the word times count from its start
        self.pending: List[Tuple[int, Dict[str, Any]]] = []  # async timestamps, sent before session.done

    # sending ------------------------------------------------------------------------------------------------
    def send(self, event: Dict[str, Any]) -> None:
        self.record.events.append(event)
        self.connection.send(json.dumps(event))

    def error(self, message: str) -> None:
        self.send({"type": "error", "message": message})

    def end(self, message: str) -> NoReturn:
        """An error that ends the session."""
        self.error(message)
        self.record.error = message
        raise SessionEnded()

    # the session ------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except SessionEnded:
            self._after_session_error()
        except Closed:
            self.record.client_disconnected = True

    def _after_session_error(self) -> None:
        how = self.server.session_end
        if how == "drop":
            self.connection.end("shutdown")  # no close frame
            self.record.close_code = None
        elif how == "open":  # nothing more is read or said; the connection lives until the client closes
            try:
                while True:
                    self.connection.recv()
            except Closed:
                self.record.client_disconnected = True
        else:
            self.record.close_code = 1000  # the framework closes when the handler returns

    def _run(self) -> None:
        self._receive_config()
        if self.config.get("timestamp_type") is not None and not self.server.aligner:
            self.end("Timestamps requested but no ForcedAligner is loaded. "
                     "Start the server with FORCED_ALIGNER_MODEL set.")
        splitter = Splitter(clause=self.config.get("split_granularity") == "clause")
        index = 0
        while True:
            raw = self._receive(self.server.idle_timeout, "Idle timeout: no message received")
            message = self._parse(raw, "Invalid JSON message", "WebSocket messages must be JSON objects")
            if message is None:
                continue
            kind = message.get("type")
            if kind == "input.text":
                if len(raw) > MAX_TEXT_MESSAGE:
                    self.error("input.text message too large")
                    continue
                text = message.get("text", "")
                if not isinstance(text, str):
                    self.error("input.text requires a string value")
                    continue
                self.record.messages.append(text)
                try:
                    sentences = splitter.add(text)
                except BufferOverflow as exc:
                    self.end(f"Internal error: {exc}")
                for sentence in sentences:
                    self._generate(sentence, index)
                    index += 1
            elif kind == "input.done":
                rest = splitter.flush()
                if rest:
                    self._generate(rest, index)
                    index += 1
                for sentence_index, info in self.pending:
                    self.send({"type": "timestamps", "sentence_index": sentence_index, "timestamp_info": info})
                self.send({"type": "session.done", "total_sentences": index})
                self.record.close_code = 1000
                self.record.explicit_close = True
                self.connection.close(1000)
                return
            elif kind in ("voice.list", "voice.add", "voice.remove"):
                if kind == "voice.add" and len(raw) > MAX_VOICE_ADD_MESSAGE:
                    self.error("voice.add message too large")
                    continue
                self._voice(message)
            else:
                self.error(f"Unknown message type: {kind}")

    def _receive(self, timeout: float, idle: str) -> str:
        try:
            raw = self.connection.recv(max(timeout, 0.0))
        except Idle:
            self.end(idle)
        if isinstance(raw, bytes):  # the server reads text: a binary message fails the handler
            self.end("Internal error: 'text'")
        return raw

    def _parse(self, raw: str, invalid: str, not_object: str) -> Optional[Dict[str, Any]]:
        try:
            message = json.loads(raw)
        except ValueError:
            self.error(invalid)
            return None
        if not isinstance(message, dict):
            self.error(not_object)
            return None
        return message

    def _receive_config(self) -> None:
        deadline = time.monotonic() + self.server.config_timeout
        while True:
            raw = self._receive(deadline - time.monotonic(), "Timeout waiting for session.config")
            message = self._parse(raw, "Invalid JSON", "Messages must be JSON objects")
            if message is None:
                continue
            kind = message.get("type")
            if kind in ("voice.list", "voice.add", "voice.remove"):
                if kind == "voice.add" and len(raw) > MAX_VOICE_ADD_MESSAGE:
                    self.error("voice.add message too large")
                    continue
                self._voice(message)
                continue
            if len(raw) > MAX_CONFIG_MESSAGE:
                self.end("session.config message too large")
            if kind != "session.config":
                self.end(f"Expected session.config or voice.*, got: {kind}")
            problem = config_problem(message)
            if problem is not None:
                self.end(f"Invalid session config: 1 validation error for StreamingSpeechSessionConfig\n{problem}")
            self.config = message
            self.record.settings = message
            return

    # generating -------------------------------------------------------------------------------------------
    def _sentence_problem(self) -> Optional[str]:
        """Why the model refuses the config for a sentence (checked per request, as the server does)."""
        config, voices = self.config, self.server.voices
        language = config.get("language")
        if language is not None and language not in LANGUAGES:
            return f"Invalid language '{language}'. Supported: {', '.join(sorted(LANGUAGES))}"
        task = config.get("task_type") or self.server.task_type
        voice = config.get("voice")
        voice = voice.lower() if isinstance(voice, str) else None
        if task == "CustomVoice":
            if not self.server.speakers:
                return ("This model does not support CustomVoice task (no speakers configured). Use "
                        "task_type='Base' with ref_audio/ref_text for voice cloning, or use a CustomVoice model.")
            if voice is not None and voice not in self.server.speakers and voice not in voices:
                supported = sorted(set(self.server.speakers) | set(voices))
                return f"Invalid voice '{config['voice']}'. Supported: {', '.join(supported)}"
        if task == "Base" and (voice is None or voice not in voices):
            ref_audio = config.get("ref_audio")
            if ref_audio is None:
                if voice is None:
                    return "Base task requires 'ref_audio' or 'speaker_embedding' for voice cloning"
                return f"Base task with built-in speaker '{config['voice']}' requires 'ref_audio' for voice cloning"
            if not ref_audio.startswith(("http://", "https://", "data:", "file://")):
                return "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)"
            if not config.get("x_vector_only_mode") and not (config.get("ref_text") or "").strip():
                return ("Base task requires non-empty 'ref_text' (transcript of the reference audio) "
                        "unless 'x_vector_only_mode' is enabled")
        if task != "Base":
            for name in ("ref_text", "x_vector_only_mode"):
                if config.get(name) is not None:
                    return f"'{name}' is only valid for Base task"
        if task == "VoiceDesign" and not config.get("instructions"):
            return "VoiceDesign task requires 'instructions' to describe the voice"
        if config.get("max_new_tokens") is not None and config["max_new_tokens"] > MAX_NEW_TOKENS:
            return f"max_new_tokens cannot exceed {MAX_NEW_TOKENS}"
        return None

    def _generate(self, sentence: str, index: int) -> None:
        config, server = self.config, self.server
        streaming = bool(config.get("stream_audio"))
        response_format = config.get("response_format") or "wav"
        start: Dict[str, Any] = {"type": "audio.start", "sentence_index": index, "sentence_text": sentence,
                                 "format": response_format}
        if streaming and response_format == "pcm":
            start["sample_rate"] = SAMPLE_RATE
        self.send(start)
        self.record.sentences.append(sentence)
        words = sentence.split()
        problem = self._sentence_problem()
        if problem is None and index == server.faults.fail_sentence:
            problem = "CUDA error: an illegal memory access was encountered (fault injection)"
        if problem is None and not streaming and response_format not in ("wav", "pcm"):
            problem = f"the local server does not encode {response_format}"
        pcm = b"" if problem is not None else server.render(words)
        sent = 0
        if problem is None:
            self.record.segments.append(words)
            if streaming:
                self.sender.speak(pcm)
            else:
                from ..audio import wav_header

                whole = pcm if response_format == "pcm" else wav_header(len(pcm)) + pcm
                self.sender.speak(whole)
            sent = len(pcm)
        else:
            self.error(f"Generation failed for sentence {index}: {problem}")
        done: Dict[str, Any] = {"type": "audio.done", "sentence_index": index, "total_bytes": sent,
                                "error": problem is not None}
        if problem is None and config.get("timestamp_type") is not None:
            info = self._alignment(words, len(pcm) / 2 / SAMPLE_RATE)
            if config.get("timestamp_transport_strategy", "sync") == "async":
                self.pending.append((index, info))
            else:
                done["timestamp_info"] = info
        self.offset += len(pcm) / 2 / SAMPLE_RATE
        self.send(done)

    def _alignment(self, words: List[str], seconds: float) -> Dict[str, Any]:
        """The aligner's answer for a sentence, from the session's first sample: an equal share of the
        sentence's audio per word (with the tone engine, exactly each word's tone)."""
        length = seconds / max(1, len(words))
        starts = [round(self.offset + i * length, 4) for i in range(len(words))]
        ends = [round(self.offset + (i + 1) * length, 4) for i in range(len(words))]
        return {"word_alignment": {"words": list(words), "word_start_times_seconds": starts,
                                   "word_end_times_seconds": ends}}

    # voices -----------------------------------------------------------------------------------------------
    def _voice(self, message: Dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "voice.list":
            names = sorted(set(self.server.speakers) | set(self.server.voices))
            self.send({"type": "voice.list.result", "voices": names,
                       "uploaded_voices": [dict(info) for info in self.server.voices.values()]})
            return
        name = message.get("name")
        if not name or not isinstance(name, str):
            self.error(f"{kind} requires a 'name' string")
            return
        if kind == "voice.remove":
            removed = self.server.voices.pop(name.lower(), None) is not None
            reply: Dict[str, Any] = {"type": "voice.remove.result", "success": removed, "name": name}
            if not removed:
                reply["error"] = f"Voice '{name}' not found"
            self.send(reply)
            return
        consent = message.get("consent")
        if not consent or not isinstance(consent, str):
            self.error("voice.add requires a 'consent' string")
            return
        if message.get("audio_data") is None:
            self.error("voice.add requires either 'audio_data' (base64) or 'speaker_embedding'")
            return
        try:
            info = self._add_voice(name, consent, message)
        except ValueError as exc:
            self.send({"type": "voice.add.result", "success": False, "error": str(exc)})
            return
        self.send({"type": "voice.add.result", "success": True, "voice": info})

    def _add_voice(self, name: str, consent: str, message: Dict[str, Any]) -> Dict[str, Any]:
        try:
            data = base64.b64decode(message["audio_data"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise ValueError(f"Failed to add voice: {exc}") from None
        if len(data) > MAX_VOICE_FILE:
            raise ValueError(f"File size exceeds maximum limit of 10MB. Got {len(data)} bytes.")
        audio_format = message.get("audio_format", "wav")
        mime = _MIME.get(audio_format, "application/octet-stream")
        if mime == "application/octet-stream":
            mime = "audio/wav"  # the server goes by the file name, "{name}.{format}", then defaults
        if name.lower() in self.server.voices:
            raise ValueError(f"Voice '{name}' already exists. To re-register this voice, delete it first and "
                             "then upload it again.")
        if mime == "audio/wav":
            try:
                with wave.open(io.BytesIO(data)) as clip:
                    seconds = clip.getnframes() / clip.getframerate()
            except (wave.Error, EOFError, ZeroDivisionError):
                seconds = None  # the server logs that it could not check the length, and goes on
            if seconds is not None and seconds < VOICE_SECONDS[0]:
                raise ValueError(f"Reference audio too short ({seconds:.1f}s). At least "
                                 f"{VOICE_SECONDS[0]:.0f}s of clear speech is required.")
            if seconds is not None and seconds > VOICE_SECONDS[1]:
                raise ValueError(f"Reference audio too long ({seconds:.1f}s). Maximum {VOICE_SECONDS[1]:.0f}s "
                                 "supported — use a shorter clip.")
        info: Dict[str, Any] = {"name": name, "consent": consent, "created_at": int(time.time()), "mime_type": mime,
                                "file_size": len(data)}
        ref_text = (message.get("ref_text") or "").strip()
        description = (message.get("speaker_description") or "").strip()
        if ref_text:
            info["ref_text"] = ref_text
        if description:
            info["speaker_description"] = description
        self.server.voices[name.lower()] = info
        return dict(info)


__all__ = ["Qwen3Session", "SESSION_ENDS", "CONFIG_TIMEOUT", "IDLE_TIMEOUT", "config_problem"]
