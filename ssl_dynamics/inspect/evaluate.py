"""One network on the bank: correctness and true-class probability of every view.

The objective decides how views are scored (`score_bank`): classifiers score each view
against its image's target, SimCLR classifies each view among the 2B views of its fixed
batch of B images.
"""
from __future__ import annotations

import numpy as np
import torch

from ..devices import exact_fp32  # noqa: F401  (fp32 evaluation on a GPU: re-exported for callers)

EVAL_CHUNK = 2048  # views per forward pass: large enough to fill a GPU, small for 2 CPU cores
# Views per pass of a grouped network of G checkpoints in bf16: EVAL_CHUNK // G keeps the
# activations of one pass as large as a single checkpoint's; never below 256 views, which
# keeps a pass's kernels large enough to be worth launching. In fp32 a grouped pass takes
# EVAL_CHUNK views, the batches of one-at-a-time evaluation: a convolution's rounding can
# depend on its batch size (measured: batches of 2 against 8 moved p_true by 2.4e-7 and
# flipped a SimCLR tie), and fp32 promises the one-at-a-time store bit for bit.
MIN_GROUP_CHUNK = 256


@torch.no_grad()
def network_outputs(model: torch.nn.Module, views: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """The head's outputs [M, K, V, D] (float32) for bank views [M, K, V, 3, H, W].

    Runs in channels_last (NHWC): the same fp32 arithmetic, ~1.5x faster convolutions on
    CPUs and tensor cores alike.
    """
    m, k, v = views.shape[:3]
    model = model.to(memory_format=torch.channels_last)
    flat = views.reshape(m * k * v, *views.shape[3:]).contiguous(memory_format=torch.channels_last)
    outs = []
    for start in range(0, len(flat), EVAL_CHUNK):
        with torch.autocast(flat.device.type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(model(flat[start:start + EVAL_CHUNK])["out"].float())
    return torch.cat(outs).reshape(m, k, v, -1)


@torch.no_grad()
def grouped_outputs(model, views: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """The heads' outputs [G, M, K, V, D] (float32) of a GroupedNetwork of G checkpoints
    (shared_input=True, eval mode) on bank views [M, K, V, 3, H, W], in channels_last."""
    m, k, v = views.shape[:3]
    model = model.to(memory_format=torch.channels_last)
    flat = views.reshape(m * k * v, *views.shape[3:]).contiguous(memory_format=torch.channels_last)
    chunk = max(EVAL_CHUNK // model.n, MIN_GROUP_CHUNK) if bf16 else EVAL_CHUNK
    outs = []
    for start in range(0, len(flat), chunk):
        with torch.autocast(flat.device.type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(model(flat[start:start + chunk])["out"].float())
    return torch.cat(outs, dim=1).reshape(model.n, m, k, v, -1)


@torch.no_grad()
def evaluate_group(model, objective, views: torch.Tensor, targets: torch.Tensor, simclr_batch: int,
                   bf16: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(correct, p_true) [M, K, V] of each checkpoint of a GroupedNetwork, as `evaluate` gives
    them one checkpoint at a time."""
    out = grouped_outputs(model, views, bf16)
    scored = [objective.score_bank(o, targets, simclr_batch) for o in out]
    return [(c.cpu().numpy(), p.cpu().numpy()) for c, p in scored]


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective, views: torch.Tensor, targets: torch.Tensor,
             simclr_batch: int, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """correct, p_true [M, K, V] of one network (in eval mode) on bank views [M, K, V, 3, H, W]."""
    out = network_outputs(model, views, bf16)
    correct, p_true = objective.score_bank(out, targets, simclr_batch)
    return correct.cpu().numpy(), p_true.cpu().numpy()
