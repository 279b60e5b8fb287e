"""Warm-up: `Synthesizer.connect()` keeps one spare connection that the next call uses."""
from __future__ import annotations

import os
import time

import pytest

from basetts.net import transport
from basetts.protocols import orpheus
from basetts.testing import Faults, LocalServer

from .helpers import client_threads, synth_for

TEXT = "Warm connections skip the handshake. Every word still arrives, in order, once."


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def client_sockets_open(server: LocalServer) -> int:
    """TCP sockets to the server still open on our side: ESTABLISHED or CLOSE_WAIT in /proc/net/tcp.

    (A closed client socket moves to FIN_WAIT/TIME_WAIT; a leaked one stays in one of these two.)
    """
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port, state = int(fields[2].split(":")[1], 16), fields[3]
            if remote_port == server.port and state in ("01", "08"):
                count += 1
    return count


def baseline_fds(server: LocalServer) -> int:
    """Open fds once the server is fully up (its serve loop creates a poller after it starts)."""
    synth_for(server).synthesize("warm up")
    wait_for(lambda: server.conversations[-1].done.is_set())
    return open_fds()


def settled(server: LocalServer, fds: int) -> bool:
    # fds: <= because the server (in this process too) may still hold a socket in the baseline.
    return (not client_threads() and open_fds() <= fds and not client_sockets_open(server)
            and all(record.done.is_set() for record in server.conversations))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def refuse_to_connect(settings, while_waiting=None):
    raise AssertionError("the warm call opened a new connection")


@pytest.fixture
def server():
    with LocalServer() as server:
        yield server


def test_the_call_after_connect_uses_the_spare_and_opens_nothing(server, monkeypatch):
    synth = synth_for(server)
    synth.connect()
    assert wait_for(lambda: len(server.conversations) == 1)  # the handshake happened in connect()
    monkeypatch.setattr(transport, "open_socket", refuse_to_connect)  # any connect at call time fails
    audio = synth.synthesize(TEXT)
    assert audio.pcm == server.expected_pcm(TEXT)
    assert len(server.conversations) == 1  # the same connection carried the conversation
    assert server.last().messages == TEXT.split() + ["__END__"]
    assert audio.stats.connect_time is not None and audio.stats.connect_time <= audio.stats.first_byte_time


def test_stream_uses_the_spare_too_and_the_next_call_connects_again(server):
    synth = synth_for(server)
    synth.connect()
    assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)
    assert wait_for(lambda: len(server.conversations) == 1)
    synth.synthesize(TEXT)  # the spare was used up: one connection per conversation
    assert len(server.conversations) == 2


def test_per_call_settings_still_go_in_the_first_message(server):
    synth = synth_for(server)
    synth.connect()
    synth.synthesize(TEXT, voice="leo", buffer_size=4)
    assert len(server.conversations) == 1
    assert server.last().settings == {"voice": "leo", "max_tokens": 2000, "buffer_size": 4}


def test_a_stale_spare_is_closed_and_replaced_by_a_fresh_connection(server, monkeypatch):
    synth = synth_for(server)
    synth.connect()
    assert wait_for(lambda: len(server.conversations) == 1)  # the server records it after the upgrade
    monkeypatch.setattr(orpheus.SPEC, "spare_max_age", 0.0)
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert len(server.conversations) == 2
    stale = server.conversations[0]
    assert stale.done.wait(5) and stale.client_disconnected and not stale.messages


def test_a_spare_the_server_closed_is_not_used(server):
    synth = synth_for(server)
    synth.connect()
    assert wait_for(lambda: len(server.conversations) == 1)
    spare = synth._spare
    assert spare is not None and spare.sock is not None
    spare.sock.sock.shutdown(2)  # as if the server or a proxy had closed it
    assert synth.synthesize(TEXT).pcm == server.expected_pcm(TEXT)
    assert len(server.conversations) == 2


