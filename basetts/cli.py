"""`basetts`: say text, serve the local protocol server, list voices and devices, check the set-up.

Exit codes: 0 ok, 2 usage or configuration, 1 any other error (one line; a traceback with --debug).
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import itertools
import logging
import os
import shutil
import sys
import time
import wave
from typing import Iterable, Iterator, List, Optional

from .audio import Audio
from .errors import AudioDeviceError, BasetenTTSError, ConfigurationError
from .protocol import iter_words
from .settings import EMOTION_TAGS, VOICES

DEMO_WAV = "basetts-demo.wav"


def _stdin_fragments() -> Iterator[str]:
    """Text from stdin as it arrives (not line by line), so a piped LLM is spoken while it writes."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    fd = sys.stdin.fileno()
    while True:
        data = os.read(fd, 4096)
        if not data:
            break
        yield decoder.decode(data)
    yield decoder.decode(b"", final=True)


def _once_there_are_words(fragments: Iterator[str]) -> Iterator[str]:
    """`fragments` from the first one on, once one holds a word; a usage error if the input ends first."""
    blank: List[str] = []
    for fragment in fragments:
        if fragment.strip():
            return itertools.chain(blank, [fragment], fragments)
        blank.append(fragment)
    raise ValueError("stdin is empty: there is nothing to speak")


