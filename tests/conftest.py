"""Shared fixtures. `pulse`: a private PulseAudio daemon with a null sink, so playback tests hear what
PyAudio really played (through ALSA's pulse plugin) by recording the sink's monitor."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

# One sink per pytest-xdist worker: in a pulse server that already answers, workers share the server.
SINK = "basetts_null" + os.environ.get("PYTEST_XDIST_WORKER", "")
SINK_RATE = 24000

# Why PulseAudio could not start, if it could not: printed loudly at the end of the run.
_PULSE_UNAVAILABLE: List[str] = []
PULSE_SKIP = "PULSEAUDIO COULD NOT START"


class Recording:
    """`parec` on a sink's monitor: raw s16le mono, with the time each piece arrived."""

    def __init__(self, env: Dict[str, str], source: str, rate: int) -> None:
        self.rate = rate
        self._data = bytearray()
        self._marks: List[Tuple[float, int]] = []  # (monotonic time, bytes recorded by then)
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            ["parec", "-d", source, "--format=s16le", f"--rate={rate}", "--channels=1", "--raw",
             "--latency-msec=10"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._thread = threading.Thread(target=self._pump, name="test-parec", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.samples < rate // 10:  # the monitor flows (silence) once the recorder is connected
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"parec on {source} delivered nothing")
            time.sleep(0.01)

    def _pump(self) -> None:
        assert self._process.stdout is not None
        while True:
            piece = self._process.stdout.read1(4096)
            if not piece:
                return
            with self._lock:
                self._data.extend(piece)
                self._marks.append((time.monotonic(), len(self._data)))

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._data) // 2

    def stop(self, linger: float = 0.3) -> bytes:
        """Keep recording `linger` seconds (the tail), then stop; the PCM recorded."""
        time.sleep(linger)
        self._process.terminate()
        self._process.wait(5)
        self._thread.join(5)
        with self._lock:
            return bytes(self._data[:len(self._data) - len(self._data) % 2])

    def position_at(self, moment: float) -> int:
        """Samples the recorder had received at monotonic time `moment`."""
        with self._lock:
            recorded = 0
            for when, total in self._marks:
                if when > moment:
                    break
                recorded = total
            return recorded // 2


