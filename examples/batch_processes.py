"""Many texts on a pool of processes: a Synthesizer pickles (its settings travel, nothing else), so each
worker process gets its own and renders its share of the texts into files.

    BASETEN_API_KEY=... BASETEN_MODEL_ID=... python examples/batch_processes.py OUTDIR "A text." "Another."
    python examples/batch_processes.py --local OUTDIR "A text."     # against a local server

One process already drives many streams (`synth.synthesize_many`, `basetts batch`); processes are for
when the work around each text (post-processing, your own model) needs more than one core.
"""
import argparse
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Sequence, Tuple

from basetts import Synthesizer


def render(synth: Synthesizer, text: str, path: str) -> Tuple[str, float]:
    """In a worker process (the Synthesizer arrived pickled): one text into one file."""
    return path, synth.save(text, path).duration


def render_all(synth: Synthesizer, texts: Sequence[str], outdir: str, workers: int = 4) -> List[Tuple[str, float]]:
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"{i:06d}.wav") for i in range(len(texts))]
    # spawn: a fresh interpreter per worker (fork would copy this process's threads and sound device).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(render, [synth] * len(texts), texts, paths))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--local", action="store_true", help="start a local server for this run")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.local:
        from basetts.testing import LocalServer

        with LocalServer() as server:
            done = render_all(Synthesizer(url=server.url, api_key=server.api_key), args.texts, args.outdir,
                              args.workers)
    else:
        done = render_all(Synthesizer(), args.texts, args.outdir, args.workers)
    for path, seconds in done:
        print(f"{path}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
