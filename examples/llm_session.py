"""Speak a language model's answer while it is still being written.

`fake_llm()` stands in for your LLM client's token stream (OpenAI, Anthropic, vLLM...): any iterable
of text fragments, split anywhere, works.

    python examples/llm_session.py --local
"""
import sys
import time
from typing import Iterator

from basetts import Synthesizer


def fake_llm() -> Iterator[str]:
    answer = "Sure! Streaming speech starts before the answer is complete, so it feels instant."
    for start in range(0, len(answer), 4):
        time.sleep(0.02)  # tokens trickle in
        yield answer[start:start + 4]


def main(local: bool, play: bool) -> None:
    if local:
        from basetts.testing import LocalServer

        server = LocalServer().start()
        synth = Synthesizer(url=server.url, api_key=server.api_key)
    else:
        synth = Synthesizer()
    with synth.session(play=play) as session:
        for token in fake_llm():
            session.send(token)
    print(f"spoke {session.audio.duration:.1f} s of audio")
    # The same in one call: synth.speak(fake_llm())


if __name__ == "__main__":
    main("--local" in sys.argv, play="--no-play" not in sys.argv)
