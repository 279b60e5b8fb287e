"""How the words go out: a whole text from the caller's thread and in batches, an iterable word by
word; one websocket message per word either way (the server's flush rule needs it)."""
from __future__ import annotations

import os
import ssl
import threading

import pytest

from basetts import Synthesizer
from basetts.net.conversation import Conversation
from basetts.testing import LocalServer

CERTS = os.path.join(os.path.dirname(__file__), "certs")
LONG = " ".join(f"w{i}{'.' if i % 17 == 16 else ''}" for i in range(700))  # > 128 messages, > 4 kB


def test_a_long_text_arrives_one_word_per_message_in_order():
    with LocalServer(samples_per_word=48) as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        audio = synth.synthesize(LONG)
        server.last()
    # in parts, a connection each: each ends with the sentinel
    assert [m for r in server.conversations for m in r.messages[:-1]] == LONG.split()
    assert len(server.conversations) > 1 and all(r.messages[-1] == "__END__" for r in server.conversations)
    assert audio.pcm == server.expected_pcm(LONG)


def test_a_short_text_needs_no_writer_thread():
    with LocalServer() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        with Conversation(synth.settings, "just a few words.".split()) as conversation:
            names = [t.name for t in conversation._threads]
            assert b"".join(conversation.chunks()) == server.expected_pcm("just a few words.")
        assert names == ["basetts-reader"]
        assert conversation.words_sent == 4


def test_an_iterable_is_sent_word_by_word_as_it_comes():
    release = threading.Event()

    def fragments():
        yield "first words "
        release.wait(5)  # the server must already have these before the rest exists
        yield "and the rest."

    with LocalServer() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key, buffer_size=2)
        chunks = synth.stream(fragments())
        first = next(chunks)  # "first words" made a segment of buffer_size=2 on its own
        assert first
        release.set()
        rest = b"".join(chunks)
        record = server.last()
    assert record.messages == ["first", "words", "and", "the", "rest.", "__END__"]
    assert first + rest == server.expected_pcm("first words and the rest.")


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_text_waits_while_the_server_generates_longer_than_read_timeout(scheme, monkeypatch):
    """The server reads no text while it generates a segment. With megabytes of text the socket
    buffers fill and a send waits for the whole generation (1 s here, read_timeout 0.25 s): that wait is
    not a timeout, and no word may be lost to it. Over TLS too, where reads and writes take turns."""
    words = [f"{'x' * 10_000}{i}" for i in range(2000)]  # 20 MB: more than the buffers on the way hold
    text = " ".join(words)
    context = None
    if scheme == "wss":
        monkeypatch.setenv("SSL_CERT_FILE", os.path.join(CERTS, "untrusted-cert.pem"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    # 1000 words of 1 ms each: the first segment takes 1 s, during which the other 1000 words wait.
    # The built-in splitter: pysbd on a 10 MB buffer at every message would take minutes (on the real
    # server too).
    with LocalServer(samples_per_word=24, speed=1.0, ssl_context=context, pysbd=False) as server:
        # one connection (recoveries=0: a long text goes as parts otherwise), where megabytes wait
        synth = Synthesizer(url=server.url, api_key=server.api_key, buffer_size=1000, read_timeout=0.25,
                            recoveries=0)
        for given in (text, iter(w + " " for w in words)):  # from a list (batches) and an iterable
            result: dict = {}
            caller = threading.Thread(target=lambda g=given, r=result: r.update(audio=synth.synthesize(g)))
            caller.start()
            caller.join(60)
            assert not caller.is_alive(), "synthesize() hung"
            assert "audio" in result, "synthesize() failed (see the thread's exception above)"
            assert result["audio"].pcm == server.expected_pcm(text)
            assert server.last().messages == words + ["__END__"]
