"""The real server's flush rule: when it speaks, what it speaks, and the words it deletes unspoken.

Both sides use it: the local server to behave as the real one does, and the client to predict where the
server's segments end (to pace its words) and to cut words so that no sentence boundary falls inside a
message (the real server deletes words when one does: docs/protocol.md, "Sentence ends inside a word").
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

Sentences = Callable[[List[str]], List[List[str]]]
"""The server's buffered words in, its sentences out (each a list of words, split as pysbd's text is)."""

_CLOSERS = "\"'”’)]"
_ENDS = (".", "!", "?", "…")
# Abbreviations pysbd never ends a sentence at, whatever follows.
_NEVER_ENDS = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "sr.", "jr.", "no.", "vs.", "e.g.", "i.e.", "etc."}
# A character that can end a sentence with something after it in the same word ("日本語。テスト。", "Hmm..").
_INNER_END = re.compile(r"[.!?…。！？](?=\S)")


def _ends_sentence(word: str, following: str) -> bool:
    bare = word.rstrip(_CLOSERS)
    if not bare.endswith(_ENDS):
        return False
    lower = bare.lower()
    if lower in _NEVER_ENDS or (len(bare) == 2 and bare[0].isalpha()):  # "Dr.", "X." (an initial)
        return False
    if "." in bare[:-1].strip("."):  # "U.S.", "p.m.": a sentence end only before a capital
        return following[:1].isupper()
    return True


def builtin_sentences(words: List[str]) -> List[List[str]]:
    """A stand-in for pysbd where it is not installed: it agrees with pysbd on the usual cases ("Dr.",
    "Mr.", "p.m.", "U.S.", "e.g.") and never finds a boundary inside a word."""
    sentences: List[List[str]] = []
    start = 0
    for index in range(len(words) - 1):
        if _ends_sentence(words[index], words[index + 1]):
            sentences.append(words[start:index + 1])
            start = index + 1
    if start < len(words):
        sentences.append(words[start:])
    return sentences


@functools.lru_cache(maxsize=1)
def pysbd_segment() -> Optional[Callable[[str], List[str]]]:
    """pysbd's ``segment``, configured as the real server's; None when pysbd is not installed."""
    try:
        import pysbd  # type: ignore[import-untyped]
    except ImportError:
        return None
    segmenter: Any = pysbd.Segmenter(language="en", clean=False)
    return segmenter.segment  # type: ignore[no-any-return]


def pysbd_sentences(words: List[str]) -> List[List[str]]:
    """What the real server finds: pysbd on the buffer joined by spaces, each sentence split again."""
    segment = pysbd_segment()
    assert segment is not None, "pysbd is not installed"
    return [sentence.split() for sentence in segment(" ".join(words))]


def server_sentences() -> Sentences:
    """The splitter the real server uses (pysbd) if installed, else the built-in one."""
    return pysbd_sentences if pysbd_segment() is not None else builtin_sentences


class Flush(NamedTuple):
    """One generation: the words spoken, and the buffered words the server removed for it."""

    spoken: List[str]
    removed: List[str]

    @property
    def lost(self) -> str:
        """Text removed from the buffer but never spoken (a sentence end inside a word), else ""."""
        removed, spoken = "".join(self.removed), "".join(self.spoken)
        return removed[len(spoken):] if removed.startswith(spoken) else ""


def flush(buffer: List[str], buffer_size: int, final: bool, sentences: Sentences) -> Optional[Flush]:
    """The real server's `flush`: take the words to speak now out of `buffer`, or None.

    All complete sentences once more than one is buffered (the last may still grow); else the first
    `buffer_size` words once that many are buffered; else, at the end, whatever is left. Words are
    removed by counting each complete sentence's words, as the server does, so a sentence end inside a
    word removes more than it speaks. One action per call: why a client sends one word per message.
    """
    if not buffer:
        return None
    found = sentences(buffer)
    if len(found) > 1:
        spoken = [word for sentence in found[:-1] for word in sentence]
        consumed = len(spoken)
    elif len(buffer) >= buffer_size:
        spoken, consumed = buffer[:buffer_size], buffer_size
    elif final:
        spoken, consumed = list(buffer), len(buffer)
    else:
        return None
    removed = buffer[:consumed]
    del buffer[:consumed]
    return Flush(spoken, removed)


def safe_pieces(word: str, before: Sequence[str] = ()) -> List[str]:
    """`word` cut where pysbd finds sentence ends inside it ("日本語。テスト。" -> "日本語。", "テスト。"), so
    that each piece goes out as its own message and the server loses none of it. `before`: the words
    the server holds before it (pysbd decides in context: "0 !0" ends a sentence after "!"). Most
    words are one piece, found so without pysbd."""
    if not _INNER_END.search(word):
        return [word]
    segment = pysbd_segment()
    if segment is None:  # without pysbd, cut after each inner sentence-ending character
        pieces = re.split(r"(?<=[.!?…。！？])(?=[^\s.!?…。！？])", word)
    else:
        text = " ".join([*before, word])
        start, cuts, offset = len(text) - len(word), [], 0
        for sentence in segment(text):
            offset += len(sentence)
            if start < offset < len(text):
                cuts.append(offset - start)
        if offset != len(text):  # pysbd rewrote something: keep the word whole rather than change it
            return [word]
        pieces = [word[a:b] for a, b in zip([0, *cuts], [*cuts, len(word)])]
    pieces = [piece for piece in pieces if piece.strip()]
    if "".join(pieces) != word:
        return [word]
    if len(pieces) == 1:
        return pieces
    # A piece sent on its own is read after a space, where pysbd may find another end inside it
    # (":.!0" -> ":.", "!0", and then "!", "0"): cut each again, in the context it will have.
    result: List[str] = []
    for piece in pieces:
        result.extend(safe_pieces(piece, [*before, *result]))
    return result


class SegmentModel:
    """Our copy of the server's buffer, fed the messages we send: tells which message makes it speak."""

    def __init__(self, buffer_size: int, sentences: Sentences = builtin_sentences) -> None:
        self.buffer_size = buffer_size
        self._sentences = sentences
        self._buffer: List[str] = []

    def context(self) -> List[str]:
        """The last words the server holds (what pysbd sees before the next word)."""
        return self._buffer[-3:]

    def ends_before(self, message: str) -> bool:
        """Whether the words pushed so far make whole segments once `message` comes (none is left to join it):
        a new conversation may then begin with `message`, and the server speak the same segments."""
        if not self._buffer:
            return True
        buffer = [*self._buffer, *message.split()]
        return flush(buffer, self.buffer_size, False, self._sentences) is not None and buffer == message.split()

    def push(self, message: str) -> bool:
        """Add one message; True if the server generates a segment once it has read it."""
        self._buffer.extend(message.split())
        return flush(self._buffer, self.buffer_size, False, self._sentences) is not None
