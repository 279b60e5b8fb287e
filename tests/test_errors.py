"""One exception hierarchy that keeps its promise: every refusal its class, with what a caller needs."""
from __future__ import annotations

import email.utils
import pickle
import socket
import time
from typing import Any, Dict, Type

import pytest

import basetts
from basetts.protocols.http import retry_after_seconds

from .helpers import raw_server


def refusing(status: int, headers: Dict[str, str], body: bytes = b"") -> Any:
    def answer(connection: socket.socket, key: str) -> None:
        lines = [f"HTTP/1.1 {status} Whatever"] + [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return answer


@pytest.mark.parametrize("status, expected, retried, advice", [
    (401, basetts.AuthenticationError, False, "BASETEN_API_KEY"),
    (404, basetts.ModelNotFoundError, False, "model id"),
    (429, basetts.ServerUnavailable, True, "overloaded"),
    (503, basetts.ServerUnavailable, True, "scaled to zero"),
    (307, basetts.RedirectRefused, False, "does not follow redirects"),
    (200, basetts.UnexpectedResponse, False, "captive portal"),
    (400, basetts.UnexpectedResponse, False, "websocket endpoint"),
    (405, basetts.UnexpectedResponse, False, "websocket endpoint"),
    (407, basetts.UnexpectedResponse, False, "proxy="),
    (426, basetts.UnexpectedResponse, False, "websocket endpoint"),
])
def test_every_refused_upgrade_is_a_handshake_error_of_its_kind(status: int, expected: Type[Exception],
                                                                retried: bool, advice: str) -> None:
    with raw_server(refusing(status, {"Retry-After": "0", "X-Request-Id": "r1"}, b"<html>hi</html>")) as url:
        with pytest.raises(expected, match=advice) as info:
            basetts.Synthesizer(url=url, api_key="k", retries=0).synthesize("hello")
    error = info.value
    assert isinstance(error, basetts.HandshakeError) and error.status == status
    assert error.headers["x-request-id"] == "r1" and error.retry_after == 0.0
    assert error.retryable is retried
    assert "Retry later" not in str(error) or retried  # advice that fits: only a 429/5xx is worth a retry


def test_the_classes_keep_the_bases_callers_catch() -> None:
    """Error classes gained bases, lost none: existing `except` clauses still catch what they caught."""
    assert issubclass(basetts.ServerUnavailable, basetts.ServerError)
    assert issubclass(basetts.UnexpectedResponse, basetts.ServerError)
    assert issubclass(basetts.RedirectRefused, basetts.ConnectError)
    assert issubclass(basetts.InvalidText, ValueError) and issubclass(basetts.ArgumentTypeError, TypeError)
    for phase in (basetts.ConnectTimeout, basetts.HandshakeTimeout, basetts.FirstAudioTimeout, basetts.ReadTimeout):
        assert issubclass(phase, basetts.TimeoutError) and issubclass(phase, TimeoutError)
    for error in (basetts.InvalidText, basetts.ArgumentTypeError, basetts.ConfigurationError):
        assert issubclass(error, basetts.BasetenTTSError)


@pytest.mark.parametrize("text, expected", [("", basetts.InvalidText), ("  ", basetts.InvalidText),
                                            ("\ud800 hi", basetts.InvalidText), (b"hi", basetts.ArgumentTypeError),
                                            (42, basetts.ArgumentTypeError)])
def test_text_that_cannot_be_spoken_is_ours_and_still_a_value_or_type_error(basetts_synthesizer: Any, text: Any,
                                                                             expected: Type[Exception]) -> None:
    with pytest.raises(expected):
        basetts_synthesizer.synthesize(text)
    with pytest.raises(basetts.ArgumentTypeError, match="voise"):
        basetts_synthesizer.synthesize("hello", voise="leo")


def test_retry_after_is_read_in_either_form() -> None:
    now = time.time()
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("-3") == 0.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(90, abs=1)
    assert retry_after_seconds(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0  # already past
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_retry_after_date_is_waited_as_the_server_asked() -> None:
    """An HTTP-date too far ahead is raised at once, with the wait it asked for."""
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    with raw_server(refusing(503, {"Retry-After": later})) as url:
        with pytest.raises(basetts.ServerUnavailable) as info:
            basetts.Synthesizer(url=url, api_key="k", retries=3).synthesize("hello")
    assert info.value.retry_after == pytest.approx(3600, abs=5)


def test_timeouts_say_their_phase() -> None:
    def silent(connection: socket.socket, key: str) -> None:
        time.sleep(1.0)  # no answer to the upgrade

    with raw_server(silent) as url:
        with pytest.raises(basetts.HandshakeTimeout, match="handshake_timeout=0.3"):
            basetts.Synthesizer(url=url, api_key="k", handshake_timeout=0.3, retries=0).synthesize("hello")


def test_misuse_of_a_session_or_an_audio_is_ours(basetts_synthesizer: Any) -> None:
    with basetts_synthesizer.session() as session:
        session.send("hello")
    with pytest.raises(basetts.SessionEnded) as info:
        session.send("again")
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(basetts.ConfigurationError, match="different formats"):
        basetts.Audio(b"\0\0", sample_rate=24000) + basetts.Audio(b"\0\0", sample_rate=16000)
    with pytest.raises(basetts.ConfigurationError, match="dtype"):
        basetts.Audio(b"\0\0").to_numpy(dtype="int8")
    with pytest.raises(basetts.ArgumentTypeError):
        list(basetts_synthesizer.synthesize_many("one text"))


def test_a_predict_only_deployment_says_so_and_is_not_retried() -> None:
    """truss accepts a websocket to a model without one and closes at once with 1003: the error says the
    deployment serves HTTP only, names the websocket deployments, and no attempt is repeated."""
    with basetts.testing.LocalServer(predict_only=True) as server:
        synth = basetts.Synthesizer(url=server.url, api_key=server.api_key, retries=2, retry_backoff=0.01)
        with pytest.raises(basetts.ServerError, match=r"no websocket.*HTTP only.*/predict") as info:
            synth.synthesize("Hello there.")
        assert info.value.close_code == 1003 and not info.value.retryable
        assert server.handshakes == 1 and server.last().close_code == 1003
        assert info.value.partial.pcm == b""


def test_every_error_pickles_whole_to_another_process_and_back() -> None:
    """A worker process's failure reaches the parent (ProcessPoolExecutor, Celery, multiprocessing pickle
    it): every class, though its constructor takes keywords, comes back with what it carries."""
    partial = basetts.Audio(b"\x01\x02" * 10)
    errors = [
        basetts.ServerUnavailable("busy", status=503, headers={"retry-after": "3"}, retry_after=3.0, partial=partial),
        basetts.AuthenticationError("who", status=401), basetts.RedirectRefused("away", status=307),
        basetts.UnexpectedResponse("page", status=200), basetts.ConnectError("down", transient=True),
        basetts.SentenceError("bad", index=2, text="t", server_message="no"),
        basetts.VoiceError("v", server_message="s"),
        basetts.ServerError("closed", close_code=1011), basetts.StreamInterrupted("cut", recoverable=False),
        basetts.ReadTimeout("late", partial=partial), basetts.OutputError("/x.wav", OSError(28, "No space left")),
        basetts.InvalidText("empty"), basetts.ArgumentTypeError("int"), basetts.SessionEnded("over"),
        basetts.AudioDeviceError("none"), basetts.ModelNotFoundError("where", status=404),
        basetts.ConnectTimeout("c"), basetts.HandshakeTimeout("h"), basetts.FirstAudioTimeout("f"),
    ]
    exported = {getattr(basetts, name) for name in basetts.__all__}
    leaves = {cls for cls in exported if isinstance(cls, type) and issubclass(cls, basetts.BasetenTTSError)
              and not any(issubclass(other, cls) and other is not cls for other in exported if isinstance(other, type))}
    assert leaves <= {type(error) for error in errors}, "an exported error class is not tried here"
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.args == error.args
        assert vars(copy) == {**vars(error), "partial": copy.partial} and copy.partial.pcm == error.partial.pcm
        assert (copy.retryable, copy.recoverable) == (error.retryable, error.recoverable)
        if isinstance(error, OSError):
            assert (copy.errno, copy.strerror) == (error.errno, error.strerror)


def test_a_deployment_of_another_protocol_is_named_at_once(serve: Any) -> None:
    """protocol= that does not fit the deployment (or none, for a Qwen3-TTS one): an error at the first answer
    that says which protocol to use or to check, not a wait for read_timeout on each of recoveries' connections,
    nor "a deployment scaled to zero may be starting"."""
    qwen3 = serve(protocol="qwen3")
    with pytest.raises(basetts.ServerError, match="protocol='qwen3'"):
        basetts.Synthesizer(url=qwen3.url, api_key=qwen3.api_key).synthesize("Hello there.")
    orpheus = serve()
    with pytest.raises(basetts.ServerError, match="does not speak Qwen3-TTS's protocol.*protocol='orpheus'"):
        basetts.Synthesizer(url=orpheus.url, api_key=orpheus.api_key, protocol="qwen3", read_timeout=1,
                            first_audio_timeout=1).synthesize("Hello there.")
    assert len(orpheus.conversations) == 1, "tried again, or waited for audio that was never coming"
    for server_protocol, protocol in (("kokoro", "orpheus-http"), ("orpheus-http", "kokoro")):
        model = serve(protocol=server_protocol)
        with pytest.raises(basetts.ServerUnavailable, match="The model failed on the request.*check protocol=") as info:
            basetts.Synthesizer(url=model.url, api_key=model.api_key, protocol=protocol, retries=0).synthesize("Hi.")
        assert "scaled to zero" not in str(info.value) and info.value.status == 500
    streaming = serve(protocol="xtts-streaming")
    with pytest.raises(basetts.StreamInterrupted, match="Before any audio.*protocol= fits the deployment"):
        basetts.Synthesizer(url=streaming.url, api_key=streaming.api_key, retries=0, recoveries=0).synthesize("Hi.")
