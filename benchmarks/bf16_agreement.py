"""How much r_t changes with bf16: bf16 evaluation, and phase two reading bf16 checkpoints.

On a finished run (any preset), three r_t stores on ONE bank, in a work folder outside the
run (the run is only read):

* fp32: every checkpoint as trained, evaluated in fp32 (the reference);
* bf16_eval: the same checkpoints evaluated with `--precision bf16` (autocast);
* bf16_checkpoints: a copy of the run whose checkpoints hold their float parameters in bf16
  (what `train run --checkpoint-dtype bf16` writes: BatchNorm statistics stay fp32; manifests
  recomputed), evaluated in fp32.

Each is compared with fp32: the fraction of identical correctness indicators (all seeds,
epochs, augmentations and probe images; SimCLR: first views), max and mean |delta r_t| (r_t =
mean over seeds and augmentations, per epoch and image) and mean / max |delta p_true|.

    python benchmarks/bf16_agreement.py artifacts/demo --probes 512 --replays 5 \
        --out benchmarks/results/bf16_demo.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl_dynamics import artifacts as art
from ssl_dynamics.inspect.rt import BankRequest, EvalOptions, Selection, compute_rt
from ssl_dynamics.inspect.rtdata import load_rt
from ssl_dynamics.inspect.workspace import open_workspace


def bf16_copy(run: Path, dst: Path) -> int:
    """Copy `run` to `dst` with every checkpoint's float parameters stored in bf16 (as
    `--checkpoint-dtype bf16` saves them) and manifests recomputed; the number converted."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("epoch-*.safetensors", "resume.pt",
                                                              "inspect", "*.lock", "logs", "jobs"))
    paths, out, n = art.RunPaths(run), art.RunPaths(dst), 0
    for setup in paths.setups():
        for seed in paths.seeds(setup):
            manifest = art.read_json(out.manifest(setup, seed))
            for epoch in paths.epochs(setup, seed):
                net, meta = art.load_network(paths.checkpoint(setup, seed, epoch))
                sha = art.save_checkpoint(out.checkpoint(setup, seed, epoch), net, meta, torch.bfloat16)
                manifest["checkpoints"][str(epoch)] = sha
                n += 1
            art.write_json_atomic(out.manifest(setup, seed), manifest)
    return n


def evaluate(run: Path, work: Path, bank: BankRequest, bf16: bool, device: str) -> tuple[Path, float]:
    ws = open_workspace(run, work, echo=lambda *_: None)
    res = compute_rt(ws, Selection(), EvalOptions(device, bf16, True, False), bank, echo=lambda *_: None)
    return Path(res["store"]), res["seconds"]


def compare(a: Path, b: Path) -> dict:
    """Per setup: agreement of store b with the reference store a."""
    ref, other = load_rt(a), load_rt(b)
    out = {}
    for setup, x in ref.items():
        y = other[setup]
        rt_x = x.correct.astype(np.float64).mean(axis=(0, 2))  # [E, K]
        rt_y = y.correct.astype(np.float64).mean(axis=(0, 2))
        dp = np.abs(x.p_true.astype(np.float64) - y.p_true)
        out[setup] = {"indicators": int(x.correct.size),
                      "identical_indicators": float((x.correct == y.correct).mean()),
                      "max_abs_delta_rt": float(np.abs(rt_x - rt_y).max()),
                      "mean_abs_delta_rt": float(np.abs(rt_x - rt_y).mean()),
                      "mean_abs_delta_p_true": float(dp.mean()), "max_abs_delta_p_true": float(dp.max())}
    return out


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--probes", type=int, default=None, help="K of the bank [1024]")
    ap.add_argument("--replays", type=int, default=None, help="M of the bank [10]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-eval", action="store_true", help="only the bf16 checkpoints")
    ap.add_argument("--work", type=Path, default=None, help="keep the stores here (default: a temp folder)")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args()
    result = {"benchmark": "bf16_agreement", "run": str(args.run), "args": {k: str(v) for k, v in vars(args).items()},
              "torch": torch.__version__, "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(),
              "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bank = BankRequest(args.probes, args.replays, path=work / "bank.h5")
        fp32, result["seconds"]["fp32"] = evaluate(args.run, work / "fp32", bank, False, args.device)
        bank = BankRequest(path=work / "bank.h5")
        if not args.skip_eval:
            store, result["seconds"]["bf16_eval"] = evaluate(args.run, work / "bf16_eval", bank, True, args.device)
            result["bf16_eval"] = compare(fp32, store)
        t0 = time.perf_counter()
        result["converted_checkpoints"] = bf16_copy(args.run, work / "run_bf16")
        result["seconds"]["convert"] = round(time.perf_counter() - t0, 1)
        store, result["seconds"]["bf16_checkpoints"] = evaluate(work / "run_bf16", work / "bf16_ckpt", bank,
                                                                 False, args.device)
        result["bf16_checkpoints"] = compare(fp32, store)
        result["bytes"] = {k: sum(p.stat().st_size for p in (root / "checkpoints").rglob("epoch-*.safetensors"))
                           for k, root in (("fp32", args.run), ("bf16", work / "run_bf16"))}
    result["loadavg_end"] = os.getloadavg()
    for what in ("bf16_eval", "bf16_checkpoints"):
        for setup, r in result.get(what, {}).items():
            print(f"{what:<17} {setup:<18} identical {r['identical_indicators']:.5f}  max|d r_t| "
                  f"{r['max_abs_delta_rt']:.4f}  mean|d r_t| {r['mean_abs_delta_rt']:.5f}  "
                  f"mean|d p_true| {r['mean_abs_delta_p_true']:.2e}")
    print("checkpoint bytes:", result["bytes"], "seconds:", result["seconds"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
