"""A trace of one call, for a bug report: one JSON line per event (`trace=` or BASETTS_TRACE).

Off by default. It holds the settings sent (never the key), each message sent with its time, each read
with its size and what it brought (audio, pings, pongs, the close), and the end or the error. Times are
seconds since the conversation started (`t`), plus the wall clock once (`started`). Conversations at once (a
text's parts, a batch, threads sharing a Synthesizer) share the file: each line says whose it is (`conversation`,
numbered in the process), and lines are written as they happen.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Optional

from .errors import redact

if TYPE_CHECKING:
    from .protocols.base import Received, Write
    from .settings import Settings


# A message or setting longer than this (a voice clip sent inline, as a data: URI) is cut in the trace.
MAX_TRACED = 1000

_numbers = itertools.count(1)  # each Trace's `conversation` (next() on it is atomic in CPython)


def shortened(text: str) -> str:
    """`text`, or its start and its length when it is too long to trace (a clip is not a bug report's)."""
    return text if len(text) <= MAX_TRACED else f"{text[:100]}... ({len(text)} characters)"


class Trace:
    """Appends events to the trace file; every method is a no-op when tracing is off."""

    def __init__(self, file: Optional[IO[str]], number: Optional[int] = None) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.number = number if number is not None else next(_numbers) if file is not None else 0
        if file is not None and number is None:  # not when it adds to a conversation's lines
            self.event("start", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), pid=os.getpid())

    @property
    def on(self) -> bool:
        """Events are written: worth building what an event carries."""
        return self._file is not None

    @classmethod
    def open(cls, settings: "Settings", number: Optional[int] = None) -> "Trace":
        """The settings' trace file, for a new conversation (or the `number`ed one's, to add to its lines)."""
        if not settings.trace:
            return cls(None, number)
        # Line-buffered: each line reaches the file as it is made, so the lines of conversations at once are in
        # the order they happened (block-buffered, each conversation's came in 8 kB clumps), and a process that
        # dies leaves every line up to then.
        return cls(open(settings.trace, "a", encoding="utf-8", buffering=1), number)  # noqa: SIM115 - closed by close()

    def event(self, name: str, **fields: Any) -> None:
        if self._file is None:
            return
        if isinstance(fields.get("settings"), dict):
            fields["settings"] = {k: shortened(v) if isinstance(v, str) else v for k, v in fields["settings"].items()}
        with self._lock:  # the time taken under it too: the reader's and the writer's lines go in the order of `t`
            if self._file is not None:
                self._file.write(redact(json.dumps(  # a close reason may echo the key
                    {"t": round(time.monotonic() - self._started, 6), "conversation": self.number, "event": name,
                     **fields}, ensure_ascii=False)) + "\n")

    def wrote(self, write: "Write") -> None:
        """What a write carried: the messages, our pacing ping, a pong, the close."""
        if self._file is None:
            return
        if write.pong is not None:
            self.event("pong sent", size=len(write.pong))
        for message in write.messages:
            self.event("sent", text=shortened(message))
        if write.ping is not None:
            self.event("ping sent", payload=write.ping.decode("ascii", "replace"))
        if write.close:
            self.event("close sent")

    def received(self, size: int, received: "Received") -> None:
        if self._file is None:
            return
        self.event("read", size=size, audio=len(received.audio), pings=received.pings,
                   acknowledged=received.acknowledged)
        if received.ended:
            code, reason = received.close or (None, None)
            self.event("closed", close_code=code, reason=reason,
                       error=None if received.error is None else str(received.error))

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()
