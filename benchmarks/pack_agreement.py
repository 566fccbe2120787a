"""How far packed training (`train run --pack P`) drifts from training each seed alone, in fp32.

Trains the same seeds of every setup three ways into temporary run directories:

* separate: one seed at a time (`--pack 1`, the CPU's default path: NCHW);
* separate_cl: one seed at a time in channels_last (the GPU's memory format);
* packed: P seeds per grouped network (channels_last, the packed default),

and compares checkpoints seed by seed, epoch by epoch: packed vs separate_cl (what packing
alone changes), packed vs separate (what a CPU user sees) and, as a yardstick for "agrees up
to rounding", separate_cl vs separate (the same network, only another convolution kernel).
Reported: the largest absolute weight difference over all parameters and BatchNorm
statistics, the same relative to the largest weight, and the largest difference of an
epoch's training loss.

    python benchmarks/pack_agreement.py --preset smoke --epochs 4 --seeds 0-1
    python benchmarks/pack_agreement.py --preset demo --epochs 2 --seeds 0-1 \
        --out benchmarks/results/pack_agreement_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.config import override, parse_seeds, preset
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions


def weights(paths: art.RunPaths, setup: str, seed: int, epoch: int) -> dict[str, torch.Tensor]:
    state, _ = art.load_checkpoint(paths.checkpoint(setup, seed, epoch))
    return {k: v.double() for k, v in state.items() if v.is_floating_point()}


def losses(paths: art.RunPaths, setup: str, seed: int) -> list[float]:
    return [json.loads(line)["loss"] for line in paths.metrics(setup, seed).read_text().splitlines()]


def compare(a: art.RunPaths, b: art.RunPaths, cfg, setup: str) -> list[dict]:
    """Per epoch: max |dw|, max |dw| / max |w|, max |d loss| over the seeds."""
    rows = []
    for epoch in range(1, cfg.setups[setup].epochs + 1):
        dw = rel = dl = 0.0
        for seed in cfg.seeds:
            wa, wb = weights(a, setup, seed, epoch), weights(b, setup, seed, epoch)
            d = max((wa[k] - wb[k]).abs().max().item() for k in wa)
            dw = max(dw, d)
            rel = max(rel, d / max(v.abs().max().item() for v in wa.values()))
            dl = max(dl, abs(losses(a, setup, seed)[epoch - 1] - losses(b, setup, seed)[epoch - 1]))
        rows.append({"epoch": epoch, "max_abs_dw": dw, "max_rel_dw": rel, "max_abs_dloss": dl})
    return rows


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smoke", help="smoke (synthetic, width 4) or demo (digits, width 8)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", default="0-1", help="the seeds of one pack")
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args()
    cfg = override(preset(args.preset), [f"epochs={args.epochs}", *args.assignments])
    cfg = replace(cfg, seeds=parse_seeds(args.seeds))
    setups = list(cfg.setups)
    ways = {"separate": TrainOptions(device="cpu"),
            "separate_cl": TrainOptions(device="cpu", channels_last=True),
            "packed": TrainOptions(device="cpu", channels_last=True, pack=len(cfg.seeds))}
    pairs = {"packed_vs_separate_cl": ("packed", "separate_cl"), "packed_vs_separate": ("packed", "separate"),
             "separate_cl_vs_separate": ("separate_cl", "separate")}
    result = {"benchmark": "pack_agreement", "args": vars(args), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(), "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, opts in ways.items():
            t0 = time.perf_counter()
            train_grid(Path(tmp) / name, cfg, setups, opts, progress=False, echo=lambda *_: None)
            result["seconds"][name] = round(time.perf_counter() - t0, 1)
            paths[name] = art.RunPaths(Path(tmp) / name)
        for key, (a, b) in pairs.items():
            result[key] = {setup: compare(paths[a], paths[b], cfg, setup) for setup in setups}
    result["loadavg_end"] = os.getloadavg()
    print("max |dw| (max |d loss|) per epoch")
    print(f"{'setup':<18} {'epoch':>5} " + " ".join(f"{k:>28}" for k in pairs))
    for setup in setups:
        for e in range(cfg.setups[setup].epochs):
            cells = [result[k][setup][e] for k in pairs]
            print(f"{setup:<18} {e + 1:>5} " + " ".join(
                f"{c['max_abs_dw']:>17.2e} ({c['max_abs_dloss']:.1e})" for c in cells))
    print("seconds:", result["seconds"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
