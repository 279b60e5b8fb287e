"""A local server that speaks Baseten's TTS websocket protocol, for tests, demos and offline work."""
from .server import Faults, LocalServer, flush_rule, split_sentences, tone_pcm

__all__ = ["Faults", "LocalServer", "flush_rule", "split_sentences", "tone_pcm"]
