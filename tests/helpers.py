"""Test helpers: the local server in its own process, so leak checks count only the client's threads and fds."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from typing import Iterator, Sequence, Set, Tuple


@contextlib.contextmanager
def server_process(*faults: str, extra: Sequence[str] = ()) -> Iterator[Tuple[str, str]]:
    """Run `basetts serve` in a subprocess; yields (url, api_key)."""
    command = [sys.executable, "-m", "basetts.cli", "serve", *extra]
    for fault in faults:
        command += ["--fault", fault]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        url = re.search(r"BASETTS_URL=(\S+)", "".join(lines))
        key = re.search(r"BASETEN_API_KEY=(\S+)", "".join(lines))
        assert url and key, lines
        yield url.group(1), key.group(1)
    finally:
        process.terminate()
        process.wait(10)


def open_fds() -> Set[Tuple[str, str]]:
    """The process's open files and sockets, by number and target (for leak checks)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except FileNotFoundError:  # the directory listing's own descriptor
            pass
    return found
