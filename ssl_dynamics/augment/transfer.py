"""Moving parameters from the CPU, where they are drawn, to the images' device.

A plain `t.to("cuda")` of a CPU tensor waits for every kernel already queued on the GPU
(PyTorch synchronises the stream after a copy from pageable memory). In a training loop that
stall happens while the previous batch's forward and backward passes still run, so the CPU
cannot queue the next batch's views ahead of time and the GPU idles while it does. A copy
from pinned memory with `non_blocking=True` is ordered on the stream like a kernel and never
waits (the pinned block is kept until the copy has run). On the CPU nothing changes.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """t on `device` (in `dtype` if given), the same numbers, without waiting for the device."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.to(device) if dtype is None else t.to(device, dtype)


def constant(values, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A small constant tensor on `device` (torch.tensor(values, device=...) would wait)."""
    return to_device(torch.tensor(values, dtype=dtype), device)
