"""Measurements that run in a fresh process each: `python -m bench.child TASK '{json options}'`.

Prints one JSON line. The server is always another process (bench.serve), so neither its CPU nor its
buffers count here.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from typing import Any, Callable, Dict, List

from basetts import Synthesizer

BYTES_PER_SECOND = 24000 * 2  # 16-bit PCM after decoding, 24 kHz mono


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: 5 > clear_refs), so the peak is the call's own."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def synth_for(options: Dict[str, Any]) -> Synthesizer:
    return Synthesizer(url=options["url"], api_key=options["api_key"], **options.get("settings", {}))


# CPU per stream ------------------------------------------------------------------------------------
def task_cpu(options: Dict[str, Any]) -> Dict[str, Any]:
    """`streams` concurrent calls in this process, all receiving real-time-paced audio; CPU/audio s."""
    from bench import clients

    text, streams, client = options["text"], int(options["streams"]), options.get("client", "basetts")
    synth = synth_for(options)
    if client == "basetts":
        def one() -> int:
            return clients.basetts_receive_all(synth, text)[1]
    else:
        def one() -> int:
            return clients.bare_receive_all(options["url"], options["api_key"], text)[1]
    synth.synthesize("warm up imports")
    received: List[int] = []
    errors: List[BaseException] = []
    start = threading.Barrier(streams + 1)

    def run() -> None:
        start.wait()
        try:
            received.append(one())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"bench-stream-{i}") for i in range(streams)]
    for thread in threads:
        thread.start()
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    cpu, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    if errors:
        raise errors[0]
    audio = sum(received) / BYTES_PER_SECOND
    return {"streams": streams, "client": client, "cpu": cpu, "wall": wall, "audio_seconds": audio,
            "cpu_per_audio_second": cpu / audio}


# memory ----------------------------------------------------------------------------------------------
def task_memory(options: Dict[str, Any]) -> Dict[str, Any]:
    """Peak RSS of one call. stream: read the first chunk, stall `stall` s (a slow consumer: without
    back-pressure everything the server sends meanwhile would pile up here), then read to the end.
    synthesize: the whole call. speak: play for `budget` s, then report and exit."""
    mode, text = options["mode"], options["text"]
    synth = synth_for(options)
    synth.synthesize("warm up imports")
    if mode == "speak":
        synth.speak("warm up")  # type: ignore[attr-defined]  # loads PortAudio before the baseline
    baseline = status_kb("VmRSS")
    resettable = reset_peak()
    result: Dict[str, Any] = {"mode": mode, "baseline_kb": baseline, "peak_reset": resettable}

    def report(received: int) -> Dict[str, Any]:
        peak = status_kb("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result.update(peak_kb=peak, growth_kb=peak - baseline, audio_seconds=received / BYTES_PER_SECOND)
        return result

    if mode == "stream":
        received = 0
        chunks = synth.stream(text)
        received += len(next(chunks))
        time.sleep(float(options.get("stall", 0)))
        for chunk in chunks:
            received += len(chunk)
        return report(received)
    if mode == "synthesize":
        audio = synth.synthesize(text)
        return report(len(audio.pcm))
    if mode == "speak":
        budget = float(options["budget"])

        def watchdog() -> None:
            time.sleep(budget)
            print(json.dumps(report(int(budget * BYTES_PER_SECOND))), flush=True)
            os._exit(0)  # speak() is still playing: a long text would take its whole length

        threading.Thread(target=watchdog, name="bench-watchdog", daemon=True).start()
        audio = synth.speak(text)  # type: ignore[attr-defined]
        return report(len(getattr(audio, "pcm", b"")))
    raise ValueError(mode)


# speak -----------------------------------------------------------------------------------------------
def task_speak(options: Dict[str, Any]) -> Dict[str, Any]:
    """`repeat` speak() calls; each one's stats (times in seconds from the call's start)."""
    synth = synth_for(options)
    kwargs = {"prebuffer": options["prebuffer"]} if options.get("prebuffer") is not None else {}
    runs = []
    for _ in range(int(options.get("repeat", 1))):
        audio = synth.speak(options["text"], **kwargs)  # type: ignore[attr-defined]
        stats = audio.stats
        runs.append({"first_sound_time": stats.first_sound_time, "first_byte_time": stats.first_byte_time,
                     "underruns": stats.underruns, "duration": getattr(audio, "duration", None),
                     "prebuffer": getattr(stats, "prebuffer", None),
                     "rebuffer_time": getattr(stats, "rebuffer_time", None)})
    return {"runs": runs}


def task_session(options: Dict[str, Any]) -> Dict[str, Any]:
    """`repeat` sessions with play=True, each fed `tokens` one every `interval` seconds (a language model
    writing); each one's underruns, audio and wall time."""
    synth = synth_for(options)
    runs = []
    for _ in range(int(options.get("repeat", 1))):
        started = time.monotonic()
        with synth.session(play=True) as session:  # type: ignore[attr-defined]
            for token in options["tokens"]:
                session.send(token)
                time.sleep(options["interval"])
        stats = session.stats
        runs.append({"underruns": stats.underruns, "rebuffer_time": stats.rebuffer_time,
                     "duration": session.audio.duration, "wall": time.monotonic() - started})
    return {"runs": runs}


# many texts --------------------------------------------------------------------------------------------
def task_batch(options: Dict[str, Any]) -> Dict[str, Any]:
    """`count` texts at `concurrency`: through synthesize_many, or a plain ThreadPoolExecutor loop over
    synthesize(); items per second and CPU per audio second."""
    from concurrent.futures import ThreadPoolExecutor

    synth = synth_for(options)
    texts = [f"{options['text']} {i}" for i in range(int(options["count"]))]
    concurrency = int(options["concurrency"])
    cpu, started = cpu_seconds(), time.monotonic()
    audio_bytes = failures = 0
    if options["mode"] == "many":
        for result in synth.synthesize_many(texts, concurrency=concurrency):  # type: ignore[attr-defined]
            audio_bytes += len(result.audio.pcm) if result.audio is not None else 0
            failures += result.error is not None
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            for audio in pool.map(synth.synthesize, texts):
                audio_bytes += len(audio.pcm)
    wall, cpu = time.monotonic() - started, cpu_seconds() - cpu
    audio_seconds = audio_bytes / BYTES_PER_SECOND
    return {"items_per_second": len(texts) / wall, "cpu_ms_per_audio_second": 1000 * cpu / audio_seconds,
            "wall": wall, "audio_seconds": audio_seconds, "failures": failures}


TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "cpu": task_cpu, "memory": task_memory, "speak": task_speak, "batch": task_batch, "session": task_session}


def main() -> int:
    task, options = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(TASKS[task](options)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
