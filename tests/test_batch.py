"""Many texts: `synthesize_many` (order, bounded concurrency, failures kept per item, flat memory, a stop
that closes everything) and `basetts batch` (inputs, files, manifest, resuming, bad input, Ctrl+C), against
real local servers and real processes."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import wave
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import basetts
from basetts.batch import Progress
from basetts.cli.batch import NoTextColumn, UnknownColumns, file_name, read_jobs
from basetts.testing import Faults, LocalServer

from .helpers import client_threads, synth_for

ROOT = Path(__file__).resolve().parent.parent


def texts(count: int) -> List[str]:
    return [f"item {i} says hello" for i in range(count)]


# --- synthesize_many -----------------------------------------------------------------------------------------
def test_results_come_in_input_order_with_each_texts_own_audio_and_bounded_concurrency() -> None:
    with LocalServer(speed=20.0) as server:
        progress: List[Progress] = []
        results = list(synth_for(server).synthesize_many(texts(40), concurrency=6,
                                                         progress=lambda p: progress.append(Progress(**vars(p)))))
        assert [r.index for r in results] == list(range(40))
        for i, result in enumerate(results):
            assert result.ok and result.text == texts(40)[i] and result.audio is not None
            assert result.audio.pcm == server.expected_pcm(texts(40)[i])
        assert 1 < server.most_at_once <= 6  # in parallel, never more than asked
        assert [p.done for p in progress] == list(range(1, 41)) and progress[-1].failed == 0
        assert progress[-1].audio_seconds == pytest.approx(sum(r.audio.duration for r in results))
    assert not client_threads()


def test_unordered_results_come_as_they_complete() -> None:
    with LocalServer(speed=20.0) as server:
        long_first = ["one " * 60] + texts(10)  # the first takes longest
        results = list(synth_for(server).synthesize_many(long_first, concurrency=4, ordered=False))
    assert sorted(r.index for r in results) == list(range(11)) and results[-1].index == 0


def test_one_failure_never_stops_the_batch_and_bad_items_are_their_own_errors() -> None:
    with LocalServer(faults=Faults(drop_after_bytes=4096)) as broken, LocalServer() as good:
        synth = synth_for(good)
        items: List[Any] = ["fine one", {"text": "with a voice", "voice": "leo"}, {"text": "bad", "voise": "x"},
                            {"no": "text"}, "  ", "fine two"]
        results = list(synth.synthesize_many(items, concurrency=3))
        assert [r.ok for r in results] == [True, True, False, False, False, True]
        assert isinstance(results[2].error, basetts.ConfigurationError) and "voise" in str(results[2].error)
        assert any(c.settings and c.settings["voice"] == "leo" for c in good.conversations)
        failing = list(synth_for(broken).synthesize_many(["a b c d e f g h", "i j k l m n"], concurrency=2))
    assert all(isinstance(r.error, basetts.StreamInterrupted) for r in failing)
    assert failing[0].error.partial is not None and len(failing[0].error.partial.pcm) == 4096


@contextlib.contextmanager
def server_process(*options: str) -> Iterator[basetts.Synthesizer]:
    """A local server in a process of its own (its copy of the audio is not this process's memory)."""
    server = subprocess.Popen([sys.executable, "-m", "basetts", "serve", "--api-key", "k", *options],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(3)]
        yield basetts.Synthesizer(url=lines[1].split("=", 1)[1].strip(), api_key="k")
    finally:
        server.terminate()
        server.wait(10)


def test_memory_stays_flat_and_texts_are_read_lazily() -> None:
    read: List[int] = []

    def endless() -> Iterator[str]:
        for i in range(10_000):
            read.append(i)
            yield f"text {i}"

    with server_process() as synth:
        stream = synth.synthesize_many(endless(), concurrency=4)
        first = [next(stream) for _ in range(5)]
        assert len(read) <= 5 + 2 * 4 + 1  # only a window ahead of what was taken
        tracemalloc.start()
        for _ in range(300):
            next(stream)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stream.close()
    assert [r.index for r in first] == list(range(5))
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB for 300 results not kept"  # 300 x 8 kB of audio is 2.4 MB


def test_leaving_the_loop_closes_every_connection_at_once() -> None:
    with LocalServer(speed=0.5) as server:  # slow: a long text takes seconds
        stream = synth_for(server).synthesize_many(["short"] + ["a long text " * 20] * 7, concurrency=4)
        first = next(stream)  # the short one; three long ones are in flight
        left = time.monotonic()
        stream.close()  # what `break` does
        closed_in = time.monotonic() - left
        assert first.ok and first.index == 0
        assert closed_in < 2.0  # sanity bound: closed, not played out (each has seconds to go)
        time.sleep(0.5)  # an upgrade the server was answering as the batch closed lands in its records meanwhile
        started = len(server.conversations)
        time.sleep(0.5)
        assert len(server.conversations) == started <= 5  # nothing more starts (4 at a time, then 1 more)
        assert all(r.done.wait(5) for r in server.conversations)  # the server saw each end (slowly, if busy)
        long_ones = [r for r in server.conversations if r.words != ["short"]]  # connected in any order
        assert len(long_ones) == len(server.conversations) - 1
        assert all(r.client_disconnected for r in long_ones)  # each long one cut off
    assert not client_threads()


def test_a_hundred_in_flight_share_one_io_thread_and_match_synthesize_byte_for_byte() -> None:
    with LocalServer(speed=5.0) as server:  # each text takes 0.5 s: a hundred are in flight at once
        synth = synth_for(server)
        items = [f"text {i} of the many. It has two sentences, " + "and more words " * 8 for i in range(100)]
        seen: List[List[str]] = []
        results = []
        for result in synth.synthesize_many(items, concurrency=100):
            seen.append(client_threads())
            results.append(result)
        assert server.most_at_once > 50  # really in flight together
        assert [r.audio.pcm if r.audio else None for r in results] == [server.expected_pcm(t) for t in items]
        assert synth.synthesize(items[7]).pcm == results[7].audio.pcm  # the same as one call's
    names = {name for names in seen for name in names}
    assert "basetts-reader" not in names and "basetts-writer" not in names
    assert max(sum(n == "basetts-io" for n in names) for names in seen) == 1
    assert max(sum(n.startswith("basetts-connect") for n in names) for names in seen) <= 25
    assert not client_threads()


def test_long_texts_in_a_batch_are_paced_against_the_keepalive() -> None:
    from .test_long_texts import COMPRESSION, PING, SAMPLES_PER_WORD, long_text

    text = long_text(1.0)
    with LocalServer(speed=1.0 * COMPRESSION, samples_per_word=SAMPLES_PER_WORD, ping_interval=PING,
                     ping_timeout=PING) as server:
        # one connection per text (recoveries=0: a long text goes as parts otherwise), each against the keepalive
        synth = synth_for(server, keepalive_timeout=PING, recoveries=0)
        results = list(synth.synthesize_many([text] * 4, concurrency=4))
        records = [server.last()] + server.conversations[:-1]
    assert all(not r.keepalive_timeout and r.close_code == 1000 for r in records)
    assert all(r.audio is not None and r.audio.pcm == server.expected_pcm(text) for r in results)
    assert max(r.pings for r in records) >= 2  # it spanned keepalive windows


def test_each_text_keeps_its_deadlines_and_tls_works() -> None:
    import ssl

    from .test_sending import CERTS

    with LocalServer(faults=Faults(silent=True)) as silent:
        started = time.monotonic()
        results = list(synth_for(silent, first_audio_timeout=0.5, read_timeout=0.5)
                       .synthesize_many(["a b", "c d", "e f"], concurrency=3))
        assert all(isinstance(r.error, basetts.TimeoutError) for r in results)
        assert time.monotonic() - started < 3
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.path.join(CERTS, "untrusted-cert.pem")
    try:
        with LocalServer(ssl_context=context, samples_per_word=48) as tls:
            items = [" ".join(f"w{i}.{j}" for j in range(300)) for i in range(6)]  # > 4 kB each: several writes
            results = list(synth_for(tls).synthesize_many(items, concurrency=6))
            assert [r.audio.pcm if r.audio else r.error for r in results] == [tls.expected_pcm(t) for t in items]
    finally:
        if old is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = old


def test_bad_batch_arguments_are_errors_before_anything_is_sent() -> None:
    with LocalServer() as server:
        synth = synth_for(server)
        with pytest.raises(basetts.ConfigurationError):
            list(synth.synthesize_many(["x"], concurrency=0))
        with pytest.raises(TypeError):
            list(synth.synthesize_many("one text", concurrency=2))
        with pytest.raises(TypeError, match=r"voise \(did you mean 'voice'\?\)"):
            list(synth.synthesize_many(["x"], voise="leo"))
        with pytest.raises(basetts.ArgumentTypeError, match=r"first_audio_timout \(did you mean 'first_audio_timeout'"
                                                           r"\?\), speed \(help\(basetts.Settings\)"):
            synth.synthesize("x", speed=1.2, first_audio_timout=3)
        assert server.conversations == []


# --- inputs and names --------------------------------------------------------------------------------------------
def test_jsonl_lines_that_cannot_be_jobs_are_named_with_their_line_numbers() -> None:
    blank: List[int] = []
    lines = ['{"id": "a", "text": "one"}\n', "\n", "not json\n", '{"id": "b"}\n',
             '{"id": "c", "text": "x", "voise": 1}\n', '{"id": "a", "text": "again"}\n',
             '{"text": "no id", "voice": "leo"}\n']
    jobs = list(read_jobs(lines, "jsonl", blank))
    assert blank == [2]
    assert [(j.id, j.problem is None) for j in jobs] == [("a", True), ("000003", False), ("b", False), ("c", False),
                                                          ("a", False), ("000007", True)]
    assert "line 3 is not JSON" in jobs[1].problem
    assert 'line 4 has no text (no "text" field; it has: id)' in jobs[2].problem
    named = list(read_jobs(['{"txt": "hello"}\n', '{"text": " "}\n'], "jsonl"))
    assert [job.problem for job in named] == ['line 1 has no text (no "text" field; it has: txt)', "line 2 has no text"]
    with pytest.raises(NoTextColumn) as caught:  # not one row could be a job: said once, before any is read
        next(read_jobs(["words,voice\n", "hello,leo\n"], "csv"))
    assert caught.value.args[0] == ["words", "voice"]
    assert "unknown setting(s) voise (did you mean 'voice'?)" in jobs[3].problem and "used before" in jobs[4].problem
    assert jobs[5].settings == {"voice": "leo"}


def test_csv_and_text_inputs() -> None:
    jobs = list(read_jobs(["id,text,voice\n", "x1,hello there,mia\n", ",,\n", "x2,second,\n"], "csv"))
    assert [(j.id, j.text, j.settings) for j in jobs] == [("x1", "hello there", {"voice": "mia"}),
                                                          ("x2", "second", {})]
    assert [(j.id, j.text) for j in read_jobs(["one\n", "\n", "two\n"], "text")] == [("000001", "one"),
                                                                                  ("000003", "two")]
    # Columns and fields of the user's own start with _ and are left out (as synthesize_many's keys); a space
    # after a comma is not part of a name or a value; a row with more values than the header is a bad line.
    jobs = list(read_jobs(["id, text, voice, _notes\n", 'a, "Hello, there.", mia, mine\n', "b,Hello, there,mia,mine\n"],
                          "csv"))
    assert [(j.id, j.text, j.settings, j.problem) for j in jobs[:1]] == [("a", "Hello, there.", {"voice": "mia"}, None)]
    assert jobs[1].id == "b" and jobs[1].problem == ("line 3 has 5 values where the header names 4 (a comma in a "
                                                     "text? put the text in double quotes)")
    job, = read_jobs(['{"text": "hi", "_row": 7, "voice": "leo"}\n'], "jsonl")
    assert (job.text, job.settings, job.problem) == ("hi", {"voice": "leo"}, None)
    with pytest.raises(UnknownColumns) as unknown:  # every row would be a bad line: said once, before any is read
        next(read_jobs(["text,notes,voise\n", "hello,x,leo\n"], "csv"))
    assert unknown.value.args[0] == "notes, voise (did you mean 'voice'?)"


def test_file_names_come_from_ids_or_their_hashes_never_from_the_text() -> None:
    assert file_name("chapter-01", ".wav") == "chapter-01.wav"
    hashed = file_name("../etc/passwd", ".wav")
    assert "/" not in hashed and hashed.endswith(".wav") and len(hashed) == 28
    assert len(file_name("x" * 5000, ".mp3")) == 28


# --- basetts batch ---------------------------------------------------------------------------------------------
def run_batch(*args: str, env: Any = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BASETEN", "BASETTS"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "basetts", "batch", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def manifest(outdir: Path) -> List[dict]:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]


def read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as reader:
        return reader.readframes(reader.getnframes())


def test_batch_writes_a_file_per_item_and_a_manifest_and_resumes(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(item) for item in [
        {"id": "greeting", "text": "hello there"}, {"id": "leo", "text": "in another voice", "voice": "leo"},
        {"id": "bye", "text": "goodbye"}]) + "\n\n")
    out = tmp_path / "out"
    with LocalServer() as server:
        env = {"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key}
        done = run_batch(str(source), str(out), env=env)
        assert done.returncode == 0, done.stderr
        assert "3 written" in done.stderr and "1 blank line(s) skipped" in done.stderr
        assert read_wav(out / "greeting.wav") == server.expected_pcm("hello there")
        entries = {e["id"]: e for e in manifest(out)}
        assert set(entries) == {"greeting", "leo", "bye"} and all(e["error"] is None for e in entries.values())
        assert entries["bye"]["seconds"] > 0 and entries["bye"]["attempts"] == 1 and entries["bye"]["text_sha256"]
        assert any(c.settings and c.settings["voice"] == "leo" for c in server.conversations)
        # Again: nothing to do. Then one text changes and one file is lost: only those two are redone.
        count = len(server.conversations)
        again = run_batch(str(source), str(out), env=env)
        assert again.returncode == 0 and "3 already done" in again.stderr and len(server.conversations) == count
        source.write_text(source.read_text().replace("goodbye", "farewell"))
        (out / "greeting.wav").unlink()
        third = run_batch(str(source), str(out), env=env)
        assert third.returncode == 0 and "2 written, 1 already done" in third.stderr, third.stderr
        assert read_wav(out / "bye.wav") == server.expected_pcm("farewell")
    assert not list(out.glob(".*.partial"))


def test_batch_reports_bad_lines_and_failures_and_exits_1(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "ok", "text": "fine"}\nnot json\n{"id": "ok", "text": "dup"}\n')
    out = tmp_path / "out"
    with LocalServer() as server:
        result = run_batch(str(source), str(out), env={"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1 and "2 bad input line(s)" in result.stderr
    problems = [e for e in manifest(out) if e.get("error")]
    assert {e["line"] for e in problems} == {2, 3} and (out / "ok.wav").exists()
    with LocalServer(faults=Faults(handshake_status=404)) as server:
        result = run_batch(str(source), str(tmp_path / "out2"),
                           env={"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key})
    assert result.returncode == 1 and "1 failed" in result.stderr
    assert any("ModelNotFoundError" in (e.get("error") or "") for e in manifest(tmp_path / "out2"))
    assert not (tmp_path / "out2" / "ok.wav").exists()
    # A CSV whose header has no text column: said once, exit 2, before anything is sent (not a bad line per row).
    table = tmp_path / "in.csv"
    table.write_text("sentence,voice\nhello,leo\nbye,tara\n")
    with LocalServer() as server:
        result = run_batch(str(table), str(tmp_path / "out3"),
                           env={"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key})
        assert result.returncode == 2 and 'no "text" column (it has: sentence, voice)' in result.stderr, result.stderr
        assert server.handshakes == 0 and not manifest(tmp_path / "out3")
        table.write_text("text,notes\nhello,mine\n")  # a column that is not a setting: the same, naming it
        result = run_batch(str(table), str(tmp_path / "out4"),
                           env={"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key})
        assert result.returncode == 2 and "not settings: notes; a column of your own is left out when its name " \
            "starts with _" in result.stderr, result.stderr
        assert server.handshakes == 0 and not manifest(tmp_path / "out4")


def test_batch_refuses_an_outdir_it_cannot_use_before_anything_is_sent(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    with LocalServer() as server:
        env = {"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key}
        result = run_batch(str(source), str(tmp_path / "a-file"), env=env)
        assert result.returncode == 2 and "is a file" in result.stderr
        assert server.conversations == []
        (tmp_path / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))  # not UTF-8: said so, naming it
        result = run_batch(str(tmp_path / "latin1.txt"), str(tmp_path / "out"), env=env)
        assert result.returncode == 2 and "INPUT" in result.stderr and "latin1.txt is not UTF-8 text" in result.stderr
        assert "Traceback" not in result.stderr and server.conversations == []
        (tmp_path / "blank.txt").write_text("\n  \n")  # an empty input (a step before it failed): not a success
        result = run_batch(str(tmp_path / "blank.txt"), str(tmp_path / "out"), env=env)
        assert result.returncode == 2 and "blank.txt holds no texts (2 blank line(s))" in result.stderr


def test_batch_reads_stdin_and_csv_and_writes_the_format_asked(tmp_path: Path) -> None:
    with LocalServer() as server:
        env = {"BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key}
        result = subprocess.run([sys.executable, "-m", "basetts", "batch", "-", str(tmp_path / "o"), "--format", "pcm"],
                                input="first line\nsecond line\n", capture_output=True, text=True, timeout=120,
                                env={**os.environ, **env})
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "o" / "000002.pcm").read_bytes() == server.expected_pcm("second line")
        csv_file = tmp_path / "in.csv"
        csv_file.write_text("id,text\nc1,from a csv\n")
        assert run_batch(str(csv_file), str(tmp_path / "c"), env=env).returncode == 0
        assert read_wav(tmp_path / "c" / "c1.wav") == server.expected_pcm("from a csv")


def interrupt(child: "subprocess.Popen[str]") -> Any:
    """Ctrl+C to `child`: (its stdout, its stderr, the seconds it took to exit); killed if it does not."""
    try:
        interrupted = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        return out, err, time.monotonic() - interrupted
    finally:
        if child.poll() is None:
            child.kill()


def test_ctrl_c_stops_within_a_second_closes_everything_and_a_rerun_finishes(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i} " + "word " * 30 + "\n" for i in range(12)))
    out = tmp_path / "out"
    with LocalServer(speed=2.0) as server:
        env = {**os.environ, "BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key}
        child = subprocess.Popen([sys.executable, "-m", "basetts", "batch", str(source), str(out),
                                  "--concurrency", "3"], stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while not (out / "manifest.jsonl").exists() or not manifest(out):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _, err, stopped_in = interrupt(child)
        assert child.returncode == 130 and "Run the same command again" in err
        assert stopped_in < 2.0  # sanity bound: connections closed, not played out
        time.sleep(0.3)
        assert all(record.client_disconnected or record.done.is_set() for record in server.conversations)
        assert not list(out.glob(".*.partial"))  # a file being written when it stopped is not left behind
        done_before = {e["id"] for e in manifest(out) if e.get("error") is None}
        assert 0 < len(done_before) < 12
        finish = subprocess.run([sys.executable, "-m", "basetts", "batch", str(source), str(out)], capture_output=True,
                                text=True, timeout=120, env=env)
        assert finish.returncode == 0, finish.stderr
        assert f"{len(done_before)} already done" in finish.stderr
    assert len(list(out.glob("*.wav"))) == 12


STUCK_CHILD = """
import sys, time
import basetts
synth = basetts.Synthesizer(url=sys.argv[1], api_key="k")
print("STARTED", flush=True)
try:
    for result in synth.synthesize_many(["a b", "c d", "e f"], concurrency=3):
        print("RESULT", result.error, flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_ctrl_c_stops_a_batch_whose_upgrades_the_server_holds(tmp_path: Path, tls: bool) -> None:
    """A deployment scaled to zero holds the upgrade for minutes: Ctrl+C must not wait for it."""
    import socket

    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:  # accepts TCP, never answers
        scheme = "wss" if tls else "ws"
        url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/environments/production/websocket"
        child = subprocess.Popen([sys.executable, "-c", STUCK_CHILD, url], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "STARTED"
        time.sleep(1.0)  # every connector now waits for its upgrade (or its TLS handshake)
        out, _, stopped_in = interrupt(child)
    assert "INTERRUPTED" in out and "RESULT" not in out
    assert stopped_in < 2.0  # sanity bound: not the 300 s handshake_timeout


def test_on_a_terminal_batch_draws_tqdms_bar_with_items_audio_errors_and_an_eta(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i}\n" for i in range(6)))
    leader, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    with LocalServer() as server:
        child = subprocess.Popen([sys.executable, "-m", "basetts", "batch", str(source), str(tmp_path / "out")],
                                 stderr=terminal, stdout=subprocess.DEVNULL,
                                 env={**os.environ, "BASETTS_URL": server.url, "BASETEN_API_KEY": server.api_key})
        os.close(terminal)
        shown = b""
        try:
            while True:
                try:
                    piece = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not piece:
                    break
                shown += piece
        finally:
            child.wait(60)
            os.close(leader)
    assert child.returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "6/6" in text and "item/s" in text and "audio=" in text and "errors=0" in text, text
