"""`Ring`: a fixed-size byte FIFO between one writing thread and PortAudio's callback, without locks.

Each side moves only its own counter (`written`, `read`: bytes ever written and read), and the writer
publishes its counter after copying, so the reader never sees bytes that are not there yet. Sizes are
kept to whole units of `align` bytes (one 16-bit sample), so a sample is never split at the wrap.
"""
from __future__ import annotations

from typing import Union

Buffer = Union[bytes, bytearray, memoryview]


class Ring:
    """`write()` copies in as much as fits; `read_into()` copies out as much as is there; neither waits."""

    def __init__(self, capacity: int, align: int = 2) -> None:
        if capacity < align or align < 1:
            raise ValueError(f"a ring needs room for at least one unit of {align} bytes, not {capacity}")
        self.align = align
        self._buffer = bytearray(capacity - capacity % align)
        self._view = memoryview(self._buffer)
        self.written = 0  # bytes ever written; only the writer changes it
        self.read = 0  # bytes ever read; only the reader changes it

    @property
    def capacity(self) -> int:
        return len(self._buffer)

    @property
    def available(self) -> int:
        """Bytes waiting to be read."""
        return self.written - self.read

    @property
    def free(self) -> int:
        """Bytes that fit now (whole units)."""
        return self.capacity - self.available

    def write(self, data: Buffer) -> int:
        """Copy as much of `data` as fits, in whole units; the number of bytes taken."""
        count = min(len(data), self.free)
        count -= count % self.align
        self._copy(self.written, memoryview(data)[:count], into_ring=True)
        self.written += count  # published last: the reader only reads up to here
        return count

    def read_into(self, out: memoryview, count: int) -> int:
        """Copy up to `count` bytes (whole units) into the start of `out`; the number copied."""
        count = min(count, self.available, len(out))
        count -= count % self.align
        self._copy(self.read, out[:count], into_ring=False)
        self.read += count
        return count

    def _copy(self, position: int, other: memoryview, into_ring: bool) -> None:
        """Between the ring from `position` (wrapping at its end) and `other`, in one or two slices."""
        size = len(self._buffer)
        start = position % size
        first = min(len(other), size - start)
        for ring_part, other_part in ((self._view[start:start + first], other[:first]),
                                      (self._view[:len(other) - first], other[first:])):
            if into_ring:
                ring_part[:] = other_part
            else:
                other_part[:] = ring_part
