"""The sans-I/O conversation rules, driven directly: no sockets, no threads."""
from __future__ import annotations

import array
import json
import math
import time
from typing import Any, Dict, Iterable, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from basetts.errors import FirstAudioTimeout, ReadTimeout, ServerError, StreamInterrupted
from basetts.net.transport import HTTPResponse, parse_http_response
from basetts.protocols.base import AudioDecoder, Deadlines, Outgoing, Pacer, SampleAligner, close_error, decode_mulaw
from basetts.protocols.orpheus import SENTINEL, Utterance, outgoing, word_message
from basetts.protocols.websocket import FrameReader, MessageTooBig, ProtocolViolation, valid_close_code
from basetts.testing.server import mulaw_encode
from basetts.text import WordSplitter, iter_words

from .helpers import server_frame


def samples(pcm: bytes) -> List[int]:
    values = array.array("h")
    values.frombytes(pcm)
    return list(values)


# outgoing ---------------------------------------------------------------------------------------------------
def test_outgoing_is_settings_then_one_word_per_message_then_the_sentinel() -> None:
    settings = {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}
    messages = texts(outgoing(settings, ["Hello", "wörld", "👋"]))
    assert json.loads(messages[0]) == settings
    assert messages[1:] == ["Hello", "wörld", "👋", SENTINEL]
    # Non-ASCII settings go out as UTF-8, not \u escapes.
    assert texts(outgoing({"voice": "zoë"}, []))[0] == '{"voice": "zoë"}'


def texts(messages: Iterable[Outgoing]) -> List[str]:
    return [message.text for message in messages]


def test_outgoing_without_words_still_ends_with_the_sentinel() -> None:
    assert texts(outgoing({}, []))[1:] == [SENTINEL]


def test_batches_end_where_the_server_will_speak() -> None:
    """Our copy of the flush rule: a batch ends at the word after a sentence end (the server sees the
    sentence complete only then), or at buffer_size words, and at the sentinel."""
    words = "One two. Three four five six seven".split()
    ends = [m.text for m in outgoing({}, words, buffer_size=3) if m.ends_batch]
    assert ends == ["Three", "five", SENTINEL]


def test_a_word_with_a_sentence_end_inside_goes_out_in_pieces() -> None:
    """The real server would delete "テスト。" (and, after "Hmm..", the next word): pieces cut where
    pysbd ends a sentence keep every character."""
    assert texts(outgoing({}, ["日本語。テスト。", "Hmm..", "ok", "U.S.", "e.g.", "3.14"]))[1:] == [
        "日本語。", "テスト。", "Hmm.", ".", "ok", "U.S.", "e.g.", "3.14", SENTINEL]
    # In context: pysbd ends a sentence inside "!0" only after "0".
    assert texts(outgoing({}, ["0", "!0"]))[1:] == ["0", "!", "0", SENTINEL]


def test_a_word_equal_to_the_sentinel_is_padded_and_still_spoken() -> None:
    messages = texts(outgoing({}, ["say", SENTINEL, "now"]))
    assert messages[1:] == ["say", " " + SENTINEL, "now", SENTINEL]
    assert messages.count(SENTINEL) == 1 and messages[-1] == SENTINEL
    # What the server does with it: not equal to the sentinel, and one word once split.
    padded = messages[2]
    assert padded != SENTINEL and padded.strip().split() == [SENTINEL]


@pytest.mark.parametrize("word", ["__END__.", "__end__", "END", "__END", "«__END__»"])
def test_only_the_exact_sentinel_is_padded(word: str) -> None:
    assert word_message(word) == word


# WordSplitter (text_format="plain": the words as written; Markdown's reading is tests/test_markdown.py's) -----
TEXT = "Hello, wörld! 👋🏽 naïve café — <laugh> ok"


@pytest.mark.parametrize("cut", range(len(TEXT) + 1))
def test_words_survive_a_fragment_split_anywhere(cut: int) -> None:
    assert list(iter_words([TEXT[:cut], TEXT[cut:]], "plain")) == TEXT.split()


def test_one_character_fragments() -> None:
    assert list(iter_words(TEXT, "plain")) == TEXT.split()