def test_a_spare_the_server_drops_before_answering_is_replaced_at_once():
    # connect()'s connection, dropped by the server (or a proxy) as the call's first messages go out, before any
    # answer: the call goes on at once on a new connection, not counted among the retries (retries=0 succeeds).
    with LocalServer(faults=Faults(drop_after_bytes=0, stream_failures=1)) as server:
        with synth_for(server, retries=0) as synth:
            synth.connect()
            audio = synth.synthesize("hello there")
            assert audio.pcm == server.expected_pcm("hello there") and audio.stats.attempts == 1
            assert server.connections == 2 and len(server.conversations) == 2


def test_another_endpoint_does_not_get_the_spare(server):
    with LocalServer() as other:
        synth = synth_for(server)
        synth.connect()
        audio = synth.synthesize(TEXT, url=other.url, api_key=other.api_key)
        assert audio.pcm == other.expected_pcm(TEXT)
        assert len(other.conversations) == 1
        assert wait_for(lambda: bool(server.conversations) and server.conversations[0].done.is_set())  # closed


def test_close_and_exit_close_the_spare_and_leak_nothing(server):
    fds = baseline_fds(server)
    with synth_for(server) as synth:
        synth.connect()
        assert wait_for(lambda: len(server.conversations) == 2)
        synth.connect()  # replaces (and closes) the first spare
        assert wait_for(lambda: len(server.conversations) == 3)
        assert server.conversations[1].done.wait(5)
    assert server.conversations[2].done.wait(5)
    assert all(record.client_disconnected for record in server.conversations[1:])
    synth.close()  # idempotent
    assert wait_for(lambda: settled(server, fds)), (client_threads(), open_fds(), fds, client_sockets_open(server))


def test_warm_calls_leak_no_threads_or_sockets(server):
    fds = baseline_fds(server)
    synth = synth_for(server)
    for _ in range(5):
        synth.connect()
        assert b"".join(synth.stream(TEXT)) == server.expected_pcm(TEXT)
    synth.connect()
    synth.close()
    # The last spare may be closed before the server's handler has recorded it: wait for that too.
    assert wait_for(lambda: len(server.conversations) == 1 + 6 and settled(server, fds)), (
        client_threads(), open_fds(), fds, client_sockets_open(server), len(server.conversations))


# a long text's next part: `Ahead` ------------------------------------------------------------------------------
def test_the_next_parts_connection_is_opened_ahead_and_handed_over_once(server):
    from basetts.net.spare import Ahead

    ahead = Ahead(synth_for(server).settings)
    sock = ahead.take()
    assert sock is not None and server.handshakes == 1  # opened, upgraded, and nothing sent on it
    assert ahead.take() is None  # handed over once: the conversation owns it now
    ahead.close()  # closes nothing it handed over
    assert sock.writable()
    sock.close()
    assert client_threads() == []


def test_a_next_part_connection_that_failed_or_went_stale_is_not_handed_over(server, monkeypatch):
    from basetts.net.spare import Ahead
    from basetts.testing import Faults

    refusing = LocalServer(faults=Faults(handshake_status=503))
    with refusing:
        assert Ahead(synth_for(refusing).settings).take() is None  # the part opens its own, with the retries
    monkeypatch.setattr(orpheus.SPEC, "spare_max_age", 0.05)
    ahead = Ahead(synth_for(server).settings)
    time.sleep(0.1)
    assert ahead.take() is None and client_threads() == []


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_closing_while_the_next_parts_upgrade_is_held_returns_at_once(scheme):
    """A deployment scaling up holds the upgrade (or, over TLS, the handshake before it): a call that ends (Ctrl+C,
    a stop) must not wait for it."""
    import socket

    from basetts import Synthesizer
    from basetts.net.spare import Ahead

    with socket.create_server(("127.0.0.1", 0)) as listener:  # takes the TCP connection, never answers
        url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/environments/production/websocket"
        ahead = Ahead(Synthesizer(url=url, api_key="k", handshake_timeout=60).settings)
        time.sleep(0.2)  # connected, waiting for the upgrade's answer
        started = time.monotonic()
        ahead.close()
        assert time.monotonic() - started < 1.0  # sanity bound: not handshake_timeout
    assert client_threads() == []
