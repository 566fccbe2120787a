"""Device names from the command line, checked against what torch sees."""
from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str) -> str:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N` (N must exist)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for, but torch sees no CUDA device")
        index = name.partition(":")[2]
        if name not in ("cuda",) and not (name.startswith("cuda:") and index.isdigit()):
            raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return name
    if name != "cpu":
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
    return name
