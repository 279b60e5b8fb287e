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
import threading
import time
import wave
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional

from ._version import __version__
from .audio import Audio
from .errors import AudioDeviceError, BasetenTTSError, ConfigurationError
from .protocols.orpheus import EMOTION_TAGS, VOICES
from .text import iter_words

if TYPE_CHECKING:
    from .synthesizer import Synthesizer

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


class _Usage(Exception):
    """A usage or configuration error: exit 2 with this message."""


class _Failed(Exception):
    """The call failed, and the message says what was kept: exit 1."""


# What the CLI calls each setting the SDK may find missing.
_MISSING = {
    "endpoint": "the endpoint: --model-id ID or --url URL, or BASETEN_MODEL_ID (or BASETTS_URL) in the "
                "environment or .env",
    "api_key": "the API key: BASETEN_API_KEY in the environment or .env, or --api-key-file FILE",
}
# Flags that are settings of the same name, passed on when given.
_SETTING_FLAGS = ("connect_timeout", "handshake_timeout", "first_audio_timeout", "read_timeout", "voice",
                  "buffer_size", "protocol", "language", "instructions", "ref_audio", "ref_text")
# A status line once the first audio is this late: a deployment scaled to zero can take minutes.
_WAITING_AFTER = 2.0


def _synthesizer(args: argparse.Namespace, url: Optional[str], api_key: Optional[str]) -> "Synthesizer":
    from .settings import MissingSettings
    from .synthesizer import Synthesizer

    if api_key is None and args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as file:
                api_key = file.read().strip() or None
        except OSError as exc:
            raise _Usage(f"--api-key-file: cannot read {args.api_key_file} ({exc.strerror})") from None
        if api_key is None:
            raise _Usage(f"--api-key-file: {args.api_key_file} is empty")
    options: Dict[str, Any] = {name: getattr(args, name, None) for name in _SETTING_FLAGS
                               if getattr(args, name, None) is not None}
    if getattr(args, "environment", None):
        options["environment"] = args.environment
    try:
        return Synthesizer(url=url, api_key=api_key, model_id=getattr(args, "model_id", None), **options)
    except MissingSettings as exc:
        raise _Usage("missing " + "; and ".join(_MISSING[name] for name in exc.missing)) from None


def _protocol(args: argparse.Namespace) -> str:
    """--protocol, else BASETTS_PROTOCOL (the environment or .env), else orpheus."""
    if getattr(args, "protocol", None):
        return str(args.protocol)
    from .settings import protocol_from_environment

    return protocol_from_environment()


def _local_server(args: argparse.Namespace, engine: str = "tone") -> Any:
    """The local server for --local, speaking the protocol asked for."""
    from .testing import LocalServer

    return LocalServer.ready_to_speak(_protocol(args), engine=engine)


def _output_format(args: argparse.Namespace) -> Optional[str]:
    """The extension to write (.wav, .pcm, .mp3, ...), from --format or the file's name; a usage error
    for what cannot be written here, before anything is sent."""
    if args.output is None:
        return None
    if args.output == "-":
        if (args.format or "wav") not in ("wav", "pcm"):
            raise _Usage("-o - writes wav or pcm to stdout (--format wav|pcm)")
        return f".{args.format or 'wav'}"
    from .formats import format_of

    try:
        return format_of(args.output, args.format)
    except ConfigurationError as exc:
        raise _Usage(f"-o {args.output}: {exc}") from None