def test_a_word_is_released_only_once_whitespace_follows() -> None:
    splitter = WordSplitter()
    assert splitter.feed("Hel") == []
    assert splitter.feed("lo wo") == ["Hello"]
    assert splitter.feed("rld") == []
    assert splitter.feed(" ") == ["world"]
    assert splitter.feed("") == []
    assert splitter.finish() == []


def test_whitespace_only_and_empty_fragments() -> None:
    assert list(iter_words(["  ", "\n", "\t", ""])) == []
    assert list(iter_words(["a", "   ", "b"])) == ["a", "b"]
    assert list(iter_words(["", "a", "", "b", ""])) == ["ab"]
    splitter = WordSplitter()
    assert splitter.feed("word") == [] and splitter.feed("   ") == ["word"]


def test_unicode_whitespace_splits_as_the_server_splits() -> None:
    # The server runs text.strip().split() on each message: the same definition of whitespace.
    text = "one\u00a0two\u3000three\u2009four\x1cfive"
    assert list(iter_words(text)) == text.split() == ["one", "two", "three", "four", "five"]


def test_finish_releases_the_last_word_once() -> None:
    splitter = WordSplitter()
    assert splitter.feed("last") == []
    assert splitter.finish() == ["last"]
    assert splitter.finish() == []


@pytest.mark.parametrize("fragment", ["\ud800", "ok \udfff", "a\ud83dzb"])
def test_lone_surrogates_are_rejected(fragment: str) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        WordSplitter().feed(fragment)


def test_a_rejected_fragment_does_not_corrupt_the_splitter() -> None:
    splitter = WordSplitter()
    splitter.feed("Hel")
    with pytest.raises(ValueError):
        splitter.feed("\ud800")
    assert splitter.feed("lo ") == ["Hello"]


@pytest.mark.parametrize("fragment", [b"bytes", 3, None])
def test_non_str_fragments_are_rejected(fragment: object) -> None:
    with pytest.raises(TypeError):
        WordSplitter().feed(fragment)  # type: ignore[arg-type]


@given(st.text(st.characters(blacklist_categories=("Cs",))), st.lists(st.integers(0, 200), max_size=8))
def test_any_text_cut_anywhere_gives_the_servers_words(text: str, cuts: List[int]) -> None:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    fragments = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert list(iter_words(fragments, "plain")) == text.split()


# SampleAligner -----------------------------------------------------------------------------------------------
DATA = bytes(range(1, 12))  # 11 bytes: 5 whole samples and a half


def test_every_split_of_a_buffer_into_three_frames() -> None:
    for i in range(len(DATA) + 1):
        for j in range(i, len(DATA) + 1):
            aligner = SampleAligner(2)
            chunks = [aligner.feed(DATA[:i]), aligner.feed(DATA[i:j]), aligner.feed(DATA[j:])]
            assert all(len(chunk) % 2 == 0 for chunk in chunks)
            assert b"".join(chunks) == DATA[:10]
            assert aligner.pending == DATA[10:]


def test_one_byte_frames() -> None:
    aligner = SampleAligner(2)
    out = [aligner.feed(DATA[k:k + 1]) for k in range(len(DATA))]
    assert out[0::2] == [b""] * 6 and out[1::2] == [DATA[k:k + 2] for k in range(0, 10, 2)]
    assert aligner.pending == DATA[10:]


def test_width_one_passes_everything_through() -> None:
    aligner = SampleAligner(1)
    assert aligner.feed(b"abc") == b"abc" and aligner.pending == b""


# μ-law decoding -------------------------------------------------------------------------------------------------
def server_decode(code: int) -> float:
    """The inverse in the protocol doc: y = b/255*2-1, x = sign(y)((1+255)^|y|-1)/255, in [-1, 1]."""
    y = 2.0 * code / 255.0 - 1.0
    magnitude = (math.exp(abs(y) * math.log(256.0)) - 1.0) / 255.0
    return -magnitude if y < 0 else magnitude


def server_encode(x: float) -> int:
    """The server's companding (model.py encode_mulaw) for one sample in [-1, 1]: uint8 truncation."""
    x = min(1.0, max(-1.0, x))
    y = math.log(1.0 + 255.0 * abs(x)) / math.log(256.0)
    y = -y if x < 0 else y
    return int(math.floor((y + 1.0) / 2.0 * 255.0))


