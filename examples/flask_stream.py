"""A Flask endpoint that streams speech to the browser as WAV while it is generated.

    pip install flask '.[play]'        # from a checkout of basetts
    BASETEN_API_KEY=... BASETEN_MODEL_ID=... flask --app examples/flask_stream.py run
    open http://127.0.0.1:5000/speak?text=Hello+there

The first audio is waited for before answering, so a failure gets an honest status instead of a 200
with an empty WAV: a key the server refuses or a wrong model is 502 (the fault is this server's
configuration, not the browser's), the TTS deployment timing out is 504, an overloaded one 503 with its
Retry-After. A failure after the first audio can only cut the response short (the status is sent).
"""
import itertools
from typing import Iterator, Optional

from flask import Flask, Response, request

from basetts import (
    AuthenticationError,
    BasetenTTSError,
    ConnectError,
    ModelNotFoundError,
    ServerError,
    Synthesizer,
    TimeoutError,
)
from basetts.audio import wav_header

app = Flask(__name__)
synth = Synthesizer()  # thread-safe: one per process, shared by all requests


def failure(exc: BasetenTTSError) -> Response:
    """The status a browser should see when the TTS backend fails before any audio."""
    retry_after: Optional[float] = getattr(exc, "retry_after", None)
    if isinstance(exc, AuthenticationError):
        status, message = 502, "the TTS backend refused this server's API key (check BASETEN_API_KEY)"
    elif isinstance(exc, ModelNotFoundError):
        status, message = 502, "the TTS model was not found (check BASETEN_MODEL_ID)"
    elif isinstance(exc, TimeoutError):
        status, message = 504, "the TTS backend did not answer in time"
    elif isinstance(exc, ServerError) and exc.status in (429, 503):
        status, message = 503, "the TTS backend is overloaded; try again later"
    elif isinstance(exc, ConnectError):
        status, message = 502, "the TTS backend cannot be reached"
    else:
        status, message = 502, "the TTS backend failed"
    app.logger.error("speech failed: %s", exc)
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status == 503 and retry_after is not None:
        response.headers["Retry-After"] = str(int(retry_after + 0.999))
    return response


@app.get("/speak")
def speak() -> Response:
    text = request.args.get("text", "").strip()
    if not text:
        return Response("pass ?text=...\n", status=400, mimetype="text/plain")
    chunks = synth.stream(text)
    try:
        first = next(chunks)  # connects and waits for the first audio: failures get a status
    except StopIteration:
        return Response("the TTS backend sent no audio\n", status=502, mimetype="text/plain")
    except BasetenTTSError as exc:
        return failure(exc)

    def body() -> Iterator[bytes]:
        try:
            yield wav_header()
            # A failure from here on raises inside the response: the server cuts it short, so the browser
            # sees an error, not a complete file. A client that goes away closes the generator (and the socket).
            yield from itertools.chain([first], chunks)
        finally:
            chunks.close()

    return Response(body(), mimetype="audio/wav")