class PulseAudio:
    """A PulseAudio daemon owned by the test session, reachable through `PULSE_SERVER`."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.runtime = os.path.join(root, "run")
        home = os.path.join(root, "home")
        os.makedirs(self.runtime, mode=0o700)
        os.makedirs(home)
        self.socket = os.path.join(self.runtime, "native")
        self.server = f"unix:{self.socket}"
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime, "HOME": home, "PULSE_SERVER": self.server}
        self.env.pop("PULSE_SINK", None)
        self.log_path = os.path.join(root, "pulseaudio.log")
        self._process: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    def start(self) -> None:
        # norewinds=1: a null sink that rewinds re-renders audio its monitor has already delivered, so
        # the recording would not be what was played. -n: no default.pa, only these modules.
        command = [
            "pulseaudio", "--daemonize=no", "-n", "--system=false", "--use-pid-file=no",
            "--exit-idle-time=-1", "--disallow-exit=no", "--enable-memfd=no", "--log-target=stderr",
            "-L", f"module-null-sink sink_name={SINK} rate={SINK_RATE} channels=1 format=s16le norewinds=1",
            "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
        ]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log,
                                             preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 15
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self._process.returncode}: {self.log()}")
            if self.pactl("info", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer within 15 s: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as file:
                return file.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def pactl(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10,
                              check=check)

    def load_sink(self, name: str, rate: int) -> str:
        """Another null sink (e.g. at 48 kHz); returns its module index for `unload`."""
        return self.pactl("load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}",
                          "channels=1", "format=s16le", "norewinds=1").stdout.strip()

    def unload(self, module: str) -> None:
        self.pactl("unload-module", module, check=False)

    def sink_inputs(self) -> List[str]:
        """Streams playing into our sinks right now (an empty list proves every PyAudio stream was closed;
        on a desktop's server, other programs' streams are not ours)."""
        ours = {line.split("\t")[0] for line in self.pactl("list", "short", "sinks").stdout.splitlines()
                if line and line.split("\t")[1].startswith("basetts")}
        return [line for line in self.pactl("list", "short", "sink-inputs").stdout.splitlines()
                if line and line.split("\t")[1] in ours]

    def record(self, sink: str = SINK, rate: int = SINK_RATE) -> Recording:
        return Recording(self.env, f"{sink}.monitor", rate)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


def _die_with_parent() -> None:
    """In the daemon's process (Linux): get SIGTERM when pytest dies, even if it crashes before teardown."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ExistingPulse(PulseAudio):
    """A pulse server that already answers (PipeWire's on a desktop, where installing PulseAudio would
    remove it): our null sink is loaded into it for the session, made the default for our streams through
    PULSE_SINK, and unloaded after; nothing else of the user's is touched."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.env = {**os.environ, "PULSE_SERVER": server, "PULSE_SINK": SINK}
        self._module: Optional[str] = None

    def start(self) -> None:
        self._module = self.load_sink(SINK, SINK_RATE)

    def log(self) -> str:
        return ""

    def stop(self) -> None:
        if self._module:
            self.unload(self._module)


def _answering_server() -> Optional[str]:
    """The server string of a pulse server that answers with the inherited environment, if any."""
    if shutil.which("pactl") is None:
        return None
    try:
        info = subprocess.run(["pactl", "info"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in info.stdout.splitlines() if info.returncode == 0 else []:
        if line.startswith("Server String:"):
            server = line.split(":", 1)[1].strip()
            return server if server.startswith(("unix:", "tcp:")) else f"unix:{server}"
    return None


@pytest.fixture
def serve(basetts_make_server: Any) -> Any:
    """Start LocalServers with any options; all stopped after the test (the plugin's `basetts_make_server`,
    which users' tests get too)."""
    return basetts_make_server


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseAudio]:
    """A 24 kHz mono null sink as the default output for this process (PyAudio goes through ALSA's
    pulse plugin) and its subprocesses: in a private PulseAudio daemon, or, where a pulse server already
    answers (a desktop's PipeWire), loaded into that one."""
    existing = _answering_server()
    tools = ("pactl", "parec") if existing else ("pulseaudio", "pactl", "parec")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        _pulse_unavailable(f"{', '.join(missing)} not installed (Debian: pulseaudio pulseaudio-utils)")
    root = tempfile.mkdtemp(prefix="basetts-pulse-")
    daemon: PulseAudio = ExistingPulse(existing) if existing else PulseAudio(root)
    try:
        daemon.start()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        daemon.stop()
        _pulse_unavailable(str(exc))
    saved = {name: os.environ.get(name) for name in ("PULSE_SERVER", "PULSE_SINK")}
    os.environ["PULSE_SERVER"] = daemon.server
    if existing:
        os.environ["PULSE_SINK"] = SINK
    else:
        os.environ.pop("PULSE_SINK", None)
    try:
        yield daemon
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pulse_unavailable(reason: str) -> None:
    _PULSE_UNAVAILABLE.append(reason)
    pytest.skip(f"{PULSE_SKIP}, playback tests NOT RUN: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    # Under pytest-xdist the skips happened in the workers: their reports carry the reason here.
    reasons = _PULSE_UNAVAILABLE + [str(report.longrepr[2]).split("NOT RUN: ", 1)[-1]
                                    for report in terminalreporter.stats.get("skipped", [])
                                    if isinstance(report.longrepr, tuple) and PULSE_SKIP in str(report.longrepr[2])]
    if reasons:
        terminalreporter.section("WARNING: playback was NOT tested", sep="!", red=True, bold=True)
        terminalreporter.line(f"PulseAudio could not start: {reasons[0]}", red=True, bold=True)
        terminalreporter.line("Every test that plays sound was skipped. Install pulseaudio and "
                              "pulseaudio-utils (make system-deps) and run make test again.", red=True)