def test_decoder_matches_the_servers_formula_for_all_256_codes() -> None:
    decoded = samples(decode_mulaw(bytes(range(256))))
    assert decoded == [int(round(server_decode(code) * 32767)) for code in range(256)]


def test_decoder_is_the_inverse_of_the_servers_companding() -> None:
    for code in range(255):
        middle = (server_decode(code) + server_decode(code + 1)) / 2
        assert server_encode(middle) == code
    assert server_encode(1.0) == 255
    decoded = samples(decode_mulaw(bytes(range(256))))
    assert decoded[0] == -32767 and decoded[255] == 32767
    assert decoded == sorted(decoded) and len(set(decoded)) == 256


def test_this_is_not_g711() -> None:
    # G.711 μ-law inverts bits and 0xFF/0x7F are silence; here the middle codes are silence.
    decoded = samples(decode_mulaw(bytes([0x7F, 0x80, 0xFF, 0x00])))
    assert abs(decoded[0]) < 10 and abs(decoded[1]) < 10
    assert decoded[2] == 32767 and decoded[3] == -32767


def test_the_local_servers_encoder_is_the_servers_formula() -> None:
    values = list(range(-32768, 32768, 37)) + [-32768, -1, 0, 1, 32767]
    pcm = array.array("h", values).tobytes()
    assert list(mulaw_encode(pcm)) == [server_encode(v / 32767) for v in values]


def test_round_trip_error_is_within_one_quantization_step() -> None:
    rate = 24000
    wave = [int(30000 * math.sin(2 * math.pi * (100 + 3 * n / rate * 1000) * n / rate)) for n in range(rate)]
    wave += list(range(-32768, 32768, 13))  # every part of the range
    pcm = array.array("h", wave).tobytes()
    codes = mulaw_encode(pcm)
    decoded = samples(decode_mulaw(codes))
    table = samples(decode_mulaw(bytes(range(256))))
    for original, code, value in zip(wave, codes, decoded):
        upper = table[min(code + 1, 255)]
        # The server truncates, so the sample lies in [decode(code), decode(code + 1)], ±1 for int16 rounding.
        assert table[code] - 1 <= original <= upper + 1
        assert abs(original - value) <= max(upper - table[code], 1) + 1


def test_decode_mulaw_of_nothing_and_of_odd_lengths() -> None:
    assert decode_mulaw(b"") == b""
    assert len(decode_mulaw(b"\x00\x01\x02")) == 6


# AudioDecoder --------------------------------------------------------------------------------------------------
def test_s16_is_re_aligned_and_never_decoded() -> None:
    decoder = AudioDecoder(None)
    assert decoder.encoding == "pcm_s16le"
    assert decoder.feed(b"\x01\x02\x03") == b"\x01\x02"
    assert decoder.pending == b"\x03"
    assert decoder.feed(b"\x04") == b"\x03\x04"
    assert not decoder.fell_back


def test_mulaw_window_is_decoded() -> None:
    decoder = AudioDecoder("pcm_mulaw")
    assert decoder.encoding is None  # unknown until the first frame
    frame = bytes(range(256)) * 8  # one 2048-sample window
    assert decoder.feed(frame) == decode_mulaw(frame)
    assert decoder.encoding == "pcm_mulaw" and not decoder.fell_back
    assert decoder.feed(b"\xff") == decode_mulaw(b"\xff")  # any length: one byte per sample
    assert decoder.feed(bytes(4096)) == decode_mulaw(bytes(4096))  # decided once, for good


def test_legacy_server_sends_s16_though_mulaw_was_asked() -> None:
    decoder = AudioDecoder("pcm_mulaw")
    frame = array.array("h", range(-1024, 1024)).tobytes()  # 4096 bytes: a 16-bit window
    assert decoder.feed(frame) == frame
    assert decoder.encoding == "pcm_s16le" and decoder.fell_back
    assert decoder.feed(b"\x01\x02\x03") == b"\x01\x02"  # decided once: still 16-bit, still aligned
    assert decoder.pending == b"\x03"


def test_an_empty_frame_decides_nothing() -> None:
    decoder = AudioDecoder("pcm_mulaw")
    assert decoder.feed(b"") == b""
    assert decoder.encoding is None
    frame = bytes(4096)
    assert decoder.feed(frame) == frame and decoder.fell_back


