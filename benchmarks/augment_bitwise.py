"""Do the augmentation pipelines still compute the same numbers as an earlier revision?

Loads `ssl_dynamics/augment.py` as it was at a git revision (default 8f527f8, the last
single-file version) next to the current package, draws parameters with both (they must
be equal: stored runs re-create views from generator keys) and compares
`apply_params(kind, ...)` bit for bit on the same uint8 images, with 1 and 2 threads.
The images include hard cases for the hue (grey, few levels, flat) and some parameters
are forced to the extremes (every sample jittered, hue shifts of +-0.5 and -1e-8).

    python benchmarks/augment_bitwise.py --images 4096 [--rev 8f527f8]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import torch

from ssl_dynamics import augment as new

ROOT = Path(__file__).resolve().parents[1]


def load_revision(rev: str) -> types.ModuleType:
    src = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{rev}:ssl_dynamics/augment.py"], text=True)
    mod = types.ModuleType("ssl_dynamics._augment_at_" + rev)
    mod.__package__ = "ssl_dynamics"  # for its `from .errors import UserError`
    exec(compile(src, f"{rev}:ssl_dynamics/augment.py", "exec"), mod.__dict__)
    return mod


def images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    k = n // 8
    x[:k] = x[:k, :1]  # grey
    x[k:2 * k] = torch.randint(0, 4, (k, 3, 32, 32), generator=g, dtype=torch.uint8) * 85  # ties
    x[2 * k:3 * k] = x[2 * k:3 * k, :, :1, :1]  # flat colour
    x[3 * k], x[3 * k + 1] = 0, 255
    return x


def stress(p: dict, variant: int) -> dict:
    """Variant 1: every sample jittered; 2: extreme hue shifts on a third of the samples."""
    p = dict(p)
    if variant == 1:
        p["jitter"] = torch.ones_like(p["jitter"])
    if variant == 2:
        hue = p["hue"].clone()
        idx = torch.arange(0, len(hue), 3)
        hue[idx] = torch.tensor([-0.5, 0.5, -1e-7, -1e-8])[torch.arange(len(idx)) % 4]
        p["hue"] = hue
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--rev", default="8f527f8")
    args = ap.parse_args(argv)
    old = load_revision(args.rev)
    differing = 0
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kind in ("simclr", "supervised", "none"):
            for variant in range(3 if kind == "simclr" else 1):
                x8 = images(args.images, seed=variant)
                key = (variant, kind, "bitwise")
                p, p_old = new.sample_params(kind, len(x8), new.make_generator(*key)), \
                    old.sample_params(kind, len(x8), old.make_generator(*key))
                same_params = p.keys() == p_old.keys() and all(torch.equal(p[k], p_old[k]) for k in p)
                p = stress(p, variant)
                a, b = old.apply_params(kind, x8, p), new.apply_params(kind, x8, p)
                n_diff = int((a != b).sum())
                differing += n_diff + (not same_params)
                print(f"threads {threads} {kind:<10} variant {variant}: params equal {same_params}, "
                      f"{len(x8)} views, {n_diff} values differ, max |diff| {(a - b).abs().max().item():.3g}")
    print("bit-identical" if differing == 0 else "DIFFERENT")
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
