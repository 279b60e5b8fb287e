"""What every `basetts` command shares: usage and failure errors, the settings flags, the Synthesizer they make."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from ..synthesizer import Synthesizer


class _Usage(Exception):
    """A usage or configuration error: exit 2 with this message."""


class _Missing(_Usage):
    """The endpoint or the key is nowhere (the flags, the environment, .env): what to set."""


class _Failed(Exception):
    """The call failed, and the message says what was kept: exit 1."""


# What the CLI calls each setting the SDK may find missing.
_MISSING = {
    "endpoint": "the endpoint: --model-id ID or --url URL, or BASETEN_MODEL_ID (or BASETTS_URL) in the "
                "environment or .env",
    "api_key": "the API key: BASETEN_API_KEY in the environment or .env, or --api-key-file FILE",
}
NO_KEY_FLAG = ("--api-key: a key on the command line is seen by every user of this machine (ps) and kept in the "
               "shell's history; set BASETEN_API_KEY in the environment or .env, or use --api-key-file FILE")


def _key_flags(parser: argparse.ArgumentParser, help: str = "read the API key from FILE") -> None:
    """--api-key-file, and --api-key refused saying what to use instead (unrefused, argparse would take it for an
    abbreviation of --api-key-file and read the key as a file's name)."""
    parser.add_argument("--api-key-file", metavar="FILE", help=help)
    parser.add_argument("--api-key", dest="refused_api_key", help=argparse.SUPPRESS)


# Flags that are settings of the same name, passed on when given.
_SETTING_FLAGS = ("connect_timeout", "handshake_timeout", "first_audio_timeout", "read_timeout", "voice",
                  "buffer_size", "protocol", "language", "instructions", "ref_audio", "ref_text", "text_format")
# A status line once the first audio is this late: a deployment scaled to zero can take minutes.
_WAITING_AFTER = 2.0


def _synthesizer(args: argparse.Namespace, url: Optional[str], api_key: Optional[str]) -> "Synthesizer":
    from ..settings import MissingSettings
    from ..synthesizer import Synthesizer

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
        raise _Missing("missing " + "; and ".join(_MISSING[name] for name in exc.missing)) from None


def _protocol(args: argparse.Namespace) -> str:
    """--protocol, else BASETTS_PROTOCOL (the environment or .env), else orpheus."""
    if getattr(args, "protocol", None):
        return str(args.protocol)
    from ..settings import protocol_from_environment

    return protocol_from_environment()


def _local_server(args: argparse.Namespace, engine: str = "tone") -> Any:
    """The local server for --local, speaking the protocol asked for."""
    from ..testing import LocalServer

    return LocalServer.ready_to_speak(_protocol(args), engine=engine)


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
    from ..protocols import NAMES

    command.add_argument("--protocol", choices=NAMES,
                         help="what the deployment speaks: orpheus or qwen3 (websockets), orpheus-http or "
                              "xtts-streaming (…/predict, streamed), kokoro, chatterbox, sesame, piper, xtts-v2, "
                              "metavoice or json-audio (…/predict, JSON); default: BASETTS_PROTOCOL, else the URL's "
                              "(…/predict: orpheus-http)")
    command.add_argument("--text-format", choices=("markdown", "plain"),
                         help="markdown (the default: marks, code blocks, URLs' paths and emoji are left out, as a "
                              "person reading aloud would) or plain (the text is sent as it is)")
    qwen3 = command.add_argument_group("Qwen3-TTS")
    qwen3.add_argument("--language", help="Auto, English, Chinese, Japanese, ... (default: the server's)")
    qwen3.add_argument("--instructions", help="how to speak: style, emotion")
    qwen3.add_argument("--ref-audio", metavar="FILE_OR_URL", help="a 1-30 s clip of the voice to clone")
    qwen3.add_argument("--ref-text", help="what --ref-audio says")
