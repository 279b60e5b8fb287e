"""`basetts`: say text, serve the local protocol server, list voices and devices.

Exit codes: 0 ok, 2 usage or configuration, 1 any other error (one line; a traceback with --debug).
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import os
import sys
from typing import Iterator, List, Optional

from .errors import AudioDeviceError, BasetenTTSError, ConfigurationError
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


def _say(args: argparse.Namespace) -> int:
    from .synthesizer import Synthesizer

    text = " ".join(args.text) if args.text else _stdin_fragments()
    with contextlib.ExitStack() as stack:
        url, api_key = args.url, None
        if args.local:
            import shutil

            from .testing import LocalServer

            engine = "espeak" if shutil.which("espeak-ng") else "tone"
            server = stack.enter_context(LocalServer(engine=engine))
            url, api_key = server.url, server.api_key
            print(f"basetts: local server at {server.url} ({engine} engine)", file=sys.stderr)
        synth = Synthesizer(url=url, api_key=api_key, voice=args.voice, buffer_size=args.buffer_size)
        if args.output:
            audio = synth.save(text, args.output)
            print(f"basetts: wrote {audio.duration:.1f} s of audio to {args.output}", file=sys.stderr)
            return 0
        speak = getattr(synth, "speak", None)
        try:
            if speak is None:
                raise AudioDeviceError("playback is not available in this build")
            speak(text)
        except AudioDeviceError as exc:
            if not isinstance(text, str):
                raise
            path = os.path.abspath(DEMO_WAV)
            audio = synth.save(text, path)
            print(f"basetts: cannot play here ({exc}).\nbasetts: wrote {audio.duration:.1f} s of audio to "
                  f"{path} instead.", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .testing import Faults, LocalServer

    server = LocalServer(api_key=args.api_key, port=args.port, engine=args.engine, speed=args.speed,
                         samples_per_word=args.samples_per_word, faults=Faults.parse(args.fault))
    with server:
        print(f"basetts local server ({server.engine} engine), Ctrl+C to stop\n"
              f"  BASETTS_URL={server.url}\n  BASETEN_API_KEY={server.api_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                server._thread.join(3600) if server._thread else None  # noqa: SLF001
    return 0


def _voices(args: argparse.Namespace) -> int:
    print("Voices:       " + " ".join(VOICES))
    print("Emotion tags: " + " ".join(EMOTION_TAGS))
    return 0


def _devices(args: argparse.Namespace) -> int:
    from . import playback  # type: ignore[attr-defined]

    for device in playback.devices():
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
    say.add_argument("--url", help="websocket URL (default: BASETTS_URL or BASETEN_MODEL_ID)")
    say.add_argument("--local", action="store_true", help="start a local server for this call")
    say.add_argument("--buffer-size", type=int, default=10, help="words per forced flush (default 10)")
    say.set_defaults(run=_say)

    serve = commands.add_parser("serve", help="run the local protocol server on 127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--api-key", help="the key clients must send (default: a random one)")
    serve.add_argument("--engine", choices=("tone", "espeak"), default="tone")
    serve.add_argument("--speed", type=float, help="pace audio at this multiple of real time")
    serve.add_argument("--samples-per-word", type=int, default=2400, help="tone engine: audio per word")
    serve.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                       help="misbehave on purpose, e.g. drop_after_bytes=8192 (see basetts.testing.Faults)")
    serve.set_defaults(run=_serve)

    commands.add_parser("voices", help="list voices and emotion tags").set_defaults(run=_voices)
    commands.add_parser("devices", help="list audio output devices").set_defaults(run=_devices)
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
