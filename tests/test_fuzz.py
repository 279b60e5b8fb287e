"""Property-based: arbitrary text, fragments and settings either give exactly the right audio or one of
our errors, and never hang."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import basetts
from basetts import Synthesizer
from basetts.testing import LocalServer
from basetts.text import iter_words

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

words = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@pytest.fixture(scope="module")
def server():
    with LocalServer(samples_per_word=16) as server:
        yield server


def _fast_synth(server: LocalServer, **options) -> Synthesizer:
    """Texts sent as they are (text_format="plain"): these tests are about the wire, any characters at all."""
    return Synthesizer(url=server.url, api_key=server.api_key, first_audio_timeout=5, read_timeout=5,
                       text_format="plain", **options)


def assert_spoken_whole(server: LocalServer, text: str, pcm: bytes) -> None:
    """Every word spoken once, in order; a word in which pysbd ends a sentence goes out in pieces cut
    there (so the server loses none of it), and the pieces put back together are the word."""
    record = server.last()
    assert record.lost == [] and record.spoken == record.words
    received = iter(record.words)
    for word in text.split():
        rebuilt = ""
        while rebuilt != word:
            rebuilt += next(received)
            assert word.startswith(rebuilt), (word, rebuilt)
    assert next(received, None) is None
    assert pcm == server.expected_pcm(" ".join(record.spoken))


@FAST
@example(text="0 !0")  # pysbd ends a sentence inside "!0" only after "0": cut in context
@example(text=":.!0")  # cut into ":." and "!0", then "!0" alone ends a sentence after "!": cut again
@given(text=st.text(max_size=300))
def test_any_text_gives_the_right_audio_or_a_clear_error(server, text):
    synth = _fast_synth(server)
    try:
        audio = synth.synthesize(text)
    except ValueError as exc:
        assert "empty" in str(exc) or "unicode" in str(exc)
        assert not text.strip() or any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    else:
        assert_spoken_whole(server, text, audio.pcm)


@FAST
@given(text=words, cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=12))
def test_fragments_split_anywhere_give_the_same_words(server, text, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    fragments = [text[a:b] for a, b in zip([0] + points, points + [len(text)])]
    assert list(iter_words(fragments, "plain")) == text.split()
    if text.strip():
        audio = _fast_synth(server).synthesize(iter(fragments))
        assert_spoken_whole(server, text, audio.pcm)


@FAST
@given(voice=st.text(max_size=12), buffer_size=st.integers(-2, 40),
       top_p=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       temperature=st.one_of(st.none(), st.floats(-1, 3)))
def test_any_settings_are_refused_before_sending_or_work(server, voice, buffer_size, top_p, temperature):
    before = len(server.conversations)
    try:
        synth = _fast_synth(server, voice=voice, buffer_size=buffer_size, top_p=top_p, temperature=temperature)
    except basetts.ConfigurationError:
        assert len(server.conversations) == before
        return
    assert buffer_size >= 1 and voice.strip()
    audio = synth.synthesize("one two three four five. six seven")
    assert audio.pcm == server.expected_pcm("one two three four five. six seven")
    assert server.last().settings["buffer_size"] == buffer_size
