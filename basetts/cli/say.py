"""`basetts say`: text from arguments or stdin (as it arrives), played or written to a file or stdout."""
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
from typing import Any, Callable, Iterable, Iterator, List, Optional

from ..audio import Audio
from ..errors import AudioDeviceError, BasetenTTSError, ConfigurationError, OutputError
from ..text import TextFormat, WordSplitter
from .common import (
    _WAITING_AFTER,
    _Failed,
    _local_server,
    _synthesizer,
    _Usage,
)


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

    def count_words(self, fragments: Iterable[str], text_format: TextFormat) -> Iterator[str]:
        """`fragments` as they are, their words counted as the SDK sends them (a word split across
        fragments counts once)."""
        splitter = WordSplitter(text_format)
        for fragment in fragments:
            self.words += len(splitter.feed(fragment))
            self._show()
            yield fragment
        self.words += len(splitter.finish())

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


def _output_format(args: argparse.Namespace) -> Optional[str]:
    """The extension to write (.wav, .pcm, .mp3, ...), from --format or the file's name; a usage error
    for what cannot be written here, before anything is sent."""
    if args.output is None:
        return None
    if args.output == "-":
        if (args.format or "wav") not in ("wav", "pcm"):
            raise _Usage("-o - writes wav or pcm to stdout (--format wav|pcm)")
        return f".{args.format or 'wav'}"
    from ..checks import check_writable
    from ..formats import format_of

    try:
        extension = format_of(args.output, args.format)
        check_writable(args.output)
        return extension
    except ConfigurationError as exc:
        raise _Usage(f"-o {args.output}: {exc}") from None


def _say(args: argparse.Namespace) -> int:
    text = None
    if args.text:
        text = " ".join(args.text)
        if not text.strip():
            raise ValueError("text is empty: there is nothing to speak")
    elif sys.stdin.isatty():
        print("basetts: reading the text from the terminal; end it with Ctrl+D (or pass it as arguments)",
              file=sys.stderr)
    output, fmt = args.output, _output_format(args)
    with contextlib.ExitStack() as stack:
        checked = None
        if not args.local:
            # The configuration is what to fix first: said (exit 2) before the sound card, and with it when
            # both are missing, so one run names everything. The Synthesizer made for it is the one used (its
            # warnings, a URL rewritten say, come once).
            try:
                checked = stack.enter_context(_synthesizer(args, args.url, None))
            except _Usage as exc:
                problem = None if output is not None else _cannot_play(args.device)
                raise _Usage(f"{exc}" + (f"; and cannot play here: {problem} (-o FILE writes the audio to a file "
                                         "instead)" if problem is not None else "")) from None
        return _say_with(args, stack, checked, text, output, fmt)


def _say_with(args: argparse.Namespace, stack: contextlib.ExitStack, synth: Any, text: Optional[str],
              output: Optional[str], fmt: Optional[str]) -> int:
    """`_say` once the configuration is known good: on `synth`, or (--local) a local server's."""
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
    if args.local:
        engine = "espeak" if shutil.which("espeak-ng") else "tone"
        server = stack.enter_context(_local_server(args, engine=engine))
        print(f"basetts: local server at {server.url} ({engine} engine)", file=sys.stderr)
        synth = stack.enter_context(_synthesizer(args, server.url, server.api_key))
    if text is not None:
        fragments: Iterable[str] = [text]
    else:
        # Connect while the first words are awaited (a language model thinking, a deployment
        # starting), but request speech only once there are words: empty stdin is a usage error.
        try:
            synth.connect()
        except BasetenTTSError as exc:  # the call connects again itself, retrying what is transient
            logging.getLogger("basetts").debug("connecting ahead failed: %s", exc)
        fragments = _once_there_are_words(_stdin_fragments())
    words = progress.count_words(fragments, synth.settings.text_format)
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
    """Write the audio into `output` ("-": stdout) as it arrives (a file through `save()`, which takes back
    from it what a lost connection makes again); on a failure or Ctrl+C, what arrived stays a valid file, and
    the message says it is partial."""
    if output != "-":
        try:
            saved = synth.save(words, output, format=extension, on_audio=on_audio)
        except (BasetenTTSError, KeyboardInterrupt) as exc:
            audio = getattr(exc, "partial", None)
            kept = (f"kept the audio that arrived in {output} (partial)" if audio is None  # Ctrl+C: not counted
                    else f"{output} holds the first {audio.duration:.1f} s of the audio" if isinstance(exc, OutputError)
                    else f"wrote the {audio.duration:.1f} s of audio that arrived to {output} (partial)" if audio
                    else f"no audio arrived: {output} holds none")
            if isinstance(exc, KeyboardInterrupt):
                print(f"\nbasetts: interrupted; {kept}", file=sys.stderr)
                raise
            raise _Failed(f"{exc} ({kept})") from exc
        print(f"basetts: wrote {saved.duration:.1f} s of audio to {output}", file=sys.stderr)
        return
    from ..formats import AudioWriter

    writer = AudioWriter(sys.stdout.buffer, extension)
    try:
        for chunk in synth.stream(words):
            writer.write(chunk)
            on_audio(chunk)
            sys.stdout.buffer.flush()
    except (BasetenTTSError, KeyboardInterrupt) as exc:
        with contextlib.suppress(OutputError):  # stdout itself may be what failed (a closed pipe)
            writer.close()
        partial = f"wrote the {writer.duration:.1f} s of audio that arrived to stdout (partial)"
        if isinstance(exc, KeyboardInterrupt):
            print(f"\nbasetts: interrupted; {partial}", file=sys.stderr)
            raise
        raise _Failed(f"{exc} ({partial})") from exc
    writer.close()
    print(f"basetts: wrote {writer.duration:.1f} s of audio to stdout", file=sys.stderr)


def _cannot_play(device: Optional[str]) -> Optional[str]:
    """Why playback is impossible here, or None: checked before any text is read or sent."""
    try:
        from ..playback import portaudio

        portaudio.check_output(device)
    except ImportError:
        return "playback is not available in this build"
    except AudioDeviceError as exc:
        return str(exc)
    return None


def _play(args: argparse.Namespace) -> int:
    from ..playback import play

    if not os.path.isfile(args.file):
        print(f"basetts: no such file: {args.file}", file=sys.stderr)
        return 2
    why = _cannot_play(args.device)
    if why is not None:
        print(f"basetts: cannot play here: {why}", file=sys.stderr)
        return 1
    try:
        audio = Audio.from_wav(args.file)
    except ConfigurationError as exc:  # not a WAV file basetts can read
        print(f"basetts: {exc}", file=sys.stderr)
        return 2
    heard = play(audio, output_device=args.device, volume=args.volume)  # Ctrl+C: a fade, then exit 130
    print(f"basetts: played {heard.duration:.1f} s", file=sys.stderr)
    return 0
