"""Colour ops on whole batches: ColorJitter (per-sample factors, per-sample op order),
grayscale, on float images in [0, 1].

Every op gives torchvision's float numbers (tests/test_augment.py). Selections are written
as arithmetic that is exact: `lerp(a, b, w)` with w exactly 0 or 1 returns a or b bit for
bit, and `torch.eq(..., out=float)` gives 0/1 masks; on the CPU both are much cheaper than
bool masks and `where`. Large temporaries are reused in place where the order of the
arithmetic allows it (fresh CPU buffers cost page faults on every call).
"""
from __future__ import annotations

from typing import Callable

import torch

from .params import GRAY_WEIGHTS, Params
from .scratch import scratch
from .transfer import constant, to_device


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale, [n, 1, H, W]: w0 r + w1 g + w2 b summed left to right
    (the numbers of `(x * w).sum(dim=1)`, without its [n, 3, H, W] temporary)."""
    r, g, b = x.unbind(1)
    out = torch.mul(r, GRAY_WEIGHTS[0])
    tmp = torch.mul(g, GRAY_WEIGHTS[1])
    out.add_(tmp).add_(torch.mul(b, GRAY_WEIGHTS[2], out=tmp))
    return out.unsqueeze(1)


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


def _rgb_to_hsv(x: torch.Tensor):
    """torchvision's `_rgb2hsv` numbers: planes h, s, v of [n, H, W] and a spare plane.

    torchvision's `where(eqc, 1, maxc)` and `where(eqc, 1, cr)` only matter when cr == 0,
    where any non-zero divisor gives 0: adding the 0/1 mask eqc is one. Its three hue
    candidates are selected with 0/1 lerps (exact).
    """
    v = x.amax(dim=1)
    cr = x.amin(dim=1)
    torch.sub(v, cr, out=cr)  # maxc - minc
    eqc = torch.eq(cr, 0, out=torch.empty_like(cr))  # grey pixel
    s = torch.add(v, eqc)
    torch.div(cr, s, out=s)
    cr.add_(eqc)
    d = v.unsqueeze(1) - x  # maxc - r, maxc - g, maxc - b
    is_r = torch.eq(d[:, 0], 0, out=eqc)  # maxc == r
    is_g = torch.eq(d[:, 1], 0, out=torch.empty_like(cr))  # maxc == g
    rc, gc, bc = d.div_(cr.unsqueeze(1)).unbind(1)
    h = torch.add(gc, 4.0, out=cr).sub_(rc)  # max is b: 4 + gc - rc
    h.lerp_(rc.add_(2.0).sub_(bc), is_g)  # max is g (and not r): 2 + rc - bc
    h.lerp_(bc.sub_(gc), is_r)  # max is r: bc - gc
    h.div_(6.0).add_(1.0).frac_()  # fmod(h, 1); h > 0 here, where frac is h - floor(h)
    return h, s, v, is_g


# Output channel c of hue sector i (0..5) is v (the maximum), the middle value or p (the
# minimum): torchvision's tables a1 = (v, q, p, p, t, v), a2 = (t, v, v, q, p, p),
# a3 = (p, p, t, v, v, q) for R, G, B. role_c(i) = sign_c * ((i - centre_c)^2 - 2.25) is
# 0 exactly where the channel takes the middle value, >= 1 where it takes v and <= -1
# where it takes p; the squares of these half-integers are exact in float.
HUE_ROLE_PARABOLAS = ((2.5, 1.0), (1.5, -1.0), (3.5, -1.0))  # (centre, sign) for R, G, B


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor, spare: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """torchvision's `_hsv2rgb` numbers into out [n, 3, H, W]; h in [0, 1] is overwritten.

    With i = floor(6h) and f = 6h - i: p = v (1 - s), the middle value is q = v (1 - s f)
    in odd sectors and t = v (1 - s (1 - f)) in even ones. f and 1 - f are |6h - e| with
    e the odd integer of {i, i + 1} (each is the rounded value of the same real), so only
    the middle value needed is computed. Since p <= middle <= v, each channel is
    clamp(middle + role, p, v): exactly p, the middle value or v (all three channels in
    one pass, out first holding the roles). Sector 6 (h == 1) is sector 0 with f = 0,
    where t == p: the parabolas need no wrap-around.
    """
    h6 = h.mul_(6.0)
    i = torch.floor(h6, out=spare)
    g = torch.mul(h6, 0.5).floor_().mul_(2.0).add_(1.0)  # e, the odd integer of {i, i + 1}
    g.sub_(h6).abs_()  # f in odd sectors, 1 - f in even ones
    p = torch.neg(s).add_(1.0).mul_(v).clamp_(0, 1)  # v (1 - s)
    mid = g.mul_(s).neg_().add_(1.0).mul_(v).clamp_(0, 1)  # q (odd sectors) or t (even)
    centre, sign = (constant(c, v.dtype, v.device).view(1, 3, 1, 1)
                    for c in zip(*HUE_ROLE_PARABOLAS))
    role = torch.sub(i.unsqueeze(1), centre, out=out).square_().sub_(2.25).mul_(sign)
    return role.add_(mid.unsqueeze(1)).clamp_(min=p.unsqueeze(1), max=v.unsqueeze(1))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's float hue adjustment: RGB -> HSV, rotate H by shift, HSV -> RGB.
    `out` may be x itself (x is read only before out is written)."""
    h, s, v, spare = _rgb_to_hsv(x)
    h.add_(to_device(shift, x.device).view(-1, 1, 1))
    h.sub_(torch.floor(h, out=spare))  # remainder(h, 1): h > -1
    return _hsv_to_rgb(h, s, v, spare, torch.empty_like(x) if out is None else out)


