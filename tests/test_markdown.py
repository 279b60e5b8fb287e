"""Text ready for speech: Markdown read as a person reads it aloud (sans-I/O, then through the local server on
each protocol), streamed fragments read exactly as the whole text, words mapped back to what was written."""
from __future__ import annotations

import re
import threading
import time
import warnings
from typing import Any, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import basetts
from basetts.markdown import WINDOW, Markdown, speakable
from basetts.text import WordSplitter, iter_words

from .helpers import synth_for, words_received
from .test_cli import run
from .test_playback_control import wait_for

# A language model's answers: every element the text layer reads, and what a listener hears of each.
CORPUS = {
    "lists": (
        "Here are three tips:\n\n- Drink **water** every hour\n- Sleep *at least* 8 hours\n* Walk daily\n\n"
        "1. First, stretch.\n2) Then run!\n   - nested item\n- [ ] a task\n- [x] done task",
        "Here are three tips:\n\nDrink water every hour.\nSleep at least 8 hours.\nWalk daily.\n\n"
        "1. First, stretch.\n2) Then run!\nnested item.\na task.\ndone task."),
    "headings": (
        "# Getting Started\n\n## Install ##\nRun the installer.\n### What's next?\nRead on.",
        "Getting Started.\n\nInstall.\nRun the installer.\nWhat's next?\nRead on."),
    "code": (
        "Install it with `pip install basetts` and run:\n\n```python\nimport basetts\nbasetts.say('hi')\n```\n\n"
        "That's it.\n~~~\nmore code\n~~~\nDone.",
        "Install it with pip install basetts and run:\n\n\nThat's it.\nDone."),
    "links": (
        "See [the docs](https://docs.baseten.co/tts \"Docs\") or ![a diagram](img/d.png). Also "
        "https://www.example.com/path?q=1, and <https://github.com/basetenlabs>. Visit www.python.org.",
        "See the docs or a diagram. Also example.com, and github.com. Visit python.org."),
    "table": (
        "| Model | Latency |\n|:------|--------:|\n| Orpheus | 200 ms |\n| Qwen3 | 150 ms |\n\nBoth are fast.",
        "Model, Latency.\nOrpheus, 200 ms.\nQwen3, 150 ms.\n\nBoth are fast."),
    "emoji": (
        "Great question! 🎉 Let me explain 👨‍👩‍👧 how it works ✅\n\n🚀 Ready?",
        "Great question!  Let me explain  how it works \n\n Ready?"),
    "emotion tags": (
        "Well <laugh> that was funny. <sigh> Anyway, <b>bold</b> and <br/> stay out. <chuckle>",
        "Well <laugh> that was funny. <sigh> Anyway, bold and  stay out. <chuckle>"),
    "nested emphasis": (
        "This is ***very*** important and **really _deeply_ nested** text, __underlined__ too, ~~struck~~.",
        "This is very important and really deeply nested text, underlined too, struck."),
    "reasoning": (  # a reasoning model's thinking, written inline before its answer
        "<think>\nThe user wants tips. Keep it **short**.\n\n- maybe water?\n</think>\n\nDrink water.<think>"
        "again</think> Sleep well. <THINKING>x</THINKING>Walk.<think>cut off mid-thought",
        "\n\nDrink water. Sleep well. Walk."),
    "references": (  # sources cited and footnotes: left out, never read as numbers ("[1][2]" is not "12")
        "Paris is the capital of France [1][2], home to 2 million people[3, 4] and the Louvre [^a].\n\n"
        "[^a]: The largest art museum.",
        "Paris is the capital of France , home to 2 million people and the Louvre .\n\n The largest art museum."),
    "entities": (  # HTML's character references, as some models write them: the character; an unknown one stays
        "Salt &amp; pepper, 5&nbsp;kg &mdash; it&#39;s R&D, not &bogus; or AT&T.",
        "Salt & pepper, 5\xa0kg \u2014 it's R&D, not &bogus; or AT&T."),
    "html breaks": (  # a break between two words is a space; an inline tag stays inside its word
        "| Step | Note |\n|-|-|\n| one<br>two | a<br/>b |\n\nline<p>next <b>bo</b>ld",
        "Step, Note.\none two, a b.\n\nline next bold"),
    "quote and rule": (
        "> To be or not to be.\n> That is the question.\n\n---\n\nSaid Hamlet.",
        "To be or not to be.\nThat is the question.\n\n\n\nSaid Hamlet."),
}
PROSE = [  # written-only text is what is left out: prose a person would read passes through unchanged
    "Keep snake_case_names, 2*3=6 and 5 * 4. C# and F# are languages; a < b > c.",
    "It costs $5.99 (or €5) on 2024-01-05, about ~3 min, 50% off! Email me: a.b@example.com.",
    "He said: \"don't\" - and left... Then (1) came, then 3.14 > 3.",
    "日本語のテキスト。次の文です。Ünïcödé wörds, naïve café — <laugh> ok",
]
ANSWER = CORPUS["lists"][0] + "\n\n" + CORPUS["links"][0] + "\n" + CORPUS["emotion tags"][0] + "\n" + \
    CORPUS["code"][0]
