"""Sessions: text that arrives over time, spoken on one connection."""
from __future__ import annotations

import gc
import threading
import time
import warnings

import pytest

import basetts
from basetts.testing import Faults, LocalServer

from .helpers import synth_for

TOKENS = ["Hel", "lo,", " wor", "ld. How", " are", " you", " to", "day? Fine", " thanks", "."]
TEXT = "".join(TOKENS)


def test_fragments_become_whole_words_and_the_audio_is_exact(basetts_server, basetts_synthesizer):
    with basetts_synthesizer.session() as session:
        for token in TOKENS:
            session.send(token)
    record = basetts_server.last()
    assert record.messages == TEXT.split() + ["__END__"]
    assert session.audio.pcm == basetts_server.expected_pcm(TEXT)


def test_words_go_out_before_the_session_ends(basetts_server):
    synth = synth_for(basetts_server, buffer_size=3)
    with synth.session() as session:
        session.send("one two three four five ")
        deadline = time.monotonic() + 10
        while len(session.audio.pcm) < len(basetts_server.expected_pcm("one two three")):
            assert time.monotonic() < deadline, "no audio while the session was still open"
            time.sleep(0.01)
        assert basetts_server.conversations[-1].messages[:5] == "one two three four five".split()
        session.send("six")
    assert session.audio.pcm == basetts_server.expected_pcm("one two three four five six")


def test_a_trailing_partial_word_waits_for_the_next_fragment(basetts_server, basetts_synthesizer):
    with basetts_synthesizer.session() as session:
        session.send("spoken hal")
        deadline = time.monotonic() + 10
        while not basetts_server.conversations or not basetts_server.conversations[-1].messages:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)  # room for a wrongly sent "hal" to arrive
        assert basetts_server.conversations[-1].messages == ["spoken"]
        session.send("ves")
    assert basetts_server.last().words == ["spoken", "halves"]


def test_iterating_a_session_yields_the_audio_as_it_arrives(basetts_server, basetts_synthesizer):
    chunks = []
    with basetts_synthesizer.session() as session:
        reader = threading.Thread(target=lambda: chunks.extend(session))
        reader.start()
        session.send(TEXT)
    reader.join(10)
    assert b"".join(chunks) == basetts_server.expected_pcm(TEXT)


