"""Batched augmentation pipelines with per-sample parameters from an explicit generator.

Each pipeline has two halves:

* `sample(n, generator, size)` draws every random parameter of n views on the CPU from a
  `torch.Generator` (`params.py`). Drawing on the CPU makes the parameters identical
  whatever device the images live on, so a (seed, epoch, batch) key fixes every view
  everywhere.
* `apply(x, params)` is a pure tensor function: uint8 images [n, 3, H, W] on any device
  plus the parameters give float views (`geometry.py`, `color.py`). Phase two stores the
  parameters of its bank and can re-apply them.

The pipelines follow docs/science.md (torchvision's semantics, re-implemented on whole batches):
`simclr`, `supervised` and `none`.
"""
from __future__ import annotations

import torch

from ..errors import UserError
# the package's public names: callers import them from ssl_dynamics.augment
from .color import (  # noqa: F401
    JITTER_OPS, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
    color_jitter, jitter_first_rows, jitter_rows, random_grayscale_, rgb_to_gray)
from .geometry import gaussian_blur, normalize, padded_crop_flip, resized_crop, to_float
from .params import (  # noqa: F401
    BLUR_KERNEL, BLUR_SIGMA, CIFAR_MEAN, CIFAR_STD, CROP_ATTEMPTS, CROP_RATIO, CROP_SCALE, FLIP_P,
    GRAY_P, GRAY_WEIGHTS, HUE_STRENGTH, JITTER_P, JITTER_STRENGTH, PAD, Params, make_generator,
    sample_none, sample_resized_crop, sample_simclr, sample_supervised)
from .scratch import scratch
from .transfer import to_device


# Views per pass through the SimCLR ops on the CPU: bounds the scratch memory there. A GPU
# takes any batch whole: each pass costs ~800 kernel launches whatever its size.
SIMCLR_CHUNK = 512


def apply_simclr(x: torch.Tensor, p: Params) -> torch.Tensor:
    """RandomResizedCrop + flip, ColorJitter (p = 0.8), RandomGrayscale, GaussianBlur.
    Every view depends only on its image and parameters, so large batches run in chunks."""
    if len(x) > SIMCLR_CHUNK and x.device.type == "cpu":
        return torch.cat([apply_simclr(x[i:i + SIMCLR_CHUNK], index_params(p, slice(i, i + SIMCLR_CHUNK)))
                          for i in range(0, len(x), SIMCLR_CHUNK)])
    size = x.shape[-1]
    x = x if x.dtype == torch.uint8 else to_float(x)  # the crop converts uint8 itself
    shape, dev = (len(x), 3, size, size), x.device
    # the crop writes its views straight into the row order the jitter starts from
    rows = jitter_first_rows(p)
    crop = resized_crop(x.index_select(0, to_device(rows, dev)), index_params(p, rows), size,
                        out=scratch("simclr.crop", shape, torch.float32, dev))
    out = jitter_rows(crop, p, rows, scratch("simclr.jitter", shape, torch.float32, dev), overwrite=True)
    out = random_grayscale_(out, p["gray"])
    return gaussian_blur(out, p["sigma"])  # a new tensor


def apply_supervised(x: torch.Tensor, p: Params) -> torch.Tensor:
    """RandomCrop with zero padding + horizontal flip on uint8, then normalize."""
    return normalize(to_float(padded_crop_flip(x, p)))


def apply_none(x: torch.Tensor, p: Params) -> torch.Tensor:
    """ToTensor alone: [0, 1], no normalization (the reference trained random_labels so)."""
    return to_float(x)


def apply_normalize(x: torch.Tensor, p: Params) -> torch.Tensor:
    """ToTensor + Normalize, no randomness (what runs of schema 1 called "none")."""
    return normalize(to_float(x))


DETERMINISTIC = ("none", "normalize")  # pipelines without randomness: one replay is all of them
SAMPLERS = {"simclr": sample_simclr, "supervised": sample_supervised, "none": sample_none,
            "normalize": sample_none}
APPLIERS = {"simclr": apply_simclr, "supervised": apply_supervised, "none": apply_none,
            "normalize": apply_normalize}


def check_pipeline(kind: str) -> None:
    if kind not in SAMPLERS:
        raise UserError(f"unknown augmentation {kind!r}: use simclr, supervised, none or normalize")


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