class _Progress:
    """One status line on stderr (words sent, seconds of audio received), only when it is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.words = 0
        self.audio_bytes = 0
        self._shown = 0.0

    def count_words(self, fragments: Iterable[str]) -> Iterator[str]:
        """The words of `fragments` as the SDK sends them (a word split across fragments counts once),
        each with a space after it, counted as they go."""
        for word in iter_words(fragments):
            self.words += 1
            self._show()
            yield word + " "

    def audio(self, chunk: bytes) -> None:
        self.audio_bytes += len(chunk)
        self._show()

    def _show(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (final or now - self._shown > 0.1):
            self._shown = now
            seconds = self.audio_bytes / (2 * 24000)
            print(f"\r  {self.words} words sent, {seconds:.1f} s of audio", end="\n" if final else "",
                  file=sys.stderr, flush=True)

    def done(self) -> None:
        self._show(final=True)


def _say(args: argparse.Namespace) -> int:
    from .audio import Audio
    from .synthesizer import Synthesizer

    if args.text:
        text = " ".join(args.text)
        if not text.strip():
            raise ValueError("text is empty: there is nothing to speak")
    progress = _Progress(sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        url, api_key = args.url, None
        if args.local:
            from .testing import LocalServer

            engine = "espeak" if shutil.which("espeak-ng") else "tone"
            server = stack.enter_context(LocalServer(engine=engine))
            url, api_key = server.url, server.api_key
            print(f"basetts: local server at {server.url} ({engine} engine)", file=sys.stderr)
        synth = stack.enter_context(
            Synthesizer(url=url, api_key=api_key, voice=args.voice, buffer_size=args.buffer_size))
        output = args.output
        if not output:
            problem = _cannot_play(args.device)
            if problem:
                output = os.path.abspath(DEMO_WAV)
                print(f"basetts: cannot play here ({problem}); writing {output} instead.", file=sys.stderr)
        if args.text:
            fragments: Iterable[str] = [text]
        else:
            # Connect while the first words are awaited (a language model thinking, a deployment
            # starting), but request speech only once there are words: empty stdin is a usage error.
            try:
                synth.connect()
            except BasetenTTSError as exc:  # the call connects again itself, retrying what is transient
                logging.getLogger("basetts").debug("connecting ahead failed: %s", exc)
            fragments = _once_there_are_words(_stdin_fragments())
        words = progress.count_words(fragments)
        if output:
            chunks = []
            for chunk in synth.stream(words):
                chunks.append(chunk)
                progress.audio(chunk)
            audio = Audio(b"".join(chunks))
            audio.save(output)
            progress.done()
            print(f"basetts: wrote {audio.duration:.1f} s of audio to {output}", file=sys.stderr)
        else:
            synth.speak(words, on_audio=progress.audio, output_device=args.device)
            progress.done()
    return 0


def _cannot_play(device: Optional[str]) -> Optional[str]:
    """Why playback is impossible here, or None: checked before any text is read or sent."""
    try:
        from . import portaudio

        portaudio.check_output(device)
    except ImportError:
        return "playback is not available in this build"
    except AudioDeviceError as exc:
        return str(exc)
    return None


def _play(args: argparse.Namespace) -> int:
    from .playback import play

    if not os.path.isfile(args.file):
        print(f"basetts: no such file: {args.file}", file=sys.stderr)
        return 2
    why = _cannot_play(args.device)
    if why is not None:
        print(f"basetts: cannot play here: {why}", file=sys.stderr)
        return 1
    try:
        audio = Audio.from_wav(args.file)
    except (EOFError, wave.Error) as exc:
        print(f"basetts: {args.file} is not a WAV file basetts can read ({exc})", file=sys.stderr)
        return 2
    heard = play(audio, output_device=args.device, volume=args.volume)  # Ctrl+C: a fade, then exit 130
    print(f"basetts: played {heard.duration:.1f} s", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .testing import Faults, LocalServer

    off = lambda seconds: seconds if seconds > 0 else None  # noqa: E731 - 0 turns the keepalive off
    server = LocalServer(api_key=args.api_key, port=args.port, engine=args.engine, speed=args.speed,
                         samples_per_word=args.samples_per_word, faults=Faults.parse(args.fault),
                         ping_interval=off(args.ping_interval), ping_timeout=off(args.ping_timeout))
    with server:
        print(f"basetts local server ({server.engine} engine), Ctrl+C to stop\n"
              f"  BASETTS_URL={server.url}\n  BASETEN_API_KEY={server.api_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    return 0


def _voices(args: argparse.Namespace) -> int:
    print("Voices:       " + " ".join(VOICES))
    print("Emotion tags: " + " ".join(EMOTION_TAGS))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from . import doctor

    failed = 0
    for check in doctor.run(device=args.device, url=args.url, local=args.local):
        print(check, flush=True)
        failed += check.status == doctor.FAIL
    print(f"verdict: {'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return 1 if failed else 0


def _devices(args: argparse.Namespace) -> int:
    from . import portaudio

    found = portaudio.devices()
    if not found:
        print("basetts: no audio output devices found (no sound card, or no access to the sound server). "
              "`basetts say -o out.wav` writes a file instead; `basetts doctor` checks the set-up.",
              file=sys.stderr)
        return 1
    for device in found:
        print(device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basetts", description="Text to speech through Baseten's websocket.")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    say = commands.add_parser("say", help="speak text (from the arguments, or stdin as it arrives)")
    say.add_argument("text", nargs="*", help="the text; read from stdin when absent")
    say.add_argument("-o", "--output", help="write a WAV file instead of playing")
    say.add_argument("--voice", default="tara", help=f"one of {', '.join(VOICES)}")
    endpoint = say.add_mutually_exclusive_group()
    endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL or BASETEN_MODEL_ID)")
    endpoint.add_argument("--local", action="store_true", help="start a local server for this call")
    say.add_argument("--buffer-size", type=int, default=10, help="words per forced flush (default 10)")
    say.add_argument("--device", help="output device: an index or part of its name")
    say.set_defaults(run=_say)

    serve = commands.add_parser("serve", help="run the local protocol server on 127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--api-key", help="the key clients must send (default: a random one)")
    serve.add_argument("--engine", choices=("tone", "espeak"), default="tone")
    serve.add_argument("--speed", type=float,
                       help="pace audio at this multiple of real time (0.5: a model slower than real time)")
    serve.add_argument("--samples-per-word", type=int, default=2048,
                       help="tone engine: audio per word (2048: one 4096-byte message, as the real server sends)")
    serve.add_argument("--ping-interval", type=float, default=20.0,
                       help="keepalive ping every this many seconds, as uvicorn does (0: no pings)")
    serve.add_argument("--ping-timeout", type=float, default=20.0,
                       help="close with 1011 when a pong is this many seconds late, as uvicorn does (0: never)")
    serve.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                       help="misbehave on purpose, e.g. drop_after_bytes=8192 (see basetts.testing.Faults)")
    serve.set_defaults(run=_serve)

    play = commands.add_parser("play", help="play a WAV file (any rate and channel count)")
    play.add_argument("file", help="the WAV file")
    play.add_argument("--device", help="output device: an index or part of its name")
    play.add_argument("--volume", type=float, default=1.0, help="software gain from 0 to 1 (default 1)")
    play.set_defaults(run=_play)

    commands.add_parser("voices", help="list voices and emotion tags").set_defaults(run=_voices)
    commands.add_parser("devices", help="list audio output devices").set_defaults(run=_devices)

    doctor = commands.add_parser("doctor", help="check sound and endpoint, one verdict line per check")
    doctor.add_argument("--device", help="output device to check: an index or part of its name")
    endpoint = doctor.add_mutually_exclusive_group()
    endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL or BASETEN_MODEL_ID)")
    endpoint.add_argument("--local", action="store_true", help="measure against a local server")
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="basetts: %(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except (ConfigurationError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"basetts: {exc}", file=sys.stderr)
        return 2
    except (BasetenTTSError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"basetts: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
