"""The CIFAR ResNet-18 of docs/science.md, timm backbones by name, and the per-setup heads.

The backbone maps images to the 512-d (8 x width) "representation" (the input of the last linear
layer); a `Network` adds the setup's linear head. `forward` returns a dict of named
outputs so that callers never index tuples.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, identity shortcut or 1x1 conv + BN when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18, CIFAR variant: 3x3 stride-1 stem, no max-pool, 4x4 average pool.

    `width` scales every stage (64 is the thesis network; tests use 4 or 8). The stem and
    stages are separate attributes so that activation maximization can cut the network
    after any stage.
    """

    STAGE_STRIDES = (1, 2, 2, 2)  # docs/science.md: strides of the four stages
    BLOCKS_PER_STAGE = 2  # ResNet-18: two BasicBlocks per stage

    def __init__(self, width: int = 64):
        super().__init__()
        self.width = width
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        in_ch = width
        for i, stride in enumerate(self.STAGE_STRIDES):
            out_ch = width * 2**i
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(self.BLOCKS_PER_STAGE - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.num_features = in_ch

    def forward_to(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Feature map after stem + stages 1..block (block in 1..4)."""
        x = self.stem(x)
        for stage in self.stages[:block]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_to(x, len(self.stages))
        # The thesis used F.avg_pool2d(x, 4) on a 4x4 map; adaptive pooling is identical
        # there and also accepts other input sizes.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class TimmBackbone(nn.Module):
    """Any timm model as a backbone: classifier removed, pooled features out."""

    def __init__(self, name: str):
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        self.num_features = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


BACKBONES: dict[str, Callable[..., nn.Module]] = {"resnet18_cifar": CifarResNet18}


def check_backbone(name: str) -> None:
    """UserError unless `name` is a registered backbone or a model timm knows."""
    from .errors import UserError

    if name in BACKBONES:
        return
    if name.startswith("timm:"):
        import timm

        if timm.is_model(name[len("timm:"):]):
            return
        raise UserError(f"timm has no model {name[len('timm:'):]!r} (backbone={name})")
    raise UserError(f"unknown backbone {name!r}: use one of {', '.join(sorted(BACKBONES))} "
                    f"or timm:<model name>")


def check_input(name: str, head_dim: int, width: int, shape: tuple[int, int, int]) -> None:
    """UserError unless a `name` network takes images of `shape` ([C, H, W]): one forward of a
    single image. The thesis network takes any size; a timm model may be fixed to its own."""
    from .errors import UserError

    if name in BACKBONES:
        return
    net = build_network(name, head_dim, width).eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *shape))
    except Exception as e:  # noqa: BLE001 - whatever the model says, on one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"backbone {name} cannot take {shape[1]}x{shape[2]} images: {msg}") from None


def build_backbone(name: str, width: int = 64) -> nn.Module:
    """`resnet18_cifar` (the thesis network) or `timm:<model name>`."""
    if name in BACKBONES:
        return BACKBONES[name](width=width)
    if name.startswith("timm:"):
        return TimmBackbone(name[len("timm:") :])
    raise ValueError(f"unknown backbone {name!r}: use one of {sorted(BACKBONES)} or 'timm:<name>'")


class Network(nn.Module):
    """Backbone + one linear head. `features()` is the representation used by phase two."""

    def __init__(self, backbone: nn.Module, head_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, head_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        return {"feats": feats, "out": self.head(feats)}


def build_network(backbone: str, head_dim: int, width: int = 64) -> Network:
    return Network(build_backbone(backbone, width), head_dim)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
