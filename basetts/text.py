"""Text before it is sent: what may be spoken, and the words of a text or of fragments arriving over time."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Union

from .errors import ArgumentTypeError, InvalidText

Text = Union[str, Iterable[str]]
"""A whole text, or fragments of it arriving over time (tokens from a language model)."""


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


class WordSplitter:
    """Turns text fragments (LLM tokens, split anywhere) into whole words; holds back a trailing partial."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, fragment: str) -> List[str]:
        text = self._partial + check_fragment(fragment)
        words = text.split()
        self._partial = words.pop() if words and not text[-1].isspace() else ""
        return words

    def finish(self) -> List[str]:
        """The held-back word, once no more text will come."""
        word, self._partial = self._partial, ""
        return [word] if word else []


def iter_words(fragments: Iterable[str]) -> Iterator[str]:
    """Whole words from an iterable of fragments, yielded as soon as each word is known complete."""
    splitter = WordSplitter()
    for fragment in fragments:
        yield from splitter.feed(fragment)
    yield from splitter.finish()


def words_of(text: Text) -> Iterable[str]:
    """The words to send: a str is checked and split now; an iterable is split lazily as it yields."""
    if isinstance(text, str):
        return check_text(text).split()
    if isinstance(text, (bytes, bytearray, memoryview)) or not isinstance(text, Iterable):
        raise ArgumentTypeError(f"text must be a str or an iterable of str, not {type(text).__name__}")
    return iter_words(text)
