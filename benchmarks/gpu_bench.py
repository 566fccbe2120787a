"""The GPU benchmark behind benchmarks/gpu_check.sh: phase one and two at thesis scale, ours
beside the reference way, measured in one run (see benchmarks/README.md for every number).

    python benchmarks/gpu_bench.py --data /tmp/cifar10-jpeg --out OUT           # a GPU, ~6 min
    python benchmarks/gpu_bench.py --quick --out OUT                            # CPU, tiny, ~2 min

Parts, in order of importance (a part that fails is recorded and the next one runs; the
optional parts at the end run while the time budget lasts):

1. loop: seconds per epoch of `train run` itself (the second epoch of a 2-epoch run; the
   first pays cudnn autotuning) for simclr and supervised, 1 seed and packs of P seeds;
   aggregate views/s and model FLOP utilisation;
2. reference: the thesis's way (torchvision PIL transforms in a DataLoader with one worker
   per core, one seed, the same model and step) beside our batched augmentation feeding the
   same step; the augmentation's share of our step time;
3. ceiling: the model's forward + backward + optimizer step on views already on the device
   (eager), 1 network and a pack; the loop's efficiency relative to it;
4. inspect: `inspect rt` checkpoints/s on a 1,024 x 10 bank, batched (--group) vs one at a time;
5. projection: the whole thesis grid's wall time, ours vs the reference way;
6. optional: the compiled ceiling (torch.compile), a larger pack, P worker processes sharing
   the device instead of a pack, the compiled loop.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench_parts as parts  # noqa: E402
import ssl_dynamics.data as data_mod  # noqa: E402
from ssl_dynamics.config import override, preset  # noqa: E402

# The thesis grid (docs/science.md): epochs per setup, 30 seeds, 195 batches of 256 per CIFAR-10 epoch.
GRID_EPOCHS = {"simclr": 200, "supervised": 50, "random_labels": 20, "random_labels_aug": 500}
GRID_SEEDS = 30
GRID_CHECKPOINTS = sum(GRID_SEEDS * (e + 1) for e in GRID_EPOCHS.values())  # 23,220 with epoch 0


@dataclass
class Ctx:
    """What every part needs: options, device, dataset, the result so far, the clock."""

    args: argparse.Namespace
    device: torch.device
    tmp: Path
    result: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def config(self, seeds: int, epochs: int, subset: int = 0):
        """The thesis config at this run's size (dataset, width, batch, subset)."""
        a = self.args
        cfg = override(preset("thesis"), [f"dataset={a.dataset}", f"width={a.width}", f"epochs={epochs}",
                                          f"batch_size={a.batch_size}", f"train_subset={subset or a.subset}"])
        from dataclasses import replace

        return replace(cfg, seeds=tuple(range(seeds)))

    def dataset(self, cfg):
        return data_mod.load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed,
                                     download=False)

    def save(self) -> None:
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        Path(self.args.out, "gpu_bench.json").write_text(json.dumps(self.result, indent=2) + "\n")


def run_part(ctx: Ctx, name: str, fn, *args, optional: bool = False):
    """Run one part; record its result or its error; never raise."""
    if ctx.args.parts and not any(name == p or (p.endswith("*") and name.startswith(p[:-1]))
                                  for p in ctx.args.parts):
        return None
    if optional and ctx.elapsed() > ctx.args.budget_s:
        ctx.result.setdefault("skipped", []).append(f"{name}: time budget spent")
        print(f"[{ctx.elapsed():6.0f}s] skip {name} (budget)", flush=True)
        return None
    print(f"[{ctx.elapsed():6.0f}s] {name} ...", flush=True)
    try:
        out = fn(ctx, *args)
    except Exception as e:  # noqa: BLE001 - a benchmark part may fail; the others still count
        traceback.print_exc()
        ctx.result.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        out = None
    else:
        ctx.result.setdefault("parts", {})[name] = out
        print(f"[{ctx.elapsed():6.0f}s] {name}: {json.dumps(out)[:400]}", flush=True)
    ctx.save()
    return out