# close_error ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, reason, sentinel_sent, expected", [
    (1000, "", True, None),
    (1000, "bye", True, None),
    (1000, "", False, StreamInterrupted),
    (1001, "", True, StreamInterrupted),
    (1001, "", False, StreamInterrupted),
    (None, "", True, StreamInterrupted),
    (None, "", False, StreamInterrupted),
    (1011, "Internal Server Error (in model/chainlet).", True, ServerError),
    (1011, "", False, ServerError),
    (1008, "policy", True, ServerError),
    (1012, "", True, ServerError),
    (4000, "", True, ServerError),
])
def test_close_error(code: object, reason: str, sentinel_sent: bool, expected: object) -> None:
    error = close_error(code, reason, sentinel_sent)  # type: ignore[arg-type]
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    if isinstance(error, ServerError):
        assert error.close_code == code
        assert str(code) in str(error) and reason in str(error)


# Deadlines ------------------------------------------------------------------------------------------------------
def test_nothing_is_owed_while_fewer_than_buffer_size_words_went_out() -> None:
    deadlines = Deadlines(buffer_size=3, first_audio_timeout=60, read_timeout=5)
    assert deadlines.deadline() is None
    deadlines.word_sent(1.0)
    deadlines.word_sent(2.0)
    assert deadlines.deadline() is None
    deadlines.word_sent(3.0)
    assert deadlines.deadline() == 3.0 + 60
    deadlines.word_sent(4.0)  # more words do not move it
    assert deadlines.deadline() == 3.0 + 60
    assert "first_audio_timeout" in deadlines.describe()


def test_audio_pays_the_debt_and_restarts_the_count() -> None:
    deadlines = Deadlines(buffer_size=2, first_audio_timeout=60, read_timeout=5)
    deadlines.word_sent(1.0)
    deadlines.word_sent(2.0)
    deadlines.audio_received(10.0)
    assert deadlines.deadline() is None  # a slow text producer owes nothing
    deadlines.word_sent(11.0)
    assert deadlines.deadline() is None
    deadlines.word_sent(12.0)
    assert deadlines.deadline() == 12.0 + 5  # audio flowed before: read_timeout from now on
    assert "read_timeout" in deadlines.describe()


def test_the_sentinel_makes_audio_owed_at_once() -> None:
    deadlines = Deadlines(buffer_size=10, first_audio_timeout=60, read_timeout=5)
    deadlines.word_sent(1.0)
    assert not deadlines.sentinel_sent
    deadlines.end_sent(2.0)
    assert deadlines.sentinel_sent
    assert deadlines.deadline() == 2.0 + 60
    deadlines.audio_received(3.0)
    assert deadlines.deadline() == 3.0 + 5  # after the sentinel every frame restarts the clock
    deadlines.audio_received(4.0)
    assert deadlines.deadline() == 4.0 + 5


def test_the_sentinel_does_not_postpone_audio_already_owed() -> None:
    deadlines = Deadlines(buffer_size=1, first_audio_timeout=60, read_timeout=5)
    deadlines.word_sent(1.0)
    deadlines.end_sent(30.0)
    assert deadlines.deadline() == 1.0 + 60


# HTTP responses (a proxy's answer to CONNECT) ---------------------------------------------------------------
def test_a_response_is_parsed_once_its_header_is_complete_and_keeps_what_follows() -> None:
    data = b"HTTP/1.1 200 Connection established\r\nVia: a\r\nvia: b\r\nRETRY-AFTER:  7 \r\n\r\nrest"
    for end in range(data.index(b"\r\n\r\n") + 3):  # however the reads split it, nothing before the blank line
        assert parse_http_response(data[:end]) is None
    assert parse_http_response(data) == HTTPResponse(200, {"via": "a, b", "retry-after": "7"}, b"rest")
    assert parse_http_response(b"HTTP/1.0 407\r\n\r\n") == HTTPResponse(407, {}, b"")  # no reason phrase


@pytest.mark.parametrize("data", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 OK\r\n\r\n",
    b"HTTP/1.1 1011 Switching\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"x" * 70000,  # never a blank line: not waited for forever
])
def test_what_is_not_an_http_response_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_http_response(data)


