"""The local server in its own process, so its CPU and buffers never count against the client.

Prints one JSON line ({"url", "api_key"}) when it is listening, then serves until stdin closes.
`--jitter` adds a random delay (0..jitter seconds, seeded) to each paced frame *on top of* the
real-time schedule, so frames arrive late and bunched without the average rate drifting: the network
and model hiccups that a prebuffer has to absorb. Benchmark-only: the jitter lives here, not in
basetts.testing.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any, Optional

from basetts.testing import server as local_server
from basetts.testing.faults import Faults


def jittered_sender(jitter: float, seed: int) -> Any:
    rng = random.Random(seed)

    class JitteredSender(local_server.Sender):
        def _pace(self, seconds: float) -> None:
            speed = self.server.speed
            if not speed:
                return
            now = time.monotonic()
            if self._started is None:
                self._started = now
            self._audio_seconds += seconds
            due = self._started + self._audio_seconds / speed + rng.uniform(0.0, jitter)
            if due > now:
                time.sleep(due - now)

    return JitteredSender


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=None)
    parser.add_argument("--samples-per-word", type=int, default=2400)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ping-interval", type=float, default=local_server.PING_INTERVAL)
    parser.add_argument("--ping-timeout", type=float, default=local_server.PING_TIMEOUT)
    parser.add_argument("--protocol", default="orpheus")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    if args.jitter:
        local_server.Sender = jittered_sender(args.jitter, args.seed)  # type: ignore[misc]
    extra: Any = {"protocol": "qwen3", "voices": ("bench",)} if args.protocol == "qwen3" else {
        "protocol": args.protocol}
    with local_server.LocalServer(speed=args.speed, samples_per_word=args.samples_per_word,
                                  ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
                                  history=100, faults=Faults.parse(args.fault), **extra) as server:
        print(json.dumps({"url": server.url, "api_key": server.api_key}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
