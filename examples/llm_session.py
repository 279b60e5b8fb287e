"""Speak a language model's answer while it is still being written.

`fake_llm()` stands in for your LLM client's token stream (OpenAI, Anthropic, vLLM...): any iterable
of text fragments, split anywhere, works.

    python examples/llm_session.py --local              # against a local server; plays the answer
    python examples/llm_session.py --local --no-play    # no sound card: saves it to answer.wav instead

Without --local it uses Baseten (BASETEN_API_KEY and BASETEN_MODEL_ID set, or in .env).
"""
import sys
import time
from typing import Iterator

from basetts import AudioDeviceError, Synthesizer


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
    try:
        with synth.session(play=play) as session:
            for token in fake_llm():
                session.send(token)
    except AudioDeviceError as exc:  # no sound card here (a server, a container)
        sys.exit(f"not playing: {exc}\nRun with --no-play to save the answer to answer.wav instead.")
    if play:
        print(f"spoke {session.audio.duration:.1f} s of audio")
    else:
        session.audio.save("answer.wav")
        print(f"saved {session.audio.duration:.1f} s to answer.wav")
    # The same in one call: synth.speak(fake_llm())


if __name__ == "__main__":
    main("--local" in sys.argv, play="--no-play" not in sys.argv)
