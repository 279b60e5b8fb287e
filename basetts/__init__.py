"""basetts: text to speech through Baseten's streaming websockets (Orpheus TTS, Qwen3-TTS), in one blocking call."""
import logging
from typing import TYPE_CHECKING, List

from ._version import __version__
from .audio import Audio, Sentence, Stats, Word
from .errors import (
    AudioDeviceError,
    AuthenticationError,
    BasetenTTSError,
    BasettsWarning,
    ConfigurationError,
    ConnectError,
    HandshakeError,
    ModelNotFoundError,
    SentenceError,
    ServerError,
    StreamInterrupted,
    TimeoutError,
    VoiceError,
)
from .playback import Playback, play
from .settings import EMOTION_TAGS, PROTOCOLS, VOICES, Settings
from .synthesizer import Synthesizer

if TYPE_CHECKING:
    from .portaudio import Device


def devices() -> List["Device"]:
    """The audio output devices `speak(output_device=...)` can use (imports PyAudio only when called)."""
    from .portaudio import devices as _devices

    return _devices()


logging.getLogger("basetts").addHandler(logging.NullHandler())

__all__ = [
    "__version__", "Audio", "Stats", "BasettsWarning", "Settings", "Synthesizer", "VOICES", "EMOTION_TAGS",
    "BasetenTTSError", "ConfigurationError", "ConnectError", "HandshakeError", "AuthenticationError",
    "ModelNotFoundError", "ServerError", "TimeoutError", "StreamInterrupted", "AudioDeviceError", "devices",
    "play", "Playback", "PROTOCOLS", "Word", "Sentence", "SentenceError", "VoiceError",
]
