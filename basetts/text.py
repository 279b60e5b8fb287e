"""Text before it is sent: what may be spoken, the text format that makes it ready for speech, and the
words of a text or of fragments arriving over time, each with the characters of the text given it stands for."""
from __future__ import annotations

import collections
import re
import threading
from itertools import islice
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple, Union

from .errors import ArgumentTypeError, ConfigurationError, InvalidText
from .markdown import Markdown, Piece

Text = Union[str, Iterable[str]]
"""A whole text, or fragments of it arriving over time (tokens from a language model)."""

TextFormat = Union[str, Callable[[str], str]]
"""How the text given becomes what is said: "markdown", "plain" or a function of one sentence."""

TEXT_FORMATS = ("markdown", "plain")

Span = Tuple[int, int]


class Spoken(str):
    """A word as sent, and `span`: the characters [start, end) of the text given that it stands for (for
    fragments, of their concatenation)."""

    span: Span


def check_text_format(value: Any) -> None:
    if not (callable(value) or value in TEXT_FORMATS):
        raise ConfigurationError(f"text_format must be 'markdown', 'plain' or a function from a sentence (str) to "
                                 f"what to say for it (str), got {value!r}")


def check_text(text: Any) -> str:
    """Reject what cannot be spoken before any connection is made."""
    if not isinstance(text, str):
        raise ArgumentTypeError(f"text must be a str (or an iterable of str fragments), not {type(text).__name__}")
    if not text.strip():
        raise InvalidText("text is empty: there is nothing to speak")
    return check_fragment(text)


def check_fragment(fragment: Any) -> str:
    """A fragment must be a str that can be sent as UTF-8 (no lone surrogates)."""
    if not isinstance(fragment, str):
        raise ArgumentTypeError(f"text fragments must be str, not {type(fragment).__name__}")
    try:
        fragment.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidText(f"text is not valid unicode (lone surrogate at index {exc.start})") from None
    return fragment


_WORD = re.compile(r"\S+")
_UNIT_END = re.compile(r"(?<=[.!?\u2026\u3002\uff01\uff1f])\s|\n")


class _Sentences:
    """A function of the user's own, applied to each sentence (cut after a sentence's end mark and the
    space that follows it, or at a line's end) as soon as it is whole; each result stands for its sentence."""

    def __init__(self, function: Callable[[str], str]) -> None:
        self._function = function
        self._held = ""
        self._at = 0

    def feed(self, fragment: str) -> List[Piece]:
        self._held += fragment
        pieces: List[Piece] = []
        start = 0
        for end in _UNIT_END.finditer(self._held):
            pieces.append(self._said(start, end.end()))
            start = end.end()
        self._held, self._at = self._held[start:], self._at + start
        return pieces

    def finish(self) -> List[Piece]:
        pieces = [self._said(0, len(self._held))] if self._held else []
        self._held, self._at = "", self._at + len(self._held)
        return pieces

    def _said(self, start: int, end: int) -> Piece:
        said = self._function(self._held[start:end])
        if not isinstance(said, str):
            raise ArgumentTypeError(f"text_format's function must return a str, not {type(said).__name__}")
        return Piece(check_fragment(said) + " ", self._at + start, self._at + end)


class WordSplitter:
    """Text fragments (LLM tokens, split anywhere) through the text format, as whole words (`Spoken`, with
    their spans); a trailing partial word is held back until what follows it is known."""

    def __init__(self, text_format: TextFormat = "markdown") -> None:
        self._format: Any = Markdown() if text_format == "markdown" else \
            _Sentences(text_format) if callable(text_format) else None
        self._given = 0
        self._word = ""
        self._span = (0, 0)

    def feed(self, fragment: str) -> List[Spoken]:
        fragment = check_fragment(fragment)
        start, self._given = self._given, self._given + len(fragment)
        pieces = [Piece(fragment, start, self._given)] if self._format is None else self._format.feed(fragment)
        return self._split(pieces)

    def finish(self) -> List[Spoken]:
        """The held-back words, once no more text will come."""
        words = [] if self._format is None else self._split(self._format.finish())
        if self._word:
            words.append(self._spoken())
        return words

    def _split(self, pieces: List[Piece]) -> List[Spoken]:
        words: List[Spoken] = []
        for said, start, end in pieces:
            exact = len(said) == end - start  # each character stands for itself (else all for the whole span)
            tokens = _WORD.finditer(said)
            if self._word or not exact:
                for token in tokens:
                    self._add(words, token, start, end, exact)
            else:  # no word held, each character its own: the common case, without the checks
                held = None
                for token in tokens:
                    if held is not None:  # a space came after it
                        word = Spoken(held.group())
                        word.span = (start + held.start(), start + held.end())
                        words.append(word)
                    held = token
                if held is not None:  # the last may go on in the next piece
                    self._word, self._span = held.group(), (start + held.start(), start + held.end())
            if self._word and said and said[-1].isspace():
                words.append(self._spoken())
        return words

    def _add(self, words: List[Spoken], token: "re.Match[str]", start: int, end: int, exact: bool) -> None:
        """One token of a piece: it ends the word held if a space came first, else goes on with it."""
        at = token.start()
        if self._word and at:  # a space came between the word held and this one
            words.append(self._spoken())
        first, last = (start + at, start + token.end()) if exact else (start, end)
        if self._word:  # the held word goes on in this piece
            self._word += token.group()
            if last > first:  # a period the text layer added stands for nothing more
                self._span = (min(self._span[0], first), max(self._span[1], last))
        else:
            self._word, self._span = token.group(), (first, last)

    def _spoken(self) -> Spoken:
        word = Spoken(self._word)
        word.span, self._word = self._span, ""
        return word


