"""The simplest use: speak a sentence, then save another as a WAV file.

Run against Baseten (BASETEN_API_KEY and BASETEN_MODEL_ID set, or in .env):
    python examples/say.py
or against the local server:
    python examples/say.py --local
"""
import sys

from basetts import AudioDeviceError, Synthesizer


def main(local: bool) -> None:
    if local:
        from basetts.testing import LocalServer

        server = LocalServer().start()
        synth = Synthesizer(url=server.url, api_key=server.api_key)
    else:
        synth = Synthesizer()
    try:
        synth.speak("Hello! This sentence is spoken as it is generated.")
    except AudioDeviceError as exc:  # no sound card here (a server, a container)
        print(f"not playing: {exc}")
    audio = synth.save("And this one goes to a file.", "example.wav")
    print(f"saved {audio.duration:.1f} s to example.wav")


if __name__ == "__main__":
    main("--local" in sys.argv)
