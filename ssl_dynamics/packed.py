"""P networks of one architecture as ONE module: several seeds (training) or several
checkpoints (phase two) per forward pass.

Every Conv2d becomes one grouped conv (groups = P) over the P networks' concatenated
channels, every BatchNorm2d one BatchNorm2d over P*C channels, and the linear head a
batched matmul. Network p owns channels [p*C, (p+1)*C) of every layer, so the P networks
never mix: a GPU runs each layer as one kernel instead of P. Input:

* `[B, P*3, H, W]` (`pack_views`): each network sees its own batch (training, one batch
  per seed);
* with `shared_input=True`, `[B, 3, H, W]`: every network sees the same batch (phase two,
  the same bank views for every checkpoint); the stem is then one ordinary conv with P*C
  outputs.

`forward` returns {"feats": [P, B, F], "out": [P, B, D]}. Per-network state dicts and
optimizer states have exactly the keys of `Network.state_dict()` and of an optimizer over
`Network.parameters()` (same parameter order), so checkpoints and resume files do not know
whether a seed was trained packed.

Arithmetic: P = 1 is bit-identical to the plain network. Evaluation (eval mode, channels_last,
fp32) gave bit-identical outputs to one network at a time on the CPUs measured
(docs/benchmarks.md); training is not bit-identical (the backward of grouped convolutions
and BatchNorm rounds differently), see docs/science.md for the measured drift.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

# Backbones made only of Conv2d / BatchNorm2d / ReLU / pooling with channels on dim 1: the
# grouped rewrite is exact for them. timm models contain other layers (LayerNorm, attention ...).
PACKABLE_BACKBONES = ("resnet18_cifar",)


def check_packable(backbone: str, option: str = "--pack") -> None:
    """UserError unless several networks of `backbone` can run as one grouped network."""
    if backbone not in PACKABLE_BACKBONES:
        raise UserError(f"{option} above 1 needs the CIFAR ResNet-18 backbone (resnet18_cifar); "
                        f"backbone {backbone} cannot be grouped: use {option} 1")


def parse_count(text: str | int, option: str, things: str, one: str) -> int | None:
    """`--pack` / `--group`: a positive number of `things`, or None for auto; `one` says
    what 1 means."""
    if str(text).strip() == "auto":
        return None
    try:
        count = int(str(text))
    except ValueError:
        raise UserError(f"{option} {text!r}: use auto or a positive number of {things}") from None
    if count < 1:
        raise UserError(f"{option} {text}: use auto or a positive number of {things} (1 {one})")
    return count


class PackedLinear(nn.Module):
    """P linear layers: weight [P, out, in], bias [P, out]; input [P, B, in]."""

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if len(self.weight) == 1:  # nn.Linear's own kernels: P = 1 stays bit-identical in the
            # backward too (bmm's weight gradient sums in another order than mm's under MKL on AMD)
            return F.linear(f[0], self.weight[0], self.bias[0]).unsqueeze(0)
        return torch.baddbmm(self.bias[:, None, :], f, self.weight.transpose(1, 2))


def _group_modules(module: nn.Module, n: int, shared_first: bool) -> None:
    """Replace every Conv2d / BatchNorm2d below `module`, in place, by its n-network version."""
    first = [shared_first]

    def visit(m: nn.Module) -> None:
        for name, child in m.named_children():
            if isinstance(child, nn.Conv2d):
                shared, first[0] = first[0], False
                setattr(m, name, nn.Conv2d(
                    child.in_channels * (1 if shared else n), child.out_channels * n,
                    child.kernel_size, child.stride, child.padding, child.dilation,
                    groups=child.groups * (1 if shared else n), bias=child.bias is not None,
                    padding_mode=child.padding_mode))
            elif isinstance(child, nn.BatchNorm2d):
                setattr(m, name, nn.BatchNorm2d(child.num_features * n, child.eps, child.momentum,
                                                child.affine, child.track_running_stats))
            elif isinstance(child, (nn.Linear, nn.Conv1d, nn.Conv3d, nn.LayerNorm, nn.GroupNorm)):
                raise UserError(f"cannot group a network containing {type(child).__name__}")
            else:
                visit(child)

    visit(module)


class GroupedNetwork(nn.Module):
    """`n` copies of a `Network` (backbone + linear head) computed as one; see the module doc."""

    def __init__(self, template: nn.Module, n: int, shared_input: bool = False,
                 device: str | torch.device = "cpu"):
        super().__init__()
        if n < 1:
            raise ValueError(f"need at least one network, got {n}")
        self.n, self.shared_input = n, shared_input
        with torch.device("meta"):  # no random initialisation: every tensor is loaded later
            self.backbone = copy.deepcopy(template.backbone).to("meta")
            _group_modules(self.backbone, n, shared_input)
            self.head = PackedLinear(n, template.head.in_features, template.head.out_features)
        self.to_empty(device=device)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(x)  # [B, n*F]
        f = f.view(f.shape[0], self.n, -1).transpose(0, 1)  # [n, B, F]
        return {"feats": f, "out": self.head(f)}

    @torch.no_grad()
    def load_state_dicts(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Load n per-network state dicts (keys of `Network.state_dict()`)."""
        if len(states) != self.n:
            raise ValueError(f"{len(states)} state dicts for {self.n} networks")
        for key, v in self.state_dict().items():
            parts = [s[key] for s in states]
            if key.endswith("num_batches_tracked"):  # one counter: equal in lockstep training
                v.copy_(parts[0])
                continue
            whole = (torch.stack(parts) if key.startswith("head.") else torch.cat(parts)).to(v.dtype)
            if v.device.type == "cuda" and whole.device.type == "cpu":
                whole = whole.pin_memory()  # queued like a kernel: no wait for the GPU per tensor
            v.copy_(whole, non_blocking=True)

    def state_dict_of(self, p: int) -> dict[str, torch.Tensor]:
        """Network p's state dict (copies), with the keys of `Network.state_dict()`."""
        return {key: _part(key, v, p, self.n).detach().clone() for key, v in self.state_dict().items()}


