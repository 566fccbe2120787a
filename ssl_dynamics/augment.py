"""Batched augmentation pipelines with per-sample parameters from an explicit generator.

Each pipeline has two halves:

* `sample(n, generator, size)` draws every random parameter of n views on the CPU from a
  `torch.Generator`. Drawing on the CPU makes the parameters identical whatever device
  the images live on, so a (seed, epoch, batch) key fixes every view everywhere.
* `apply(x, params)` is a pure tensor function: uint8 images [n, 3, H, W] on any device
  plus the parameters give float views. Phase two stores the parameters of its bank and
  can re-apply them.

The pipelines follow SPEC.md (torchvision's semantics, re-implemented on whole batches):
`simclr`, `supervised` and `none`.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

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

    Keys go through numpy's SeedSequence, so nearby tuples give unrelated streams.
    Strings are mapped to integers by CRC-32 (stable across runs and platforms).
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


# --------------------------------------------------------------------------- applying

def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def adjust_brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x, f):
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x, f):
    return _blend(x, rgb_to_gray(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's float hue adjustment: RGB -> HSV, rotate H, HSV -> RGB."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    a4 = torch.stack((a1, a2, a3), dim=1)  # [n, 3, 6, H, W]
    return torch.einsum("nijhw,njhw->nihw", a4, mask.to(x.dtype))


JITTER_OPS: tuple[tuple[str, Callable], ...] = (
    ("brightness", adjust_brightness), ("contrast", adjust_contrast),
    ("saturation", adjust_saturation), ("hue", adjust_hue),
)


def color_jitter(x: torch.Tensor, p: Params) -> torch.Tensor:
    """ColorJitter with per-sample factors and per-sample op order, applied where p['jitter']."""
    order = p["order"].to(x.device)
    active = p["jitter"].to(x.device)
    for pos in range(4):
        for op_idx, (name, fn) in enumerate(JITTER_OPS):
            sel = torch.nonzero(active & (order[:, pos] == op_idx)).flatten()
            if len(sel):
                x = x.index_copy(0, sel, fn(x[sel], p[name].to(x.device)[sel]))
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3-tap separable Gaussian blur with per-sample sigma and reflect padding."""
    radius = BLUR_KERNEL // 2
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.to(x.device, x.dtype).view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [n, K]
    xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    h, w = x.shape[-2:]
    out = sum(k[:, i].view(-1, 1, 1, 1) * xp[..., :, i:i + w] for i in range(BLUR_KERNEL))
    out = sum(k[:, i].view(-1, 1, 1, 1) * out[..., i:i + h, :] for i in range(BLUR_KERNEL))
    return out


def resized_crop(x: torch.Tensor, p: Params, size: int) -> torch.Tensor:
    """Bilinear resize of each box to size x size (flip folded in), one grid_sample call.

    The affine map sends output pixel centres to the box's pixel centres exactly as
    torch's bilinear resize with align_corners=False does; border padding reproduces its
    clamping at the box edges.
    """
    n, _, H, W = x.shape
    dev, dt = x.device, x.dtype
    top, left = p["top"].to(dev, dt), p["left"].to(dev, dt)
    h, w = p["h"].to(dev, dt), p["w"].to(dev, dt)
    sx = w / W * torch.where(p["flip"].to(dev), -1.0, 1.0).to(dt)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * top + h) / H - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


def apply_simclr(x: torch.Tensor, p: Params) -> torch.Tensor:
    size = x.shape[-1]
    out = resized_crop(to_float(x), p, size)
    out = color_jitter(out, p)
    gray = p["gray"].to(x.device).view(-1, 1, 1, 1)
    out = torch.where(gray, rgb_to_gray(out).expand_as(out), out)
    return gaussian_blur(out, p["sigma"])


def apply_supervised(x: torch.Tensor, p: Params) -> torch.Tensor:
    """RandomCrop with zero padding + horizontal flip as one gather on uint8, then normalize."""
    n, _, H, W = x.shape
    dev = x.device
    xp = F.pad(x, (PAD, PAD, PAD, PAD))
    ar_h, ar_w = torch.arange(H, device=dev), torch.arange(W, device=dev)
    rows = p["dy"].to(dev).view(-1, 1) + ar_h.view(1, -1)
    cols_fwd = ar_w.view(1, -1)
    cols = torch.where(p["flip"].to(dev).view(-1, 1), (W - 1) - cols_fwd, cols_fwd)
    cols = p["dx"].to(dev).view(-1, 1) + cols
    out = xp[torch.arange(n, device=dev).view(-1, 1, 1, 1), torch.arange(3, device=dev).view(1, 3, 1, 1),
             rows.view(n, 1, H, 1), cols.view(n, 1, 1, W)]
    return normalize(to_float(out))


def apply_none(x: torch.Tensor, p: Params) -> torch.Tensor:
    return normalize(to_float(x))


SAMPLERS = {"simclr": sample_simclr, "supervised": sample_supervised, "none": sample_none}
APPLIERS = {"simclr": apply_simclr, "supervised": apply_supervised, "none": apply_none}


def check_pipeline(kind: str) -> None:
    if kind not in SAMPLERS:
        raise UserError(f"unknown augmentation {kind!r}: use simclr, supervised or none")


def sample_params(kind: str, n: int, g: torch.Generator, size: int = 32) -> Params:
    check_pipeline(kind)
    return SAMPLERS[kind](n, g, size)


def apply_params(kind: str, x: torch.Tensor, params: Params) -> torch.Tensor:
    check_pipeline(kind)
    return APPLIERS[kind](x, params)


def augment(kind: str, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, Params]:
    """Draw parameters for every image of x (uint8, any device) and apply them."""
    params = sample_params(kind, len(x), g, x.shape[-1])
    return apply_params(kind, x, params), params


def index_params(params: Params, idx: torch.Tensor | slice) -> Params:
    return {k: v[idx] for k, v in params.items()}


def concat_params(chunks: list[Params]) -> Params:
    if not chunks:
        return {}
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