# frames we receive --------------------------------------------------------------------------------------------
def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    data = (server_frame(b"a" * 300) + server_frame(b"ping!", 0x9) + server_frame(b"x" * 70000)
            + server_frame(b"part1", 0x2, fin=False) + server_frame(b"pong", 0xA) + server_frame(b"part2", 0x0)
            + server_frame((1000).to_bytes(2, "big") + b"bye", 0x8))
    expected = [(2, b"a" * 300), (9, b"ping!"), (2, b"x" * 70000), (10, b"pong"), (2, b"part1part2"),
                (8, (1000).to_bytes(2, "big") + b"bye")]
    for step in (1, 7, 4096, len(data)):
        reader = FrameReader(max_size=2 ** 20)
        out = []
        for start in range(0, len(data), step):
            out += reader.feed(data[start:start + step], now=float(start))
        assert out == expected
        assert reader.partial_since is None


def test_an_unfinished_frame_or_message_is_timed_from_its_start() -> None:
    reader = FrameReader(max_size=2 ** 20)
    abc = server_frame(b"abc")
    assert reader.feed(server_frame(b"whole") + abc[:3], now=1.0) == [(2, b"whole")]
    assert reader.partial_since == 1.0
    assert reader.feed(abc[3:], now=2.0) == [(2, b"abc")] and reader.partial_since is None
    reader.feed(server_frame(b"one", fin=False), now=3.0)
    reader.feed(server_frame(b"two", 0x0, fin=False), now=4.0)  # the message goes on: still timed from 3
    assert reader.partial_since == 3.0


def test_fragments_are_joined_in_linear_time() -> None:
    """10,000 fragments of 4 kB: joined once at the end (websocket-client's += took minutes)."""
    reader = FrameReader(max_size=64 * 2 ** 20)
    piece = b"z" * 4096
    data = server_frame(piece, 0x2, fin=False) + server_frame(piece, 0x0, fin=False) * 9998 + server_frame(piece, 0x0)
    started = time.process_time()
    assert reader.feed(data, now=0.0) == [(2, piece * 10000)]
    assert time.process_time() - started < 5  # quadratic joining would take minutes


@pytest.mark.parametrize("data, gist", [
    (server_frame(b"x", first=0x40), "reserved bits"),
    (server_frame(b"x", masked=True), "masked"),
    (server_frame(b"x", opcode=0x3), "reserved opcode 0x3"),
    (server_frame(b"x" * 200, opcode=0x9), "control frame of 200 bytes"),
    (server_frame(b"x", opcode=0x9, fin=False), "fragmented a control frame"),
    (server_frame(b"x", opcode=0x0), "continuation frame with no message"),
    (server_frame(b"a", fin=False) + server_frame(b"b"), "new message before finishing"),
    (server_frame(b"\x03", opcode=0x8), "1-byte payload"),
    (server_frame((999).to_bytes(2, "big"), opcode=0x8), "code 999"),
    (server_frame((1000).to_bytes(2, "big") + b"\xff", opcode=0x8), "not UTF-8"),
    (server_frame(b"", length=2 ** 62), "over 16777216 bytes"),
])
def test_a_server_breaking_rfc_6455_is_named(data: bytes, gist: str) -> None:
    with pytest.raises(ProtocolViolation, match=gist):
        FrameReader(max_size=16 * 2 ** 20).feed(data, now=0.0)


def test_a_message_too_big_is_refused_at_its_header_before_its_payload() -> None:
    reader = FrameReader(max_size=1000)
    reader.feed(server_frame(b"x" * 600, fin=False), now=0.0)
    with pytest.raises(MessageTooBig, match="max_message_size"):
        reader.feed(server_frame(b"", 0x0, length=600)[:4], now=0.0)  # only its header has come


@pytest.mark.parametrize("code, valid", [(999, False), (1000, True), (1004, False), (1005, False), (1006, False),
                                         (1011, True), (1014, True), (1015, False), (2999, False), (3000, True),
                                         (4999, True), (5000, False)])
def test_close_codes(code: int, valid: bool) -> None:
    assert valid_close_code(code) is valid