def test_iterating_a_session_in_the_thread_that_sends_it_and_has_not_ended_it_warns(basetts_server,
                                                                                   basetts_synthesizer,
                                                                                   monkeypatch):
    # `for chunk in session` inside the with block, in the thread that sends: nothing ends the session, so the
    # iteration would wait forever in silence. It says so (after SELF_WAIT seconds with nothing arriving).
    monkeypatch.setattr(basetts.session, "SELF_WAIT", 0.3)
    session = basetts_synthesizer.session()
    session.send(TEXT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", basetts.BasettsWarning)  # the warning ends the wait here, as an exception
        with pytest.raises(basetts.BasettsWarning, match=r"this thread sends its text.*finish\(\)"):
            for _ in session:
                pass
    session.abort()
    # Iterated from another thread while this one sends, with pauses longer than SELF_WAIT: nothing to say.
    chunks = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", basetts.BasettsWarning)
        with basetts_synthesizer.session() as session:
            reader = threading.Thread(target=lambda: chunks.extend(session))
            reader.start()
            for word in TEXT.split(" "):
                session.send(word + " ")
                time.sleep(0.05)
            time.sleep(0.8)
        reader.join(10)
    assert b"".join(chunks) == basetts_server.expected_pcm(TEXT)


def test_leaving_by_an_exception_sends_nothing_more_and_keeps_the_audio(basetts_server):
    synth = synth_for(basetts_server, buffer_size=2)
    with pytest.raises(RuntimeError, match="llm failed"):
        with synth.session() as session:
            session.send("alpha beta gamma ")
            deadline = time.monotonic() + 10
            while not session.audio.pcm and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError("llm failed")
    record = basetts_server.last()
    assert "__END__" not in record.messages
    assert record.client_disconnected
    assert session.audio.pcm == basetts_server.expected_pcm("alpha beta")
    assert [t for t in threading.enumerate() if t.name.startswith("basetts-") and "server" not in t.name] == []
    with pytest.raises(RuntimeError, match="ended"):
        session.send("more")


def test_a_failure_during_a_session_raises_with_the_partial_audio():
    with LocalServer(faults=Faults(drop_after_bytes=4800)) as server:
        with pytest.raises(basetts.StreamInterrupted) as info:
            with synth_for(server).session() as session:
                session.send(TEXT)
        assert info.value.partial.pcm == server.expected_pcm(TEXT)[:4800]


def test_send_after_the_connection_failed_raises_at_once_with_the_partial_audio():
    """The producer learns of a dead connection at its next send(), not after queueing the rest of its text."""
    with LocalServer(faults=Faults(drop_after_bytes=4800)) as server:
        sent = 0
        with pytest.raises(basetts.StreamInterrupted) as info:
            with synth_for(server).session() as session:
                for sent in range(300_000):
                    session.send("Say this. ")
                    if sent % 100 == 0:
                        time.sleep(0.001)  # a producer's pace, slower than the loop alone
        assert sent < 300_000 - 1, "send() went on accepting text after the connection died"
        assert len(info.value.partial.pcm) == 4800


def test_an_exception_from_on_audio_ends_the_session_with_the_audio_so_far(basetts_server):
    def on_audio(chunk: bytes) -> None:
        raise RuntimeError("the callback failed")

    with pytest.raises(RuntimeError, match="callback failed") as info:
        with synth_for(basetts_server).session(on_audio=on_audio) as session:
            session.send(TEXT)
    assert info.value.partial.pcm and basetts_server.expected_pcm(TEXT).startswith(info.value.partial.pcm)


def test_an_empty_session_ends_cleanly(basetts_server, basetts_synthesizer):
    with basetts_synthesizer.session() as session:
        pass
    assert session.audio.pcm == b""
    assert basetts_server.last().messages == ["__END__"]


def test_a_session_used_without_with_opens_on_the_first_send(basetts_server, basetts_synthesizer):
    session = basetts_synthesizer.session()
    assert basetts_server.handshakes == 0  # creating it opens nothing
    for token in TOKENS:
        session.send(token)
    audio = session.finish()
    assert audio.pcm == basetts_server.expected_pcm(TEXT)
    assert basetts_server.last().messages == TEXT.split() + ["__END__"]
    with pytest.raises(RuntimeError, match="ended"):
        session.send("more")


def test_a_session_dropped_unfinished_is_closed_when_collected(basetts_server):
    """No `with`, no finish(), and then no reference: garbage collection closes the connection and
    joins the threads (they hold no reference to the session), instead of them running until exit."""
    synth = synth_for(basetts_server, buffer_size=2)
    session = synth.session()
    session.send("alpha beta gamma ")
    deadline = time.monotonic() + 10
    while not session.audio.pcm:  # the session is live: words went out, audio came back
        assert time.monotonic() < deadline
        time.sleep(0.01)
    record = basetts_server.conversations[-1]  # still open
    del session
    gc.collect()
    assert [t for t in threading.enumerate() if t.name.startswith("basetts-") and "server" not in t.name] == []
    assert record.done.wait(10) and record.client_disconnected
    assert "__END__" not in record.messages  # dropped, not finished: the end was never sent


def test_a_session_takes_the_spare_connection_when_it_opens(basetts_server, basetts_synthesizer):
    session = basetts_synthesizer.session()  # created before connect(): the spare is taken at open
    basetts_synthesizer.connect()
    deadline = time.monotonic() + 10
    while basetts_server.handshakes < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with session:
        session.send("one two three")
    assert session.audio.pcm == basetts_server.expected_pcm("one two three")
    assert basetts_server.handshakes == 1  # the spare carried the conversation


def test_a_session_that_cannot_connect_raises_then_says_it_has_ended():
    with LocalServer(faults=Faults(handshake_status=401)) as server:
        session = synth_for(server).session()
        with pytest.raises(basetts.AuthenticationError):
            session.send("hello ")
        with pytest.raises(RuntimeError, match="ended"):
            session.send("again")
        assert server.handshakes == 1  # no second attempt behind the caller's back
