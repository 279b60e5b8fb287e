"""`python -m bench [--quick] [--out DIR]`: every measurement of issue 6 (and issue 7's encodings) in one
run, written to DIR/performance.md (the generated part) and DIR/performance.png.

Where each thing runs:
- the local server: always its own process (bench.serve), one per configuration;
- time to first byte, throughput and encodings: clients in this process, one after another,
  interleaved so drift hits every client alike;
- CPU per stream, memory, speak(): a fresh child process per measurement (bench.child).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from basetts import Synthesizer, __version__
from basetts.protocols.flush import builtin_sentences
from basetts.protocols.orpheus import PART_WORDS
from basetts.protocols.orpheus_http import prompts

from . import clients, procs, report
from .pulse import PulseUnavailable, null_sink

BYTES_PER_SECOND = 48000
TIMEOUT = 30.0  # for the reference bare loop "with a timeout": basetts' read_timeout


@dataclasses.dataclass
class Plan:
    ttfb_words: int = 20
    ttfb_reps: int = 500  # the median moves ±0.1 ms (5%) between runs of 100; ~20 s
    throughput_words: int = 6000  # 10 minutes at 2400 samples (0.1 s) per word
    throughput_reps: int = 15
    encoding_words: int = 600  # 1 minute: the server's μ-law encoder is pure Python, slow
    encoding_reps: int = 3
    cpu_levels: Tuple[int, ...] = (1, 8, 32, 64)
    cpu_bare_levels: Tuple[int, ...] = (1, 64)
    cpu_words: int = 80  # 8 s of real-time audio per stream
    cpu_reps: int = 2
    memory_samples_per_word: int = 24000  # 1 s per word: 60 minutes is 3600 words
    memory_minutes: Tuple[int, int] = (1, 60)
    memory_stall: float = 2.0
    speak_budget: float = 10.0
    ttfs_repeat: int = 10
    underrun_speeds: Tuple[float, ...] = (1.0, 1.2, 2.0)
    underrun_words: int = 100  # 10 s
    underrun_reps: int = 3
    jitter: float = 0.08  # up to one 85 ms frame late, at random
    long_minutes: float = 30.0  # of audio, the server at long_speed with uvicorn's 20 s / 20 s keepalive
    long_speed: float = 3.0
    batch_count: int = 1000
    batch_words: int = 59  # ~5 s of audio at 2048 samples a word
    batch_levels: Tuple[int, ...] = (1, 16, 64, 256)
    batch_reps: int = 5  # interleaved; medians (one run moves ±12%: the server, on the same 2 cores, sets the pace)
    qwen3_words: int = 6000  # 10 minutes, sentences of 15 words
    text_characters: int = 200_000
    text_reps: int = 5
    text_first_row_reps: int = 5000
    session_words: int = 120  # 12 s of audio in sentences of 10 words
    session_tokens_per_second: float = 20.0  # a language model writing, twice as fast as the audio plays
    session_speed: float = 3.0
    session_reps: int = 3
    recovery_reps: int = 5
    recovery_minutes: float = 30.0  # of audio, the server at recovery_speed, cut three times
    recovery_speed: float = 20.0
    long_first_minutes: float = 30.0  # of text, whose first audio is timed against a short text's
    long_first_reps: int = 15

    @classmethod
    def quick(cls) -> "Plan":
        return cls(ttfb_reps=5, throughput_words=600, throughput_reps=1, encoding_words=120,
                   encoding_reps=1, cpu_levels=(1, 8), cpu_bare_levels=(1,), cpu_words=30, cpu_reps=1,
                   memory_minutes=(1, 10), speak_budget=3.0, ttfs_repeat=2, underrun_speeds=(1.2,),
                   underrun_words=30, underrun_reps=1, long_minutes=2.0, batch_count=60,
                   batch_levels=(1, 16), batch_reps=1, qwen3_words=600, text_characters=20_000, text_reps=1,
                   # The cuts over 10 s at least (three within 10 s are not recovered), Orpheus's too: its cuts
                   # fall a quarter of its parts apart, and at 4 minutes that was two parts, a few seconds.
                   session_words=40, session_reps=1, recovery_reps=1, recovery_minutes=6.0,
                   recovery_speed=8.0,
                   long_first_minutes=5.0, long_first_reps=3)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


# time to first byte ------------------------------------------------------------------------------------
def measure_first_byte(plan: Plan) -> Dict[str, Any]:
    text = clients.words(plan.ttfb_words)
    with procs.server() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        plain = Synthesizer(url=server.url, api_key=server.api_key, text_format="plain")  # the text layer's cost
        runners: Dict[str, Callable[[], Tuple[float, int]]] = {
            "bare websocket-client": lambda: clients.bare_first_byte(server.url, server.api_key, text),
            "bare websocket-client, with a timeout": lambda: clients.bare_first_byte(
                server.url, server.api_key, text, timeout=TIMEOUT),
            "basetts stream()": lambda: clients.basetts_first_byte(synth, text),
            "basetts stream() after connect()": lambda: clients.basetts_warm_first_byte(synth, text),
            report.PLAIN: lambda: clients.basetts_first_byte(plain, text),
        }
        skipped = clients.check_seed()
        if skipped is None:
            official = clients.OfficialClient(server.url, server.api_key)
            runners["official aiohttp example"] = lambda: official.first_byte(text)
        samples: Dict[str, List[float]] = {name: [] for name in runners}
        for run in runners.values():  # warm-up: imports, caches, the server's first tones
            run()
        names = list(runners)
        for rep in range(plan.ttfb_reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
                elapsed, received = runners[name]()
                if received != plan.ttfb_words * 2400 * 2:
                    raise RuntimeError(f"{name} received {received} bytes")
                samples[name].append(elapsed)
        synth.close()
        plain.close()
    return {"samples": samples, "official_skipped": skipped}


def measure_text_layer(plan: Plan) -> Dict[str, Any]:
    """The text layer's cost per character: a model's answer read as Markdown, whole and as 4-character
    tokens, against text_format="plain" (the words only)."""
    from basetts.text import iter_words, words_of

    answer = clients.markdown_answer(plan.text_characters)
    tokens = [answer[i:i + 4] for i in range(0, len(answer), 4)]
    runs = {"markdown, whole": lambda: iter_words([answer], "markdown"),
            "markdown, 4-character tokens": lambda: iter_words(tokens, "markdown"),
            "plain, whole": lambda: iter_words([answer], "plain"),
            "plain, 4-character tokens": lambda: iter_words(tokens, "plain")}
    per_character: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(plan.text_reps):
        for name, run in runs.items():
            started = time.perf_counter()
            for _word in run():
                pass
            per_character[name].append((time.perf_counter() - started) / len(answer))
    # What the layer adds to the time-to-first-byte row, measured directly: its ~10 us are below what two
    # medians of a 4 ms round trip can tell apart (they move a few percent from run to run).
    first_row = clients.words(plan.ttfb_words)
    per_call: Dict[str, List[float]] = {"markdown": [], "plain": []}
    for _ in range(plan.text_first_row_reps):
        for text_format, times in per_call.items():
            started = time.perf_counter()
            list(words_of(first_row, text_format))
            times.append(time.perf_counter() - started)
    return {"characters": len(answer), "seconds_per_character": per_character,
            "first_row_seconds": {name: statistics.median(times) for name, times in per_call.items()}}


LONG_FIRST_PROTOCOLS = ("orpheus", "qwen3", "orpheus-http")


def measure_long_first_audio(plan: Plan) -> Dict[str, Any]:
    """Time to first audio of a long text against a short one's, per protocol: the text is read as its words are
    asked for, so its length should not delay the first audio."""
    short = clients.words(plan.ttfb_words)
    long = clients.words(int(plan.long_first_minutes * 600), sentence=12)  # 0.1 s of audio a word
    out: Dict[str, Any] = {"minutes": plan.long_first_minutes, "first_audio": {}}
    for protocol in LONG_FIRST_PROTOCOLS:
        with procs.server(protocol=protocol) as server:
            synth = Synthesizer(url=server.url, api_key=server.api_key, protocol=protocol,
                                **({"voice": "bench"} if protocol == "qwen3" else {}))
            times: Dict[str, List[float]] = {"short": [], "long": []}
            for rep in range(plan.long_first_reps + 1):
                for name, text in (("short", short), ("long", long)):
                    started = time.perf_counter()
                    chunks = synth.stream(text)
                    next(chunks)
                    elapsed = time.perf_counter() - started
                    chunks.close()
                    if rep:  # the first is a warm-up
                        times[name].append(elapsed)
            synth.close()
        out["first_audio"][protocol] = {name: statistics.median(v) for name, v in times.items()}
    return out


# throughput and encodings ---------------------------------------------------------------------------
def measure_throughput(plan: Plan) -> Dict[str, Any]:
    text = clients.words(plan.throughput_words)
    results: Dict[str, Dict[str, List[float]]] = {}
    with procs.server() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        whole = Synthesizer(url=server.url, api_key=server.api_key, recoveries=0)
        runners = {
            "bare websocket-client": lambda: clients.bare_receive_all(server.url, server.api_key, text),
            "bare websocket-client, with a timeout": lambda: clients.bare_receive_all(
                server.url, server.api_key, text, timeout=TIMEOUT),
            "basetts stream()": lambda: clients.basetts_receive_all(synth, text),
            report.ONE_CONNECTION: lambda: clients.basetts_receive_all(whole, text),
        }
        for run in runners.values():  # warm-up: imports, and the server's tone cache
            run()
        for rep in range(plan.throughput_reps):
            names = list(runners)
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
                run = runners[name]
                cpu = time.process_time()
                elapsed, received = run()
                cpu = time.process_time() - cpu
                audio = received / BYTES_PER_SECOND
                entry = results.setdefault(name, {"audio_per_second": [], "cpu_per_audio_second": []})
                entry["audio_per_second"].append(audio / elapsed)
                entry["cpu_per_audio_second"].append(cpu / audio)
    return {"audio_seconds": plan.throughput_words * 0.1, "results": results, "spoken": _spoken_throughput(plan)}


def _spoken_throughput(plan: Plan) -> Dict[str, List[float]]:
    """The same minutes of audio in words of a spoken word's length (a part every ~25 s of audio, as speech has,
    where the row above makes one every 6 s): each client's audio seconds per second."""
    text = clients.words(int(plan.throughput_words * 0.1 * 24000 / LONG_SAMPLES_PER_WORD))
    rates: Dict[str, List[float]] = {}
    with procs.server(samples_per_word=LONG_SAMPLES_PER_WORD) as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        whole = Synthesizer(url=server.url, api_key=server.api_key, recoveries=0)
        runners = {
            report.BARE: lambda: clients.bare_receive_all(server.url, server.api_key, text),
            report.OURS: lambda: clients.basetts_receive_all(synth, text),
            report.ONE_CONNECTION: lambda: clients.basetts_receive_all(whole, text),
        }
        for run in runners.values():
            run()
        for rep in range(plan.throughput_reps):
            names = list(runners)
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                elapsed, received = runners[name]()
                rates.setdefault(name, []).append(received / BYTES_PER_SECOND / elapsed)
    return rates


