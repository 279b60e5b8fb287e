"""Processes: the local server in its own process, and fresh child processes for measurements that
would disturb each other (memory, CPU under concurrency, playback)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent


def _env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class Server:
    """`python -m bench.serve` in a child process; `url` and `api_key` once it listens."""

    def __init__(self, speed: Optional[float] = None, samples_per_word: int = 2400,
                 jitter: float = 0.0, seed: int = 1, protocol: str = "orpheus", faults: Sequence[str] = ()) -> None:
        self.args = ["--samples-per-word", str(samples_per_word), "--jitter", str(jitter), "--seed", str(seed),
                     "--protocol", protocol, *(f"--fault={fault}" for fault in faults)]
        if speed:
            self.args += ["--speed", str(speed)]
        self.process: Optional[subprocess.Popen] = None
        self.url = self.api_key = ""

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.serve", *self.args], cwd=ROOT, env=_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the bench server did not start")
        info = json.loads(line)
        self.url, self.api_key = info["url"], info["api_key"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self.process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def server(**kwargs: Any) -> Iterator[Server]:
    with Server(**kwargs) as running:
        yield running


def child(task: str, options: Mapping[str, Any], env: Optional[Mapping[str, str]] = None,
          timeout: float = 300) -> Dict[str, Any]:
    """Run `python -m bench.child TASK` in a fresh process with `options` as JSON; return its JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.child", task, json.dumps(dict(options))], cwd=ROOT, env=_env(env),
        capture_output=True, text=True, timeout=timeout)
    lines: List[str] = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {task} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])
