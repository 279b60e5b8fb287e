"""Markdown, as a person reads it aloud: what a language model writes, cleaned fragment by fragment.

`Markdown` is sans-I/O: `feed()` takes text as it arrives (cut anywhere) and returns what can be decided
so far, `finish()` the rest. Each piece of output says which characters of the original it stands for,
so the words spoken map back to the words written. It holds back only what it must to decide (a line's
first few characters, an unclosed ``[``, backtick or ``<`` for at most `WINDOW` characters of its line, a
URL until it ends), so the output never depends on where the fragments were cut, and it is linear in the
text's length. What each element becomes: docs/guide.md, "Text ready for speech".
"""
from __future__ import annotations

import html
import re
from typing import List, NamedTuple, Optional, Tuple

from .errors import warn

EMOTION_TAGS = ("<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>")
"""Orpheus's emotion tags: written inline as words, they pass through the text layer untouched."""

WINDOW = 512
"""Characters looked ahead (within a line) for what closes a link, inline code, a tag or a URL: an
opener not closed within them is text."""


class Piece(NamedTuple):
    """Text to say, and the characters [start, end) of the original text it stands for."""

    text: str
    start: int
    end: int


_WORD = re.compile(r"[^\W_]+")
# Prose that no rule touches (words, spaces between them, punctuation that starts nothing), said in one piece;
# it ends on a word or a mark, never a space (a line's trailing spaces are the rules' to decide).
_TOKEN = r"(?:[^\W_]+|[,.;:?'\"()/%$@+=\-\u2014\u2013\u2026\u2019\u2018\u201c\u201d\u3002\u3001\uff0c\uff1f])"
_PROSE = re.compile(_TOKEN + r"(?:[ \t]*" + _TOKEN + r")*")
_URL_BEGUN = re.compile(r"(?<![\w/@.\-])(?:h(?:t(?:t(?:p(?:s?(?::/?/?)?)?)?)?)?|w(?:w(?:w\.?)?)?)$", re.IGNORECASE)
_URL_START = re.compile(r"(?<![\w/@.\-])(?:https?://|www\.)", re.IGNORECASE)
_SPACE = re.compile(r"[^\S\n]+")
_URL_END = re.compile(r"[\s<>\"]")
_RULE = re.compile(r"([-*_=])(?:[ \t]*\1)*[ \t]*")
_DELIMITER_SO_FAR = re.compile(r"\|[ \t:|-]*")
_DELIMITER = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*")
_UNDERLINE_SO_FAR = re.compile(r" {0,3}(?:=+[ \t]*|-+[ \t]*)?")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--.*?-->|<![^<>]*>", re.DOTALL)
_AUTOLINK = re.compile(r"<((?:https?://|www\.)[^\s<>]+)>", re.IGNORECASE)
_EMOTIONS = frozenset(EMOTION_TAGS)
_SENTENCE_END = frozenset(".!?:;…。！？")
_TRAILING = ".,:;!?'\"*_~"
_ENDS_LINE = ("heading", "item", "table")  # lines that end a sentence when they end
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_REFERENCE = re.compile(r"\^[^\]\s]+|\d+(?:[ \t]*[,\u2013-][ \t]*\d+)*")
"""What brackets hold when they are a reference, not words: a footnote's ("[^1]") or a source's ("[1]", "[2, 3]")."""
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ENTITY_SO_FAR = re.compile(r"&(?:#[0-9]{0,7}|#[xX][0-9a-fA-F]{0,6}|[A-Za-z][A-Za-z0-9]{0,31})?")
_THINKING = re.compile(r"<(think|thinking)>", re.IGNORECASE)
"""A reasoning model's thinking (DeepSeek-R1, Qwen3, QwQ write it inline): left out, all of it, up to its end tag."""
_THINKING_END = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)
_BREAKS = frozenset("br p div li ul ol dl dt dd tr td th table thead tbody hr h1 h2 h3 h4 h5 h6 blockquote pre "
                    "section article header footer".split())
