"""Write docs/api.md from the docstrings and signatures: `make docs` (a test checks it is up to date)."""
from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any, List

import basetts
from basetts import errors, testing
from basetts.audio import Saved, wav_header
from basetts.batch import Progress, Result
from basetts.cli.doctor import Check
from basetts.playback import Player
from basetts.playback.portaudio import Device
from basetts.session import Session
from basetts.settings import CallSettings
from basetts.testing.server import ConversationRecord
from basetts.voices import Voice, Voices

OUT = Path(__file__).with_name("api.md")

SECTIONS = [
    ("Synthesizing", [basetts.Synthesizer, Session, basetts.Audio, basetts.Stats, basetts.Timeline, Saved,
                      wav_header]),
    ("Many texts", [Result, Progress]),
    ("Qwen3-TTS", [basetts.Word, basetts.Sentence, Voices, Voice, "PROTOCOLS"]),
    ("Playback", [basetts.Playback, basetts.play, basetts.devices, Device, Player]),
    ("Settings", [basetts.Settings, CallSettings, "VOICES", "EMOTION_TAGS"]),
    ("Errors", [getattr(errors, name) for name in (
        "BasetenTTSError", "ConfigurationError", "InvalidText", "ArgumentTypeError", "ConnectError",
        "HandshakeError", "AuthenticationError", "ModelNotFoundError", "ServerUnavailable", "RedirectRefused",
        "UnexpectedResponse", "ServerError", "SentenceError", "TimeoutError", "ConnectTimeout", "HandshakeTimeout",
        "FirstAudioTimeout", "ReadTimeout", "StreamInterrupted", "SessionEnded", "AudioDeviceError", "OutputError",
        "VoiceError", "BasettsWarning")]),
    ("Testing: the local server", [testing.LocalServer, testing.Faults, ConversationRecord, testing.tone_pcm]),
    ("Diagnostics", [Check]),
]


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: Any) -> str:
    """Like str(inspect.signature(obj)), with annotations as written (no quotes) and no `-> None`."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = []
    for param in signature.parameters.values():
        text = str(param.replace(annotation=inspect.Parameter.empty, default=inspect.Parameter.empty))
        if param.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}" if param.annotation is not inspect.Parameter.empty \
                else f"={param.default!r}"
        params.append(text)
    # the bare `*` marking keyword-only parameters
    kinds = [p.kind for p in signature.parameters.values()]
    if inspect.Parameter.KEYWORD_ONLY in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds:
        params.insert(kinds.index(inspect.Parameter.KEYWORD_ONLY), "*")
    result = f"({', '.join(params)})"
    returns = signature.return_annotation
    if returns is not inspect.Signature.empty and _annotation(returns) != "None":
        result += f" -> {_annotation(returns)}"
    return result


def _annotation(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return re.sub(r"ForwardRef\((\w+)\)", r"\1", text.replace('"', "").replace("'", ""))


def _members(cls: type) -> List[str]:
    lines = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") and name not in ("__iter__", "__enter__"):
            continue
        if isinstance(member, property):
            lines.append(f"- `.{name}` (property): {_doc(member) or '-'}")
        elif inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
            function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if _doc(function):
                signature = _signature(function).replace("(self, ", "(").replace("(self)", "()").replace("(cls, ", "(")
                lines.append(f"- `{name}{signature}`: {_doc(function)}".replace("\n", "\n  "))
    return lines


def render() -> str:
    parts = ["# API reference", "",
             "Generated from the docstrings by `make docs` (`python docs/make_api.py`); the guide "
             "([guide.md](guide.md)) explains how the pieces fit.", ""]
    for title, items in SECTIONS:
        parts += [f"## {title}", ""]
        for item in items:
            if isinstance(item, str):
                parts += [f"### `basetts.{item}`", "", f"`{getattr(basetts, item)!r}`", ""]
                continue
            error = inspect.isclass(item) and issubclass(item, Exception)
            if error:
                heading = f"class {item.__name__}({', '.join(b.__name__ for b in item.__bases__)})"
            else:
                heading = ("class " if inspect.isclass(item) else "") + item.__name__ + _signature(item)
            parts += [f"### `{heading}`", "", _doc(item), ""]
            if inspect.isclass(item) and not error:
                members = _members(item)
                parts += members + ([""] if members else [])
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
