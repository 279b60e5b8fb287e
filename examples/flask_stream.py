"""A Flask endpoint that streams speech to the browser while it is generated.

    pip install flask '.[formats]'      # from a checkout of basetts; [formats]: MP3 (else WAV)
    BASETEN_API_KEY=... BASETEN_MODEL_ID=... flask --app examples/flask_stream.py run
    open http://127.0.0.1:5000/?text=Hello+there     (a page with an <audio> element; /speak is the audio)

/speak streams MP3 (with the [formats] extra; WAV of unknown length without it), and the page feeds it
to its <audio> element through Media Source Extensions, so a browser starts playing with the first
chunk (given the stream itself, Chromium waits for seconds of audio that arrives in real time; tested
in headless Chromium). The first audio is waited for before answering, so a failure gets an honest
status instead of a 200 with an empty file: a key the server refuses or a wrong model is 502 (the
fault is this server's configuration, not the browser's), the TTS deployment timing out is 504, an
overloaded one 503 with its Retry-After. A failure after the first audio can only cut the response
short (the status is sent).
"""
import html
import itertools
from typing import Iterator, Optional
from urllib.parse import quote_plus

from flask import Flask, Response, request

from basetts import (
    AuthenticationError,
    BasetenTTSError,
    ConfigurationError,
    ConnectError,
    ModelNotFoundError,
    ServerError,
    Synthesizer,
    TimeoutError,
)
from basetts.audio import wav_header
from basetts.formats import encoded, format_of

try:  # MP3, which browsers play as it arrives, needs the [formats] extra; else WAV (played once it is all there)
    format_of("speech.mp3")
    MP3 = True
except ConfigurationError:
    MP3 = False

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


PAGE = """<!doctype html>
<meta charset="utf-8"><title>basetts</title>
<form><input name="text" size="60" value="{text}"> <button>Speak</button></form>
<audio id="speech" controls></audio>
<p id="problem"></p>
<script>
// The <audio> element plays /speak as it arrives: through Media Source Extensions, which start with the
// first chunk (an <audio src=...> waits for seconds of a stream that arrives in real time).
const audio = document.getElementById("speech"), url = "/speak?text={query}";
function problem(text) {{ document.getElementById("problem").textContent = text; }}
if (window.MediaSource && MediaSource.isTypeSupported("audio/mpeg") && {mp3}) {{
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  source.addEventListener("sourceopen", async () => {{
    const buffer = source.addSourceBuffer("audio/mpeg");
    const response = await fetch(url);
    if (!response.ok) {{ problem(await response.text()); source.endOfStream("network"); return; }}
    const reader = response.body.getReader();
    try {{
      for (;;) {{
        const {{done, value}} = await reader.read();
        if (done) break;
        buffer.appendBuffer(value);
        await new Promise(resolve => buffer.addEventListener("updateend", resolve, {{once: true}}));
      }}
      source.endOfStream();
    }} catch (error) {{ problem("the speech broke off: " + error); source.endOfStream("network"); }}
  }});
}} else {{
  audio.src = url;  // a WAV, played once enough of it is there
}}
audio.play().catch(error => problem("press play (" + error.name + ")"));
</script>
"""


@app.get("/")
def page() -> str:
    """A page whose <audio> element plays /speak as it streams."""
    text = request.args.get("text", "Hello from basetts, streaming into the browser.")
    return PAGE.format(text=html.escape(text, quote=True), query=quote_plus(text), mp3=str(MP3).lower())


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
        # A failure from here on raises inside the response: the server cuts it short, so the browser sees
        # an error, not a complete file. A client that goes away closes the generator (and the socket).
        try:
            if MP3:
                yield from encoded(itertools.chain([first], chunks), ".mp3")
            else:
                yield wav_header()
                yield from itertools.chain([first], chunks)
        finally:
            chunks.close()

    return Response(body(), mimetype="audio/mpeg" if MP3 else "audio/wav")