def test_deadlines_owe_an_answer_to_a_pacing_ping() -> None:
    """A ping after a batch owes its pong or audio within the timeout: a server that answers neither
    cannot leave the writer waiting for ever."""
    deadlines = Deadlines(buffer_size=10, first_audio_timeout=60, read_timeout=5)
    deadlines.word_sent(0.0)
    assert deadlines.deadline() is None
    deadlines.ping_sent(1.0)
    assert deadlines.deadline() == 61.0 and "no answer to our ping" in deadlines.describe()
    deadlines.audio_received(2.0)
    assert deadlines.deadline() == 7.0  # audio came, the pong still has not
    deadlines.pong_received(3.0, outstanding=0)
    assert deadlines.deadline() is None


# Pacer ----------------------------------------------------------------------------------------------------------
def test_the_pacer_starts_with_one_unread_batch_and_counts_pongs_in_order() -> None:
    pacer = Pacer(budget=2.0)
    pacer.generating = True
    assert pacer.may_send()  # the first batch goes at once
    first = pacer.end_batch(0.0)
    assert not pacer.may_send() and pacer.pings_outstanding == 1
    assert not pacer.pong(b"not ours", 0.1) and not pacer.may_send()  # a pong of someone else's ping
    assert pacer.pong(first, 0.1) and pacer.may_send() and pacer.pings_outstanding == 0
    second, third = pacer.end_batch(1.0), pacer.end_batch(1.0)  # the window grew to 2 (a quick pong)
    assert not pacer.may_send() and pacer.pings_outstanding == 2
    assert pacer.pong(third, 1.1) and pacer.pings_outstanding == 0  # the server reads in order
    assert not pacer.pong(second, 1.2)  # already acknowledged
    assert not pacer.pong(b"99", 1.2)  # never sent


def test_quick_pongs_before_the_server_generates_open_the_window_only_a_little() -> None:
    """Before its first segment the server reads words as fast as they come: those pongs are quick
    whatever the model, and opening the window to 5 on them put four segments' words ahead of the
    keepalive's pong (a 1011 seen in test_long_texts.py::test_extreme_buffer_sizes)."""
    pacer = Pacer(budget=0.2)
    for now in (0.0, 0.01, 0.02, 0.03):
        assert pacer.pong(pacer.end_batch(now), now + 0.005)
    assert pacer.window == Pacer.EARLY_WINDOW == 2
    pacer.generating = True  # audio came: the next quick pongs do say the server keeps up
    assert pacer.pong(pacer.end_batch(0.1), 0.15) and pacer.window == 3
    pacer.end_batch(0.2)
    assert pacer.pong(pacer.end_batch(0.2), 0.7) and pacer.window == 1  # a slow one halves it


def test_the_utterance_tells_its_pacer_when_audio_comes() -> None:
    utterance = Utterance({"voice": "tara"}, ["one", "two"], buffer_size=10, encoding=None,
                          first_audio_timeout=60.0, read_timeout=30.0, max_message_size=2 ** 20)
    assert not utterance.pacer.generating
    utterance.receive(server_frame(b"\x00\x00"), 0.0)
    assert utterance.pacer.generating


def test_the_window_grows_while_pongs_are_quick_and_halves_when_one_is_slow() -> None:
    """A pong's delay is what the server's keepalive pong would wait: kept under the budget."""
    pacer = Pacer(budget=2.0)
    pacer.generating = True
    now = 0.0
    for _ in range(20):  # a fast server: every pong within the budget
        payload = pacer.end_batch(now)
        now += 0.01
        pacer.pong(payload, now)
    assert pacer.window == Pacer.MAX_WINDOW
    payload = pacer.end_batch(now)
    pacer.pong(payload, now + 2.5)  # the server slowed down: that pong waited 2.5 s behind our words
    assert pacer.window == Pacer.MAX_WINDOW // 2
    for _ in range(5):
        payload = pacer.end_batch(now)
        now += 3.0
        pacer.pong(payload, now)
    assert pacer.window == 1  # a slow model: one batch at a time


# The protocol hands out the bytes: what a driver writes ------------------------------------------------------
def orpheus(words: List[str], **options: Any) -> Utterance:
    settings: Dict[str, Any] = dict(buffer_size=10, encoding=None, first_audio_timeout=60, read_timeout=5,
                                    max_message_size=2 ** 20)
    settings.update(options)
    return Utterance({"voice": "tara"}, words, **settings)


