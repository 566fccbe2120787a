"""Phase-two throughput: checkpoints/s and images/s of `inspect rt`'s evaluation.

Ours: the bank's views are made once and stay on the device; each checkpoint is loaded
(safetensors, in a background thread in the real command) and does one batched forward.
Reference (the thesis's way): for every checkpoint, re-transform every probe image with
torchvision's PIL transforms in a DataLoader (a fixed RNG seed per replay), then forward.

    python benchmarks/bench_inspect.py --device auto --checkpoints 4 --probes 1024 --replays 10

Writes JSON (default benchmarks/results/inspect_<device>.json) and prints a table.
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
import torch
from PIL import Image

from ssl_dynamics import artifacts as art
from ssl_dynamics.augment import CIFAR_MEAN, CIFAR_STD
from ssl_dynamics.config import thesis_setups
from ssl_dynamics.inspect.bank import replay_views
from ssl_dynamics.inspect.evaluate import evaluate
from ssl_dynamics.models import build_network
from ssl_dynamics.objectives import objective_for


def reference_transform(kind: str):
    from torchvision import transforms as T

    if kind == "supervised":
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    return T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                      T.RandomGrayscale(0.2), T.GaussianBlur(3, (0.1, 2.0)), T.ToTensor()])


class PilSet(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, kind: str, views: int):
        self.images = [Image.fromarray(im.transpose(1, 2, 0)) for im in images]
        self.tf = reference_transform(kind)
        self.views = views

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.stack([self.tf(self.images[i]) for _ in range(self.views)])


def time_ours(ckpts, setup, views, targets, dev, bf16=False):
    net = build_network("resnet18_cifar", setup.head_dim, WIDTH).to(dev).eval()
    obj = objective_for(setup)
    t0 = time.perf_counter()
    for p in ckpts:
        state, _ = art.load_checkpoint(p)
        net.load_state_dict(state)
        evaluate(net, obj, views, targets, 256, bf16)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_reference(ckpts, setup, images, targets, dev, replays, workers):
    net = build_network("resnet18_cifar", setup.head_dim, WIDTH).to(dev).eval()
    obj = objective_for(setup)
    v = 2 if setup.objective == "simclr" else 1
    ds = PilSet(images, setup.augment, v)
    t0 = time.perf_counter()
    for p in ckpts:
        net.load_state_dict(torch.load(p, map_location=dev, weights_only=True))
        for j in range(replays):
            torch.manual_seed(j)  # the thesis's way to "replay": reseed the global RNG
            loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers, shuffle=False)
            with torch.no_grad():
                for b, x in enumerate(loader):
                    x = x.to(dev).reshape(-1, 3, 32, 32)
                    out = net(x)["out"]
                    t = targets[b * 256:b * 256 + len(out) // v].to(dev)
                    obj.score(out, t) if v == 1 else obj.score(out)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


WIDTH = 64  # the thesis network; --width shrinks it for a quick CPU run


def main():
    global WIDTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--probes", type=int, default=256)
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--out", default=None)
    ap.add_argument("--width", type=int, default=64, help="network width (64 = thesis ResNet-18)")
    args = ap.parse_args()
    WIDTH = args.width
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.probes, 3, 32, 32), dtype=np.uint8)
    targets = torch.from_numpy(rng.integers(0, 10, args.probes))
    results = {"machine": {"processor": platform.processor() or platform.machine(),
                           "cpus": os.cpu_count(), "torch": torch.__version__, "device": str(dev),
                           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
               "config": vars(args), "rows": []}
    setups = thesis_setups()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("supervised", "simclr"):
            setup = setups[name]
            ours_ckpts, ref_ckpts = [], []
            for c in range(args.checkpoints):
                torch.manual_seed(c)
                net = build_network("resnet18_cifar", setup.head_dim, WIDTH)
                p = Path(tmp) / f"{name}-{c}.safetensors"
                art.save_checkpoint(p, net, {})
                ours_ckpts.append(p)
                q = Path(tmp) / f"{name}-{c}.pt"
                torch.save(net.state_dict(), q)
                ref_ckpts.append(q)
            t0 = time.perf_counter()
            v, _ = replay_views(setup.augment, torch.from_numpy(images), args.replays, 0)
            bank_s = time.perf_counter() - t0
            views = torch.from_numpy(v).to(dev)
            n_views = int(np.prod(views.shape[:3]))
            evaluate(build_network("resnet18_cifar", setup.head_dim, WIDTH).to(dev).eval(), objective_for(setup),
                     views[:1, :64], targets[:64].to(dev), 256)  # warm-up
            ours = time_ours(ours_ckpts, setup, views, targets.to(dev), dev)
            ref = time_reference(ref_ckpts, setup, images, targets, dev, args.replays, args.workers)
            row = {"setup": name, "views_per_checkpoint": n_views, "bank_build_s": round(bank_s, 3),
                   "ours_ckpt_per_s": args.checkpoints / ours, "ours_images_per_s": n_views * args.checkpoints / ours,
                   "ref_ckpt_per_s": args.checkpoints / ref, "ref_images_per_s": n_views * args.checkpoints / ref,
                   "speedup": ref / ours}
            if dev.type == "cuda":
                bf = time_ours(ours_ckpts, setup, views, targets.to(dev), dev, bf16=True)
                row["ours_bf16_ckpt_per_s"] = args.checkpoints / bf
            results["rows"].append(row)
            print(json.dumps(row))
    out = Path(args.out or f"benchmarks/results/inspect_{dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'setup':<11} {'ours ckpt/s':>11} {'ref ckpt/s':>10} {'ours img/s':>10} {'ref img/s':>9} {'speedup':>7}")
    for r in results["rows"]:
        print(f"{r['setup']:<11} {r['ours_ckpt_per_s']:>11.3f} {r['ref_ckpt_per_s']:>10.3f} "
              f"{r['ours_images_per_s']:>10.0f} {r['ref_images_per_s']:>9.0f} {r['speedup']:>6.2f}x")


if __name__ == "__main__":
    main()
