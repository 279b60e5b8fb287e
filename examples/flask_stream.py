"""A Flask endpoint that streams speech to the browser as WAV while it is generated.

    pip install flask basetts
    BASETEN_API_KEY=... BASETEN_MODEL_ID=... flask --app examples/flask_stream.py run
    open http://127.0.0.1:5000/speak?text=Hello+there

The WAV header says "length unknown", so the browser starts playing with the first chunk.
"""
from flask import Flask, Response, request

from basetts import Synthesizer
from basetts.audio import wav_header

app = Flask(__name__)
synth = Synthesizer()  # thread-safe: one per process, shared by all requests


@app.get("/speak")
def speak() -> Response:
    text = request.args.get("text", "").strip()
    if not text:
        return Response("pass ?text=...", status=400)

    def body():
        yield wav_header()
        yield from synth.stream(text)  # a client that goes away closes the generator, and the socket

    return Response(body(), mimetype="audio/wav")
