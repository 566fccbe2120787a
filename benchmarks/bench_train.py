"""Benchmark phase one: augmentation throughput and training throughput, ours vs the reference.

Two measurements in one run, on synthetic uint8 32x32 images (no dataset download):

(a) augmentation throughput (images/s): our batched pipeline (`ssl_dynamics/augment/`, through the
    setups' own objectives, so SimCLR makes 2 views per image) vs the reference way of the
    thesis's code: torchvision PIL transforms per image in a torch DataLoader (batch 256,
    `--num-workers` worker processes). Ratio = ours / reference.
(b) training throughput (images/s) per setup (simclr, supervised, random_labels,
    random_labels_aug): a few optimizer steps of the ResNet-18 (`--width`, 64 = the thesis
    network) on the device, fed by our batched augmentation or by the reference DataLoader.
    The step is the one of `train/loop.py` (objective, loss, optimizer of the setup). fp32
    everywhere; on CUDA also bf16 autocast + channels_last.

    python benchmarks/bench_train.py --device cpu --out benchmarks/results/train_cpu.json

Writes JSON (machine info + every number) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from ssl_dynamics import augment as aug
from ssl_dynamics.augment import make_generator
from ssl_dynamics.config import SETUP_NAMES, thesis_setups
from ssl_dynamics.models import build_network
from ssl_dynamics.train.loop import build_optimizer, resolve_device
from ssl_dynamics.objectives import objective_for

SIZE = 32


# ------------------------------------------------------------------- the reference pipeline

class ThesisGaussianBlur:
    """The thesis's own blur (SimCLR/data_aug/simclr_transform.py), op for op: ToTensor,
    reflection pad, a separable 3-tap Gaussian conv with sigma ~ U[0.1, 2] from numpy's
    global generator, then ToPILImage, which truncates to uint8 (torchvision's T.GaussianBlur
    rounds instead). For the fidelity check (pil_rounding.py); the speed reference keeps
    T.GaussianBlur, which is faster than this per-image Conv2d, so speed ratios stay
    conservative."""

    def __init__(self, kernel_size: int):
        self.r = kernel_size // 2
        self.k = 2 * self.r + 1

    def __call__(self, img, sigma: float | None = None):
        x = TF.to_tensor(img).unsqueeze(0)
        sigma = np.random.uniform(0.1, 2.0) if sigma is None else sigma
        w = np.exp(-np.arange(-self.r, self.r + 1) ** 2 / (2 * sigma * sigma))
        w = torch.from_numpy(w / w.sum()).float()  # float64 weights copied into float32 convs
        x = torch.nn.functional.pad(x, [self.r] * 4, mode="reflect")
        x = torch.nn.functional.conv2d(x, w.view(1, 1, self.k, 1).repeat(3, 1, 1, 1), groups=3)
        x = torch.nn.functional.conv2d(x, w.view(1, 1, 1, self.k).repeat(3, 1, 1, 1), groups=3)
        return TF.to_pil_image(x.squeeze(0))


def reference_transform(kind: str, thesis_blur: bool = False) -> T.Compose:
    """The thesis's torchvision transforms on PIL images (its Appendix A; docs/science.md); the blur is
    torchvision's unless `thesis_blur` (the thesis's own class, see ThesisGaussianBlur)."""
    if kind == "simclr":
        blur = ThesisGaussianBlur(int(0.1 * SIZE)) if thesis_blur else T.GaussianBlur(int(0.1 * SIZE), (0.1, 2.0))
        return T.Compose([
            T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(0.2), blur, T.ToTensor(),
        ])
    normalize = T.Normalize(aug.CIFAR_MEAN, aug.CIFAR_STD)
    if kind == "supervised":
        return T.Compose([T.RandomCrop(SIZE, padding=aug.PAD), T.RandomHorizontalFlip(), T.ToTensor(),
                          normalize])
    return T.Compose([T.ToTensor(), normalize])  # "none"


class PILDataset(torch.utils.data.Dataset):
    """Like torchvision's CIFAR10: HWC uint8 array -> PIL image -> transform, per image.
    SimCLR returns the two views stacked ([2, 3, H, W]), as the thesis's two-crop wrapper."""

    def __init__(self, images_hwc: np.ndarray, targets: np.ndarray, kind: str):
        self.images, self.targets = images_hwc, targets
        self.transform = reference_transform(kind)
        self.views = 2 if kind == "simclr" else 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.views == 2:
            return torch.stack([self.transform(img), self.transform(img)]), int(self.targets[i])
        return self.transform(img), int(self.targets[i])


