"""Many texts on a Dask cluster: a Synthesizer pickles (its settings travel, nothing else), so Dask ships
it to the workers with each task. `LocalCluster` here; any Dask cluster (Kubernetes, SLURM, Coiled) in
production: pass its scheduler address as --scheduler.

    pip install 'dask[distributed]'
    BASETEN_API_KEY=... BASETEN_MODEL_ID=... python examples/batch_dask.py OUTDIR "A text." "Another."
    python examples/batch_dask.py --local OUTDIR "A text."     # against a local server

Each worker writes its files where it runs: on a real cluster, give them a shared folder or an object
store, and keep the concurrency (tasks x threads) within what the deployment is sized for.
"""
import argparse
import os
from typing import List, Optional, Sequence, Tuple

from dask.distributed import Client, LocalCluster

from basetts import Synthesizer


def render(synth: Synthesizer, text: str, path: str) -> Tuple[str, float]:
    """On a worker: one text into one file."""
    return path, synth.save(text, path).duration


def render_all(client: Client, synth: Synthesizer, texts: Sequence[str], outdir: str) -> List[Tuple[str, float]]:
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"{i:06d}.wav") for i in range(len(texts))]
    futures = client.map(render, [synth] * len(texts), list(texts), paths, pure=False)
    return list(client.gather(futures))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--local", action="store_true", help="start a local TTS server for this run")
    parser.add_argument("--scheduler", help="a Dask scheduler's address (default: a LocalCluster here)")
    args = parser.parse_args(argv)
    server = None
    if args.local:
        from basetts.testing import LocalServer

        server = LocalServer().start()
    try:
        synth = Synthesizer(url=server.url, api_key=server.api_key) if server else Synthesizer()
        if args.scheduler:
            with Client(args.scheduler) as client:
                done = render_all(client, synth, args.texts, args.outdir)
        else:
            with LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1", dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                done = render_all(client, synth, args.texts, args.outdir)
    finally:
        if server is not None:
            server.stop()
    for path, seconds in done:
        print(f"{path}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
