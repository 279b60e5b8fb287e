"""A Synthesizer across processes: forked after connect() or after playing, and pickled to workers."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from typing import Any, List, Optional

import pytest

import basetts
from basetts.testing import LocalServer

TEXTS = [f"child {i} says its own words, {' '.join(f'c{i}w{j}' for j in range(8))}." for i in range(4)]

_synth: Optional[basetts.Synthesizer] = None  # what a forked child inherits


def _synthesize(text: str) -> bytes:
    assert _synth is not None
    return _synth.synthesize(text).pcm


def _synthesize_with(synth: basetts.Synthesizer, text: str) -> bytes:
    return synth.synthesize(text).pcm


def test_a_synthesizer_pickles_its_settings_only() -> None:
    synth = basetts.Synthesizer(url="ws://127.0.0.1:1/v1/websocket", api_key="k", voice="leo", read_timeout=3)
    copy = pickle.loads(pickle.dumps(synth))
    assert copy.settings == synth.settings and copy._spare is None and copy._portaudio is None


def test_forked_children_never_use_the_parents_spare_connection() -> None:
    """connect() in the parent, then fork (multiprocessing, Celery prefork, gunicorn --preload): each
    child connects afresh and gets its own audio; the parent's spare is left alone for the parent."""
    global _synth
    with LocalServer() as server:
        _synth = basetts.Synthesizer(url=server.url, api_key=server.api_key)
        try:
            _synth.connect()
            with multiprocessing.get_context("fork").Pool(4) as pool:
                results: List[bytes] = pool.map(_synthesize, TEXTS)
            assert results == [server.expected_pcm(text) for text in TEXTS]
            assert server.handshakes == 5  # the spare, and one connection per child
            assert _synth.synthesize(TEXTS[0]).pcm == server.expected_pcm(TEXTS[0])
            assert server.handshakes == 5  # the parent's spare was still whole, and used
        finally:
            _synth.close()
            _synth = None


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_synthesizer_handed_to_a_process_pool(method: str) -> None:
    with LocalServer() as server:
        synth = basetts.Synthesizer(url=server.url, api_key=server.api_key)
        synth.connect()  # not pickled: each worker connects for itself
        context = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(_synthesize_with, [synth] * len(TEXTS), TEXTS))
        assert results == [server.expected_pcm(text) for text in TEXTS]
        synth.close()


def test_a_workers_failure_reaches_the_parent_as_the_same_error() -> None:
    """A call failing in a pool's worker (a wrong key here): the parent gets our error, its status and headers,
    not a pool broken by an exception that could not be unpickled."""
    with LocalServer() as server:
        synth = basetts.Synthesizer(url=server.url, api_key="not-the-key", retries=0)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            with pytest.raises(basetts.AuthenticationError) as caught:
                pool.submit(_synthesize_with, synth, TEXTS[0]).result(timeout=60)
            right = basetts.Synthesizer(url=server.url, api_key=server.api_key)
            assert pool.submit(_synthesize_with, right, TEXTS[1]).result(timeout=60) == server.expected_pcm(TEXTS[1])
    assert caught.value.status == 401 and "API key" in str(caught.value) and caught.value.partial.pcm == b""


def _speak_or_say_why(text: str) -> str:
    assert _synth is not None
    try:
        _synth.speak(text)
    except basetts.AudioDeviceError as exc:
        return str(exc)
    return "played"


@pytest.mark.playback
def test_a_child_forked_after_the_parent_played_never_touches_its_sound_device(pulse: Any) -> None:
    """The parent's PortAudio (held between speak() calls) cannot serve a forked child: the child says so
    (naming the fix) instead of using it, synthesizes as usual, and the parent still plays; a spawned
    child plays."""
    global _synth
    with LocalServer() as server:
        _synth = basetts.Synthesizer(url=server.url, api_key=server.api_key)
        try:
            expected = len(server.expected_pcm("parent first"))
            assert len(_synth.speak("parent first").pcm) == expected
            with multiprocessing.get_context("fork").Pool(1) as pool:
                [said] = pool.map(_speak_or_say_why, ["child plays"])
                assert pool.map(_synthesize, TEXTS[:1]) == [server.expected_pcm(TEXTS[0])]
            assert "forked" in said and "spawn" in said
            assert len(_synth.speak("parent first").pcm) == expected
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                assert pool.starmap(_speak_with, [(_synth, "spawned child plays")]) == ["played"]
        finally:
            _synth.close()
            _synth = None


def _speak_with(synth: basetts.Synthesizer, text: str) -> str:
    synth.speak(text)
    return "played"
