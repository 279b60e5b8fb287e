"""The audio a local server sends: the deterministic tone engine and espeak-ng, the server's μ-law, and
`Sender`, which sends one conversation's audio in messages, paced, with the fault plan applied."""
from __future__ import annotations

import array
import functools
import math
import random
import subprocess
import time
import zlib
from typing import List, Optional, Protocol

from ..pcm import SAMPLE_RATE
from ..playback.resample import resample
from .faults import ConversationRecord, Dropped, Faults
from .transport import Connection

# One SNAC window per message, as the real server sends: a segment's audio is whole windows. The tone
# engine's words are one window each by default; a test that asks for another length gets a segment's
# last message holding what is left. espeak's speech is padded with silence to whole windows.
WINDOW_SAMPLES = 2048


@functools.lru_cache(maxsize=4096)
def tone_pcm(word: str, samples: int = WINDOW_SAMPLES) -> bytes:
    """The deterministic audio for one word: a faded sine whose pitch comes from the word's CRC."""
    frequency = 200 + zlib.crc32(word.encode("utf-8")) % 800
    fade = min(120, samples // 4)
    out = array.array("h", bytes(2 * samples))
    step = 2 * math.pi * frequency / SAMPLE_RATE
    for i in range(samples):
        envelope = min(1.0, i / fade, (samples - 1 - i) / fade) if fade else 1.0
        out[i] = int(9000 * envelope * math.sin(step * i))
    return out.tobytes()


def espeak_pcm(text: str, voice: str = "en-us") -> bytes:
    """Speech from espeak-ng, at 24 kHz. A NUL in the text (which a command's arguments cannot hold) is a space:
    the model reads whatever it is sent."""
    result = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "--", text.replace("\0", " ")],
                            capture_output=True, check=True, timeout=60)
    wav = result.stdout
    return resample(wav[44:], 22050, SAMPLE_RATE)  # espeak-ng writes a 44-byte header at 22050 Hz


def mulaw_encode(pcm: bytes) -> bytes:
    """16-bit PCM to the server's 8-bit companding: floor((sign(x)ln(1+255|x|)/ln 256 + 1)/2*255)."""
    samples = array.array("h")
    samples.frombytes(pcm)
    log256 = math.log(256)
    out = bytearray(len(samples))
    for i, sample in enumerate(samples):
        x = max(-1.0, min(1.0, sample / 32767))
        y = math.copysign(math.log1p(255 * abs(x)) / log256, x)
        out[i] = int((y + 1) / 2 * 255)
    return bytes(out)


class Renderer(Protocol):
    """What a `Sender` reads of its server."""

    faults: Faults
    legacy: bool
    speed: Optional[float]

    def render(self, words: List[str], encoding: str = "pcm_s16le") -> bytes: ...


class Sender:
    """Sends one conversation's audio: framing, pacing and the fault plan."""

    def __init__(self, server: Renderer, connection: Connection, record: ConversationRecord,
                 faults: Optional[Faults] = None) -> None:
        """`faults`: this conversation's (default: the server's)."""
        self.server = server
        self.faults = server.faults if faults is None else faults
        self.connection = connection
        self.record = record
        self._sizes = list(self.faults.frame_sizes or [])
        if self.faults.random_frames is not None:
            chooser = random.Random(self.faults.random_frames)
            self._sizes = [chooser.randint(1, 8192) for _ in range(997)]
        self._size_index = 0
        self._began = time.monotonic()  # the conversation's (HTTP: the request's) start: drop_after_seconds
        self._stalled = False
        self._started: Optional[float] = None
        self._audio_seconds = 0.0

    def generate(self, words: List[str], encoding: str) -> None:
        """One segment: its generation takes its audio's length over `speed`, from now (a model cannot
        make up later for time it spent waiting for words)."""
        started = time.monotonic()
        self._started, self._audio_seconds = None, 0.0
        try:
            self._generate(words, encoding)
        finally:
            self.record.generation_seconds += time.monotonic() - started

    def speak(self, pcm: bytes) -> None:
        """One sentence of 16-bit PCM (Qwen3), timed as `generate` times a segment."""
        started = time.monotonic()
        self._started, self._audio_seconds = None, 0.0
        try:
            self.stream(pcm)
        finally:
            self.record.generation_seconds += time.monotonic() - started

    def _generate(self, words: List[str], encoding: str) -> None:
        self.record.segments.append(list(words))
        if self.faults.silent:
            return
        if self.faults.text_frame is not None:
            self.connection.send(self.faults.text_frame)
            self.connection.close(1000)
            self.record.close_code = 1000
            raise Dropped()
        bytes_per_sample = 1 if (encoding == "pcm_mulaw" and not self.server.legacy) else 2
        self.stream(self.server.render(words, encoding), bytes_per_sample)
        if self.faults.close_code is not None and not self.faults.drops:
            self._close_with_fault()

    def stream(self, pcm: bytes, bytes_per_sample: int = 2) -> None:
        """Send `pcm` as the model makes it: in messages (of the fault plan's sizes), paced, faults applied."""
        offset = 0
        while offset < len(pcm):
            size = self._next_size(bytes_per_sample)
            frame = pcm[offset:offset + size]
            frame = self._apply_faults(frame)
            self._pace(len(frame) / bytes_per_sample / SAMPLE_RATE)
            self.connection.send(frame)
            self.record.audio += frame
            self.record.bytes_sent += len(frame)
            self.record.frame_sizes.append(len(frame))
            offset += len(frame)
        if (self.faults.drop_after_bytes == self.record.bytes_sent  # cut exactly at this audio's end
                or self.faults.drop_after_messages == len(self.record.frame_sizes)):
            self._apply_faults(b"")

    def _next_size(self, bytes_per_sample: int) -> int:
        if self._sizes:
            size = self._sizes[self._size_index % len(self._sizes)]
            self._size_index += 1
            return max(1, size)
        return WINDOW_SAMPLES * bytes_per_sample

    def _apply_faults(self, frame: bytes) -> bytes:
        faults, sent = self.faults, self.record.bytes_sent
        late = faults.drop_after_seconds is not None and time.monotonic() - self._began >= faults.drop_after_seconds
        counted = faults.drop_after_messages is not None and len(self.record.frame_sizes) >= faults.drop_after_messages
        if late or counted:
            if faults.close_code is not None:
                self._close_with_fault()
            self.drop()
        if faults.drop_after_bytes is not None:
            room = faults.drop_after_bytes - sent
            if room <= 0:
                if faults.close_code is not None:
                    self._close_with_fault()
                self.drop()
            frame = frame[:room]
        if (faults.stall_after_bytes is not None and not self._stalled
                and sent + len(frame) > faults.stall_after_bytes):
            self._stalled = True
            time.sleep(faults.stall_seconds)
        return frame

    def _close_with_fault(self) -> None:
        code = self.faults.close_code or 1011
        self.connection.close(code, self.faults.close_reason)
        self.record.close_code = code
        self.record.faulted = True
        raise Dropped()

    def drop(self) -> None:
        """Cut TCP with no close frame: a reset (RST), as a crashed server or broken network would, or a FIN."""
        self.record.faulted = True
        self.connection.end(self.faults.cut)
        raise Dropped()

    def _pace(self, seconds: float) -> None:
        """Wait until the next `seconds` of audio have been generated: a segment's frames go out as the
        model makes them, the first one too."""
        if not self.server.speed:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self._audio_seconds += seconds
        due = self._started + self._audio_seconds / self.server.speed
        if due > now:
            time.sleep(due - now)