"""Tags that break a line or a block: between two words, a space (an inline tag, <b>, stays inside a word)."""
_URL_PREFIXES = ("https://", "http://", "www.")


def _is_emoji(char: str) -> bool:
    """Pictographs, their modifiers and joiners' companions: left out (a person does not read them)."""
    code = ord(char)
    return (0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or code in (0xFE0E, 0xFE0F, 0x20E3)
            or 0xE0020 <= code <= 0xE007F or 0x2B05 <= code <= 0x2B07 or code in (0x2B1B, 0x2B1C, 0x2B50, 0x2B55)
            or 0x231A <= code <= 0x231B or 0x23E9 <= code <= 0x23F3 or 0x23F8 <= code <= 0x23FA)


def host_of(url: str) -> str:
    """The host name a URL is read as ("https://www.example.com/a?b" -> "example.com")."""
    rest = url.split("://", 1)[-1]
    for mark in "/?#":
        rest = rest.split(mark, 1)[0]
    host = rest.rsplit("@", 1)[-1].split(":", 1)[0]
    return host[4:] if host.lower().startswith("www.") else host


class Markdown:
    """One text's Markdown turned into what is read aloud, fed in fragments; see the module's docstring."""

    def __init__(self) -> None:
        self._buffer = ""
        self._at = 0  # the original offset of _buffer[0]
        self._previous = "\n"  # the original character before _buffer
        self._line: Optional[str] = None  # None at a line's start, else its kind: text, quote, heading, item, table
        self._fence: Optional[Tuple[str, int]] = None  # inside a fenced code block: its character and length
        self._spoke = False  # the current line said something
        self._last = ""  # the last character said (not a space)
        self._thinking: Optional["re.Pattern[str]"] = None  # inside a reasoning model's thinking: what ends it
        self._underlined = False  # the line before was text that a setext underline ("===", "---") makes a heading
        self._warned = False  # about an end of thinking that nothing opened

    def feed(self, fragment: str) -> List[Piece]:
        """What `fragment` (after those before) decides; the rest is held until more comes."""
        self._buffer += fragment
        return self._run(final=False)

    def finish(self) -> List[Piece]:
        """Everything held back: the text has ended."""
        return self._run(final=True)

    def _run(self, final: bool) -> List[Piece]:
        text, i, out = self._buffer, 0, []  # type: str, int, List[Piece]
        while i < len(text):
            if self._thinking is not None:
                end = self._thinking.search(text, i)
                if end is None:  # left out as it comes, but for what may be the start of its end tag
                    i = len(text) if final else max(i, len(text) - len("</thinking>"))
                    break
                i, self._thinking = end.end(), None
                continue
            newline = text.find("\n", i)
            stop = len(text) if newline < 0 else newline
            more = newline < 0 and not final
            if self._fence is not None:
                if self._line is None and self._closes_fence(text, i, stop, more) is None:
                    break
                i = stop  # the code is left out, and so is its line's end
                if newline < 0:
                    self._line = "code"
                    break
                self._line = None
                i += 1
                continue
            if self._line is None:
                if self._underlined:
                    underlined = _underline(text[i:stop], more)
                    if underlined is None:
                        break
                    self._underlined = False
                    if underlined:  # the heading's sentence ends here (its words are out already): the line left out
                        out.append(self._piece(".", i, stop))
                        i = stop
                        if newline >= 0:
                            out.append(self._piece("\n", i, i + 1))
                            i += 1
                        continue
                if i == stop and newline >= 0:  # an empty line
                    out.append(self._piece("\n", i, i + 1))
                    i += 1
                    continue
                block = self._block(text, i, stop, more)
                if block is None:
                    break
                kind, i = block
                if kind in ("fence", "rule", "delimiter"):
                    if kind == "fence":
                        self._line = "code"
                    i = stop
                    if newline >= 0:
                        if kind == "rule":
                            out.append(self._piece("\n", i, i + 1))
                        self._line = None
                        i += 1
                    continue
                self._line, self._spoke = kind, False
            i = self._inline(text, i, stop, more, self._line, out)
            if self._thinking is not None:
                continue
            if i < stop or (newline < 0 and not final):
                break
            self._underlined = self._line == "text" and self._spoke and self._last not in _SENTENCE_END
            self._end_line(out, i)
            if newline >= 0:
                out.append(self._piece("\n", i, i + 1))
                i += 1
        if final and self._line is not None:
            self._end_line(out, i)
        if i:
            self._previous = text[i - 1]
            self._buffer, self._at = text[i:], self._at + i
        return out

    def _piece(self, said: str, start: int, end: int) -> Piece:
        return Piece(said, self._at + start, self._at + end)

    def _say(self, out: List[Piece], said: str, start: int, end: int) -> None:
        if said:
            out.append(Piece(said, self._at + start, self._at + end))
            stripped = said.rstrip()
            if stripped:
                self._spoke, self._last = True, stripped[-1]

    def _end_line(self, out: List[Piece], i: int) -> None:
        """A heading, a list item or a table row ends a sentence: a period where it has none."""
        if self._line in _ENDS_LINE and self._spoke and self._last not in _SENTENCE_END:
            self._say(out, ".", i, i)
        self._line = None

    def _closes_fence(self, text: str, i: int, stop: int, more: bool) -> Optional[bool]:
        """At a line's start inside a code block: whether the line closes it (None: not known yet)."""
        assert self._fence is not None
        char, length = self._fence
        line = text[i:stop].strip(" \t")
        run = len(line) - len(line.lstrip(char))
        if more and run == len(line):
            return None
        if run >= length and not line[run:].strip() and not more:
            self._fence = None
            return True
        return False

    def _block(self, text: str, i: int, stop: int, more: bool) -> Optional[Tuple[str, int]]:
        """A line's kind, decided from its first characters (None: not yet): the kind, and where its text starts."""
        kind = "text"
        j = i
        while True:
            while j < stop and text[j] in " \t":
                j += 1
            if j == stop:
                return None if more else (kind, j)
            if text[j] != ">":
                break
            kind = "quote"
            j += 1
        char = text[j]
        line = text[j:stop]
        if char in "`~":
            run = len(line) - len(line.lstrip(char))
            if more and run == len(line):
                return None
            if run >= 3:
                self._fence = (char, run)
                return "fence", stop
            return kind, j
        if char in "-*_=+":
            if _RULE.fullmatch(line):
                if more:
                    return None
                if line.count(char) >= 3:
                    return "rule", stop
            if char in "-*+":
                if j + 1 == stop:
                    return None if more else (kind, j)
                if text[j + 1] in " \t":
                    return self._item(text, j + 2, stop, more)
            return kind, j
        if char == "#":
            run = len(line) - len(line.lstrip("#"))
            if more and run == len(line):
                return None
            if run <= 6 and (run == len(line) or line[run] in " \t"):
                return "heading", _run_of(text, j + run, stop, " \t")
            return kind, j
        if char.isdigit():
            digits = len(line) - len(line.lstrip("0123456789"))
            if more and digits + 1 >= len(line):
                return None
            if digits <= 9 and digits < len(line) and line[digits] in ".)" and \
                    (digits + 1 == len(line) or line[digits + 1] in " \t"):
                item = self._item(text, j + digits + 1, stop, more)  # its number is read: "1. Stretch."
                return None if item is None else ("item", j)
            return kind, j
        if char == "|":
            if _DELIMITER_SO_FAR.fullmatch(line):
                if more:
                    return None
                if _DELIMITER.fullmatch(line):
                    return "delimiter", stop
            return "table", _run_of(text, j + 1, stop, " \t")
        return kind, j

    @staticmethod
    def _item(text: str, j: int, stop: int, more: bool) -> Optional[Tuple[str, int]]:
        """A list item's text starts after its marker, and after a task box ("[ ]", "[x]") if it has one."""
        while j < stop and text[j] in " \t":
            j += 1
        box = text[j:j + 4]
        if more and j + 4 > stop and any(b.startswith(box) for b in ("[ ] ", "[x] ", "[X] ")):
            return None
        if box[:3] in ("[ ]", "[x]", "[X]") and (j + 3 == stop or text[j + 3] in " \t"):
            j = _run_of(text, j + 3, stop, " \t")
        return "item", j

    def _inline(self, text: str, i: int, stop: int, more: bool, kind: str, out: List[Piece]) -> int:
        """Say what text[i:stop] (part of one line) says; where it stopped (before `stop`: waiting for more, or
        at thinking, which `_run` leaves out)."""
        while i < stop and self._thinking is None:
            prose = _PROSE.match(text, i, stop)
            if prose is not None:
                end = prose.end()
                if end == stop and more:  # the start of a URL, perhaps: decided once more comes
                    begun = _URL_BEGUN.search(text, max(i, end - 7), end)
                    end = begun.start() if begun is not None else end
                url = _URL_START.search(text, i, end)
                if url is not None:
                    end = url.start()
                if end > i:
                    out.append(Piece(text[i:end], self._at + i, self._at + end))
                    self._spoke, self._last = True, text[end - 1] if not text[end - 1].isspace() else self._last
                    i = end
                    continue
            char = text[i]
            previous = text[i - 1] if i else self._previous
            word = _WORD.match(text, i, stop)
            if word is not None:
                if char in "hHwW" and not (previous.isalnum() or previous in "/@.-_"):
                    url_end = self._url(text, i, stop, more, out)
                    if url_end is None:
                        return i
                    if url_end > i:
                        i = url_end
                        continue
                self._say(out, word.group(), i, word.end())
                i = word.end()
                continue
            marked = self._mark(text, i, stop, more, kind, out, char, previous)
            if marked is None:
                return i
            i = marked
        return i

    def _mark(self, text: str, i: int, stop: int, more: bool, kind: str, out: List[Piece], char: str,
              previous: str) -> Optional[int]:
        """One character that is not part of a word, and what it starts; where it ended (None: wait)."""
        if char.isspace() or (char == "|" and kind == "table"):
            return self._space(text, i, stop, more, kind, out)
        if char == "\\":
            if i + 1 == stop:
                return None if more else i + 1  # a line break's backslash
            escaped = text[i + 1]
            if escaped in _PUNCTUATION:
                self._say(out, escaped, i, i + 2)
                return i + 2
        elif char == "`":
            return self._code(text, i, stop, more, out)
        elif char in "*_~":
            run = _run_of(text, i, stop, char) - i
            if i + run == stop and more:
                return None
            following = text[i + run] if i + run < stop else "\n"
            if char == "~":
                dropped = run >= 2 and not (previous.isspace() and following.isspace())
            else:
                dropped = not (previous.isspace() and following.isspace()) and \
                    not (previous.isalnum() and following.isalnum())
            if not dropped:
                self._say(out, text[i:i + run], i, i + run)
            return i + run
        elif char == "[":
            return self._link(text, i, i, stop, more, out)
        elif char == "]":
            return i + 1  # a bracket that closes nothing
        elif char == "!":
            if i + 1 == stop and more:
                return None
            if i + 1 < stop and text[i + 1] == "[":
                return self._link(text, i, i + 1, stop, more, out)
        elif char == "<":
            return self._tag(text, i, stop, more, out)
        elif char == "&":
            entity = _ENTITY.match(text, i, stop)
            if entity is None:
                if more and _ENTITY_SO_FAR.fullmatch(text, i, stop):
                    return None  # "&am": an entity, perhaps
            else:
                said = html.unescape(entity.group())
                if said != entity.group():  # "&amp;" is "&", "&nbsp;" a space; an unknown name stays as written
                    self._say(out, said, i, entity.end())
                    return entity.end()
        elif char == "#" and kind == "heading":
            return self._closing_hashes(text, i, stop, more, out)
        elif _is_emoji(char) or (char == "\u200d" and _is_emoji(previous)):
            return i + 1
        self._say(out, char, i, i + 1)
        return i + 1

    def _space(self, text: str, i: int, stop: int, more: bool, kind: str, out: List[Piece]) -> Optional[int]:
        """Spaces, said as they are; at the end of a line that ends a sentence, held for its period; in a
        table row, a cell's bar is a comma."""
        end = _SPACE.match(text, i, stop)
        j = end.end() if end is not None else i
        if kind == "table":
            while j < stop and (text[j] == "|" or text[j] in " \t"):
                j += 1
        if j == i:  # a space the pattern does not know: said as it is
            self._say(out, text[i], i, i + 1)
            return i + 1
        if kind == "heading" and j < stop and text[j] == "#":
            k = _run_of(text, _run_of(text, j, stop, "#"), stop, " \t")
            if k == stop:
                j = k  # a closing sequence of #s: trailing, like the spaces before it
        if kind in _ENDS_LINE:  # emoji after a line's last word are trailing too: "- Done 🎉" is "Done."
            k = j
            while k < stop and (_is_emoji(text[k]) or text[k] in "\u200d \t" or (kind == "table" and text[k] == "|")):
                k += 1
            j = k if k == stop else j
        if j == stop and kind in _ENDS_LINE:
            return None if more else j  # trailing: left out (the line's period goes right after its words)
        bar = text.find("|", i, j) if kind == "table" else -1
        if bar >= 0:
            if self._spoke and self._last not in _SENTENCE_END and self._last != ",":
                self._say(out, ",", bar, bar + 1)
            self._say(out, " ", bar, bar + 1)
        else:
            self._say(out, text[i:j], i, j)
        return j

    def _code(self, text: str, i: int, stop: int, more: bool, out: List[Piece]) -> Optional[int]:
        """Inline code: its words, without the backticks."""
        run = _run_of(text, i, stop, "`") - i
        if i + run == stop and more:
            return None
        window = min(stop, i + WINDOW)
        closing = re.compile(r"(?<!`)`{%d}(?!`)" % run).search(text, i + run, window)
        if closing is None or (closing.end() == window and window == stop and more):
            if window == stop and more:
                return None
            return i + run  # backticks that close nothing: left out
        inner_start, inner_end = i + run, closing.start()
        if inner_end - inner_start >= 2 and text[inner_start] == " " and text[inner_end - 1] == " ":
            inner_start, inner_end = inner_start + 1, inner_end - 1
        self._say(out, text[inner_start:inner_end], inner_start, inner_end)
        return closing.end()

    def _link(self, text: str, start: int, i: int, stop: int, more: bool, out: List[Piece]) -> Optional[int]:
        """[text](destination) and ![alt](source): the text; a footnote or a source cited ([^1], [1]): left out;
        other brackets that are not a link: what they hold."""
        window = min(stop, i + WINDOW)
        close = _matching(text, i, window, "[", "]")
        if close < 0:
            if window == stop and more:
                return None
            if start < i:
                self._say(out, "!", start, start + 1)
            return i + 1
        if close + 1 == stop and more:
            return None
        end = close + 1
        if start == i and (end == stop or text[end] != "(") and _REFERENCE.fullmatch(text, i + 1, close):
            # A footnote or a source cited ("capital [1][2]."): left out, not read as a number ("12").
            return end + 1 if text[i + 1] == "^" and not self._spoke and text[end:end + 1] == ":" else end
        if end < stop and text[end] == "(":
            paren = _matching(text, end, window, "(", ")")
            if paren < 0 and window == stop and more:
                return None
            if paren >= 0:
                end = paren + 1
        self._inline(text, i + 1, close, False, "text", out)
        self._thinking = None  # "<think>" inside a link's text: a tag, not a reasoning model's thinking
        return end

    def _tag(self, text: str, i: int, stop: int, more: bool, out: List[Piece]) -> Optional[int]:
        """An HTML tag is left out, except Orpheus's emotion tags; <https://…> is its host."""
        if i + 1 == stop:
            if more:
                return None
        elif text[i + 1].isalpha() or text[i + 1] in "/!":
            window = min(stop, i + WINDOW)
            close = text.find(">", i + 1, window)
            if close < 0 and window == stop and more:
                return None
            if close >= 0:
                tag = text[i:close + 1]
                link = _AUTOLINK.fullmatch(tag)
                if tag.lower() in _EMOTIONS:
                    self._say(out, tag, i, close + 1)
                    return close + 1
                if link is not None:
                    self._say(out, host_of(link.group(1)), i, close + 1)
                    return close + 1
                thinking = _THINKING.fullmatch(tag)
                if thinking is not None:
                    self._thinking = re.compile(f"</{thinking.group(1)}>", re.IGNORECASE)
                    return close + 1
                if _THINKING_END.fullmatch(tag) and not self._warned:
                    self._warned = True
                    warn(f"{tag} with no opening tag before it: the text before it was read as the answer. A reasoning "
                         "model whose chat template opens the thinking in the prompt (DeepSeek-R1) writes only the end "
                         "tag: leave its thinking out of the text, or give basetts only the answer")
                if _TAG.fullmatch(tag):
                    name = tag.strip("</>").split(None, 1)[0].rstrip("/").lower() if tag[1] not in "!" else ""
                    if name in _BREAKS:
                        if close + 1 == stop and more:
                            return None  # a space only between two words: the next character decides
                        previous = text[i - 1] if i else self._previous
                        if not previous.isspace() and close + 1 < stop and not text[close + 1].isspace():
                            self._say(out, " ", i, close + 1)
                    return close + 1
        self._say(out, "<", i, i + 1)
        return i + 1

    def _url(self, text: str, i: int, stop: int, more: bool, out: List[Piece]) -> Optional[int]:
        """A bare URL is read as its host name; where it ends (i: not a URL; None: not known yet)."""
        head = text[i:min(stop, i + 8)].lower()
        if not head.startswith(_URL_PREFIXES):
            return None if more and i + len(head) == stop and any(p.startswith(head) for p in _URL_PREFIXES) else i
        window = min(stop, i + WINDOW)
        found = _URL_END.search(text, i, window)
        if found is None and window == stop and more:
            return None
        url = text[i:found.start() if found is not None else window]
        while url:
            if url[-1] in _TRAILING:
                url = url[:-1]
            elif url[-1] == ")" and url.count("(") < url.count(")"):
                url = url[:-1]
            else:
                break
        host = host_of(url)
        if not host.strip(".") or ("." not in host.strip(".") and not head.startswith("http")):
            return i
        self._say(out, host, i, i + len(url))
        return i + len(url)

    def _closing_hashes(self, text: str, i: int, stop: int, more: bool, out: List[Piece]) -> Optional[int]:
        """A heading's closing #s are left out; other #s are text."""
        run = _run_of(text, i, stop, "#") - i
        if _run_of(text, i + run, stop, " \t") == stop:
            if more:
                return None
            if (text[i - 1] if i else self._previous) in " \t":
                return stop
        self._say(out, text[i:i + run], i, i + run)
        return i + run


def _underline(line: str, more: bool) -> Optional[bool]:
    """Whether `line` underlines the one before as a heading ("===", "---"; None: not known yet)."""
    if more:
        return None if _UNDERLINE_SO_FAR.fullmatch(line) else False
    return _UNDERLINE.fullmatch(line) is not None


def _run_of(text: str, i: int, stop: int, chars: str) -> int:
    """Where the run of `chars` that starts at text[i] ends (at most `stop`)."""
    while i < stop and text[i] in chars:
        i += 1
    return i


def _matching(text: str, i: int, stop: int, opener: str, closer: str) -> int:
    """Where the `closer` matching the `opener` at text[i] is, before `stop` (-1: not there)."""
    depth = 0
    j = i
    while j < stop:
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def speakable(text: str) -> str:
    """`text` as it is read aloud: Markdown's marks, code blocks, URLs' paths and emoji left out."""
    cleaner = Markdown()
    return "".join(piece.text for piece in cleaner.feed(text) + cleaner.finish())
