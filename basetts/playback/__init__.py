"""Playback: PortAudio (`portaudio`), the callback stream fed from a ring (`player`), and the handle users
hold (`handle`: `Playback`, `play`)."""
from .handle import Playback, play, playback_of
from .player import CALLBACK_SECONDS, DEFAULT_PREBUFFER, FADE_SECONDS, MAX_BUFFERED, Player

__all__ = ["CALLBACK_SECONDS", "DEFAULT_PREBUFFER", "FADE_SECONDS", "MAX_BUFFERED", "Playback", "Player",
           "play", "playback_of"]
