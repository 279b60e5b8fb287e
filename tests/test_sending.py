"""How the words go out: a whole text from the caller's thread and in batches, an iterable word by
word; one websocket message per word either way (the server's flush rule needs it)."""
from __future__ import annotations

import threading

from basetts import Synthesizer
from basetts.connection import Conversation
from basetts.testing import LocalServer

LONG = " ".join(f"w{i}{'.' if i % 17 == 16 else ''}" for i in range(700))  # > 128 messages, > 4 kB


def test_a_long_text_arrives_one_word_per_message_in_order():
    with LocalServer(samples_per_word=48) as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        audio = synth.synthesize(LONG)
        record = server.last()
    assert record.messages == LONG.split() + ["__END__"]
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