SYNTAX = re.compile(r"\*|`|\]\(|https?:|www\.|^#|\||~~|<(?!(laugh|sigh|chuckle)>)|[\U0001F300-\U0001FAFF]")


def fragments(text: str, cuts: List[int]) -> List[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0] + points, points + [len(text)])]


def words_with_spans(parts: List[str]) -> List[Tuple[str, Tuple[int, int]]]:
    splitter = WordSplitter("markdown")
    words = [w for part in parts for w in splitter.feed(part)] + splitter.finish()
    return [(str(w), w.span) for w in words]


# what each element becomes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CORPUS)
def test_each_element_is_read_as_a_person_reads_it(name: str) -> None:
    written, said = CORPUS[name]
    assert speakable(written) == said


@pytest.mark.parametrize("prose", PROSE)
def test_prose_passes_through_unchanged(prose: str) -> None:
    assert speakable(prose) == prose


def test_a_heading_a_list_item_and_a_table_row_end_their_sentence() -> None:
    assert speakable("# Title\ntext") == "Title.\ntext"
    assert speakable("- one 🎉\n- two?\n- three:") == "one.\ntwo?\nthree:"
    assert speakable("|a|b|\n|-|-|\n|1||") == "a, b.\n1."


def test_a_heading_underlined_ends_its_sentence_and_its_underline_is_left_out() -> None:
    """Its words went out before the underline came (a line is read as it arrives): the period is a word alone."""
    assert speakable("Getting Started\n===\nRun it.\nNext steps\n-\nRead on.") == \
        "Getting Started\n.\nRun it.\nNext steps\n.\nRead on."
    assert speakable("Done.\n---\nTitle 🎉\n==") == "Done.\n\nTitle \n."
    assert speakable("one\n- two\nthree\n=x\n\n---\nfour") == "one\ntwo.\nthree\n=x\n\n\nfour"


def test_what_only_looks_like_markdown_stays_text() -> None:
    assert speakable("2024. A year.\n-5 degrees\n#hashtag\n***\n*not closed") == \
        "2024. A year.\n-5 degrees\n#hashtag\n\nnot closed"
    assert speakable("an [unclosed bracket and <not a tag") == "an unclosed bracket and <not a tag"
    assert speakable("x" * 10 + "[" + "y" * WINDOW + "](z)") == "x" * 10 + "y" * WINDOW + "(z)"


# streamed fragments ---------------------------------------------------------------------------------------------
markdownish = st.lists(st.sampled_from(
    ["**", "*", "_", "__", "~~", "`", "```", "\n", " ", "# ", "- ", "1. ", "| ", "|", "---", "[", "](", ")", "]",
     "![", "<laugh>", "<b>", "</b>", "<br>", "<think>", "</think>", "[1]", "[^", "2", "&", "&amp;", "amp;",
     "<", ">", "https://", "www.", "example.com/a", ".", "!", "🎉", "\u200d", "=",
     "word", "Other", "\\", "x_y", "2*3"]), max_size=40).map("".join)