def iter_words(fragments: Iterable[str], text_format: TextFormat = "markdown") -> Iterator[Spoken]:
    """Whole words from an iterable of fragments, yielded as soon as each word is known complete."""
    splitter = WordSplitter(text_format)
    for fragment in fragments:
        yield from splitter.feed(fragment)
    yield from splitter.finish()


_SLICE = 512
"""Characters of a whole text read at a time (`WholeText`): the first words go out before the rest is read."""


class WholeText:
    """A whole text's words, read as they are asked for (the text a slice at a time: words and spans do not depend
    on where fragments are cut), so a long text's first words go out before the rest is read, as a short text's
    do. What is read is kept: a second pass (a retry, the next part, a recovery) reads no word twice, and a
    text_format function sees each sentence once. A whole text, not one arriving over time: it never waits
    (`is_whole`). Raises InvalidText at once if there is nothing to say in it."""

    __slots__ = ("text", "text_format", "_words", "_reader", "_lock")

    def __init__(self, text: str, text_format: TextFormat = "markdown") -> None:
        self.text, self.text_format = check_text(text), text_format
        self._words: List[Spoken] = []
        self._reader = self._read()  # a slice's words at a time
        self._lock = threading.Lock()  # the reader: one pass at a time advances it
        if not self._more():
            raise InvalidText("text has nothing to say once read as Markdown (code blocks, marks and emoji are "
                              "left out): pass text_format='plain' to send it as it is")

    def __iter__(self) -> Iterator[Spoken]:
        index = 0
        while index < len(self._words) or self._more(index):
            yield self._words[index]
            index += 1

    def _more(self, have: int = 0) -> bool:
        """Read the words of the next slice that has any, unless there are more than `have` already; False at
        the text's end."""
        with self._lock:
            if len(self._words) > have:
                return True  # another pass read them meanwhile
            for words in self._reader:
                if words:
                    self._words.extend(words)
                    return True
            return False

    def _read(self) -> Iterator[List[Spoken]]:
        splitter = WordSplitter(self.text_format)
        text = self.text
        for start in range(0, len(text), _SLICE):
            yield splitter.feed(text[start:start + _SLICE])
        yield splitter.finish()


def is_whole(words: Iterable[str]) -> bool:
    """Whether `words` are a whole text (all there, read without waiting), not text arriving over time."""
    return isinstance(words, (list, tuple, WholeText))


def words_of(text: Text, text_format: TextFormat = "markdown") -> Iterable[str]:
    """The words to send: a str is checked now and split as its words are asked for (`WholeText`); an iterable
    is split lazily as it yields."""
    if isinstance(text, str):
        return WholeText(text, text_format)
    if isinstance(text, (bytes, bytearray, memoryview)) or not isinstance(text, Iterable):
        raise ArgumentTypeError(f"text must be a str or an iterable of str, not {type(text).__name__}")
    return iter_words(text, text_format)


def _letters(text: str) -> str:
    return "".join(char for char in text.casefold() if char.isalnum())


class Aligner:
    """Finds the words a server's aligner names (Qwen3-TTS's word times) in the words sent, for their spans
    in the text given. The writer's thread `tracks` the words as they go; the reader's asks `span_of`."""

    LOOKAHEAD = 256
    """Letters searched past the last word found: a server word not found there has no span."""

    def __init__(self) -> None:
        self._letters: Deque[Tuple[str, Optional[Span]]] = collections.deque()
        self._lock = threading.Lock()

    def track(self, words: Iterable[str]) -> Iterator[str]:
        for word in words:
            span: Optional[Span] = getattr(word, "span", None)
            with self._lock:
                self._letters.extend((letter, span) for letter in _letters(word))
            yield word

    def span_of(self, said: str) -> Optional[Span]:
        """The span of the words sent that `said` is (found in order: each letter once)."""
        wanted = _letters(said)
        if not wanted:
            return None
        with self._lock:
            ahead = list(islice(self._letters, 0, self.LOOKAHEAD + len(wanted)))
            at = "".join(letter for letter, _ in ahead).find(wanted)
            if at < 0:
                return None
            spans = [span for _, span in ahead[at:at + len(wanted)] if span is not None]
            for _ in range(at + len(wanted)):
                self._letters.popleft()
        return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None
