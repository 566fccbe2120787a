"""Device names from the command line, checked against what torch sees, and what a device
does with fp32 and bf16."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .errors import UserError


def resolve_device(name: str) -> str:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N` (N must exist)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        index = name.partition(":")[2]
        if name not in ("cuda",) and not (name.startswith("cuda:") and index.isascii() and index.isdigit()):
            raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for, but torch sees no CUDA device")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return name
    if name != "cpu":
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
    return name


def resolve_devices(text: str) -> list[str]:
    """`--devices`: `all` (every visible GPU) or a list such as `cuda:0,cuda:1` or `cpu,cpu`.

    A device may repeat (`cuda:0,cuda:0` runs two workers on one GPU); `cuda` means cuda:0.
    """
    if text.strip() == "all":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError("--devices all: torch sees no CUDA device on this machine "
                            "(use --devices cpu,cpu or --device cpu)")
        return [f"cuda:{i}" for i in range(n)]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--devices {text!r}: use all, or a list such as cuda:0,cuda:1 or cpu,cpu")
    out = []
    for name in names:
        if name not in ("cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise UserError(f"--devices: unknown device {name!r}: use all, cpu, cuda or cuda:N")
        if name.startswith("cuda"):
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(name[5:] or 0)
            if index >= have:
                raise UserError(f"--devices {name}: this machine has {have} CUDA device(s)"
                                + (f", cuda:0 to cuda:{have - 1}" if have else ""))
            name = f"cuda:{index}"
        out.append(name)
    return out


# bf16 convolutions run on cuDNN's tensor cores from compute capability 8.0 (Ampere) on; older
# GPUs emulate bf16 (torch.cuda.is_bf16_supported() says True) with slow fallback kernels.
NATIVE_BF16_CAPABILITY = 8


def native_bf16(device: str) -> bool:
    """True for a CUDA device that computes bf16 natively (what `--precision auto` picks)."""
    if not str(device).startswith("cuda"):
        return False
    return torch.cuda.get_device_capability(torch.device(device))[0] >= NATIVE_BF16_CAPABILITY


@contextmanager
def exact_fp32(device: str, bf16: bool):
    """fp32 on a GPU computes in fp32. cuDNN lets fp32 convolutions use TF32 (a 10-bit
    mantissa) by default, which would make a GPU's "fp32" training or store differ from the
    CPU's by more than rounding; bf16 is the option that trades exactness for speed.
    (cuBLAS matmuls are fp32 already: torch's default float32_matmul_precision is "highest".)"""
    if bf16 or not str(device).startswith("cuda"):
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before
