"""basetts: text to speech through Baseten's text-to-speech deployments (Orpheus TTS over its websocket or HTTP,
Qwen3-TTS, the HTTP TTS trusses), in one blocking call."""
import logging
from typing import List

from ._version import __version__
from .audio import Audio, Saved, Sentence, Stats, Timeline, Word
from .batch import Progress, Result
from .errors import (
    ArgumentTypeError,
    AudioDeviceError,
    AuthenticationError,
    BasetenTTSError,
    BasettsWarning,
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    FirstAudioTimeout,
    HandshakeError,
    HandshakeTimeout,
    InvalidText,
    ModelNotFoundError,
    OutputError,
    ReadTimeout,
    RedirectRefused,
    SentenceError,
    ServerError,
    ServerUnavailable,
    SessionEnded,
    StreamInterrupted,
    TimeoutError,
    UnexpectedResponse,
    VoiceError,
)
from .playback import Playback, play
from .playback.portaudio import Device
from .protocols.orpheus import EMOTION_TAGS, VOICES
from .session import Session
from .settings import PROTOCOLS, CallSettings, Settings
from .synthesizer import Synthesizer
from .voices import Voice, Voices


def devices() -> List[Device]:
    """The audio output devices `speak(output_device=...)` can use (imports PyAudio only when called)."""
    from .playback.portaudio import devices as _devices

    return _devices()


logging.getLogger("basetts").addHandler(logging.NullHandler())

__all__ = [
    "__version__", "Audio", "Stats", "Timeline", "Word", "Sentence", "Saved", "BasettsWarning", "Settings",
    "CallSettings", "Synthesizer", "Session", "Playback", "play", "Result", "Progress", "Voice", "Voices",
    "Device", "devices", "VOICES", "EMOTION_TAGS", "PROTOCOLS",
    "BasetenTTSError", "ConfigurationError", "InvalidText", "ArgumentTypeError", "ConnectError",
    "HandshakeError", "AuthenticationError", "ModelNotFoundError", "ServerUnavailable", "RedirectRefused",
    "UnexpectedResponse", "ServerError", "SentenceError", "VoiceError", "TimeoutError", "ConnectTimeout",
    "HandshakeTimeout", "FirstAudioTimeout", "ReadTimeout", "StreamInterrupted", "SessionEnded", "AudioDeviceError",
    "OutputError",
]
