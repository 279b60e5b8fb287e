"""`Ring`: the lock-free FIFO between the feeding thread and the audio callback, without PortAudio."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from basetts.playback.ring import Ring


def test_write_takes_what_fits_in_whole_samples_and_read_gives_it_back_across_the_wrap() -> None:
    ring = Ring(10)
    assert ring.write(b"abcdefghijk") == 10 and ring.free == 0  # 11 bytes offered: 10 fit
    out = bytearray(6)
    assert ring.read_into(memoryview(out), 6) == 6 and out == b"abcdef"
    assert ring.write(b"12345") == 4  # 6 free bytes, but the 5th byte would split a sample
    out = bytearray(10)
    assert ring.read_into(memoryview(out), 10) == 8 and out[:8] == b"ghij1234"  # wrapped at the end
    assert ring.available == 0 and ring.written == ring.read == 14


def test_read_into_never_overruns_what_is_there_nor_the_output() -> None:
    ring = Ring(8)
    ring.write(b"\x01\x02\x03\x04")
    out = bytearray(2)
    assert ring.read_into(memoryview(out), 100) == 2 and out == b"\x01\x02"
    assert ring.read_into(memoryview(bytearray(10)), 3) == 2  # rounded down to a whole sample
    assert ring.read_into(memoryview(bytearray(10)), 10) == 0


def test_a_ring_needs_room_for_one_sample() -> None:
    with pytest.raises(ValueError):
        Ring(1)
    assert Ring(7).capacity == 6


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=60), st.integers(2, 50))
def test_every_byte_comes_out_once_in_order(steps: list, capacity: int) -> None:
    ring, sent, got, counter = Ring(capacity), bytearray(), bytearray(), 0
    for write, read in steps:
        data = bytes((counter + i) % 251 for i in range(write))
        taken = ring.write(data)
        assert taken % 2 == 0 and taken <= len(data)
        counter += taken
        sent += data[:taken]
        out = bytearray(read)
        count = ring.read_into(memoryview(out), read)
        got += out[:count]
        assert ring.available == len(sent) - len(got) <= ring.capacity
    out = bytearray(ring.capacity)
    got += out[:ring.read_into(memoryview(out), ring.capacity)]
    assert got == sent


def test_one_writer_and_one_reader_thread_lose_and_repeat_nothing() -> None:
    ring, total = Ring(1000), 400_000
    data = bytes(i % 253 for i in range(total))
    got = bytearray()

    def read() -> None:
        out = memoryview(bytearray(300))
        while len(got) < total:
            got.extend(out[:ring.read_into(out, 300)])

    reader = threading.Thread(target=read)
    reader.start()
    view = memoryview(data)
    while view:
        view = view[ring.write(view):]
    reader.join(30)
    assert bytes(got) == data