def measure_encodings(plan: Plan) -> Dict[str, Any]:
    text = clients.words(plan.encoding_words)
    results: Dict[str, Dict[str, Any]] = {}
    with procs.server() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        for _rep in range(plan.encoding_reps):
            for encoding in ("pcm_s16le", "pcm_mulaw"):
                cpu = time.process_time()
                audio = synth.synthesize(text, encoding=encoding)
                cpu = time.process_time() - cpu
                stats = audio.stats
                # Server frames carry 2 bytes of header plus 2 of length (126..65535-byte payloads).
                wire = stats.bytes_received + 4 * stats.frames_received
                entry = results.setdefault(encoding, {"cpu_per_audio_second": []})
                entry["cpu_per_audio_second"].append(cpu / audio.duration)
                entry.update(payload_bytes=stats.bytes_received, frames=stats.frames_received,
                             wire_bytes=wire, wire_bytes_per_audio_second=wire / audio.duration,
                             received_encoding=stats.encoding, audio_seconds=audio.duration)
    return results


# Qwen3-TTS -------------------------------------------------------------------------------------------
def measure_qwen3(plan: Plan) -> Dict[str, Any]:
    """Time to first audio and throughput for Qwen3-TTS: basetts against a bare websocket-client loop
    speaking the same protocol, interleaved, as for Orpheus."""
    short = clients.words(plan.ttfb_words)
    long = clients.words(plan.qwen3_words, sentence=15)
    with procs.server(protocol="qwen3") as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key, protocol="qwen3", voice="bench")
        out = _against_bare(plan, "qwen3", {
            "bare websocket-client": lambda: clients.bare_qwen3_first_byte(server.url, server.api_key, short),
            "basetts stream()": lambda: clients.basetts_first_byte(synth, short),
        }, {
            "bare websocket-client": lambda: clients.bare_qwen3_receive_all(server.url, server.api_key, long),
            "basetts stream()": lambda: clients.basetts_receive_all(synth, long),
        })
        synth.close()
    return out