@pytest.mark.filterwarnings("ignore:</think> with no opening tag")  # "</think>" alone is among the pieces
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(markdownish, st.sampled_from([ANSWER] + [w for w, _ in CORPUS.values()])),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=30))
def test_the_reading_never_depends_on_where_the_fragments_were_cut(text: str, cuts: List[int]) -> None:
    whole = words_with_spans([text])
    assert words_with_spans(fragments(text, cuts)) == whole
    assert [w for w, _ in whole] == speakable(text).split()
    for _, (start, end) in whole:
        assert 0 <= start <= end <= len(text)


@pytest.mark.parametrize("text_format", ["markdown", "plain"])
def test_a_whole_text_read_a_slice_at_a_time_is_read_as_it_is_whole(text_format: str) -> None:
    """A long text's words are read as they are asked for, 512 characters at a time (its first words go out before
    the rest is read): the same words and spans as reading it in one piece, however its lines end."""
    from basetts.text import WholeText

    text = "\r\n".join([ANSWER] * 6) + "\n" + "\n\n".join(w for w, _ in CORPUS.values()) + " last"
    assert len(text) > 8 * 512
    whole = [(str(w), w.span) for w in iter_words([text], text_format)]
    words = WholeText(text, text_format)
    assert [(str(w), w.span) for w in words] == whole
    assert [(str(w), w.span) for w in words] == whole  # each pass reads it anew


def test_a_pass_that_waits_for_another_reading_the_last_slice_still_gets_its_words() -> None:
    """Two passes over one whole text at once (a conversation given up still reading while its recovery reads):
    the one that waits for the other, which reads the text's last words, gets them too, though the text has no
    slice left to read by then."""
    from basetts.text import WholeText

    entered, release = threading.Event(), threading.Event()

    def say(sentence: str) -> str:
        if sentence.startswith("final"):  # the text's last sentence: read only once the text ends
            entered.set()
            release.wait(10)
        return sentence

    text = " ".join(["word"] * 150) + ". final sentence here."
    whole = WholeText(text, say)  # reads up to the first sentence's words, to check there is something to say
    passes: List[List[str]] = [[], []]

    def read(index: int) -> None:
        passes[index].extend(whole)

    first = threading.Thread(target=read, args=(0,))
    first.start()
    assert entered.wait(10)  # the first pass holds the reader, in the last sentence
    second = threading.Thread(target=read, args=(1,))
    second.start()
    time.sleep(0.2)  # the second pass goes through the words read so far, then waits for the reader
    release.set()
    first.join(10)
    second.join(10)
    expected = text.split()
    assert passes[0] == expected
    assert passes[1] == expected


def test_a_word_goes_out_as_soon_as_what_follows_it_decides_it() -> None:
    splitter = WordSplitter("markdown")
    sent: List[str] = []
    for char in "A **bold** move, see https://example.com/x now and `code` here. " * 3:
        sent += splitter.feed(char)
        if char == " ":
            assert sent and sent[-1] in ("A", "bold", "move,", "see", "example.com", "now", "and", "code", "here.")
    assert sent == "A bold move, see example.com now and code here.".split() * 3


def test_an_end_of_thinking_that_nothing_opened_is_a_warning() -> None:
    with pytest.warns(basetts.BasettsWarning, match="</think> with no opening tag"):
        assert speakable("The user asks. </think> The answer. </think>") == "The user asks.  The answer. "
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert speakable("<think>x</think> The answer.") == " The answer."


def test_a_headings_closing_hashes_are_left_out_wherever_the_text_is_cut() -> None:
    assert words_with_spans(["# ", "#", " \nText"]) == words_with_spans(["# # \nText"]) == [("Text", (5, 9))]


def test_what_is_held_back_is_bounded_by_the_window() -> None:
    cleaner = Markdown()
    said = 0
    for index, char in enumerate("[" + "a" * 3 * WINDOW + "]"):
        said += sum(len(piece.text) for piece in cleaner.feed(char))
        assert index + 1 - said <= WINDOW + 1  # an unclosed bracket is text once the window has passed
    assert said == 3 * WINDOW