def reference_loader(images_hwc, targets, kind, batch_size, num_workers, seed, persistent):
    return torch.utils.data.DataLoader(
        PILDataset(images_hwc, targets, kind), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=num_workers, persistent_workers=persistent and num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def flatten_views(views: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3, H, W] -> [2B, 3, H, W] with views 2k, 2k+1 from image k (the loss's order)."""
    return views.flatten(0, 1) if views.dim() == 5 else views


# ------------------------------------------------------------------------------ helpers

def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def machine_info(dev: torch.device) -> dict:
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(), "processor": platform.processor(), "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def synthetic_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


# ----------------------------------------------------------- (a) augmentation throughput

def bench_ours_augment(kind: str, x: torch.Tensor, batch_size: int, dev: torch.device,
                       threads: int | None = None) -> dict:
    """Our batched pipeline through the setup's objective (SimCLR: 2 views per image)."""
    setup = {"simclr": "simclr", "supervised": "supervised", "none": "random_labels"}[kind]
    objective = objective_for(thesis_setups()[setup])
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x = x.to(dev)
        nb = len(x) // batch_size
        objective.views(x[:batch_size], make_generator(0, 0, 0, "views"))  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        for b in range(nb):
            views = objective.views(x[b * batch_size:(b + 1) * batch_size], make_generator(0, 1, b, "views"))
        sync(dev)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
    n = nb * batch_size
    return {"images": n, "views": n * objective.views_per_image, "seconds": round(seconds, 4),
            "images_per_s": round(n / seconds, 1), "views_shape": list(views.shape),
            "threads": threads or old_threads}


def bench_reference_augment(kind: str, images_hwc, targets, batch_size, num_workers) -> dict:
    """One warm-up epoch (worker start-up), then one timed epoch with persistent workers."""
    loader = reference_loader(images_hwc, targets, kind, batch_size, num_workers, seed=0, persistent=True)
    for _ in loader:
        pass
    t0 = time.perf_counter()
    n = 0
    for views, _ in loader:
        n += len(views)
    seconds = time.perf_counter() - t0
    del loader
    return {"images": n, "seconds": round(seconds, 4), "images_per_s": round(n / seconds, 1),
            "num_workers": num_workers}


# ------------------------------------------------------------- (b) training throughput

def train_steps(setup_name: str, feed: str, x, y, images_hwc, args, dev, bf16: bool,
                channels_last: bool) -> dict:
    """`args.warmup` + `args.batches` optimizer steps of one setup; the timed part is the
    last `args.batches` steps (augmentation + forward + backward + step)."""
    setup = thesis_setups()[setup_name]
    objective = objective_for(setup)
    torch.manual_seed(0)
    model = build_network("resnet18_cifar", setup.head_dim, args.width).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, setup)
    model.train()
    bs = args.batch_size
    total = args.warmup + args.batches
    x_dev, y_dev = x.to(dev), y.to(dev)
    order = torch.randperm(len(x), generator=make_generator(0, 1, "shuffle")).to(dev)
    it = None
    if feed == "reference":
        loader = reference_loader(images_hwc, y.numpy(), setup.augment, bs, args.num_workers,
                                  seed=0, persistent=False)
        it = iter(loader)
    aug_seconds = 0.0
    t_start = None
    for b in range(total):
        if b == args.warmup:
            sync(dev)
            t_start = time.perf_counter()
            aug_seconds = 0.0
        ta = time.perf_counter()
        if feed == "ours":
            k = b % (len(x) // bs)
            idx = order[k * bs:(k + 1) * bs]
            views = objective.views(x_dev[idx], make_generator(0, 1, b, "views"))
            targets = y_dev[idx]
        else:
            views, targets = next(it)
            views = flatten_views(views).to(dev, non_blocking=True)
            targets = targets.to(dev, non_blocking=True)
        if channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        sync(dev)
        aug_seconds += time.perf_counter() - ta
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(views)["out"]
        loss, _ = objective.loss(out, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(dev)
    seconds = time.perf_counter() - t_start
    if not torch.isfinite(loss):
        raise RuntimeError(f"{setup_name}: non-finite loss")
    n = args.batches * bs
    return {"images": n, "views_per_image": objective.views_per_image, "seconds": round(seconds, 4),
            "images_per_s": round(n / seconds, 2),
            "data_wait_s": round(aug_seconds, 4),  # ours: augmentation; reference: waiting for the loader
            "loss": round(float(loss.detach()), 4)}


# ------------------------------------------------------------------------------ main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    ap.add_argument("--n-images", type=int, default=4096, help="synthetic images (a: one epoch)")
    ap.add_argument("--batches", type=int, default=3, help="(b) timed optimizer steps per setup")
    ap.add_argument("--warmup", type=int, default=1, help="(b) untimed steps first")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 width (64 = the thesis network)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--setups", default=",".join(SETUP_NAMES), help="(b) comma-separated setups")
    ap.add_argument("--skip-train", action="store_true", help="only (a)")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)

    dev = torch.device(resolve_device(args.device))
    x, y = synthetic_data(max(args.n_images, args.batch_size * (args.warmup + args.batches)))
    images_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    result = {"benchmark": "bench_train", "args": vars(args), "machine": machine_info(dev)}

    # (a) augmentation
    augment = {}
    n_a = args.n_images
    for kind in ("simclr", "supervised"):
        ours = bench_ours_augment(kind, x[:n_a], args.batch_size, dev)
        ours_1t = (bench_ours_augment(kind, x[:n_a], args.batch_size, dev, threads=1)
                   if dev.type == "cpu" else None)
        ref = bench_reference_augment(kind, images_hwc[:n_a], y[:n_a].numpy(), args.batch_size,
                                      args.num_workers)
        augment[kind] = {"ours": ours, "reference": ref,
                         "ratio_ours_over_reference": round(ours["images_per_s"] / ref["images_per_s"], 2)}
        if ours_1t:
            augment[kind]["ours_1_thread"] = ours_1t
            augment[kind]["ratio_ours_1_thread_over_reference"] = round(
                ours_1t["images_per_s"] / ref["images_per_s"], 2)
    result["augment"] = augment

    # (b) training
    train = {}
    if not args.skip_train:
        precisions = [("fp32", False, False)]
        if dev.type == "cuda":
            precisions.append(("bf16_channels_last", True, True))
        for name in [s.strip() for s in args.setups.split(",") if s.strip()]:
            train[name] = {}
            for prec, bf16, cl in precisions:
                row = {feed: train_steps(name, feed, x, y, images_hwc, args, dev, bf16, cl)
                       for feed in ("ours", "reference")}
                row["ratio_ours_over_reference"] = round(
                    row["ours"]["images_per_s"] / row["reference"]["images_per_s"], 2)
                train[name][prec] = row
                print(f"  trained {name} {prec}: ours {row['ours']['images_per_s']:.1f} img/s, "
                      f"reference {row['reference']['images_per_s']:.1f} img/s", flush=True)
    result["train"] = train
    if hasattr(os, "getloadavg"):
        result["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["requirement"] = {
        "cpu_batched_augmentation_at_least_10x_pil": (
            all(a["ratio_ours_over_reference"] >= 10 for a in augment.values()) if dev.type == "cpu" else None)}

    print_table(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"\n{m['device_name']} ({m['device']}), {m['cpu_count']} CPUs, torch {m['torch']}, "
          f"{m['torch_threads']} threads, load {m.get('loadavg_start')}")
    print(f"\n(a) augmentation, images/s (reference: PIL + DataLoader, "
          f"{r['args']['num_workers']} workers)")
    print(f"{'pipeline':<12}{'ours':>12}{'ours 1 thr':>12}{'reference':>12}{'ratio':>8}")
    for kind, a in r["augment"].items():
        one = a.get("ours_1_thread", {}).get("images_per_s", float("nan"))
        print(f"{kind:<12}{a['ours']['images_per_s']:>12.0f}{one:>12.0f}"
              f"{a['reference']['images_per_s']:>12.0f}{a['ratio_ours_over_reference']:>8.2f}")
    if r["train"]:
        print(f"\n(b) training, images/s (width {r['args']['width']}, batch {r['args']['batch_size']})")
        print(f"{'setup':<20}{'precision':<20}{'ours':>10}{'reference':>11}{'ratio':>8}")
        for name, rows in r["train"].items():
            for prec, row in rows.items():
                print(f"{name:<20}{prec:<20}{row['ours']['images_per_s']:>10.1f}"
                      f"{row['reference']['images_per_s']:>11.1f}{row['ratio_ours_over_reference']:>8.2f}")


if __name__ == "__main__":
    main()
