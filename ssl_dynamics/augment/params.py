"""Parameter sampling: every random number of a view, drawn on the CPU from a generator.

Drawing on the CPU makes the parameters identical whatever device the images live on, so
a (seed, epoch, batch) key fixes every view everywhere. The order and kind of the draws
are part of the format of stored runs (banks and checkpoints re-create views from keys):
do not change them.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch

Params = dict[str, torch.Tensor]

# CIFAR-10 channel statistics used by the thesis's supervised pipeline (Appendix A).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# SimCLR pipeline constants (Appendix A / torchvision defaults they rely on).
CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop default area range
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop default aspect-ratio range
CROP_ATTEMPTS = 10  # torchvision tries 10 boxes before falling back to a central crop
FLIP_P = 0.5  # RandomHorizontalFlip default
JITTER_P = 0.8  # RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8)
JITTER_STRENGTH = 0.8  # brightness/contrast/saturation factors uniform in [0.2, 1.8]
HUE_STRENGTH = 0.2  # hue shift uniform in [-0.2, 0.2] (fraction of the colour wheel)
GRAY_P = 0.2  # RandomGrayscale(p=0.2)
BLUR_SIGMA = (0.1, 2.0)  # GaussianBlur sigma range
BLUR_KERNEL = 3  # int(0.1 * 32) = 3 taps
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2)
PAD = 4  # supervised RandomCrop(32, padding=4), zero padding


def make_generator(*keys: int | str) -> torch.Generator:
    """A CPU generator seeded from a tuple of keys, e.g. (seed, epoch, batch, "views").

    Keys go through numpy's SeedSequence, so nearby tuples give unrelated streams, with one
    exception: SeedSequence pads short entropy with zeros, so (1, 2) and (1, 2, 0) give the
    same stream. Every family of keys therefore carries its own string tag ("views",
    "shuffle", "init", "bank"), which no other family has at that position. Strings are
    mapped to integers by CRC-32 (stable across runs and platforms).
    """
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    if any(i < 0 for i in ints):
        raise ValueError(f"generator keys must be non-negative, got {keys}")
    state = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- sampling

def sample_resized_crop(n: int, g: torch.Generator, height: int, width: int,
                        scale=CROP_SCALE, ratio=CROP_RATIO) -> Params:
    """Vectorised torchvision RandomResizedCrop.get_params: boxes (top, left, h, w)."""
    area = height * width
    target = area * _uniform(n * CROP_ATTEMPTS, *scale, g).view(n, CROP_ATTEMPTS)
    log_r = _uniform(n * CROP_ATTEMPTS, math.log(ratio[0]), math.log(ratio[1]), g)
    aspect = torch.exp(log_r).view(n, CROP_ATTEMPTS)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)  # index of the first valid attempt
    any_ok = ok.any(dim=1)
    rows = torch.arange(n)
    w, h = w[rows, first], h[rows, first]
    # Fallback (no valid attempt): torchvision's central crop at the clamped ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u_top, u_left = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    top = torch.floor(u_top * (height - h + 1)).long()
    left = torch.floor(u_left * (width - w + 1)).long()
    top = torch.where(any_ok, top, (height - h) // 2)
    left = torch.where(any_ok, left, (width - w) // 2)
    return {"top": top, "left": left, "h": h, "w": w}


def sample_simclr(n: int, g: torch.Generator, size: int) -> Params:
    p = sample_resized_crop(n, g, size, size)
    p["flip"] = torch.rand(n, generator=g) < FLIP_P
    p["jitter"] = torch.rand(n, generator=g) < JITTER_P
    lo, hi = max(0.0, 1 - JITTER_STRENGTH), 1 + JITTER_STRENGTH
    p["brightness"] = _uniform(n, lo, hi, g).float()
    p["contrast"] = _uniform(n, lo, hi, g).float()
    p["saturation"] = _uniform(n, lo, hi, g).float()
    p["hue"] = _uniform(n, -HUE_STRENGTH, HUE_STRENGTH, g).float()
    # torchvision applies the four jitter ops in a fresh random order per call
    p["order"] = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
    p["gray"] = torch.rand(n, generator=g) < GRAY_P
    p["sigma"] = _uniform(n, *BLUR_SIGMA, g).float()
    return p


def sample_supervised(n: int, g: torch.Generator, size: int) -> Params:
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    return {"dy": offsets[:, 0], "dx": offsets[:, 1], "flip": torch.rand(n, generator=g) < FLIP_P}


def sample_none(n: int, g: torch.Generator, size: int) -> Params:
    return {}