# the map back to what was written -----------------------------------------------------------------------------
def test_each_word_knows_the_characters_it_stands_for() -> None:
    text = "## Big **news**\nRead [the post](https://x.com/p) at https://www.example.com/a/b."
    words = words_with_spans([text])
    assert [(w, text[s:e]) for w, (s, e) in words] == [
        ("Big", "Big"), ("news.", "news"), ("Read", "Read"), ("the", "the"), ("post", "post"),
        ("at", "at"), ("example.com.", "https://www.example.com/a/b.")]


def test_emotion_tags_and_plain_words_map_to_themselves() -> None:
    text = "Ha <laugh> fine."
    assert [(w, text[s:e]) for w, (s, e) in words_with_spans([text])] == \
        [("Ha", "Ha"), ("<laugh>", "<laugh>"), ("fine.", "fine.")]


# through the server: what reaches it ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["orpheus", "qwen3", "orpheus-http"])
def test_no_markdown_reaches_the_server_and_every_word_of_the_prose_does(serve: Any, protocol: str) -> None:
    server = serve(protocol=protocol, **({"voices": ("alice",)} if protocol == "qwen3" else {}))
    options = {"voice": "alice", "protocol": "qwen3"} if protocol == "qwen3" else {}
    synth = synth_for(server, **options)
    audio = synth.synthesize(ANSWER)
    said = speakable(ANSWER).split()
    received = [w for r in server.conversations for w in r.words]
    assert received == said and audio.pcm == server.expected_pcm(" ".join(said))
    assert not [w for w in received if SYNTAX.search(w)]
    assert "<laugh>" in received and "<chuckle>" in received
    tokens = re.findall(r"\s*\S+|\s+", ANSWER)  # an LLM's tokens: the same words, in order
    with synth.session() as session:
        for token in tokens:
            session.send(token)
    assert session.audio.pcm == audio.pcm and session.text == ANSWER


def test_a_reasoning_models_thinking_never_reaches_the_server(serve: Any) -> None:
    """An answer streamed by a reasoning model (its thinking inline, in <think> tags, tokens cut anywhere): only
    the answer is spoken, and what was heard maps back into the text as written."""
    server = serve(protocol="orpheus-http")
    thinking = "<think>\nOkay, the user asks for a greeting. " + "Let me think about this carefully. " * 40 + \
        "\n</think>\n\n"
    answer = "Hello there! Nice to **meet** you."
    text = thinking + answer
    with synth_for(server).session() as session:
        for start in range(0, len(text), 3):
            session.send(text[start:start + 3])
    received = [w for r in server.conversations for w in r.words]
    assert received == ["Hello", "there!", "Nice", "to", "meet", "you."]
    assert session.audio.pcm == server.expected_pcm(" ".join(received))
    assert session.text == text


def test_plain_sends_exactly_what_was_given_per_synthesizer_per_call_and_per_item(serve: Any) -> None:
    server = serve()
    synth = synth_for(server, text_format="plain")
    synth.synthesize(ANSWER)
    # every character but the spaces, as given (a word in which pysbd ends a sentence goes out in pieces)
    assert "".join(words_received(server)) == "".join(ANSWER.split())
    before = len(server.conversations)
    synth.synthesize(ANSWER, text_format="markdown")
    assert words_received(server, before) == speakable(ANSWER).split()
    results = list(synth_for(server).synthesize_many([CORPUS["table"][0], {"text": "**a** b",
                                                                           "text_format": "plain"}]))
    assert [r.error for r in results] == [None, None]
    assert sorted(r.words for r in server.conversations[-2:]) == sorted([speakable(CORPUS["table"][0]).split(),
                                                                        ["**a**", "b"]])