def client_frames(data: bytes) -> List[Tuple[int, bytes]]:
    """Our (masked) frames, unmasked: what the server reads."""
    out, offset = [], 0
    while offset < len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            length, offset = int.from_bytes(data[offset:offset + 2], "big"), offset + 2
        mask, offset = data[offset:offset + 4], offset + 4
        out.append((opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data[offset:offset + length]))))
        offset += length
    return out


def test_a_ping_flood_costs_one_pong_the_latest() -> None:
    """RFC 6455 5.5.3 lets a client answer only the latest ping: a server pinging without end while we
    cannot write costs no memory."""
    utterance = orpheus(["one"])
    assert not utterance.wants_to_send(0.0)  # nothing owed: the driver does not even ask the socket for room
    flood = b"".join(server_frame(str(i).encode(), opcode=0x9) for i in range(10000))
    received = utterance.receive(flood, 0.0)
    assert received.pings == 10000 and utterance.wants_to_send(0.0)
    write = utterance.data_to_send(0.0)
    assert write is not None and write.pong == b"9999" and client_frames(write.data) == [(0xA, b"9999")]
    assert utterance.data_to_send(0.0) is None and not utterance.wants_to_send(0.0)  # answered once


@pytest.mark.parametrize("data, answer", [
    (server_frame((1000).to_bytes(2, "big"), opcode=0x8), [(0x8, (1000).to_bytes(2, "big"))]),
    (server_frame(b"a message", opcode=0x1), [(0x8, (1000).to_bytes(2, "big"))]),  # an event that ends it
    (server_frame(b"x", opcode=0x3), [(0x8, (1002).to_bytes(2, "big"))]),  # a violation: a protocol error
    (b"", []),  # a drop: nothing can be written
], ids=["close", "error event", "violation", "drop"])
def test_the_end_is_answered_with_a_close_unless_the_connection_dropped(data: bytes, answer: List[Any]) -> None:
    utterance = orpheus(["one"])
    assert utterance.receive(data, 0.0).ended
    assert utterance.wants_to_send(0.0) == bool(answer)
    write = utterance.data_to_send(0.0)
    assert (client_frames(write.data) if write is not None else []) == answer


def test_the_servers_pings_show_its_keepalive() -> None:
    """Before the server's first ping, the time without one (2 s at least) bounds the window's budget; its
    interval then bounds both budgets (a tenth of it)."""
    utterance = orpheus(["a", "b"], keepalive_timeout=20.0)
    utterance.sent(["{}", "a"], None, 0.0)
    utterance.receive(server_frame(b"1", opcode=0xA), 0.5)
    assert utterance.pacer.budget == pytest.approx(0.2) and utterance.keepalive_budget == 2.0
    utterance.receive(server_frame(b"1", opcode=0xA), 5.0)
    assert utterance.pacer.budget == pytest.approx(0.5)  # no ping for 5 s: its interval is longer
    utterance.receive(server_frame(b"k", opcode=0x9), 6.0)
    assert utterance.ping_interval == 6.0
    utterance.receive(server_frame(b"k", opcode=0x9), 7.0)
    assert utterance.ping_interval == 1.0 and utterance.pacer.budget == pytest.approx(0.1)
    assert utterance.keepalive_budget == pytest.approx(0.1)
    utterance.receive(server_frame(b"k", opcode=0x9), 10.0)  # a longer gap (a pong was late) does not raise it
    assert utterance.ping_interval == 1.0
    uvicorn = orpheus(["a"], keepalive_timeout=20.0)
    uvicorn.sent(["{}", "a"], None, 0.0)
    uvicorn.receive(server_frame(b"k", opcode=0x9), 20.0)
    assert uvicorn.pacer.budget == 2.0  # keepalive_timeout stays the most assumed


