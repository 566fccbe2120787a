"""How to train (device, precision, packing ...), never what: none of it changes the science in fp32.

`TrainRequest` is what the command line asked for; `resolve` turns it into `TrainOptions` on
the machine that trains (a cluster job or a device worker learns its device only there).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..devices import native_bf16, resolve_device


@dataclass(frozen=True)
class TrainOptions:
    """How to run on one device, resolved."""

    device: str = "cpu"
    bf16: bool = False  # autocast matmuls/convs to bfloat16 (GPU)
    channels_last: bool = False  # NHWC memory format (faster convs on tensor cores)
    deterministic: bool = False  # torch.use_deterministic_algorithms + no cudnn autotune
    # storage type of the saved weights: fp32 | bf16 | None: as the seed's checkpoints so far
    # (a new seed: as its setup's seeds, fp32 for the first), so that resuming without the
    # option never mixes two in one seed, nor adding seeds two in one setup
    checkpoint_dtype: str | None = None
    compile: bool = False  # torch.compile the network (opt-in; first epoch pays compilation)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune
    pack: int = 1  # seeds of one setup trained together as one grouped network (train/pack.py)

    def record(self) -> dict:
        """How an epoch was trained, as metrics.jsonl and the manifest keep it."""
        return {"device": self.device.split(":")[0], "precision": "bf16" if self.bf16 else "fp32",
                "channels_last": self.channels_last, "checkpoint_dtype": self.checkpoint_dtype,
                "pack": self.pack, "compile": self.compile_mode if self.compile else None,
                "deterministic": self.deterministic}


# Seeds per grouped network on a GPU when --pack is auto. Measured on an H200 (docs/benchmarks.md,
# full CIFAR-10, bf16): per model, a pack of 4 trains a SimCLR epoch in 2.11 s against 4.91 s
# for one seed, and a supervised epoch in 1.03 s against 2.46 s; a pack of 8 was no faster per
# model than 4, and 4 worker processes sharing the GPU were 4x slower than the pack. On the CPU
# a grouped network is slower than one network at a time, so auto is 1 there.
GPU_PACK_DEFAULT = 4


@dataclass(frozen=True)
class TrainRequest:
    """How the command line asked to run, resolved into TrainOptions on the machine that
    trains (a cluster job learns its device only when it starts)."""

    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto (bf16 on a GPU that computes it natively, else fp32) | fp32 | bf16
    channels_last: bool | None = None  # None: on for a GPU
    deterministic: bool = False
    checkpoint_dtype: str | None = None  # None: as each seed's checkpoints so far, else fp32
    compile: bool = False
    compile_mode: str = "default"
    pack: str = "auto"  # auto | a positive number of seeds

    def resolve(self, device: str | None = None, backbone: str = "resnet18_cifar") -> TrainOptions:
        """TrainOptions for `device` (default: the requested one), checked against torch.

        `--pack auto` is GPU_PACK_DEFAULT on a GPU for a backbone that can be grouped, else 1.
        A packed run defaults to channels_last on the CPU too: there the grouped network is
        faster in it, and (at the widths measured, train/pack.py) gives each seed the same
        bits whatever the pack's size."""
        dev = resolve_device(device or self.device)
        on_gpu = dev.startswith("cuda")
        pack = pack_for(self.pack, on_gpu, backbone)
        default_cl = on_gpu or pack > 1
        return TrainOptions(
            device=dev,
            bf16=self.precision == "bf16" or (self.precision == "auto" and native_bf16(dev)),
            channels_last=default_cl if self.channels_last is None else self.channels_last,
            deterministic=self.deterministic, checkpoint_dtype=self.checkpoint_dtype,
            compile=self.compile or self.compile_mode != "default", compile_mode=self.compile_mode,
            pack=pack)


def pack_for(pack: str | int, on_gpu: bool, backbone: str) -> int:
    """Seeds per grouped network: `--pack N`, or auto's choice, GPU_PACK_DEFAULT on a GPU for
    a backbone that can be grouped, else 1."""
    from ..packed import PACKABLE_BACKBONES

    n = parse_pack(pack)
    if n is None:
        n = GPU_PACK_DEFAULT if on_gpu and backbone in PACKABLE_BACKBONES else 1
    return n


def parse_pack(text: str | int) -> int | None:
    """`--pack`: a positive number of seeds, or None for auto."""
    from ..packed import parse_count

    return parse_count(text, "--pack", "seeds", "trains one seed at a time")
