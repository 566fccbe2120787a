"""Activation maximization of single channels (docs/science.md, "Representations", Fig. 5.4).

For block b in 1..4 the sub-network is the stem (conv, BN, ReLU) followed by stages 1..b of
the CIFAR ResNet-18 (`CifarResNet18.forward_to(x, b)`). The input is a patch of
`RECEPTIVE_FIELDS[b]` pixels a side; image c of a batch maximizes

    f_c(x) = A(x)[channels[c], p, p] - l2 * ||x||^2,      p = central_position(b),

by plain gradient ascent (x <- x + lr * grad f_c) from uniform noise in [0, 1). The patch
lives in the network's input space: for a setup whose inputs are normalized it is a patch of
normalized pixels, and the U[0, 1) start is drawn in that space.

All channels of one call are optimized together as one batch. The network runs in eval mode,
so BatchNorm uses its running statistics and the images of the batch never interact: the
gradient of the summed objective w.r.t. image c is the gradient of f_c alone, and a batched
run gives the same images as running each channel on its own (up to float rounding). The
starting noise of a channel is drawn from a generator seeded by (seed, channel), so it does
not depend on which other channels are in the batch either.

Dead channels: a channel whose central activation is not > 0 at the start has zero gradient
through the final ReLU. Its start is redrawn (only that channel's) up to `max_redraws` times;
a channel that never becomes positive is "dead": it is not optimized, its `ok` entry is
False, its `redraws` entry equals `max_redraws`, and its image is filled with NaN (so it
can never be mistaken for a real pseudo-image; `sigmoid_normalize` keeps it NaN and
matplotlib's imshow leaves NaN pixels blank). The thesis's "give up after a timeout" is this
redraw count, which is deterministic where a wall-clock timeout is not.

On a GPU the redraw checks and the ascent run in fp32 proper (`exact_fp32`: no TF32 in
cuDNN's convolutions) with cuDNN's deterministic kernels, so a rerun gives the same images
(`_exact`, the flags restored afterwards).

Patch sizes, stride and the central position: `receptive.py`.
"""
from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .evaluate import exact_fp32
from .receptive import (BLOCK_STRIDES, BLOCKS, RECEPTIVE_FIELDS, TRUE_RECEPTIVE_FIELDS,  # noqa: F401
                        check_block, central_position, derive_receptive_field, true_window)

# The thesis: gradient ascent with step 1 for 1000 iterations (docs/science.md).
STEPS = 1000
STEP_SIZE = 1.0
# docs/science.md: the objective subtracts 0.01 * ||x||^2 (the reference code's L2 term).
L2 = 0.01
# Redraws of a start whose central activation is not > 0 before the channel counts as dead
# (the thesis's "timeout", as a count so that results are reproducible): a channel that fires
# from a fraction q >= 5% of uniform starts is wrongly called dead with probability
# (1 - q)^101 < 0.6%, and a dead channel costs 101 cheap forward passes of one patch.
MAX_REDRAWS = 100


