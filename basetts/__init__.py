"""basetts: text to speech through Baseten's streaming websocket (Orpheus TTS), in one blocking call."""
import logging

from ._version import __version__
from .audio import Audio, Stats
from .errors import (
    AudioDeviceError,
    AuthenticationError,
    BasetenTTSError,
    ConfigurationError,
    ConnectError,
    HandshakeError,
    ModelNotFoundError,
    ServerError,
    StreamInterrupted,
    TimeoutError,
)
from .settings import EMOTION_TAGS, VOICES, Settings
from .synthesizer import Synthesizer

logging.getLogger("basetts").addHandler(logging.NullHandler())

__all__ = [
    "__version__", "Audio", "Stats", "Settings", "Synthesizer", "VOICES", "EMOTION_TAGS",
    "BasetenTTSError", "ConfigurationError", "ConnectError", "HandshakeError", "AuthenticationError",
    "ModelNotFoundError", "ServerError", "TimeoutError", "StreamInterrupted", "AudioDeviceError",
]