def test_a_function_of_ones_own_reads_each_sentence(serve: Any) -> None:
    server = serve()
    seen: List[str] = []

    def shout(sentence: str) -> str:
        seen.append(sentence)
        return sentence.upper()

    synth = synth_for(server, text_format=shout)
    synth.synthesize("One **two**. Three\nfour")
    assert seen == ["One **two**. ", "Three\n", "four"] and server.last().words == ["ONE", "**TWO**.", "THREE", "FOUR"]
    seen.clear()
    list(synth.stream(iter(["On", "e **two", "**. Thr", "ee\nfour"])))
    assert seen == ["One **two**. ", "Three\n", "four"]
    with pytest.raises(basetts.ConfigurationError, match="text_format"):
        synth_for(server, text_format="html")
    with pytest.raises(basetts.ArgumentTypeError, match="must return a str"):
        synth_for(server, text_format=lambda s: None).synthesize("Hi.")
    with pytest.raises(basetts.InvalidText, match="text_format='plain'"):
        synth.synthesize("```\nonly code\n```", text_format="markdown")


def test_words_heard_and_a_sessions_heard_text_are_the_users_words(serve: Any) -> None:
    server = serve(protocol="qwen3", voices=("alice",))
    synth = synth_for(server, protocol="qwen3", voice="alice", word_timestamps=True)
    text = "# Hello **there**\nSee [our site](https://x.com) and `run it`. Bye 👋"
    audio = synth.synthesize(text)
    assert [(w.text, text[slice(*w.span)]) for w in audio.words] == [
        ("Hello", "Hello"), ("there.", "there"), ("See", "See"), ("our", "our"), ("site", "site"),
        ("and", "and"), ("run", "run"), ("it.", "it`."), ("Bye", "Bye")]
    cut = audio.pcm[:len(audio.pcm) // 2]
    heard = basetts.Audio(cut, stats=audio.stats).words
    assert heard == audio.words[:len(heard)] and 0 < len(heard) < len(audio.words)
    with synth.session() as session:
        for token in re.findall(r"\s*\S+", text):
            session.send(token)
    assert session.heard_text == text[:audio.words[-1].span[1]] == text[:-2]
    assert session.audio.words == audio.words


@pytest.mark.playback
def test_a_stopped_sessions_heard_text_is_what_the_user_wrote_up_to_the_last_word_heard(pulse: Any,
                                                                                         serve: Any) -> None:
    server = serve(protocol="qwen3", voices=("alice",), speed=1.0)
    synth = synth_for(server, protocol="qwen3", voice="alice", word_timestamps=True)
    text = "".join(f"- **w{i}** item\n" for i in range(24))  # 4 s: 24 list items, each a sentence
    with synth.session(play=True) as session:
        for token in re.findall(r"\s*\S+", text):
            session.send(token)
        wait_for(lambda: session.playback is not None and session.playback.position > 1.2)
        session.playback.stop()
    heard = session.audio.words
    assert 0 < len(heard) < len(speakable(text).split())
    assert session.heard_text == text[:heard[-1].span[1]]
    assert re.sub(r"\*\*|- ", "", session.heard_text).split()[-1] == heard[-1].text.rstrip(".")


def test_the_cli_says_and_batches_markdown_unless_told_plain(tmp_path: Any, basetts_server: Any) -> None:
    env = {"BASETEN_API_KEY": basetts_server.api_key}
    for flags, expected in (((), speakable(ANSWER)), (("--text-format", "plain"), ANSWER)):
        before = len(basetts_server.conversations)
        result = run("say", "-o", str(tmp_path / "out.wav"), "--url", basetts_server.url, *flags, env=env,
                     stdin=ANSWER)
        assert result.returncode == 0, result.stderr
        assert "".join(words_received(basetts_server, before)) == "".join(expected.split())
    lines = tmp_path / "in.txt"
    lines.write_text("- **one**\n")
    for flags, expected_words in (((), ["one."]), (("--text-format", "plain"), ["-", "**one**"])):
        result = run("batch", str(lines), str(tmp_path / f"out{len(flags)}"), "--url", basetts_server.url, *flags,
                     env=env)
        assert result.returncode == 0, result.stderr
        assert basetts_server.last().words == expected_words
