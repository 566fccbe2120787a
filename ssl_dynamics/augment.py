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
    return (f * a).add_((1 - f) * b).clamp_(0, 1)  # (f * a + (1 - f) * b).clamp(0, 1)


def adjust_brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x, f):
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x, f):
    return _blend(x, rgb_to_gray(x), f)


def _is_zero(d: torch.Tensor) -> torch.Tensor:
    """1.0 where d == 0 else 0.0, for d >= 0 (float arithmetic: cheaper than bool masks)."""
    return torch.sign(d).neg_().add_(1)


def _hat(i: torch.Tensor, k: int) -> torch.Tensor:
    """1.0 where the integer-valued float i equals k, else 0.0."""
    return (i - k).abs_().neg_().add_(1).clamp_(min=0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's float hue adjustment: RGB -> HSV, rotate H, HSV -> RGB.

    Numerically the same as torchvision's `_rgb2hsv` / `_hsv2rgb`, with every selection
    written as float arithmetic, which is exact here (a product with a 0/1 mask, sums in
    which all but one term are zero) and much faster on the CPU than bool masks and `where`:
    * torchvision's `where(eqc, 1, maxc)` and `where(eqc, 1, cr)` only matter when
      cr == 0, where any non-zero divisor gives 0; adding the 0/1 mask `eqc` is one.
    * fmod(y, 1) and remainder(y, 1) equal y - floor(y) exactly for y > -1.
    * the one-hot einsum over the six hue sectors is a sum of mask * candidate.
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    cr = maxc - minc
    eqc = _is_zero(cr)  # maxc == minc
    s = cr / (maxc + eqc)
    cr_div = cr.add_(eqc)  # cr is not needed any more
    dr, dg, db = maxc - r, maxc - g, maxc - b
    is_r = _is_zero(dr)  # maxc == r
    g_max = _is_zero(dg)  # maxc == g
    rc, gc, bc = dr.div_(cr_div), dg.div_(cr_div), db.div_(cr_div)
    not_r = 1 - is_r
    is_g = g_max * not_r  # (maxc == g) & (maxc != r)
    is_b = g_max.neg_().add_(1).mul_(not_r)  # (maxc != g) & (maxc != r)
    # h = is_r * (bc - gc) + is_g * (2 + rc - bc) + is_b * (4 + gc - rc), in place
    h = (bc - gc).mul_(is_r)
    h.add_((2.0 + rc).sub_(bc).mul_(is_g)).add_((4.0 + gc).sub_(rc).mul_(is_b))
    h.div_(6.0).add_(1.0)
    h.sub_(h.floor())  # fmod(h, 1): h >= 0
    h.add_(shift.to(x.device).view(-1, 1, 1))
    h.sub_(h.floor())  # remainder(h, 1): h > -1
    v = maxc
    h6 = h.mul_(6.0)
    i = torch.floor(h6)
    f = h6.sub_(i)
    i.sub_(torch.floor(i / 6).mul_(6))  # i % 6 (i in 0..6)
    p = (1 - s).mul_(v).clamp_(0, 1)  # v * (1 - s)
    q = (s * f).neg_().add_(1).mul_(v).clamp_(0, 1)  # v * (1 - s * f)
    t = (1 - f).mul_(s).neg_().add_(1).mul_(v).clamp_(0, 1)  # v * (1 - s * (1 - f))
    m = [_hat(i, k) for k in range(6)]  # one-hot hue sector
    # torchvision's a1 = (v, q, p, p, t, v), a2 = (t, v, v, q, p, p), a3 = (p, p, t, v, v, q):
    # channel = sum over {v, q, p, t} of (mask of the sectors taking it) * it
    out = torch.empty_like(x)
    for ch, (mv, mq, mp, mt) in enumerate((((0, 5), 1, (2, 3), 4), ((1, 2), 3, (4, 5), 0),
                                            ((3, 4), 5, (0, 1), 2))):
        o = out[:, ch]
        torch.add(m[mv[0]], m[mv[1]], out=o)
        o.mul_(v).add_(m[mq] * q).add_((m[mp[0]] + m[mp[1]]).mul_(p)).add_(m[mt] * t)
    return out


JITTER_OPS: tuple[tuple[str, Callable], ...] = (
    ("brightness", adjust_brightness), ("contrast", adjust_contrast),
    ("saturation", adjust_saturation), ("hue", adjust_hue),
)


def color_jitter(x: torch.Tensor, p: Params) -> torch.Tensor:
    """ColorJitter with per-sample factors and per-sample op order, applied where p['jitter'].

    At each of the four positions, the samples whose op there is brightness, contrast or
    saturation run one `_blend(x, base, f)` together, with base = 0, the grey mean or the
    grey image per sample; the samples whose op is hue run `adjust_hue` together. Which
    sample runs what is decided from the CPU parameters (no device synchronisation).
    """
    dev = x.device
    order, active = p["order"].cpu(), p["jitter"].cpu()
    names = [name for name, _ in JITTER_OPS]
    factors = torch.stack([p[name].cpu().to(torch.float32) for name in names[:3]], 1)  # [n, 3]
    hue = p["hue"].cpu()
    x = x.clone()
    for pos in range(4):
        op = torch.where(active, order[:, pos], -1)  # -1: jitter not applied to this sample
        sel = torch.nonzero((op >= 0) & (op < 3)).flatten()
        if len(sel):
            o = op[sel]
            f = factors[sel].gather(1, o.view(-1, 1)).view(-1, 1, 1, 1).to(dev, x.dtype)
            use_mean = (o == 1).to(dev, x.dtype).view(-1, 1, 1, 1)
            use_gray = (o == 2).to(dev, x.dtype).view(-1, 1, 1, 1)
            sel_d = sel.to(dev)
            xs = x.index_select(0, sel_d)
            gray = rgb_to_gray(xs)
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
            base = use_mean * mean + use_gray * gray  # 0 (brightness), mean or grey image
            x.index_copy_(0, sel_d, _blend(xs, base, f))
        sel = torch.nonzero(op == 3).flatten()
        if len(sel):
            sel_d = sel.to(dev)
            x.index_copy_(0, sel_d, adjust_hue(x.index_select(0, sel_d), hue[sel].to(dev)))
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3-tap separable Gaussian blur with per-sample sigma and reflect padding."""
    radius = BLUR_KERNEL // 2
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.to(x.device, x.dtype).view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [n, K]
    xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    h, w = x.shape[-2:]
    k = [k[:, i].view(-1, 1, 1, 1) for i in range(BLUR_KERNEL)]
    # tap sums written as a chain (Python's sum() would add a leading 0: same numbers, one
    # more pass over the batch)
    out = k[0] * xp[..., :, 0:w]
    for i in range(1, BLUR_KERNEL):
        out.add_(k[i] * xp[..., :, i:i + w])
    res = k[0] * out[..., 0:h, :]
    for i in range(1, BLUR_KERNEL):
        res.add_(k[i] * out[..., i:i + h, :])
    return res


def _bilinear_taps(start: torch.Tensor, length: torch.Tensor, size: int, dtype, device):
    """Source indices and weights of torch's bilinear resize (align_corners=False) of the
    segment [start, start + length) to `size` samples, per row: i0, i1, w0, w1 of [n, size].

    This is ATen's `area_pixel_compute_source_index` + `compute_indices_weights_linear`:
    src = scale * (dst + 0.5) - 0.5 clamped at 0, i1 = i0 + 1 except at the last pixel of
    the segment, so pixels outside the box are never read.
    """
    length = length.to(device)
    scale = (length.to(dtype) / size).view(-1, 1)
    dst = torch.arange(size, device=device, dtype=dtype).view(1, -1)
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.long()  # src >= 0, so truncation is floor
    w1 = (src - i0).clamp(0, 1)
    i1 = i0 + (i0 < length.view(-1, 1) - 1).long()
    off = start.to(device).view(-1, 1)
    return i0 + off, i1 + off, 1 - w1, w1


def resized_crop(x: torch.Tensor, p: Params, size: int) -> torch.Tensor:
    """Crop each box (top, left, h, w) and resize it bilinearly to size x size, flip folded in.

    The arithmetic of torch's bilinear kernel with its indices and weights
    (`_bilinear_taps`): along W, t = cw0 * x[..., c0] + cw1 * x[..., c1]; then along H,
    out = rw0 * t[r0] + rw1 * t[r1]. So the result equals torchvision's
    `resized_crop(..., BILINEAR)` (+ `hflip`) on float images up to float rounding.
    Columns and rows are picked as whole contiguous lines with `index_select` on
    transposed copies (much faster than element-wise gathers).
    """
    n, c, H, W = x.shape
    dev, dt = x.device, x.dtype
    c0, c1, cw0, cw1 = _bilinear_taps(p["left"], p["w"], size, dt, dev)
    flip = p["flip"].to(dev).view(-1, 1)
    c0, c1 = torch.where(flip, c0.flip(1), c0), torch.where(flip, c1.flip(1), c1)
    cw0, cw1 = torch.where(flip, cw0.flip(1), cw0), torch.where(flip, cw1.flip(1), cw1)
    r0, r1, rw0, rw1 = _bilinear_taps(p["top"], p["h"], size, dt, dev)

    def pick(lines, i, length):  # lines [n * length, L] -> [n, size, L]
        return lines.index_select(0, ((torch.arange(n, device=dev) * length).view(n, 1) + i).view(-1))

    cols = x.permute(0, 3, 1, 2).reshape(n * W, c * H)  # line (k, w) = x[k, :, :, w]
    t = pick(cols, c0, W).view(n, size, c * H).mul_(cw0.view(n, size, 1))
    t.add_(pick(cols, c1, W).view(n, size, c * H).mul_(cw1.view(n, size, 1)))  # [n, size_w, c, H]
    rows = t.view(n, size, c, H).permute(0, 3, 2, 1).reshape(n * H, c * size)  # [n, H, c, size_w]
    out = pick(rows, r0, H).view(n, size, c * size).mul_(rw0.view(n, size, 1))
    out.add_(pick(rows, r1, H).view(n, size, c * size).mul_(rw1.view(n, size, 1)))  # [n, size_h, c, size_w]
    return out.view(n, size, c, size).permute(0, 2, 1, 3).contiguous()


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
    sel = torch.nonzero(p["gray"].cpu()).flatten().to(x.device)  # RandomGrayscale
    if len(sel):
        out.index_copy_(0, sel, rgb_to_gray(out.index_select(0, sel)).expand(-1, 3, -1, -1))
    return gaussian_blur(out, p["sigma"])


def apply_supervised(x: torch.Tensor, p: Params) -> torch.Tensor:
    """RandomCrop with zero padding + horizontal flip on uint8, then normalize.

    Rows of the padded image are picked as whole lines (`index_select`), then the columns
    (flip folded in) with one `gather`.
    """
    n, c, H, W = x.shape
    dev = x.device
    Hp, Wp = H + 2 * PAD, W + 2 * PAD
    xp = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = (torch.arange(n * c, device=dev).view(n, c, 1) * Hp + p["dy"].to(dev).view(n, 1, 1)
            + torch.arange(H, device=dev).view(1, 1, H))
    out = xp.reshape(n * c * Hp, Wp).index_select(0, rows.view(-1)).view(n, c, H, Wp)
    cols = torch.arange(W, device=dev).view(1, W)
    cols = torch.where(p["flip"].to(dev).view(n, 1), (W - 1) - cols, cols) + p["dx"].to(dev).view(n, 1)
    out = out.gather(3, cols.view(n, 1, 1, W).expand(n, c, H, W))
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