JITTER_OPS: tuple[tuple[str, Callable], ...] = (
    ("brightness", adjust_brightness), ("contrast", adjust_contrast),
    ("saturation", adjust_saturation), ("hue", adjust_hue),
)


NO_JITTER = len(JITTER_OPS)  # op code of the samples without jitter


def _scale_(x: torch.Tensor, f: torch.Tensor, offset: torch.Tensor | None = None) -> None:
    """x = clamp(f x + offset, 0, 1) in place, per-sample f: torchvision's blend
    f x + (1 - f) base with offset = (1 - f) base (base 0 for brightness: no offset)."""
    x.mul_(f.view(-1, 1, 1, 1))
    if offset is not None:
        x.add_(offset)
    x.clamp_(0, 1)


def _apply_op_(x: torch.Tensor, op: int, p: Params, samples: torch.Tensor) -> None:
    """Jitter op number `op` in place on x, the rows of `samples` (indices into p)."""
    name = JITTER_OPS[op][0]
    value = to_device(p[name][samples], x.device)
    if name != "hue":
        value = value.to(x.dtype)  # blend factors in the images' dtype
    if name == "brightness":
        _scale_(x, value)
    elif name == "contrast":
        mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
        _scale_(x, value, mean.mul_((1 - value).view(-1, 1, 1, 1)))
    elif name == "saturation":
        _scale_(x, value, rgb_to_gray(x).mul_((1 - value).view(-1, 1, 1, 1)))
    else:
        adjust_hue(x, value, out=x)


def _jitter_ops(p: Params) -> torch.Tensor:
    """[n, 4] op codes in each sample's order; NO_JITTER where p['jitter'] is off."""
    return torch.where(p["jitter"].cpu().view(-1, 1), p["order"].cpu(), NO_JITTER)


def jitter_first_rows(p: Params) -> torch.Tensor:
    """Samples grouped by their first jitter op: the row order `jitter_rows` starts from
    without a copy (the crop can write its views in this order)."""
    return torch.argsort(_jitter_ops(p)[:, 0], stable=True)


def jitter_rows(x: torch.Tensor, p: Params, samples: torch.Tensor, out: torch.Tensor,
                overwrite: bool = False) -> torch.Tensor:
    """ColorJitter on x, whose row k holds sample samples[k]; the result goes to `out` in
    sample order. x is overwritten only if `overwrite`.

    Before each of the four positions the rows are reordered (one `index_select`, unless
    they already are) so that the samples running the same op there are contiguous; each
    op then runs once, in place, on its slice. The last step puts the rows back in sample
    order. Which sample runs what is decided from the CPU parameters (no device
    synchronisation).
    """
    n, dev = len(x), x.device
    ops = _jitter_ops(p)
    cur, copies = x, 0
    for pos in range(ops.shape[1]):
        op = ops[samples, pos]
        regroup = torch.argsort(op, stable=True)
        if not overwrite or not torch.equal(regroup, torch.arange(n)):
            buf = scratch(f"jitter.{copies % 2}", x.shape, x.dtype, dev)  # not cur's buffer
            cur = torch.index_select(cur, 0, to_device(regroup, dev), out=buf)
            samples, op, copies, overwrite = samples[regroup], op[regroup], copies + 1, True
        bounds = torch.bincount(op, minlength=NO_JITTER + 1).cumsum(0).tolist()
        for code in range(NO_JITTER):
            start, stop = ([0] + bounds)[code], bounds[code]
            if stop > start:
                _apply_op_(cur[start:stop], code, p, samples[start:stop])
    return torch.index_select(cur, 0, to_device(torch.argsort(samples), dev), out=out)


def color_jitter(x: torch.Tensor, p: Params, out: torch.Tensor | None = None) -> torch.Tensor:
    """ColorJitter with per-sample factors and per-sample op order, where p['jitter'];
    x is left alone, the result goes to `out` (new if not given). See `jitter_rows`."""
    out = torch.empty_like(x) if out is None else out
    return jitter_rows(x, p, torch.arange(len(x)), out)


def random_grayscale_(x: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale in place: the samples where `gray` get their grey image on all channels."""
    sel = torch.nonzero(gray.cpu()).flatten()  # on the CPU: no wait for the device
    if len(sel):
        sel = to_device(sel, x.device)
        x.index_copy_(0, sel, rgb_to_gray(x.index_select(0, sel)).expand(-1, 3, -1, -1))
    return x