def measure_orpheus_http(plan: Plan) -> Dict[str, Any]:
    """Time to first audio and throughput for orpheus-http: basetts against a bare http.client loop posting
    the same requests on one kept-alive connection, interleaved, as for the websocket."""
    short = clients.words(plan.ttfb_words)
    long = clients.words(plan.qwen3_words, sentence=15)
    with procs.server(protocol="orpheus-http") as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        bare = clients.BareHTTP(server.url, server.api_key)
        floor = clients.H11Floor(server.url, server.api_key)
        out = _against_bare(plan, "orpheus-http", {
            report.BARE_HTTP: lambda: bare.first_byte(short),
            report.H11_FLOOR: lambda: floor.first_byte(short),
            "basetts stream()": lambda: clients.basetts_first_byte(synth, short),
        }, {
            report.BARE_HTTP: lambda: bare.receive_all(long),
            report.H11_FLOOR: lambda: floor.receive_all(long),
            "basetts stream()": lambda: clients.basetts_receive_all(synth, long),
        })
        bare.close()
        floor.close()
        synth.close()
    return out


def _against_bare(plan: Plan, label: str, first: Dict[str, Callable[[], Tuple[float, int]]],
                  whole: Dict[str, Callable[[], Tuple[float, int]]]) -> Dict[str, Any]:
    """Each client's first audio (`first`) and throughput (`whole`), after one warm-up run of each (the
    connections kept alive from there on), interleaved rep by rep so that drift falls on both alike."""
    out: Dict[str, Any] = {"first_byte": {}, "throughput": {}, "audio_seconds": plan.qwen3_words * 0.1}
    for run in list(first.values()) + list(whole.values()):
        run()  # warm-up
    names = list(first)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for rep in range(plan.ttfb_reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            elapsed, received = first[name]()
            if received != plan.ttfb_words * 2400 * 2:
                raise RuntimeError(f"{label} {name} received {received} bytes")
            samples[name].append(elapsed)
    out["first_byte"] = samples
    for rep in range(plan.throughput_reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            cpu = time.process_time()
            elapsed, received = whole[name]()
            cpu = time.process_time() - cpu
            audio = received / BYTES_PER_SECOND
            entry = out["throughput"].setdefault(name, {"audio_per_second": [], "cpu_per_audio_second": []})
            entry["audio_per_second"].append(audio / elapsed)
            entry["cpu_per_audio_second"].append(cpu / audio)
    return out


# a long text against the keepalive ---------------------------------------------------------------------
LONG_SAMPLES_PER_WORD = 8192  # 0.34 s: about a spoken word


def measure_long_text(plan: Plan) -> Dict[str, Any]:
    """synthesize() of a long text from a server at `long_speed` with uvicorn's keepalive: it must
    complete, in about the server's own generation time (each segment takes its audio over the speed)."""
    words = int(plan.long_minutes * 60 * 24000 / LONG_SAMPLES_PER_WORD) + 1
    text = clients.words(words, sentence=12)
    with procs.server(speed=plan.long_speed, samples_per_word=LONG_SAMPLES_PER_WORD) as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key)
        started = time.monotonic()
        error = None
        try:
            audio = synth.synthesize(text)
            seconds = audio.duration
        except Exception as exc:  # noqa: BLE001 - the row reports it
            error, seconds = f"{type(exc).__name__}: {exc}", len(getattr(exc, "partial", b"")) / BYTES_PER_SECOND
        wall = time.monotonic() - started
    expected = words * LONG_SAMPLES_PER_WORD / 24000
    return {"words": words, "audio_seconds": seconds, "expected_seconds": expected, "wall": wall,
            "generation": expected / plan.long_speed, "speed": plan.long_speed, "error": error}


# recovery ------------------------------------------------------------------------------------------
RECOVERY_PROTOCOLS = ("orpheus-http", "qwen3", "orpheus")


def measure_recovery(plan: Plan) -> Dict[str, Any]:
    """What a lost connection costs: the time from the cut to the next audio against the same call's first
    audio (a 4-unit text cut halfway through its second unit, a fresh server each time so the cut is the
    second unit's), and a long text cut three times against the same text uncut (wall time), per protocol. Over
    Orpheus's websocket a unit is a part (a connection each): its long text also goes on one connection
    (recoveries=0), what parts cost when nothing is cut."""
    out: Dict[str, Any] = {}
    for protocol in RECOVERY_PROTOCOLS:
        options = {"voice": "bench"} if protocol == "qwen3" else {}
        per_unit = PART_WORDS + plan.ttfb_words if protocol == "orpheus" else plan.ttfb_words
        short = clients.words(per_unit * 4, sentence=plan.ttfb_words)
        cuts: List[Dict[str, float]] = []
        for rep in range(plan.recovery_reps):
            faults = (["drop_after_bytes=20000", "stream_failures=1", "first_failure=2"] if protocol != "qwen3"
                      else ["drop_after_bytes=140000", "stream_failures=1"])
            with procs.server(protocol=protocol, faults=faults) as server:
                synth = Synthesizer(url=server.url, api_key=server.api_key, protocol=protocol, **options)
                stats = synth.synthesize(short).stats
            cuts.append({"recovery_time": stats.recovery_time, "first_byte_time": stats.first_byte_time or 0.0,
                         "recoveries": stats.recoveries})
            log(f"  {protocol}: cut {rep + 1}: {stats.recovery_time * 1000:.1f} ms to the next audio "
                f"({(stats.first_byte_time or 0) * 1000:.1f} ms to the first)")
        words = int(plan.recovery_minutes * 60 * 24000 / LONG_SAMPLES_PER_WORD) + 1
        text = clients.words(words, sentence=12)
        audio_bytes = words * LONG_SAMPLES_PER_WORD * 2
        walls: Dict[str, float] = {}
        recovered = 0
        labels = ("uncut", "cut 3 times") + (("one connection",) if protocol == "orpheus" else ())
        for label in labels:
            # Qwen3: one session, each connection cut a quarter of the whole in; HTTP (Orpheus: parts): three
            # requests cut halfway.
            units = (len(list(prompts(text.split(), builtin_sentences, whole=True))) if protocol == "orpheus-http"
                     else words // PART_WORDS)
            every = max(1, units // 4)  # requests (parts) cut a quarter, a half and three quarters in
            faults = [] if label != "cut 3 times" else (
                ["drop_after_bytes=20000", "stream_failures=3", f"first_failure={every}", f"failure_every={every}"]
                if protocol != "qwen3" else [f"drop_after_bytes={audio_bytes // 4}", "stream_failures=3"])
            with procs.server(protocol=protocol, faults=faults, speed=plan.recovery_speed,
                              samples_per_word=LONG_SAMPLES_PER_WORD) as server:
                synth = Synthesizer(url=server.url, api_key=server.api_key, protocol=protocol, **options,
                                    **({"recoveries": 0} if label == "one connection" else {}))
                started = time.monotonic()
                audio = synth.synthesize(text)
                walls[label] = time.monotonic() - started
                recovered = max(recovered, audio.stats.recoveries)
            log(f"  {protocol}: {plan.recovery_minutes:g} min {label}: {walls[label]:.1f} s")
        out[protocol] = {"cuts": cuts, "walls": walls, "recoveries": recovered, "minutes": plan.recovery_minutes,
                         "speed": plan.recovery_speed}
    return out


# many texts ----------------------------------------------------------------------------------------
def measure_batch(plan: Plan) -> Dict[str, Any]:
    """synthesize_many against a plain ThreadPoolExecutor loop over synthesize(), at each concurrency, the
    server as fast as it can in its own process."""
    runs: List[Dict[str, Any]] = []
    text = clients.words(plan.batch_words - 1)
    with procs.server() as server:
        for mode in ("many", "pool"):  # warm-up, untimed: the server's first texts are slower (its caches)
            procs.child("batch", {"url": server.url, "api_key": server.api_key, "text": text,
                                  "count": max(1, plan.batch_count // 5), "concurrency": 16, "mode": mode})
        for rep in range(plan.batch_reps):
            for concurrency in plan.batch_levels:
                for mode in ("many", "pool") if rep % 2 == 0 else ("pool", "many"):
                    log(f"  batch: {mode} x{concurrency}, {plan.batch_count} texts (rep {rep + 1})")
                    run = procs.child("batch", {"url": server.url, "api_key": server.api_key, "text": text,
                                                "count": plan.batch_count, "concurrency": concurrency,
                                                "mode": mode}, timeout=900)
                    runs.append(dict(run, mode=mode, concurrency=concurrency, rep=rep))
    return {"runs": runs, "count": plan.batch_count, "words": plan.batch_words, "reps": plan.batch_reps}


# CPU per stream --------------------------------------------------------------------------------------
def measure_cpu(plan: Plan) -> Dict[str, Any]:
    text = clients.words(plan.cpu_words)
    runs: List[Dict[str, Any]] = []
    with procs.server(speed=1.0) as server:
        jobs = [("basetts", n) for n in plan.cpu_levels] + [("bare", n) for n in plan.cpu_bare_levels]
        for rep in range(plan.cpu_reps):
            for client, streams in jobs:
                log(f"  cpu: {client} x{streams} (rep {rep + 1})")
                runs.append(procs.child("cpu", {"url": server.url, "api_key": server.api_key, "text": text,
                                                "streams": streams, "client": client}))
    return {"runs": runs, "audio_seconds_per_stream": plan.cpu_words * 0.1}


# memory ----------------------------------------------------------------------------------------------
def measure_memory(plan: Plan, pulse_env: Optional[Dict[str, str]], speak_available: bool) -> Dict[str, Any]:
    runs: List[Dict[str, Any]] = []
    spw = plan.memory_samples_per_word
    words_per_minute = 60 * 24000 // spw
    with procs.server(samples_per_word=spw) as server:
        base = {"url": server.url, "api_key": server.api_key}
        for minutes in plan.memory_minutes:
            text = clients.words(minutes * words_per_minute)
            for mode in ("stream", "synthesize"):
                log(f"  memory: {mode}() {minutes} min")
                run = procs.child("memory", dict(base, mode=mode, text=text, stall=plan.memory_stall))
                runs.append(dict(run, minutes=minutes))
            if speak_available and pulse_env is not None:
                log(f"  memory: speak() {minutes} min, {plan.speak_budget:g} s of it")
                run = procs.child("memory", dict(base, mode="speak", text=text, budget=plan.speak_budget),
                                  env=pulse_env)
                runs.append(dict(run, minutes=minutes))
    return {"runs": runs, "stall": plan.memory_stall, "speak_budget": plan.speak_budget}


# speak -----------------------------------------------------------------------------------------------
def measure_speak(plan: Plan, pulse_env: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    with procs.server() as server:
        base = {"url": server.url, "api_key": server.api_key}
        log("  speak: time to first sound")
        out["first_sound"] = procs.child(
            "speak", dict(base, text=clients.words(plan.ttfb_words), repeat=plan.ttfs_repeat), env=pulse_env)["runs"]
    underruns: Dict[str, List[Dict[str, Any]]] = {}
    for speed in plan.underrun_speeds:
        with procs.server(speed=speed, jitter=plan.jitter) as server:
            log(f"  speak: underruns at {speed:g}x with jitter")
            run = procs.child("speak", {"url": server.url, "api_key": server.api_key, "repeat": plan.underrun_reps,
                                        "text": clients.words(plan.underrun_words, sentence=12)}, env=pulse_env)
            underruns[f"{speed:g}"] = run["runs"]
    out["underruns"] = underruns
    return out


def measure_session_gap(plan: Plan, pulse_env: Dict[str, str]) -> List[Dict[str, Any]]:
    """Orpheus over HTTP, a session with play=True fed a model's tokens: each sentence is a request sent once
    the next begins, so a server faster than real time must leave no gap (an underrun) between them."""
    with procs.server(protocol="orpheus-http", speed=plan.session_speed) as server:
        tokens = re.findall(r"\s*\S+", clients.words(plan.session_words, sentence=10))
        return procs.child("session", {
            "url": server.url, "api_key": server.api_key, "settings": {"protocol": "orpheus-http"},
            "tokens": tokens, "interval": 1 / plan.session_tokens_per_second, "repeat": plan.session_reps},
            env=pulse_env)["runs"]


def speak_default_prebuffer() -> Optional[float]:
    import inspect

    try:
        parameter = inspect.signature(Synthesizer.speak).parameters.get("prebuffer")  # type: ignore[attr-defined]
    except (AttributeError, ValueError, TypeError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


# main ------------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run (small sizes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where performance.md/png go (default docs/, or build/bench-quick/ with --quick)")
    parser.add_argument("--only", default="", help="comma-separated sections to run (for development)")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    out = args.out or (procs.ROOT / ("build/bench-quick" if args.quick else "docs"))
    only = set(filter(None, args.only.split(",")))

    def wanted(section: str) -> bool:
        return not only or section in only

    started = time.monotonic()
    results: Dict[str, Any] = {
        "quick": args.quick, "plan": dataclasses.asdict(plan),
        "environment": {"python": platform.python_version(), "basetts": __version__,
                        "machine": report.machine(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
    }
    speak_available = hasattr(Synthesizer, "speak")
    pulse: Any = None
    pulse_env: Optional[Dict[str, str]] = None
    skip_speak: Optional[str] = None
    if not speak_available:
        skip_speak = "skipped: speak() not available"
    else:
        try:
            pulse = null_sink()
            pulse_env = pulse.__enter__()
        except PulseUnavailable as exc:
            skip_speak = f"skipped: PulseAudio could not start ({exc})"
            pulse = None
    results["speak_skipped"] = skip_speak
    results["speak_default_prebuffer"] = speak_default_prebuffer() if speak_available else None
    try:
        if wanted("ttfb"):
            log("time to first audio byte")
            results["first_byte"] = measure_first_byte(plan)
        if wanted("text"):
            log("the text layer's cost per character")
            results["text_layer"] = measure_text_layer(plan)
        if wanted("throughput"):
            log("throughput")
            results["throughput"] = measure_throughput(plan)
        if wanted("qwen3"):
            log("Qwen3-TTS: time to first audio and throughput")
            results["qwen3"] = measure_qwen3(plan)
        if wanted("http"):
            log("Orpheus over HTTP: time to first audio and throughput")
            results["orpheus_http"] = measure_orpheus_http(plan)
        if wanted("long-first"):
            log(f"first audio of a {plan.long_first_minutes:g}-minute text")
            results["long_first"] = measure_long_first_audio(plan)
        if wanted("encoding"):
            log("encodings (issue 7)")
            results["encodings"] = measure_encodings(plan)
        if wanted("long"):
            log(f"long text: {plan.long_minutes:g} minutes at {plan.long_speed:g}x, keepalive 20 s / 20 s")
            results["long_text"] = measure_long_text(plan)
        if wanted("recovery"):
            log("recovery after a lost connection")
            results["recovery"] = measure_recovery(plan)
        if wanted("batch"):
            log("many texts")
            results["batch"] = measure_batch(plan)
        if wanted("cpu"):
            log("CPU per stream")
            results["cpu"] = measure_cpu(plan)
        if wanted("memory"):
            log("memory")
            results["memory"] = measure_memory(plan, pulse_env, speak_available)
        if wanted("speak"):
            if skip_speak:
                log(f"speak(): {skip_speak}")
            else:
                assert pulse_env is not None
                log("speak()")
                results["speak"] = measure_speak(plan, pulse_env)
        if wanted("session") and not skip_speak:
            assert pulse_env is not None
            log(f"a session over HTTP fed {plan.session_tokens_per_second:g} tokens/s, "
                f"server at {plan.session_speed:g}x")
            results["session_gap"] = measure_session_gap(plan, pulse_env)
    finally:
        if pulse is not None:
            pulse.__exit__(None, None, None)
    results["seconds"] = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "performance.json").write_text(json.dumps(results, indent=1))
    summary = report.write(results, out)
    print(summary)
    log(f"done in {results['seconds']:.0f} s; wrote {out}/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