def _cifar_backbone(model: nn.Module) -> nn.Module:
    """Accept a CifarResNet18 or a Network wrapping one."""
    if hasattr(model, "forward_to"):
        return model
    inner = getattr(model, "backbone", None)
    if inner is not None and hasattr(inner, "forward_to"):
        return inner
    raise ValueError(
        f"activation maximization needs a CifarResNet18 backbone (with forward_to), got "
        f"{type(model).__name__}"
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether `a` and `b` are one device: torch.device("cuda") != torch.device("cuda:0"),
    but "cuda" means the current CUDA device (cuda:0 unless torch was told otherwise)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and _device_index(a) == _device_index(b)


def _device_index(d: torch.device) -> int:
    if d.index is not None:
        return d.index
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.current_device()
    return 0  # cpu (one device), or cuda on a machine without one: its default index


@contextmanager
def _exact(device: torch.device | str) -> Iterator[None]:
    """fp32 without TF32 (`exact_fp32`) and cuDNN's deterministic kernels, the global flags
    restored afterwards. cudnn.deterministic is set on any device: it changes nothing on a
    CPU, and that keeps the context visible to a CPU test."""
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        with exact_fp32(str(device), False):
            yield
    finally:
        torch.backends.cudnn.deterministic = before


def _channel_generator(seed: int, channel: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, channel): the start of a channel does not
    depend on the other channels of the batch, nor on the device."""
    digest = hashlib.sha256(f"activations:{int(seed)}:{int(channel)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def central_activations(
    backbone: nn.Module, block: int, images: torch.Tensor, channels: Sequence[int]
) -> torch.Tensor:
    """[n] activation of channel channels[c] at the central position for image c.

    Runs the model as it is (call it in eval mode); differentiable w.r.t. `images`."""
    check_block(block)
    net = _cifar_backbone(backbone)
    p = central_position(block)
    out = net.forward_to(images, block)
    if p >= out.shape[-1] or p >= out.shape[-2]:
        raise ValueError(
            f"input of size {tuple(images.shape[-2:])} is too small for block {block}: "
            f"the feature map is {tuple(out.shape[-2:])}, the central position is {p}"
        )
    idx = torch.as_tensor(list(channels), dtype=torch.long, device=out.device)
    return out[torch.arange(out.shape[0], device=out.device), idx, p, p]


def starting_points(net: nn.Module, block: int, channels: list[int], seed: int, max_redraws: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start [n, 3, s, s], ok [n], redraws [n]): uniform noise in [0, 1) per channel, only the
    channels whose central activation is not > 0 redrawn, up to `max_redraws` times.

    Redraw r of a channel is the r-th draw after its first from its own generator, however
    the draws are batched: up to REDRAW_CHUNK redraws of every channel still pending go
    through one forward pass, and the first that fires is the start."""
    size = RECEPTIVE_FIELDS[block]
    n = len(channels)
    redraws = torch.zeros(n, dtype=torch.long)
    gens = [_channel_generator(seed, c) for c in channels]
    start = torch.stack([torch.rand(3, size, size, generator=g) for g in gens])
    ok = _fires(net, block, start, channels, device)
    pending = [i for i in range(n) if not ok[i]]
    done = 0  # redraws tried so far by every pending channel
    while pending and done < max_redraws:
        k = min(REDRAW_CHUNK, max_redraws - done)
        tries = torch.stack([torch.rand(k, 3, size, size, generator=gens[i]) for i in pending])
        fired = _fires(net, block, tries.flatten(0, 1), [channels[i] for i in pending for _ in range(k)],
                       device).view(len(pending), k)
        for row, i in enumerate(pending):
            hit = torch.nonzero(fired[row]).flatten()
            j = int(hit[0]) if len(hit) else k - 1  # the first that fires, else the last drawn
            start[i], redraws[i], ok[i] = tries[row, j], done + j + 1, bool(len(hit))
        pending = [i for i in pending if not ok[i]]
        done += k
    return start, ok, redraws


# Redraws of each pending channel per forward pass: batches of many patches instead of one
# pass per redraw (a dead channel costs MAX_REDRAWS + 1 patches in 7 passes, not 101).
REDRAW_CHUNK = 16


def _fires(net: nn.Module, block: int, images: torch.Tensor, channels: list[int], device) -> torch.Tensor:
    """bool [n]: whether channel channels[c]'s central activation on image c is > 0."""
    with torch.no_grad():
        return central_activations(net, block, images.to(device), channels).cpu() > 0


def gradient_ascent(net: nn.Module, block: int, channels: list[int], start: torch.Tensor,
                    steps: int, lr: float, l2: float, on_step=None):
    """x <- x + lr * grad f_c(x) from `start` (on the net's device): (images, activation,
    objective history [steps + 1, n]). `on_step()` is called after every step."""
    x = start
    history = []
    with torch.enable_grad():
        for step in range(steps + 1):
            x = x.detach().requires_grad_(True)
            act = central_activations(net, block, x, channels)
            f = act - l2 * x.pow(2).sum(dim=(1, 2, 3))
            history.append(f.detach())
            if step == steps:
                break
            # Summed objective: image c's gradient is that of its own f_c.
            (grad,) = torch.autograd.grad(f.sum(), x)
            x = x.detach() + lr * grad
            if on_step:
                on_step()
    return x.detach(), act.detach(), torch.stack(history)


def _prepare(backbone: nn.Module, block: int, channels, steps: int, max_redraws: int, device):
    check_block(block)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if max_redraws < 0:
        raise ValueError(f"max_redraws must be >= 0, got {max_redraws}")
    net = _cifar_backbone(backbone)
    device = _model_device(net) if device is None else torch.device(device)
    if not _same_device(_model_device(net), device):
        net = copy.deepcopy(net).to(device)
    channels = [int(c) for c in channels]
    size = RECEPTIVE_FIELDS[block]
    modes = [(m, m.training) for m in net.modules()]
    net.eval()  # eval mode: the probe must not touch BatchNorm's running statistics
    try:
        with torch.no_grad():  # the block's channel count, for a one-line error on a bad index
            n_out = net.forward_to(torch.zeros(1, 3, size, size, device=device), block).shape[1]
    finally:
        for m, training in modes:
            m.train(training)
    bad = [c for c in channels if not 0 <= c < n_out]
    if bad:
        raise ValueError(f"block {block} has {n_out} channels; got channel indices {bad}")
    return net, device, channels


def maximize_activations(
    backbone: nn.Module,
    block: int,
    channels: Sequence[int],
    *,
    steps: int = STEPS,
    lr: float = STEP_SIZE,
    l2: float = L2,
    seed: int,
    max_redraws: int = MAX_REDRAWS,
    device: torch.device | str | None = None,
    on_step=None,
) -> dict[str, torch.Tensor]:
    """Maximize each channel of `channels` (after `block`) at the central position.

    `backbone` is a CifarResNet18 (or a Network wrapping one). The optimization runs on
    `device` (default: the model's device; a different device gets a copy of the model). The
    model's train/eval flags are restored afterwards and its parameters get no gradients.

    Returns CPU tensors:
      images      [n, 3, s, s] float32, s = RECEPTIVE_FIELDS[block]; NaN for dead channels
      ok          [n] bool, False for dead channels
      redraws     [n] int64, how many times the start was redrawn (max_redraws when dead)
      activation  [n] float32, final central activation (NaN for dead channels)
      objective   [steps + 1, n] float32, f_c before each step and after the last one
                  (NaN columns for dead channels)
    """
    size = RECEPTIVE_FIELDS.get(block, 1)
    n = len(channels)
    images = torch.full((n, 3, size, size), float("nan"))
    activation = torch.full((n,), float("nan"))
    objective = torch.full((max(steps, 0) + 1, n), float("nan"))
    net, device, channels = _prepare(backbone, block, channels, steps, max_redraws, device)
    if n == 0:
        return dict(images=images, ok=torch.zeros(0, dtype=torch.bool),
                    redraws=torch.zeros(0, dtype=torch.long), activation=activation, objective=objective)
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with _exact(device):
            start, ok, redraws = starting_points(net, block, channels, seed, max_redraws, device)
            alive = [i for i in range(n) if ok[i]]
            if alive:
                x, act, hist = gradient_ascent(net, block, [channels[i] for i in alive],
                                               start[alive].to(device), steps, lr, l2, on_step)
                images[alive] = x.float().cpu()
                activation[alive] = act.float().cpu()
                objective[:, alive] = hist.float().cpu()
    finally:
        for m, training in modes:
            m.train(training)
    return dict(images=images, ok=ok, redraws=redraws, activation=activation, objective=objective)


def live_channels(backbone: nn.Module, block: int, order: Sequence[int], count: int, *, seed: int,
                  max_redraws: int = MAX_REDRAWS, device=None) -> list[int]:
    """The first `count` channels of `order` whose activation can be made positive.

    The thesis's code replaced a channel it could not start by the next one of its
    permutation; this does the same, deterministically (a fixed number of redraws)."""
    net, device, order = _prepare(backbone, block, order, 0, max_redraws, device)
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    chosen: list[int] = []
    try:
        for lo in range(0, len(order), max(count, 1)):
            if len(chosen) >= count:
                break
            batch = order[lo:lo + count]
            with _exact(device):
                _, ok, _ = starting_points(net, block, batch, seed, max_redraws, device)
            chosen += [c for c, good in zip(batch, ok.tolist()) if good]
    finally:
        for m, training in modes:
            m.train(training)
    return chosen[:count]


def choose_channels(n_channels_in_block: int, count: int = 36, *, seed: int) -> list[int]:
    """The first `count` entries (all if fewer channels) of a seeded permutation."""
    if n_channels_in_block < 0 or count < 0:
        raise ValueError(
            f"need non-negative counts, got n_channels={n_channels_in_block}, count={count}"
        )
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_channels_in_block, generator=g)[:count].tolist()


