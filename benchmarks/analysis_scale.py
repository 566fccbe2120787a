"""Phase two's store-only analyses at thesis scale: seconds and peak memory of each step.

Builds r_t data of the thesis's size in memory (4 setups x 30 seeds, epochs 0..200 /
0..50 / 0..20 / 0..500, 10 replays (1 without augmentation), 1,024 probe images, SimCLR
with its second view) from a seeded model of per-image difficulty, writes it to a Zarr
store chunk by chunk as `inspect rt` does, reads it back (`load_rt`) and exports the HDF5
archive (`export_h5`, what a `.h5` store path costs after every `inspect rt`), then runs the steps of
`inspect all` that read only the store: dynamics, binomial (1,000 null simulations per
test), heterogeneity, classes, examples. The numbers are synthetic, the shapes are real.

    python benchmarks/analysis_scale.py --out benchmarks/results/analysis_scale_cpu2.json
    python benchmarks/analysis_scale.py --scale 0.1     # epochs and seeds cut, ~1 minute
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

THESIS_EPOCHS = {"simclr": 200, "supervised": 50, "random_labels": 20, "random_labels_aug": 500}
REPLAYS = {"simclr": 10, "supervised": 10, "random_labels": 1, "random_labels_aug": 10}
SEEDS, PROBES, CLASSES = 30, 1024, 10


def synthetic_setup(name: str, seeds: int, epochs: int, replays: int, rng: np.random.Generator):
    """A SetupRt whose images differ in difficulty, learned along a sigmoid over epochs."""
    from ssl_dynamics.inspect.rtdata import SetupRt

    labels = np.arange(PROBES) % CLASSES
    hard = rng.normal(0, 1.5, PROBES)  # per-image difficulty (logit units)
    t = np.arange(epochs + 1)
    skill = -2.0 + 5.0 * (1 - np.exp(-t / max(epochs / 4, 1)))  # accuracy rises, then saturates
    seed_shift = rng.normal(0, 0.3, seeds)
    shape = (seeds, epochs + 1, replays, PROBES)

    def draw():
        logit = (skill[None, :, None, None] + seed_shift[:, None, None, None] - hard[None, None, None, :]
                 + rng.normal(0, 0.8, (seeds, 1, replays, PROBES)).astype(np.float32))
        p = (1 / (1 + np.exp(-logit))).astype(np.float32)
        return (rng.random(shape, dtype=np.float32) < p).astype(np.uint8), p

    correct, p_true = draw()
    second = draw() if name == "simclr" else (None, None)
    return SetupRt(setup=name, correct=correct, p_true=p_true, valid=np.ones(shape[:2], dtype=bool),
                   seeds=np.arange(seeds), epochs=t, labels=labels, targets=labels,
                   probe_indices=np.arange(PROBES) * 7, correct_second=second[0], p_true_second=second[1])


def store_round_trip(data: dict, folder: Path, result: dict) -> dict:
    """Write `data` chunk by chunk as `inspect rt` does, read it back with `load_rt`, export
    the HDF5 archive; the seconds of each go to result["store_s"]. Returns what was read."""
    from ssl_dynamics.inspect.rtdata import export_h5, load_rt
    from ssl_dynamics.inspect.store import RtStore

    times = result.setdefault("store_s", {})
    t = time.perf_counter()
    store = RtStore(folder / "rt.zarr")
    first = next(iter(data.values()))
    store.init_probes(first.probe_indices, first.labels, "synthetic")
    for s, d in data.items():
        two = d.correct_second is not None
        store.ensure_setup(s, [int(x) for x in d.seeds], len(d.epochs), d.correct.shape[2], PROBES,
                           2 if two else 1, d.targets, {})
        for i in range(d.correct.shape[0]):
            for e in range(d.correct.shape[1]):
                views = [d.correct[i, e]] + ([d.correct_second[i, e]] if two else [])
                probs = [d.p_true[i, e]] + ([d.p_true_second[i, e]] if two else [])
                store.write(s, i, e, np.stack(views, -1), np.stack(probs, -1))
    store.consolidate()
    times["write"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    back = load_rt(folder / "rt.zarr")
    times["load_rt"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    export_h5(RtStore(folder / "rt.zarr", writable=False), folder / "rt.h5")
    times["export_h5"] = round(time.perf_counter() - t, 1)
    result["store_mb"] = {"zarr": round(sum(f.stat().st_size for f in (folder / "rt.zarr").rglob("*")
                                            if f.is_file()) / 2**20),
                          "h5": round((folder / "rt.h5").stat().st_size / 2**20)}
    for s, d in data.items():  # what was read is what was written
        assert np.array_equal(back[s].correct, d.correct) and np.array_equal(back[s].p_true, d.p_true)
    print(f"store: {times} {result['store_mb']} MB", flush=True)
    return back


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the seeds and epochs")
    ap.add_argument("--no-store", action="store_true", help="skip the Zarr write/read and HDF5 export")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from ssl_dynamics.inspect.binomial import run_binomial
    from ssl_dynamics.inspect.classes import run_classes
    from ssl_dynamics.inspect.dynamics import run_dynamics
    from ssl_dynamics.inspect.examples import ExampleOptions, run_examples
    from ssl_dynamics.inspect.heterogeneity import run_heterogeneity
    from ssl_dynamics.inspect.outputs import Outputs

    rng = np.random.default_rng(0)
    seeds = max(2, round(SEEDS * args.scale))
    t0 = time.perf_counter()
    data = {s: synthetic_setup(s, seeds, max(2, round(e * args.scale)), REPLAYS[s], rng)
            for s, e in THESIS_EPOCHS.items()}
    cells = {s: int(d.correct.size) for s, d in data.items()}
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
              "scale": args.scale, "seeds": seeds, "probes": PROBES,
              "epochs": {s: int(d.epochs[-1]) for s, d in data.items()}, "cells": cells,
              "make_data_s": round(time.perf_counter() - t0, 1), "seconds": {}}
    print(json.dumps(result), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Outputs(tmp)
        if not args.no_store:
            data = store_round_trip(data, Path(tmp), result)
        steps = [("dynamics", lambda: run_dynamics(data, out)),
                 ("binomial", lambda: run_binomial(data, out)),
                 ("heterogeneity", lambda: run_heterogeneity(data, out)),
                 ("classes", lambda: run_classes(data, out, None)),
                 ("examples", lambda: run_examples(data, out, ExampleOptions(progress=False)))]
        for name, step in steps:
            t = time.perf_counter()
            step()
            result["seconds"][name] = round(time.perf_counter() - t, 1)
            print(f"{name}: {result['seconds'][name]} s (peak RSS {peak_rss_gb():.1f} GB)", flush=True)
    result["total_s"] = round(sum(result["seconds"].values()), 1)
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