def _say(args: argparse.Namespace) -> int:
    if args.text:
        text = " ".join(args.text)
        if not text.strip():
            raise ValueError("text is empty: there is nothing to speak")
    elif sys.stdin.isatty():
        print("basetts: reading the text from the terminal; end it with Ctrl+D (or pass it as arguments)",
              file=sys.stderr)
    output, fmt = args.output, _output_format(args)
    if not args.local:
        # The configuration is what to fix first: said (exit 2) before the sound card, and with it when
        # both are missing, so one run names everything.
        try:
            _synthesizer(args, args.url, None).close()
        except _Usage as exc:
            problem = None if output is not None else _cannot_play(args.device)
            raise _Usage(f"{exc}" + (f"; and cannot play here: {problem} (-o FILE writes the audio to a file "
                                     "instead)" if problem is not None else "")) from None
    if output is None:
        problem = _cannot_play(args.device)
        if problem is not None:
            if args.device is not None and "No output device" in problem:
                raise _Usage(f"--device {args.device}: {problem}")
            if not args.fallback_output:
                print(f"basetts: cannot play here: {problem} (-o FILE writes the audio to a file instead)",
                      file=sys.stderr)
                return 1
            output, fmt = os.path.abspath(args.fallback_output), ".wav"
            print(f"basetts: cannot play here ({problem}); writing {output} instead.", file=sys.stderr)
    progress = _Progress(sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        url, api_key = args.url, None
        if args.local:

            engine = "espeak" if shutil.which("espeak-ng") else "tone"
            server = stack.enter_context(_local_server(args, engine=engine))
            url, api_key = server.url, server.api_key
            print(f"basetts: local server at {server.url} ({engine} engine)", file=sys.stderr)
        synth = stack.enter_context(_synthesizer(args, url, api_key))
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
        waiting = threading.Timer(_WAITING_AFTER, lambda: print(
            "basetts: waiting for the first audio (a deployment scaled to zero can take minutes to start)...",
            file=sys.stderr, flush=True))
        waiting.daemon = True
        stack.callback(waiting.cancel)

        def on_audio(chunk: bytes) -> None:
            waiting.cancel()
            progress.audio(chunk)

        try:
            waiting.start()
            if output:
                _write(synth, words, output, fmt or ".wav", on_audio)
            else:
                synth.speak(words, on_audio=on_audio, output_device=args.device)
        finally:
            progress.done()
    return 0


def _write(synth: Any, words: Iterable[str], output: str, extension: str,
           on_audio: Callable[[bytes], None]) -> None:
    """Stream the audio into `output` ("-": stdout) as it arrives; on a failure or Ctrl+C, what arrived
    stays a valid file, and the message says it is partial."""
    from .formats import AudioWriter

    to_stdout = output == "-"
    name = "stdout" if to_stdout else output
    writer = AudioWriter(sys.stdout.buffer if to_stdout else output, extension)
    try:
        for chunk in synth.stream(words):
            writer.write(chunk)
            on_audio(chunk)
            if to_stdout:
                sys.stdout.buffer.flush()
    except (BasetenTTSError, KeyboardInterrupt) as exc:
        writer.close()
        partial = f"wrote the {writer.duration:.1f} s of audio that arrived to {name} (partial)"
        if isinstance(exc, KeyboardInterrupt):
            print(f"\nbasetts: interrupted; {partial}", file=sys.stderr)
            raise
        raise _Failed(f"{exc} ({partial})") from exc
    writer.close()
    print(f"basetts: wrote {writer.duration:.1f} s of audio to {name}", file=sys.stderr)


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


def _batch(args: argparse.Namespace) -> int:
    """basetts batch INPUT OUTDIR: one file per item, a manifest, resumable, honest about failures."""
    import json

    from .batch import file_name, input_kind, read_jobs, read_manifest
    from .formats import AudioWriter, format_of

    extension = format_of("item." + args.format)
    outdir = os.path.abspath(args.outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise _Usage(f"OUTDIR {args.outdir} is a file, not a folder")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise _Usage(f"OUTDIR {args.outdir}: cannot create it ({exc.strerror})") from None
    if not os.access(outdir, os.W_OK):
        raise _Usage(f"OUTDIR {args.outdir} is not writable")
    if args.input == "-":
        source: Any = sys.stdin
    else:
        try:
            source = open(args.input, encoding="utf-8", newline="")
        except OSError as exc:
            raise _Usage(f"INPUT {args.input}: cannot read it ({exc.strerror})") from None
    kind = input_kind(args.input, args.input_format)
    manifest_path = os.path.join(outdir, "manifest.jsonl")
    before = read_manifest(manifest_path)
    skipped_blank: List[int] = []
    counts = {"done": 0, "skipped": 0, "failed": 0, "bad": 0}
    synth = _synthesizer(args, args.url, None) if not args.local else None
    with contextlib.ExitStack() as stack:
        if source is not sys.stdin:
            stack.enter_context(source)
        manifest = stack.enter_context(open(manifest_path, "a", encoding="utf-8"))
        if synth is None:

            server = stack.enter_context(_local_server(args))
            synth = _synthesizer(args, server.url, server.api_key)

        def note(entry: Dict[str, Any]) -> None:
            manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
            manifest.flush()

        def todo() -> Iterator[Dict[str, Any]]:
            """The jobs still to do, as items for synthesize_many; the others are noted or skipped."""
            for job in read_jobs(source, kind, skipped_blank):
                name = file_name(job.id, extension)
                if job.problem is not None:
                    counts["bad"] += 1
                    note({"id": job.id, "line": job.line, "error": job.problem})
                    continue
                last = before.get(job.id)
                if (last and last.get("error") is None and last.get("text_sha256") == job.key
                        and os.path.exists(os.path.join(outdir, name))):
                    counts["skipped"] += 1
                    continue
                yield {"text": job.text, **job.settings, "id": job.id, "_job": job, "_file": name}

        total = None
        if source is not sys.stdin and sys.stderr.isatty():  # a total for the bar's ETA: one quick pass
            with open(args.input, encoding="utf-8", newline="") as counting:
                total = sum(1 for line in counting if line.strip()) - (kind == "csv")
        bar = _progress_bar(sys.stderr.isatty(), total)
        try:
            for result in synth.synthesize_many(todo(), concurrency=args.concurrency):
                job, name = result.item["_job"], result.item["_file"]
                entry: Dict[str, Any] = {"id": job.id, "line": job.line, "text_sha256": job.key, "file": name}
                if result.audio is not None:
                    temporary = os.path.join(outdir, f".{name}.partial")
                    try:
                        with AudioWriter(temporary, extension) as writer:
                            writer.write(result.audio.pcm)
                        os.replace(temporary, os.path.join(outdir, name))  # appears only when complete
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.remove(temporary)
                        raise
                    stats = result.audio.stats
                    entry.update(seconds=round(result.audio.duration, 3), first_audio=stats.first_byte_time,
                                 attempts=stats.attempts, error=None)
                    counts["done"] += 1
                else:
                    error = result.error
                    partial = getattr(error, "partial", None)
                    entry.update(seconds=None, attempts=getattr(getattr(partial, "stats", None), "attempts", None),
                                 error=f"{type(error).__name__}: {error}")
                    counts["failed"] += 1
                note(entry)
                bar.update(result)
        except KeyboardInterrupt:
            bar.close()
            print(f"basetts: stopped; {counts['done']} done, {counts['failed']} failed this run "
                  f"({counts['skipped']} already done). Run the same command again to go on.", file=sys.stderr)
            raise
        bar.close()
    print(f"basetts: {counts['done']} written, {counts['skipped']} already done, {counts['failed']} failed, "
          f"{counts['bad']} bad input line(s), {len(skipped_blank)} blank line(s) skipped; manifest: "
          f"{manifest_path}", file=sys.stderr)
    return 1 if counts["failed"] or counts["bad"] else 0


class _NoBar:
    def update(self, result: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmBar:
    """tqdm's bar: items, audio seconds, errors, rate, and the ETA when the total is known (not for stdin)."""

    def __init__(self, total: Optional[int]) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self._bar = tqdm(unit="item", file=sys.stderr, dynamic_ncols=True, total=total)
        self._audio, self._errors = 0.0, 0

    def update(self, result: Any) -> None:
        self._audio += result.audio.duration if result.audio is not None else 0.0
        self._errors += result.error is not None
        self._bar.set_postfix(audio=f"{self._audio:.0f}s", errors=self._errors, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(terminal: bool, total: Optional[int] = None) -> Any:
    """tqdm's bar on a terminal (if tqdm is installed: the [batch] extra), else nothing."""
    if not terminal:
        return _NoBar()
    try:
        return _TqdmBar(total)
    except ImportError:
        return _NoBar()


def _serve(args: argparse.Namespace) -> int:
    from .testing import Faults, LocalServer

    off = lambda seconds: seconds if seconds > 0 else None  # noqa: E731 - 0 turns the keepalive off
    qwen3 = args.protocol == "qwen3"
    if not qwen3 and (args.voice or args.speaker or args.no_aligner):
        raise _Usage("--voice, --speaker and --no-aligner are for --protocol qwen3")
    extra: Dict[str, Any] = {"protocol": "qwen3", "voices": args.voice, "speakers": args.speaker,
                             "aligner": not args.no_aligner,
                             "task_type": "CustomVoice" if args.speaker else "Base"} if qwen3 else {}
    server = LocalServer(api_key=args.api_key, port=args.port, engine=args.engine, speed=args.speed,
                         samples_per_word=args.samples_per_word, faults=Faults.parse(args.fault),
                         ping_interval=off(args.ping_interval), ping_timeout=off(args.ping_timeout), **extra)
    with server:
        protocol = "export BASETTS_PROTOCOL=qwen3\n" if qwen3 else ""
        print(f"basetts local server ({server.protocol}, {server.engine} engine), Ctrl+C to stop; for clients in "
              f"a shell:\nexport BASETTS_URL={server.url}\nexport BASETEN_API_KEY={server.api_key}\n{protocol}",
              end="", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    return 0


def _voices(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if _protocol(args) != "qwen3":
        if action != "list":
            raise _Usage(f"voices {action}: voices are added and removed on Qwen3-TTS: pass --protocol qwen3 "
                         "(or set BASETTS_PROTOCOL=qwen3)")
        print("Voices:       " + " ".join(VOICES))
        print("Emotion tags: " + " ".join(EMOTION_TAGS))
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


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above 0, with a message that says so."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def _protocol_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--protocol", choices=("orpheus", "qwen3"),
                         help="the deployment's websocket (default: BASETTS_PROTOCOL, or orpheus)")
    qwen3 = command.add_argument_group("Qwen3-TTS")
    qwen3.add_argument("--language", help="Auto, English, Chinese, Japanese, ... (default: the server's)")
    qwen3.add_argument("--instructions", help="how to speak: style, emotion")
    qwen3.add_argument("--ref-audio", metavar="FILE_OR_URL", help="a 1-30 s clip of the voice to clone")
    qwen3.add_argument("--ref-text", help="what --ref-audio says")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basetts", description="Text to speech through Baseten's websocket.")
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
                                     "(basetts voices add) or built in")
    endpoint = say.add_mutually_exclusive_group()
    endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL, or BASETEN_MODEL_ID's)")
    endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    endpoint.add_argument("--local", action="store_true", help="start a local server for this call")
    say.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    say.add_argument("--api-key-file", metavar="FILE",
                     help="read the API key from FILE (default: BASETEN_API_KEY or .env; never a flag ps shows)")
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
    serve.add_argument("--protocol", choices=("orpheus", "qwen3"), default="orpheus",
                       help="the protocol to serve (default orpheus)")
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
    batch_endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL, or BASETEN_MODEL_ID's)")
    batch_endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    batch_endpoint.add_argument("--local", action="store_true", help="start a local server for this run")
    batch.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    batch.add_argument("--api-key-file", metavar="FILE", help="read the API key from FILE")
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
    voices.add_argument("--protocol", choices=("orpheus", "qwen3"), help="default: BASETTS_PROTOCOL, or orpheus")
    voices_endpoint = voices.add_mutually_exclusive_group()
    voices_endpoint.add_argument("--url", help="websocket URL (default: BASETTS_URL, or BASETEN_MODEL_ID's)")
    voices_endpoint.add_argument("--model-id", help="the Baseten model id (default: BASETEN_MODEL_ID)")
    voices.add_argument("--environment", help="with --model-id: the deployment environment (default production)")
    voices.add_argument("--api-key-file", metavar="FILE", help="read the API key from FILE")
    voices.set_defaults(run=_voices)
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


if __name__ == "__main__":
    sys.exit(main())
