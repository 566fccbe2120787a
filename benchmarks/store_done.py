"""How fast phase two learns which checkpoints the r_t store holds (`RtStore.done`).

Every planning step of `inspect rt` and every analysis's up-to-date check asks the store
which checkpoints are evaluated. The `done` array has one (1, 1) chunk per checkpoint (so
that shards writing at once never share one), which zarr reads one chunk at a time. This
builds a store of the thesis grid's shape (4 setups x 30 seeds, epochs 0-200 / 0-50 / 0-20
/ 0-500: 23,220 checkpoints; one probe image, which `done` does not depend on) with every
checkpoint evaluated, then reads the flags three ways:

* reference: zarr reads the whole `done` array (64 chunk reads in flight, as `load_rt`);
* files: `RtStore._done_flags`, from the chunk files (a listing, one decode per content);
* done(): what callers get, the flags and the check that each p_true chunk is on disk.

and the sha256 record of the checkpoint each chunk was evaluated from (one (1, 1, 32) chunk
per checkpoint, read to plan `inspect rt` and by every analysis's check that the store is
not behind the run) two ways: zarr reading it whole, and `RtStore.checkpoint_sha` from the
chunk files.

    python benchmarks/store_done.py --out benchmarks/results/store_done_cpu2.json
    python benchmarks/store_done.py --scale 0.1      # seeds and epochs cut, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

THESIS_EPOCHS = {"simclr": 200, "supervised": 50, "random_labels": 20, "random_labels_aug": 500}
SEEDS = 30


def build(path: Path, scale: float) -> dict[str, tuple[int, int]]:
    """A store with every checkpoint of the (scaled) grid evaluated; setup -> (S, E)."""
    from ssl_dynamics.inspect.store import RtStore

    store = RtStore(path)
    store.init_probes(np.array([0]), np.array([0]), "bank")
    shapes = {}
    rng = np.random.default_rng(0)  # the sha256 records: any 32 bytes per checkpoint
    for setup, last in THESIS_EPOCHS.items():
        seeds, epochs = max(2, round(SEEDS * scale)), max(2, round((last + 1) * scale))
        store.ensure_setup(setup, list(range(seeds)), epochs, 1, 1, 1, np.array([0]),
                           {"setup_config": {"name": setup}})
        g = store.group[setup]
        for s in range(seeds):  # a row of checkpoints per call: zarr writes its chunks at once
            g["correct"][s] = np.ones((epochs, 1, 1, 1), dtype=np.uint8)
            g["p_true"][s] = np.full((epochs, 1, 1, 1), 0.5, dtype=np.float32)
            g["done"][s] = np.ones(epochs, dtype=np.uint8)
            g["sha256"][s] = rng.integers(0, 256, (epochs, 32), dtype=np.uint8)
        shapes[setup] = (seeds, epochs)
    return shapes


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    import zarr

    from ssl_dynamics.inspect.store import READ_CONCURRENCY, RtStore

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the seeds and epochs")
    ap.add_argument("--repeats", type=int, default=3, help="timed reads of each way (best kept)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rt.zarr"
        t = time.perf_counter()
        shapes = build(path, args.scale)
        built = time.perf_counter() - t
        store = RtStore(path, writable=False)

        def reference():
            with zarr.config.set({"async.concurrency": READ_CONCURRENCY}):
                return {s: store.group[f"{s}/done"][:].astype(bool) for s in shapes}

        def reference_sha():
            with zarr.config.set({"async.concurrency": READ_CONCURRENCY}):
                return {s: store.group[f"{s}/sha256"][:] for s in shapes}

        ways = {"reference": reference,
                "files": lambda: {s: store._done_flags(s) for s in shapes},
                "done()": lambda: {s: store.done(s) for s in shapes},
                "sha256 reference": reference_sha,
                "checkpoint_sha()": lambda: {s: store.checkpoint_sha(s) for s in shapes}}
        seconds, results = {}, {}
        for name, fn in ways.items():
            seconds[name], results[name] = timed(fn, args.repeats)
        for name, ref in (("files", "reference"), ("done()", "reference"),  # the same values, or
                          ("checkpoint_sha()", "sha256 reference")):  # the numbers mean nothing
            assert all(np.array_equal(results[name][s], results[ref][s]) for s in shapes), name
    n = sum(s * e for s, e in shapes.values())
    out = {"machine": platform.node(), "cpus": os.cpu_count(), "zarr": zarr.__version__,
           "checkpoints": n, "build_s": round(built, 1),
           "seconds": {k: round(v, 4) for k, v in seconds.items()},
           "speedup_vs_reference": {k: round(seconds["sha256 reference" if "sha" in k else "reference"] / v, 1)
                                    for k, v in seconds.items()}}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
