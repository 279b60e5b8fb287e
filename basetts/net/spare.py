"""`Spare`: one connection opened ahead (`Synthesizer.connect`), for the next conversation."""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

from .. import protocols
from ..settings import Settings
from . import transport

log = logging.getLogger("basetts")


class Spare:
    """One pre-opened connection, kept for the next conversation (the protocol allows one per connection).
    A spare opened in another process (before a fork) is never used, nor touched: the parent owns it."""

    def __init__(self, settings: Settings) -> None:
        self.url, self.api_key = settings.url, settings.api_key
        self.sock: Optional[transport.BoundedSocket] = transport.open_socket(settings)
        self.opened = time.monotonic()
        self.pid = os.getpid()

    def take(self, settings: Settings) -> Optional[transport.BoundedSocket]:
        """The connection, if it fits `settings` and is fresh and quiet; else None (and closed).

        Only the endpoint and key must match: everything else goes in the first message, after this.
        """
        sock, self.sock = self.sock, None
        if sock is None or self.pid != os.getpid():
            return None
        if (settings.url, settings.api_key) != (self.url, self.api_key):
            sock.close()
            return None
        if time.monotonic() - self.opened > protocols.spec(settings.protocol).spare_max_age or _readable(sock):
            # Too old, or the server already spoke (a close or a ping) on a connection nobody has used.
            log.debug("discarding a stale spare connection")
            sock.close()
            return None
        return sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None and self.pid == os.getpid():
            sock.close()


def _readable(sock: transport.BoundedSocket) -> bool:
    try:
        return transport.ready(sock.sock, 0)
    except (OSError, ValueError):
        return True
