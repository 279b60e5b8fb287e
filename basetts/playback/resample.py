"""Making any `Audio` playable (16-bit mono); the resampler for a device that will not take 24 kHz is
`pcm.Resampler`, named here too."""
from __future__ import annotations

import os
from typing import Union

from ..audio import Audio
from ..errors import ArgumentTypeError
from ..pcm import Resampler as Resampler  # their home is pcm (a protocol converts a deployment's rate too)
from ..pcm import resample as resample
from ..pcm import to_16_bit, to_mono


def playable(source: Union[Audio, str, "os.PathLike[str]"]) -> Audio:
    """`source` (an `Audio` or a WAV file's path) as 16-bit mono PCM at its own rate, for a player: wider
    or narrower samples are cut or widened, channels are averaged."""
    if isinstance(source, (str, os.PathLike)):
        source = Audio.from_wav(source)
    elif not isinstance(source, Audio):
        raise ArgumentTypeError(f"play() takes an Audio or a WAV file's path, not {type(source).__name__}")
    pcm, width, channels = source.pcm, source.sample_width, source.channels
    if width != 2:
        pcm = to_16_bit(pcm, width)
    if channels > 1:
        pcm = to_mono(pcm, channels)
    return Audio(pcm, sample_rate=source.sample_rate, stats=source.stats)