def sigmoid_normalize(x: torch.Tensor) -> torch.Tensor:
    """Eq. 5.4: sigmoid((x - mean(x)) / std(x)) per pseudo-image, std unbiased.

    `x` is one image [C, H, W] or a batch [..., C, H, W]; mean and std are taken over each
    image's C*H*W values. A constant image (including a one-pixel one) returns 0.5
    everywhere instead of NaN; NaN images (dead channels) stay NaN. An empty batch (a block
    none of whose channels fires) comes back empty.
    """
    if x.dim() < 3:
        raise ValueError(f"sigmoid_normalize expects [..., C, H, W], got shape {tuple(x.shape)}")
    if x.numel() == 0:  # nothing to normalize; std over no values would warn
        return x.clone()
    dims = (-3, -2, -1)
    mean = x.mean(dim=dims, keepdim=True)
    constant = x.amax(dim=dims, keepdim=True) == x.amin(dim=dims, keepdim=True)
    if x.shape[-3:].numel() == 1:  # one value per image: constant, and std would warn
        return torch.where(x.isnan(), x, torch.full_like(x, 0.5))  # NaN stays NaN
    std = x.std(dim=dims, keepdim=True, unbiased=True)
    safe_std = torch.where(constant, torch.ones_like(std), std)
    z = torch.where(constant, torch.zeros_like(x), (x - mean) / safe_std)
    return torch.sigmoid(z)
