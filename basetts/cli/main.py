"""`basetts`: say text, serve the local protocol server, list voices and devices, check the set-up.

Exit codes: 0 ok, 2 usage or configuration, 1 any other error (one line; a traceback with --debug).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from typing import Any, Dict, List, Optional

from .. import protocols
from .._version import __version__
from ..errors import BasetenTTSError, BasettsWarning, ConfigurationError
from ..protocols import NAMES
from ..protocols.orpheus import VOICES
from ..settings import endpoint_of
from .batch import _batch
from .common import (
    NO_KEY_FLAG,
    _Failed,
    _key_flags,
    _Missing,
    _positive,
    _protocol,
    _protocol_flags,
    _synthesizer,
    _Usage,
)
from .say import _play, _say


def _serve(args: argparse.Namespace) -> int:
    from ..testing import Faults, LocalServer

    off = lambda seconds: seconds if seconds > 0 else None  # noqa: E731 - 0 turns the keepalive off
    qwen3 = args.protocol == "qwen3"
    if not qwen3 and (args.voice or args.speaker or args.no_aligner):
        raise _Usage("--voice, --speaker and --no-aligner are for --protocol qwen3")
    extra: Dict[str, Any] = {"protocol": "qwen3", "voices": args.voice, "speakers": args.speaker,
                             "aligner": not args.no_aligner,
                             "task_type": "CustomVoice" if args.speaker else "Base"} if qwen3 else {
                                 "protocol": args.protocol}
    server = LocalServer(api_key=args.api_key, port=args.port, engine=args.engine, speed=args.speed,
                         samples_per_word=args.samples_per_word, faults=Faults.parse(args.fault),
                         ping_interval=off(args.ping_interval), ping_timeout=off(args.ping_timeout), **extra)
    with server:
        # What the URL does not say by itself (a websocket URL means orpheus, a predict URL orpheus-http).
        said = endpoint_of(server.url, None)[1] == server.protocol
        protocol = "" if said else f"export BASETTS_PROTOCOL={args.protocol}\n"
        print(f"basetts local server ({server.protocol}, {server.engine} engine), Ctrl+C to stop; for clients in "
              f"a shell:\nexport BASETTS_URL={server.url}\nexport BASETEN_API_KEY={server.api_key}\n{protocol}",
              end="", flush=True)
        if qwen3 and not args.voice and not args.speaker:
            # As the real Base model: every sentence fails without a voice. Said on stderr: stdout is for scripts.
            print("basetts: this server clones voices and has none yet: add one (basetts voices add NAME CLIP "
                  "--consent ID) and speak with --voice NAME, or start it with --voice NAME (a voice it has) or "
                  "--speaker NAME (built-in speakers)", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    return 0


def _voices(args: argparse.Namespace) -> int:
    action = args.action or "list"
    protocol = _protocol(args)
    if protocol != "qwen3":
        if action != "list":
            raise _Usage(f"voices {action}: voices are added and removed on Qwen3-TTS: pass --protocol qwen3 "
                         "(or set BASETTS_PROTOCOL=qwen3)")
        for line in protocols.spec(protocol).voices():
            print(line)
        return 0
    synth = _synthesizer(args, args.url, None)
    if action == "list":
        voices = synth.voices.list()
        for voice in voices:
            detail = f"  (added; consent {voice.consent})" if voice.added else "  (built in)"
            print(f"{voice.name}{detail}")
        if not voices:
            print("basetts: no voices yet: add one with basetts voices add NAME CLIP --consent ID", file=sys.stderr)
        return 0
    if action == "add":
        if len(args.names) != 2:
            raise _Usage("voices add NAME CLIP --consent ID: a name and a 1-30 s audio file")
        if not args.consent:
            raise _Usage("voices add: --consent ID is required (the speaker's recorded consent to be cloned)")
        voice = synth.voices.add(args.names[0], args.names[1], consent=args.consent, ref_text=args.ref_text,
                                 description=args.description)
        print(f"basetts: added {voice.name}; speak with --voice {voice.name}", file=sys.stderr)
        return 0
    if len(args.names) != 1:
        raise _Usage("voices remove NAME")
    synth.voices.remove(args.names[0])
    print(f"basetts: removed {args.names[0]}", file=sys.stderr)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from . import doctor

    def make_synthesizer(url: Optional[str] = None, api_key: Optional[str] = None) -> Any:
        """The configured Synthesizer (the flags, then the environment and .env), or the local server's."""
        try:
            return _synthesizer(args, url, api_key)
        except _Missing as exc:  # nothing configured: doctor measures the local server instead, and says so
            raise ConfigurationError(str(exc)) from None

    failed = 0
    for check in doctor.run(device=args.device, url=args.url, local=args.local, make_synthesizer=make_synthesizer,
                            protocol=_protocol(args)):
        print(check, flush=True)
        failed += check.status == doctor.FAIL
    print(f"verdict: {'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return 1 if failed else 0


def _devices(args: argparse.Namespace) -> int:
    from ..playback import portaudio

    found = portaudio.devices()
    if not found:
        print("basetts: no audio output devices found (no sound card, or no access to the sound server). "
              "`basetts say -o out.wav` writes a file instead; `basetts doctor` checks the set-up.",
              file=sys.stderr)
        return 1
    for device in found:
        print(device)
    return 0


URL_HELP = "the deployment's URL: …/websocket, or …/predict for HTTP (default: BASETTS_URL, or BASETEN_MODEL_ID's)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basetts",
                                     description="Text to speech through Baseten's text-to-speech deployments.")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    parser.add_argument("--version", action="version", version=f"basetts {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    say = commands.add_parser("say", help="speak text (from the arguments, or stdin as it arrives)")
    say.add_argument("text", nargs="*", help="the text; read from stdin when absent")
    say.add_argument("-o", "--output", metavar="FILE",
                     help="write the audio to FILE instead of playing: .wav, .pcm (raw 16-bit 24 kHz mono); .flac, "
                          ".ogg, .opus, .mp3 with the [formats] extra; - writes wav or pcm to stdout")
    say.add_argument("--format", choices=("wav", "pcm", "flac", "ogg", "opus", "mp3"),
                     help="for -o: the file's format (default: its extension)")
    say.add_argument("--fallback-output", metavar="FILE",
                     help="if there is no way to play here, write FILE instead (without it: exit 1)")
    say.add_argument("--voice", help=f"Orpheus: one of {', '.join(VOICES)} (default tara); Qwen3: a voice added "
                                     "(basetts voices add) or built in; others: basetts voices --protocol NAME")
    endpoint = say.add_mutually_exclusive_group()
    endpoint.add_argument("--url", help=URL_HELP)
    endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    endpoint.add_argument("--local", action="store_true", help="start a local server for this call")
    say.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    _key_flags(say, "read the API key from FILE (default: BASETEN_API_KEY or .env; never a flag ps shows)")
    say.add_argument("--buffer-size", type=_positive(int), help="Orpheus: words per forced flush (default 10)")
    _protocol_flags(say)
    for name, default in (("connect", 10), ("handshake", 300), ("first-audio", 60), ("read", 30)):
        say.add_argument(f"--{name}-timeout", type=_positive(float), metavar="SECONDS",
                         help=f"the {name.replace('-', ' ')} timeout (default {default} s)")
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
    serve.add_argument("--protocol", choices=NAMES, default="orpheus",
                       help="the protocol to serve (default orpheus; orpheus-http and xtts-streaming: POST …/predict, "
                            "streamed PCM; kokoro, chatterbox, sesame, piper, xtts-v2, metavoice, json-audio: "
                            "POST …/predict, JSON with a base64 WAV)")
    serve.add_argument("--voice", action="append", default=[], metavar="NAME",
                       help="qwen3: a voice already added (repeat for more)")
    serve.add_argument("--speaker", action="append", default=[], metavar="NAME",
                       help="qwen3: serve a CustomVoice model with this built-in speaker (repeat for more)")
    serve.add_argument("--no-aligner", action="store_true", help="qwen3: no word timestamps, as a server without one")
    serve.set_defaults(run=_serve)

    play = commands.add_parser("play", help="play a WAV file (any rate and channel count)")
    play.add_argument("file", help="the WAV file")
    play.add_argument("--device", help="output device: an index or part of its name")
    play.add_argument("--volume", type=float, default=1.0, help="software gain from 0 to 1 (default 1)")
    play.set_defaults(run=_play)

    batch = commands.add_parser("batch", help="synthesize many texts into a folder, resumably")
    batch.add_argument("input", metavar="INPUT",
                       help="a text file (one utterance per line), a .jsonl file ({\"id\", \"text\", \"voice\", ...} "
                            "per line), a .csv file (a text column), or - for stdin")
    batch.add_argument("outdir", metavar="OUTDIR", help="where the files and manifest.jsonl go")
    batch.add_argument("--input-format", choices=("text", "jsonl", "csv"), help="default: by INPUT's extension")
    batch.add_argument("--format", choices=("wav", "pcm", "flac", "ogg", "opus", "mp3"), default="wav",
                       help="the files' format (default wav)")
    batch.add_argument("--concurrency", type=_positive(int), default=8,
                       help="texts at a time, each one connection (default 8)")
    batch_endpoint = batch.add_mutually_exclusive_group()
    batch_endpoint.add_argument("--url", help=URL_HELP)
    batch_endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    batch_endpoint.add_argument("--local", action="store_true", help="start a local server for this run")
    batch.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    _key_flags(batch)
    batch.add_argument("--voice", help="the default voice (a JSONL or CSV item may name its own)")
    batch.add_argument("--buffer-size", type=_positive(int), help="Orpheus: words per forced flush (default 10)")
    _protocol_flags(batch)
    for name, default in (("connect", 10), ("handshake", 300), ("first-audio", 60), ("read", 30)):
        batch.add_argument(f"--{name}-timeout", type=_positive(float), metavar="SECONDS",
                           help=f"the {name.replace('-', ' ')} timeout (default {default} s)")
    batch.set_defaults(run=_batch)

    voices = commands.add_parser("voices", help="list voices (and Orpheus's emotion tags); add and remove Qwen3's")
    voices.add_argument("action", nargs="?", choices=("list", "add", "remove"), help="default: list")
    voices.add_argument("names", nargs="*", metavar="NAME [CLIP]",
                        help="add: NAME CLIP (1-30 s of speech); remove: NAME")
    voices.add_argument("--consent", metavar="ID", help="add: the id of the speaker's recorded consent")
    voices.add_argument("--ref-text", help="add: what the clip says (in-context cloning: a closer likeness)")
    voices.add_argument("--description", help="add: a description of the voice")
    voices.add_argument("--protocol", choices=NAMES, help="default: BASETTS_PROTOCOL, or orpheus")
    voices_endpoint = voices.add_mutually_exclusive_group()
    voices_endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL, or BASETEN_MODEL_ID's)")
    voices_endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    voices.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    _key_flags(voices)
    voices.set_defaults(run=_voices)
    commands.add_parser("devices", help="list audio output devices").set_defaults(run=_devices)

    doctor = commands.add_parser("doctor", help="check sound and endpoint, one verdict line per check")
    doctor.add_argument("--device", help="output device to check: an index or part of its name")
    endpoint = doctor.add_mutually_exclusive_group()
    endpoint.add_argument("--url", help=URL_HELP)
    endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    endpoint.add_argument("--local", action="store_true", help="measure against a local server")
    doctor.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    _key_flags(doctor)
    doctor.add_argument("--protocol", choices=NAMES, help="what the deployment speaks (default: BASETTS_PROTOCOL, "
                                                          "else the URL's; with only a model id, found out)")
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="basetts: %(levelname)s: %(message)s")
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    """A warning as one line of the CLI's, not Python's two with a source file; ours are in the log already."""
    if not issubclass(category, BasettsWarning):
        print(f"basetts: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "refused_api_key", None) is not None:
        print(f"basetts: {NO_KEY_FLAG}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # end a status line
        return 130
    except _Failed as exc:
        if args.debug:
            raise
        print(f"basetts: error: {exc}", file=sys.stderr)
        return 1
    except (_Usage, ConfigurationError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"basetts: {exc}", file=sys.stderr)
        return 2
    except (BasetenTTSError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"basetts: error: {exc}", file=sys.stderr)
        return 1

