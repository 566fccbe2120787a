"""The measurements of gpu_bench.py, one function per part (each returns a JSON-able dict)."""
from __future__ import annotations

import argparse
import os
import shutil
import time

import torch

from bench_train import machine_info, sync, train_steps
from ssl_dynamics.augment import make_generator
from ssl_dynamics.models import build_network
from ssl_dynamics.objectives import objective_for
from ssl_dynamics.packed import grouped, pack_views
from ssl_dynamics.train.loop import TrainOptions, build_optimizer

BATCHES_PER_CIFAR_EPOCH = 195  # 50,000 images in batches of 256, the last one dropped
# Training FLOPs of one 32x32 view through the width-64 CIFAR ResNet-18 (forward ~1.11 GFLOP,
# backward twice that); convolutions scale with width squared.
TRAIN_FLOP_PER_VIEW = 3.33e9
# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts, no sparsity), FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def quiet(*_a, **_k) -> None:
    return None


def machine(dev: torch.device) -> dict:
    """bench_train's machine description, plus the GPU's memory, CUDA and cuDNN versions."""
    info = machine_info(dev)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def mfu(ctx, views_per_s: float) -> float | None:
    """Model FLOP utilisation: training FLOPs done per second over the device's bf16 peak."""
    if ctx.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(ctx.device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    flop = TRAIN_FLOP_PER_VIEW * (ctx.args.width / 64) ** 2
    return round(views_per_s * flop / peak, 4) if peak else None


def options(ctx, pack: int, compile_: bool | str) -> TrainOptions:
    """compile_: False, True (torch.compile's default mode) or a mode ("reduce-overhead":
    CUDA graphs), as `train run --compile-mode`."""
    cuda = ctx.device.type == "cuda"  # the GPU defaults: bf16 autocast, channels_last
    mode = compile_ if isinstance(compile_, str) else "default"
    return TrainOptions(device=str(ctx.device), bf16=cuda, channels_last=cuda or pack > 1, pack=pack,
                        compile=bool(compile_), compile_mode=mode)


def loop(ctx, setup: str, pack: int, compile_: bool | str) -> dict:
    """`train run` itself (train_runs on a prepared run directory), 2 epochs: epoch 2's time."""
    import json

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.grid import plan, train_runs
    from ssl_dynamics.train.prepare import prepare_run

    cfg = ctx.config(pack, 2)
    ds = ctx.dataset(cfg)
    root = ctx.tmp / f"loop-{setup}-{pack}-{compile_}"
    paths = prepare_run(root, cfg, [setup], ds, echo=quiet)
    t0 = time.perf_counter()
    train_runs(paths, cfg, ds, plan(root, cfg, [setup]), options(ctx, pack, compile_), echo=quiet,
               progress=False)
    wall = time.perf_counter() - t0
    epochs = [json.loads(x) for x in art.RunPaths(root).metrics(setup, 0).read_text().splitlines()]
    shutil.rmtree(root)
    sc = cfg.setups[setup]
    nb = len(ds.train_y) // sc.batch_size
    views = nb * sc.batch_size * objective_for(sc).views_per_image
    sec = epochs[1]["seconds"]
    return {"pack": pack, "compiled": compile_, "batches": nb, "first_epoch_s": epochs[0]["seconds"],
            "epoch_s": sec, "seconds_per_epoch_per_model": sec / pack,
            "seconds_per_cifar_epoch_per_model": sec / pack * BATCHES_PER_CIFAR_EPOCH / nb,
            "views_per_s": round(pack * views / sec, 1), "mfu": mfu(ctx, pack * views / sec),
            "wall_s": round(wall, 1)}


def procs(ctx, setup: str, n: int) -> dict:
    """The other way to share a device: `train run --devices cuda:0,...` (n worker processes,
    one seed each, on the same device), 2 epochs; epoch 2's seconds, overlapped across workers."""
    import json

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.train.options import TrainRequest
    from ssl_dynamics.train.workers import run_on_devices

    cfg = ctx.config(n, 2)
    root = ctx.tmp / f"procs-{setup}-{n}"
    dev = str(ctx.device) if ctx.device.type == "cpu" else "cuda:0"
    t0 = time.perf_counter()
    run_on_devices(root, cfg, [setup], [dev] * n, TrainRequest(pack="1"), download=False, echo=quiet,
                   progress=False)
    wall = time.perf_counter() - t0
    rows = [[json.loads(x) for x in art.RunPaths(root).metrics(setup, s).read_text().splitlines()]
            for s in range(n)]
    shutil.rmtree(root)
    sec = max(r[1]["seconds"] for r in rows)  # the slowest worker's second epoch
    nb = ctx.args.batches_per_epoch
    views = nb * ctx.args.batch_size * objective_for(cfg.setups[setup]).views_per_image
    return {"processes": n, "epoch_s_max": sec, "epoch_s": [r[1]["seconds"] for r in rows],
            "seconds_per_cifar_epoch_per_model": sec / n * BATCHES_PER_CIFAR_EPOCH / nb,
            "views_per_s": round(n * views / sec, 1), "mfu": mfu(ctx, n * views / sec),
            "wall_s": round(wall, 1), "note": "epochs of different workers overlap only roughly"}


def reference(ctx, setup: str) -> dict:
    """The reference way (PIL transforms in a DataLoader, one worker per core) and our batched
    augmentation, each feeding the same step of the same model (bench_train.train_steps)."""
    cfg = ctx.config(1, 1)
    ds = ctx.dataset(cfg)
    a = ctx.args
    args = argparse.Namespace(warmup=a.warmup, batches=a.ref_batches, width=a.width,
                              batch_size=a.batch_size, num_workers=os.cpu_count())
    hwc = ds.train_x.permute(0, 2, 3, 1).contiguous().numpy()
    cuda = ctx.device.type == "cuda"
    rows = {feed: train_steps(setup, feed, ds.train_x, ds.train_y, hwc, args, ctx.device, cuda, cuda)
            for feed in ("ours", "reference")}
    for row in rows.values():
        row["seconds_per_epoch"] = BATCHES_PER_CIFAR_EPOCH * a.batch_size / row["images_per_s"]
        row["views_per_s"] = row["images_per_s"] * row["views_per_image"]
        row["mfu"] = mfu(ctx, row["views_per_s"])
    rows["augmentation_share_of_step"] = round(rows["ours"]["data_wait_s"] / rows["ours"]["seconds"], 3)
    rows["workers"] = os.cpu_count()
    return rows


def ceiling(ctx, setup: str, pack: int, compile_: bool | str) -> dict:
    """Forward + backward + optimizer step on views already on the device (no augmentation,
    no data movement): the most the loop could reach with this model and step."""
    cfg = ctx.config(pack, 1)
    sc, dev = cfg.setups[setup], ctx.device
    objective = objective_for(sc)
    ds = ctx.dataset(cfg)
    x, y = ds.train_x[:sc.batch_size].to(dev), ds.train_y[:sc.batch_size].to(dev)
    nets = []
    for p in range(pack):
        torch.manual_seed(p)
        nets.append(build_network(cfg.backbone, sc.head_dim, cfg.width).to(dev).train())
    model = nets[0] if pack == 1 else grouped(nets)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, sc)
    views = torch.stack([objective.views(x, make_generator(p, 1, 0, "views")) for p in range(pack)])
    inp = views[0].contiguous(memory_format=torch.channels_last) if pack == 1 else pack_views(views, True)
    mode = compile_ if isinstance(compile_, str) else "default"  # "reduce-overhead": CUDA graphs
    step_model = torch.compile(model, mode=mode) if compile_ else model

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = step_model(inp)["out"]
        outs = [out] if pack == 1 else list(out)
        loss = sum(objective.loss(o, y)[0] for o in outs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t0 = time.perf_counter()
    for _ in range(ctx.args.warmup + (2 if compile_ else 0)):
        step()
    sync(dev)
    warm = time.perf_counter() - t0
    iters = max(ctx.args.ref_batches, 3)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    per_step = (time.perf_counter() - t0) / iters
    vps = pack * len(inp) / per_step
    out = {"pack": pack, "compiled": compile_, "ms_per_step": round(per_step * 1e3, 2),
           "views_per_s": round(vps, 1), "mfu": mfu(ctx, vps), "warmup_s": round(warm, 1),
           "seconds_per_cifar_epoch_per_model": BATCHES_PER_CIFAR_EPOCH * per_step / pack}
    loop_row = ctx.result.get("parts", {}).get(f"loop {setup} pack {pack}")
    if loop_row:  # the loop's efficiency: ceiling time over loop time for the same work
        out["loop_efficiency"] = round(ctx.args.batches_per_epoch * per_step / loop_row["epoch_s"], 3)
    return out


def profiled(fn, top: int = 25) -> list[str]:
    """Where the main thread's time goes in fn(): cProfile's top functions by own time, and
    by cumulative time (a wait on the loader threads or on the GPU shows up as such)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    lines = []
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
        lines += [f"by {key}:"] + [ln for ln in buf.getvalue().splitlines() if ln.strip()][4:]
    return lines


def inspect_rate(ctx) -> dict:
    """`inspect rt` on a 1,024 x 10 bank: checkpoints/s batched (--group) vs one at a time, on
    checkpoints of a short packed run (supervised: 10,240 views each; simclr: 20,480); in bf16
    on a GPU, and there also one at a time in exact fp32 (the default, TF32 off)."""
    from ssl_dynamics.inspect.rt import BankRequest, EvalOptions, Selection, compute_rt
    from ssl_dynamics.inspect.workspace import open_workspace
    from ssl_dynamics.train.grid import plan, train_runs
    from ssl_dynamics.train.prepare import prepare_run

    quick = ctx.args.quick
    seeds, subset = (2, 256) if quick else (16, 2560)
    cfg = ctx.config(seeds, 1, subset=subset if ctx.args.dataset != "synthetic" else 0)
    ds, setups = ctx.dataset(cfg), ["simclr", "supervised"]
    root = ctx.tmp / "inspect-run"
    paths = prepare_run(root, cfg, setups, ds, echo=quiet)
    train_runs(paths, cfg, ds, plan(root, cfg, setups), options(ctx, ctx.args.packs[0], False),
               echo=quiet, progress=False)
    ws = open_workspace(root, echo=quiet)
    bank = BankRequest(128 if quick else 1024, 2 if quick else 10, simclr_batch=cfg.setups["simclr"].batch_size)
    cuda = ctx.device.type == "cuda"
    out = {"seeds": seeds, "checkpoints_per_setup": seeds * 2, "group": ctx.args.group, "bf16": cuda}
    for setup in setups:
        row = {}
        for name, group in (("one_at_a_time", 1), ("batched", ctx.args.group)):
            opts = EvalOptions(str(ctx.device), cuda, True, False, group)
            warm = Selection((setup,), (0,))  # cudnn autotuning and bank building, untimed
            compute_rt(ws, warm, opts, bank, root / f"warm-{setup}-{group}.zarr", echo=quiet)
            res = compute_rt(ws, Selection((setup,)), opts, bank, root / f"{setup}-{group}.zarr", echo=quiet)
            row[f"{name}_ckpt_per_s"] = round(res["checkpoints_per_s"], 2)
            row[f"{name}_views_per_s"] = round(res["images_per_s"], 1)
            row[f"{name}_waited_s"] = res["waited_s"]  # for the loader / for the store's writer
        row["speedup"] = round(row["batched_ckpt_per_s"] / row["one_at_a_time_ckpt_per_s"], 2)
        if cuda:  # the exact option: fp32 without TF32 (what `inspect rt` runs by default)
            opts = EvalOptions(str(ctx.device), False, True, False, 1)
            compute_rt(ws, warm, opts, bank, root / f"warm-{setup}-fp32.zarr", echo=quiet)  # autotuning
            res = compute_rt(ws, Selection((setup,)), opts, bank, root / f"{setup}-fp32.zarr", echo=quiet)
            row["fp32_one_at_a_time_ckpt_per_s"] = round(res["checkpoints_per_s"], 2)
            row["fp32_waited_s"] = res["waited_s"]
        out[setup] = row
    out["profile_supervised"] = profiled(lambda: compute_rt(
        ws, Selection(("supervised",)), EvalOptions(str(ctx.device), cuda, True, False, 1), bank,
        root / "profiled.zarr", echo=quiet))
    shutil.rmtree(root)
    return out
