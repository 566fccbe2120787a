"""Geometric ops and the blur on whole batches: resized crop (+ flip), padded crop, blur.

All of them move whole contiguous lines (`index_select` of rows of a 2-D view), which
on the CPU is much faster than element-wise gathers, and write in place where they can.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import BLUR_KERNEL, CIFAR_MEAN, CIFAR_STD, PAD, Params
from .scratch import scratch
from .transfer import constant, to_device


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1], as torchvision's ToTensor (k / 255 in float32), in a new
    tensor also when x is float already. (`torch.div(x, 255.0)` gives the same numbers but
    takes a slow mixed-dtype path.)"""
    return x.to(torch.float32, copy=True).div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = constant(CIFAR_MEAN, x.dtype, x.device).view(1, 3, 1, 1)
    std = constant(CIFAR_STD, x.dtype, x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _bilinear_taps(start: torch.Tensor, length: torch.Tensor, size: int, dtype, device):
    """Source indices and weights of torch's bilinear resize (align_corners=False) of the
    segment [start, start + length) to `size` samples, per row: i0, i1, w0, w1 of [n, size].

    This is ATen's `area_pixel_compute_source_index` + `compute_indices_weights_linear`:
    src = scale * (dst + 0.5) - 0.5 clamped at 0, i1 = i0 + 1 except at the last pixel of
    the segment, so pixels outside the box are never read.
    """
    length = to_device(length, device)
    scale = (length.to(dtype) / size).view(-1, 1)
    dst = torch.arange(size, device=device, dtype=dtype).view(1, -1)
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.long()  # src >= 0, so truncation is floor
    w1 = (src - i0).clamp(0, 1)
    i1 = i0 + (i0 < length.view(-1, 1) - 1).long()
    off = to_device(start, device).view(-1, 1)
    return i0 + off, i1 + off, 1 - w1, w1


def _interpolate_lines(lines: torch.Tensor, i0, i1, w0, w1, per_block: int, out: torch.Tensor,
                       name: str) -> torch.Tensor:
    """out = w0 * lines[i0] + w1 * lines[i1], the rows picked per block b of `lines`
    ([blocks * per_block, L]) by i0[b, ...], i1[b, ...]; w0, w1 broadcast against out.

    uint8 lines become k / 255 after picking: the same numbers as converting first, on a
    quarter of the bytes. `name` prefixes the scratch buffers.
    """
    blocks, L = i0.shape[0], lines.shape[1]
    base = torch.arange(blocks, device=lines.device).mul_(per_block).view((blocks,) + (1,) * (i0.dim() - 1))
    second = scratch(name + ".second", out.shape, out.dtype, out.device)
    for index, dst in ((i0, out), (i1, second)):
        rows = (base + index).view(-1)
        flat = dst.view(-1, L)
        if lines.dtype == torch.uint8:
            picked = scratch(name + ".u8", flat.shape, torch.uint8, out.device)
            flat.copy_(torch.index_select(lines, 0, rows, out=picked)).div_(255.0)  # to_float
        else:
            torch.index_select(lines, 0, rows, out=flat)
    return out.mul_(w0).add_(second.mul_(w1))


def resized_crop(x: torch.Tensor, p: Params, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each box (top, left, h, w) and resize it bilinearly to size x size, flip folded in.

    x: uint8 or float [n, c, H, W]; float output (into `out` if given), the same numbers
    for uint8 x and for `to_float(x)`. The arithmetic of torch's bilinear kernel with its
    indices and weights (`_bilinear_taps`): along W, t = cw0 * x[..., c0] + cw1 * x[..., c1];
    then along H, out = rw0 * t[r0] + rw1 * t[r1]. So the result equals torchvision's
    `resized_crop(..., BILINEAR)` (+ `hflip`) on float images up to float rounding.
    Both passes pick whole lines: columns of x (one line = all of x[k, :, :, w]), then
    rows of t (one line = t[k, ch, h, :]), so the second pass writes [n, c, size, size]
    directly.
    """
    n, c, H, W = x.shape
    dev = x.device
    dt = torch.float32 if x.dtype == torch.uint8 else x.dtype
    c0, c1, cw0, cw1 = _bilinear_taps(p["left"], p["w"], size, dt, dev)
    flip = to_device(p["flip"], dev).view(-1, 1)
    c0, c1 = torch.where(flip, c0.flip(1), c0), torch.where(flip, c1.flip(1), c1)
    cw0, cw1 = torch.where(flip, cw0.flip(1), cw0), torch.where(flip, cw1.flip(1), cw1)
    r0, r1, rw0, rw1 = _bilinear_taps(p["top"], p["h"], size, dt, dev)

    cols = scratch("crop.cols", (n, W, c, H), x.dtype, dev)
    cols.copy_(x.permute(0, 3, 1, 2))  # line (k, w) = x[k, :, :, w]
    t = scratch("crop.t", (n, size, c * H), dt, dev)
    _interpolate_lines(cols.view(n * W, c * H), c0, c1, cw0.view(n, size, 1), cw1.view(n, size, 1),
                       W, t, "crop.w")
    rows = scratch("crop.rows", (n, c, H, size), dt, dev)
    rows.copy_(t.view(n, size, c, H).permute(0, 2, 3, 1))  # line (k, ch, h) = t[k, :, ch, h]
    # line (k, ch, i) of the output = row r(k, i) of block (k, ch)
    r0 = r0.view(n, 1, size).expand(n, c, size).reshape(n * c, size)
    r1 = r1.view(n, 1, size).expand(n, c, size).reshape(n * c, size)
    out = torch.empty((n, c, size, size), dtype=dt, device=dev) if out is None else out
    return _interpolate_lines(rows.view(n * c * H, size), r0, r1, rw0.view(n, 1, size, 1),
                              rw1.view(n, 1, size, 1), H, out, "crop.h")


def padded_crop_flip(x: torch.Tensor, p: Params) -> torch.Tensor:
    """RandomCrop with zero padding PAD + horizontal flip, on uint8 (p: dy, dx, flip).

    Rows of the padded image are picked as whole lines (`index_select`), then the columns
    (flip folded in) with one `gather`.
    """
    n, c, H, W = x.shape
    dev = x.device
    Hp, Wp = H + 2 * PAD, W + 2 * PAD
    xp = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = (torch.arange(n * c, device=dev).view(n, c, 1) * Hp + to_device(p["dy"], dev).view(n, 1, 1)
            + torch.arange(H, device=dev).view(1, 1, H))
    out = xp.reshape(n * c * Hp, Wp).index_select(0, rows.view(-1)).view(n, c, H, Wp)
    cols = torch.arange(W, device=dev).view(1, W)
    cols = torch.where(to_device(p["flip"], dev).view(n, 1), (W - 1) - cols, cols) + to_device(p["dx"], dev).view(n, 1)
    return out.gather(3, cols.view(n, 1, 1, W).expand(n, c, H, W))


def _blur_taps(sigma: torch.Tensor, dtype, device) -> list[torch.Tensor]:
    """Per-sample normalised Gaussian taps, BLUR_KERNEL tensors of shape [n, 1, 1, 1].
    Tap j and tap K-1-j are the same number (same exp argument, same divisor)."""
    radius = BLUR_KERNEL // 2
    taps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-(taps.view(1, -1) ** 2) / (2 * to_device(sigma, device, dtype).view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # [n, K]
    return [k[:, i].view(-1, 1, 1, 1) for i in range(BLUR_KERNEL)]


def _blur_pass(x: torch.Tensor, k: list[torch.Tensor], dim: int, side: torch.Tensor,
               out: torch.Tensor) -> torch.Tensor:
    """3-tap filter along dim with reflect padding: out[j] = k0 x[j-1] + k1 x[j] + k2 x[j+1],
    summed in torchvision's order (left, centre, right; one rounding per op).

    k0 == k2, so the left and right products are one tensor `side` = k0 x (a scratch
    buffer shaped like x), read shifted by one each way; at the edges reflection reads
    x[1] and x[L-2] in place of x[-1] and x[L].
    """
    L = x.shape[dim]
    torch.mul(x, k[0], out=side)
    torch.mul(x, k[1], out=out)  # centre first: a + b == b + a, one rounding either way
    out.narrow(dim, 1, L - 1).add_(side.narrow(dim, 0, L - 1))  # left neighbour
    out.narrow(dim, 0, 1).add_(side.narrow(dim, 1, 1))  # reflected left neighbour of 0
    out.narrow(dim, 0, L - 1).add_(side.narrow(dim, 1, L - 1))  # right neighbour
    out.narrow(dim, L - 1, 1).add_(side.narrow(dim, L - 2, 1))  # reflected right of L-1
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3-tap separable Gaussian blur with per-sample sigma and reflect padding.

    Along W, then along H, as torchvision's kernel (an outer product of the 1-D taps) on
    the reflect-padded image; filtering the padded rows along W gives the rows that the
    H pass reflects, so each pass can reflect on its own, with no padded copy.
    """
    if BLUR_KERNEL != 3:
        raise NotImplementedError("gaussian_blur is written for 3 taps")
    k = _blur_taps(sigma, x.dtype, x.device)
    side = scratch("blur.side", x.shape, x.dtype, x.device)
    along_w = _blur_pass(x, k, 3, side, scratch("blur.w", x.shape, x.dtype, x.device))
    return _blur_pass(along_w, k, 2, side, torch.empty_like(x))
