# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # basetts in a notebook
#
# basetts is synchronous and thread-based, so it runs inside Jupyter's own event loop without
# `asyncio` conflicts. Open this file with Jupytext (or copy the cells); it runs top to bottom against
# the local server, so no account is needed. To use Baseten instead, replace the second cell with
# `synth = Synthesizer()` and set `BASETEN_API_KEY` / `BASETEN_MODEL_ID`.

# %%
from basetts import AudioDeviceError, Synthesizer
from basetts.testing import LocalServer

# %%
server = LocalServer().start()  # engine="espeak" speaks real words if espeak-ng is installed
synth = Synthesizer(url=server.url, api_key=server.api_key)

# %% [markdown]
# A cell whose last expression is an `Audio` shows a player (`Audio._repr_html_`): this is the way to
# listen when the kernel runs on another machine (a remote or hosted Jupyter has no speakers of yours).

# %%
audio = synth.synthesize("Hello from a notebook cell.")
audio

# %% [markdown]
# `speak()` plays on the machine that runs the kernel: right for a local Jupyter, silent (or an
# `AudioDeviceError`) on a remote one.

# %%
try:
    synth.speak("This plays through the kernel machine's speakers.")
except AudioDeviceError as exc:
    print("no sound card on the kernel's machine:", exc)

# %% [markdown]
# `wait=False` returns at once with a handle: the sound plays on while later cells run, and they can
# pause, resume or stop it (`synth.stop()` stops everything this synthesizer plays).

# %%
try:
    playback = synth.speak("This plays while the next cells run.", wait=False)
except AudioDeviceError as exc:
    playback = None
    print("no sound card on the kernel's machine:", exc)
playback

# %%
if playback is not None:
    try:
        heard = playback.wait(timeout=30)  # the Audio heard
    except AudioDeviceError as exc:
        print("no sound card on the kernel's machine:", exc)

# %% [markdown]
# Streaming text, for example a language model's answer, goes through a session.

# %%
with synth.session() as session:
    for token in ["Tokens ", "arrive ", "one ", "by ", "one."]:
        session.send(token)
session.audio

# %%
server.stop()
