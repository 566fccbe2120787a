"""Scratch buffers for the large temporaries of the pipelines, kept from call to call.

On the CPU a fresh tensor of a few MiB costs one page fault per 4 KiB page when it is
first written: glibc serves blocks that large with mmap and unmaps them when they are
freed, so every call faults them in again. On the 2-core VM of docs/benchmarks.md a
fault costs ~1.8 us, ~2.8 ms for one [512, 3, 32, 32] float tensor: ten times the
arithmetic on it. Temporaries that do not leave a pipeline therefore live here.
Returned tensors never do.
"""
from __future__ import annotations

import math
import threading

import torch

_LOCAL = threading.local()  # one set of buffers per thread: calls never share one


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor for a temporary named `name` (unique among the temporaries
    alive at the same time); the next call with that name gets the same memory back.
    Only on the CPU: other devices get a fresh tensor (their allocators cache blocks)."""
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    buf = buffers.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = buffers[(name, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def release() -> None:
    """Drop this thread's buffers (they are re-created on the next call)."""
    _LOCAL.__dict__.pop("buffers", None)
