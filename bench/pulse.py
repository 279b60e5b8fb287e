"""A private PulseAudio with a null sink, for the speak() measurements: real PortAudio, no sound card.

The null sink consumes audio at real time like a sound card would, so underruns and time to first
sound are real; nothing is heard. Everything lives in a temporary XDG_RUNTIME_DIR, and the daemon is
ours (started here, stopped here by its pid).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Dict, Iterator, Optional


class PulseUnavailable(RuntimeError):
    """PulseAudio could not be started here."""


@contextlib.contextmanager
def null_sink(timeout: float = 10.0) -> Iterator[Dict[str, str]]:
    """Start `pulseaudio` with module-null-sink; yield the env a child process needs to play into it."""
    binary = shutil.which("pulseaudio")
    if binary is None:
        raise PulseUnavailable("pulseaudio is not installed (Debian: apt-get install pulseaudio)")
    runtime = tempfile.mkdtemp(prefix="basetts-bench-pulse-")
    os.chmod(runtime, 0o700)
    socket_path = os.path.join(runtime, "native")
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, HOME=runtime)
    env.pop("PULSE_SERVER", None)
    log = open(os.path.join(runtime, "pulseaudio.log"), "w+")
    process: Optional[subprocess.Popen] = subprocess.Popen(
        [binary, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
         "--log-target=stderr",
         "-L", f"module-native-protocol-unix socket={socket_path} auth-anonymous=1",
         "-L", "module-null-sink sink_name=basetts_bench rate=48000",
         "-L", "module-always-sink"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    client_env = {"PULSE_SERVER": f"unix:{socket_path}", "PULSE_SINK": "basetts_bench",
                  "XDG_RUNTIME_DIR": runtime}
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise PulseUnavailable(f"pulseaudio exited ({process.returncode}): {log.read()[-500:]}")
            ready = subprocess.run(["pactl", "info"], env=dict(env, **client_env),
                                   capture_output=True).returncode == 0 if shutil.which("pactl") \
                else os.path.exists(socket_path)
            if ready:
                break
            if time.monotonic() > deadline:
                raise PulseUnavailable(f"pulseaudio did not come up within {timeout:g} s")
            time.sleep(0.1)
        yield client_env
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)