def _part(key: str, v: torch.Tensor, p: int, n: int) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return v
    if key.startswith("head."):
        return v[p]
    size = v.shape[0] // n
    return v[p * size:(p + 1) * size]


def grouped(networks: list[nn.Module], shared_input: bool = False) -> GroupedNetwork:
    """The networks as one GroupedNetwork on their device, with their weights and mode."""
    first = networks[0]
    device = next(first.parameters()).device
    model = GroupedNetwork(first, len(networks), shared_input, device)
    model.load_state_dicts([net.state_dict() for net in networks])
    return model.train(first.training)


def pack_views(views: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """[P, B, C, H, W] (one batch per network) -> the grouped input [B, P*C, H, W]."""
    n, b = views.shape[:2]
    x = views.transpose(0, 1).reshape(b, n * views.shape[2], *views.shape[3:])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def optimizer_state_of(model: GroupedNetwork, optimizer: torch.optim.Optimizer, p: int) -> dict:
    """Network p's share of an optimizer over `model.parameters()`: a state dict that an
    optimizer of the same class over `Network.parameters()` loads."""
    sd = optimizer.state_dict()
    names = [k for k, _ in model.named_parameters()]
    state = {}
    for i, st in sd["state"].items():
        state[i] = {k: (v.clone() if k == "step" else _part(names[i], v, p, model.n).clone())
                    if torch.is_tensor(v) else v for k, v in st.items()}
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def load_optimizer_states(model: GroupedNetwork, optimizer: torch.optim.Optimizer,
                          states: list[dict]) -> None:
    """Load n per-network optimizer state dicts into an optimizer over `model.parameters()`.
    The networks must be in lockstep (the same step count)."""
    names = [k for k, _ in model.named_parameters()]
    if any(set(s["state"]) != set(states[0]["state"]) for s in states):
        raise ValueError("optimizer states of different steps cannot be packed")
    merged = {}
    for i, first in states[0]["state"].items():
        st = {}
        for k, v in first.items():
            parts = [s["state"][i][k] for s in states]
            if not torch.is_tensor(v):
                st[k] = v
            elif k == "step":
                if any(not torch.equal(x, v) for x in parts):
                    raise ValueError("optimizer states of different steps cannot be packed")
                st[k] = v.clone()
            else:
                st[k] = torch.stack(parts) if names[i].startswith("head.") else torch.cat(parts)
        merged[i] = st
    optimizer.load_state_dict({"state": merged, "param_groups": copy.deepcopy(states[0]["param_groups"])})

