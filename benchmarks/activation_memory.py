"""How much memory a training step keeps for its backward pass, per view and per pack: what
decides whether `--pack P` fits a GPU.

Counts the bytes of the tensors autograd saves during one forward pass of the CIFAR
ResNet-18 (train mode, channels_last; bf16 autocast or fp32), at two batch sizes: the
difference is the per-view share, the rest (bf16 copies of the weights) is fixed. Run on
the CPU; a GPU adds cuDNN workspaces and the allocator's slack on top.

    python benchmarks/activation_memory.py --out benchmarks/results/activation_memory_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform

import torch

from ssl_dynamics.models import build_network

GIB = 2 ** 30
MIB = 2 ** 20
# A SimCLR step sees 2 views of each of its 256 images (the thesis's batch); supervised, 1.
VIEWS_PER_STEP = {"simclr": 512, "supervised": 256}


def saved_bytes(net: torch.nn.Module, batch: int, bf16: bool) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass of `batch` views."""
    seen: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x)["out"].sum()
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="the thesis's width")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = build_network("resnet18_cifar", 128, args.width).train().to(memory_format=torch.channels_last)
    small, large = 8, 16  # two batches: the difference is per view, the rest fixed
    rows = {}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        a, b = saved_bytes(net, small, bf16), saved_bytes(net, large, bf16)
        per_view = (b - a) / (large - small)
        rows[name] = {"per_view_mib": round(per_view / MIB, 3), "fixed_mib": round((a - small * per_view) / MIB, 1),
                      **{f"{setup}_pack_{p}_gib": round(p * views * per_view / GIB, 2)
                         for setup, views in VIEWS_PER_STEP.items() for p in (1, 4)}}
        print(name, rows[name])
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "width": args.width, "views_per_step": VIEWS_PER_STEP, "saved_activations": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