def test_a_whole_text_goes_out_in_batches_each_followed_by_its_pacing_ping() -> None:
    utterance = orpheus([f"w{i}" for i in range(25)], buffer_size=10)
    first = utterance.send(utterance.take(eager=True), 0.0)
    frames = client_frames(first.data)
    assert frames[0][0] == 0x1 and json.loads(frames[0][1]) == {"voice": "tara"}
    assert [p for _, p in frames[1:-1]] == [f"w{i}".encode() for i in range(10)]  # up to the first segment
    assert frames[-1] == (0x9, b"1") and first.ping == b"1" and not utterance.may_send(0.0)
    assert utterance.fill(0.0) == []  # the window is one batch until its pong comes
    utterance.receive(server_frame(b"1", opcode=0xA), 0.1)
    rest = b"".join(write.data for write in utterance.fill(0.1))
    assert [p for _, p in client_frames(rest) if _ == 0x1][-1] == SENTINEL.encode() and utterance.all_sent


def test_a_write_held_to_max_bytes_keeps_the_rest_for_the_next() -> None:
    utterance = orpheus(["a" * 100] * 5)
    taken = utterance.take(eager=True, max_bytes=200)  # 31 + 114 bytes on the wire, and 114 more
    assert len(taken) == 2  # the settings and one word fit
    assert utterance.take(eager=True)[0].text == "a" * 100  # the held one comes first next time


def test_pings_without_audio_do_not_hold_off_the_deadline() -> None:
    """A deadline holds however the bytes come: pings are answered, but they are not audio."""
    utterance = orpheus(["one"], first_audio_timeout=3)
    utterance.sent(["{}", "one", SENTINEL], None, 0.0)
    for second in range(1, 3):
        utterance.receive(server_frame(b"p", opcode=0x9), float(second))
        assert utterance.expired(float(second)) is None
    utterance.receive(server_frame(b"p", opcode=0x9), 3.5)
    error = utterance.expired(3.5)
    assert isinstance(error, FirstAudioTimeout) and "first_audio_timeout=3" in str(error)


def test_audio_a_byte_at_a_time_is_no_progress() -> None:
    """After the first audio, read_timeout holds against a server trickling a byte a second: that is not a
    stream of audio (MIN_PROGRESS bytes are)."""
    utterance = orpheus(["one"], read_timeout=3)
    utterance.sent(["{}", "one", SENTINEL], None, 0.0)
    utterance.receive(server_frame(b"\0" * 4096), 0.5)
    for second in range(1, 5):
        received = utterance.receive(server_frame(b"\0"), float(second))
        assert not received.ended
    error = utterance.expired(3.6)
    assert isinstance(error, ReadTimeout) and "read_timeout=3" in str(error)
    steady = orpheus(["one"], read_timeout=3)  # the same bytes in 480-byte messages: progress each time
    steady.sent(["{}", "one", SENTINEL], None, 0.0)
    for second in range(1, 8):
        steady.receive(server_frame(b"\0" * 480), float(second))
    assert steady.expired(7.5) is None


def test_far_more_audio_than_max_tokens_can_make_is_refused() -> None:
    """A server sending audio nobody asked for (600 MB for "hi") is broken: the conversation ends once the audio
    passes what the segments' token budget can make (with slack), so memory stays bounded."""
    utterance = Utterance({"voice": "tara", "max_tokens": 700}, ["hi"], buffer_size=10, encoding=None,
                          first_audio_timeout=10, read_timeout=10, max_message_size=2 ** 24)
    assert utterance.fill(0.0)
    assert utterance.units_sent == 1 and utterance.unit_bytes == 100 * 4096
    chunk = server_frame(b"\0" * 65536)
    for _ in range(100):
        received = utterance.receive(chunk, 1.0)
        if received.ended:
            break
    assert received.ended and isinstance(received.error, ServerError) and "max_tokens" in str(received.error)
    assert 4 * 100 * 4096 < utterance.audio_bytes <= 4 * 100 * 4096 + 65536
    assert utterance.data_to_send(1.0).close  # we close it (1008), as after any end the server did not make


def test_an_empty_audio_message_is_no_progress() -> None:
    utterance = orpheus(["one"], read_timeout=3)
    utterance.sent(["{}", "one", SENTINEL], None, 0.0)
    utterance.receive(server_frame(b"\0\0"), 0.5)
    for second in (1.0, 2.0, 3.0):
        utterance.receive(server_frame(b""), second)
    error = utterance.expired(3.6)
    assert isinstance(error, ReadTimeout) and "read_timeout=3" in str(error)
