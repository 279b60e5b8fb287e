"""`Voices`: Qwen3-TTS's voice management (voice.list, voice.add, voice.remove), one short connection per
request. The server keeps added voices on the replica that took them, until it restarts."""
from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
import wave
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from .errors import BasetenTTSError, ConfigurationError, StreamInterrupted, VoiceError
from .net import transport
from .protocols import qwen3

if TYPE_CHECKING:
    import os

    from .audio import Audio
    from .settings import Settings


@dataclasses.dataclass(frozen=True)
class Voice:
    """A voice the server knows: added (with what it said of it), or built into the model."""

    name: str
    added: bool = True
    consent: Optional[str] = None
    created_at: Optional[float] = None
    file_size: Optional[int] = None
    mime_type: Optional[str] = None
    ref_text: Optional[str] = None
    description: Optional[str] = None

    @classmethod
    def of(cls, info: Dict[str, Any]) -> "Voice":
        return cls(name=str(info.get("name", "")), consent=info.get("consent"), created_at=info.get("created_at"),
                   file_size=info.get("file_size"), mime_type=info.get("mime_type"), ref_text=info.get("ref_text"),
                   description=info.get("speaker_description"))


class Voices:
    """``synth.voices``: list, add and remove the deployment's voices (Qwen3-TTS only). Names are
    case-insensitive. Each call is one connection, bounded by the Synthesizer's timeouts."""

    def __init__(self, settings: "Settings") -> None:
        self._settings = settings

    def list(self) -> List[Voice]:
        """Every voice: those added (with their details), then the model's own."""
        reply = self._request('{"type": "voice.list"}', "voice.list.result")
        added = [Voice.of(info) for info in reply.get("uploaded_voices") or [] if isinstance(info, dict)]
        names = {voice.name.lower() for voice in added}
        builtin = [Voice(str(name), added=False) for name in reply.get("voices") or []
                   if str(name).lower() not in names]
        return added + builtin

    def add(self, name: str, audio: Union["Audio", bytes, str, "os.PathLike[str]"], *, consent: str,
            ref_text: Optional[str] = None, description: Optional[str] = None) -> Voice:
        """Add a voice from 1-30 s of clear speech (an `Audio`, a file's bytes or its path: WAV, FLAC, Ogg or
        MP3). `consent`: the id of the speaker's recorded consent (the server requires one). `ref_text`:
        what the clip says, for in-context cloning (better likeness). Then ``voice=name`` speaks with it."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("a voice needs a name (a non-empty string)")
        if not isinstance(consent, str) or not consent.strip():
            raise ConfigurationError("consent= is required: the id of the speaker's recorded consent to be cloned")
        data = qwen3.audio_bytes(audio)
        if len(data) > qwen3.MAX_VOICE_FILE:
            raise ConfigurationError(f"the clip is over {qwen3.MAX_VOICE_FILE // 2 ** 20} MB, the server's limit: "
                                     f"use {qwen3.VOICE_SECONDS[0]:g}-{qwen3.VOICE_SECONDS[1]:g} s of speech")
        _check_length(data)
        reply = self._request(qwen3.voice_add_message(name, data, consent, ref_text, description), "voice.add.result")
        return Voice.of(reply.get("voice") or {"name": name})

    def remove(self, name: str) -> None:
        """Remove an added voice; `VoiceError` if the server has none of that name."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("remove() needs the voice's name")
        self._request(json.dumps({"type": "voice.remove", "name": name}), "voice.remove.result")

    def _request(self, message: str, wanted: str) -> Dict[str, Any]:
        """One request and its reply over a connection of its own (`qwen3.VoiceRequest` says what to write
        and what came); the whole exchange within read_timeout."""
        settings = self._settings
        if settings.protocol != qwen3.SPEC.name:
            raise ConfigurationError("voices are Qwen3-TTS's: pass protocol='qwen3' (or set BASETTS_PROTOCOL=qwen3)")
        request = qwen3.VoiceRequest(message, wanted, max_message_size=settings.max_message_size,
                                     read_timeout=settings.read_timeout)
        sock = transport.open_socket(settings)
        deadline = time.monotonic() + settings.read_timeout
        try:
            sock.write(memoryview(request.data_to_send()), threading.Event(), deadline)
            data: Optional[bytes] = sock.take_buffered() or None
            while True:
                reply = None if data is None else request.receive(data, time.monotonic())
                out = request.data_to_send()
                if out:
                    sock.try_write(out)
                if reply is not None:
                    return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    raise request.timeout_error()
                data = sock.read(transport.READ_SIZE, left)  # None: nothing yet; b"": the end
        except BasetenTTSError:
            raise
        except OSError as exc:  # (ours are OSErrors too: a TimeoutError is one)
            raise StreamInterrupted(f"The connection failed: {exc}.") from None
        finally:
            sock.try_write(request.finish())
            sock.close()


def _check_length(data: bytes) -> None:
    """A WAV clip's length, checked as the server checks it (other formats: the server decides)."""
    if not data.startswith(b"RIFF"):
        return
    try:
        with wave.open(io.BytesIO(data)) as clip:
            seconds = clip.getnframes() / clip.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        raise ConfigurationError("the voice's WAV file is not readable") from None
    low, high = qwen3.VOICE_SECONDS
    if not low <= seconds <= high:
        raise ConfigurationError(f"the clip is {seconds:.1f} s: a voice needs {low:g}-{high:g} s of clear speech")


__all__ = ["Voice", "Voices", "VoiceError"]