def projection(ctx: Ctx) -> dict:
    """Grid wall time from the measured seconds per epoch per model: ours (the best measured
    pack per setup; the random-label setups cost as supervised) vs the reference way."""
    measured = ctx.result.get("parts", {})
    ours, ref, inspect, best = {}, {}, {}, {}  # seconds per setup, scaled to CIFAR-10 epochs (195 batches)
    for setup, epochs in GRID_EPOCHS.items():
        kind = "simclr" if setup == "simclr" else "supervised"
        loops = {k: v for k, v in measured.items() if k.startswith((f"loop {kind} ", f"procs {kind} ")) and v}
        refs = measured.get(f"reference {kind}")
        if loops:
            way = min(loops, key=lambda k: loops[k]["seconds_per_cifar_epoch_per_model"])
            ours[setup] = GRID_SEEDS * epochs * loops[way]["seconds_per_cifar_epoch_per_model"]
            best[setup] = way
        if refs:
            ref[setup] = GRID_SEEDS * epochs * refs["reference"]["seconds_per_epoch"]
    rates = measured.get("inspect") or {}
    for setup, epochs in GRID_EPOCHS.items():
        measured_rates = rates.get("simclr" if setup == "simclr" else "supervised", {})
        rate = max((measured_rates.get(k) or 0 for k in ("one_at_a_time_ckpt_per_s", "batched_ckpt_per_s")),
                   default=0)  # the faster way: what --group would be set to
        if rate:
            inspect[setup] = GRID_SEEDS * (epochs + 1) / rate
    out = {"grid": {"epochs": GRID_EPOCHS, "seeds": GRID_SEEDS, "checkpoints": GRID_CHECKPOINTS},
           "ours_train_hours": round(sum(ours.values()) / 3600, 2) if len(ours) == 4 else None,
           "reference_train_hours": round(sum(ref.values()) / 3600, 2) if len(ref) == 4 else None,
           "inspect_rt_hours": round(sum(inspect.values()) / 3600, 3) if len(inspect) == 4 else None,
           "fastest_way": best,
           "per_setup_hours": {"ours": {k: round(v / 3600, 3) for k, v in ours.items()},
                               "reference": {k: round(v / 3600, 3) for k, v in ref.items()}}}
    if out["ours_train_hours"] and out["reference_train_hours"]:
        out["speedup"] = round(out["reference_train_hours"] / out["ours_train_hours"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="extracted CIFAR-10 JPEG folder (train/, test/)")
    ap.add_argument("--quick", action="store_true", help="CPU, tiny sizes, the same code paths")
    ap.add_argument("--out", default="benchmarks/results/gpu")
    ap.add_argument("--packs", default=None, help="pack sizes to measure (default 4,8; quick 2)")
    ap.add_argument("--group", type=int, default=None, help="inspect --group (default 8; quick 2)")
    ap.add_argument("--budget-s", type=float, default=None, help="no optional part after this (210; quick 150)")
    ap.add_argument("--parts", default="", help="only these parts, comma-separated; a trailing * matches a prefix "
                    "(e.g. 'loop simclr pack 1,inspect,projection*'); default all")
    ap.add_argument("--with-compile", action="store_true", help="in --quick: also the compiled parts")
    args = ap.parse_args()
    quick = args.quick
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.device = "cpu" if quick else "cuda"
    args.dataset = f"imagefolder:{args.data}" if args.data else "synthetic"
    args.width, args.batch_size = (8, 64) if quick else (64, 256)
    args.subset = 512 if quick and args.data else 0
    args.packs = [int(p) for p in (args.packs or ("2" if quick else "4,8")).split(",")]
    args.group = args.group or (2 if quick else 8)
    args.budget_s = args.budget_s or (150 if quick else 210)
    args.ref_batches, args.warmup = (2, 1) if quick else (40, 5)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # every part loads the same images: decode the JPEG folder once
    data_mod.load_imagefolder = functools.lru_cache(maxsize=1)(data_mod.load_imagefolder)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(args, torch.device(args.device), Path(tmp))
        ctx.result = {"benchmark": "gpu_bench", "args": vars(args), "machine": parts.machine(ctx.device)}
        args.batches_per_epoch = len(ctx.dataset(ctx.config(1, 2)).train_y) // args.batch_size
        run_all(ctx)
    print(f"[{ctx.elapsed():6.0f}s] done: {Path(args.out) / 'gpu_bench.json'}", flush=True)


def run_all(ctx: Ctx) -> None:
    first, *more = ctx.args.packs
    for setup in ("simclr", "supervised"):
        for pack in (1, first):
            run_part(ctx, f"loop {setup} pack {pack}", parts.loop, setup, pack, False)
    for setup in ("simclr", "supervised"):
        run_part(ctx, f"reference {setup}", parts.reference, setup)
    for pack in (1, first):
        run_part(ctx, f"ceiling simclr pack {pack} eager", parts.ceiling, "simclr", pack, False)
    run_part(ctx, "ceiling supervised pack 1 eager", parts.ceiling, "supervised", 1, False)
    run_part(ctx, "inspect", parts.inspect_rate)
    run_part(ctx, "projection", projection)
    compile_ok = not ctx.args.quick or ctx.args.with_compile
    if compile_ok:
        run_part(ctx, "ceiling simclr pack 1 compiled", parts.ceiling, "simclr", 1, True, optional=True)
    for pack in more:  # supervised too: the three one-view setups are most of the grid's time
        for setup in ("simclr", "supervised"):
            run_part(ctx, f"loop {setup} pack {pack}", parts.loop, setup, pack, False, optional=True)
    run_part(ctx, f"procs simclr {first}", parts.procs, "simclr", first, optional=True)
    if compile_ok:
        run_part(ctx, f"loop simclr pack {first} compiled", parts.loop, "simclr", first, True, optional=True)
        run_part(ctx, "ceiling simclr pack 1 cudagraphs", parts.ceiling, "simclr", 1, "reduce-overhead",
                 optional=True)
        for setup in ("simclr", "supervised"):  # the training loop itself with CUDA graphs
            run_part(ctx, f"loop {setup} pack {first} cudagraphs", parts.loop, setup, first, "reduce-overhead",
                     optional=True)
        run_part(ctx, f"ceiling simclr pack {first} compiled", parts.ceiling, "simclr", first, True,
                 optional=True)
    run_part(ctx, "projection", projection)  # again, with whatever the optional parts added


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
