"""Linear probe on frozen representations (Table B.1) and the raw-pixel baseline.

docs/science.md, "Representations": take the 512-d representation (D = 8 x width) of every
train/test image (no augmentation), train one linear layer with cross-entropy, no
regularisation, Adam lr 1e-3, 10 epochs, batch 256; report train and test accuracy.
Baselines: a randomly initialised network, and raw pixels (3072-d, `raw_pixel_features`).

The probe is deterministic for a given seed on a given device: the layer is initialised
under `seed` (without touching the global RNG) and minibatches are shuffled by a
`torch.Generator` seeded with `seed`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


__all__ = ["train_linear_probe", "raw_pixel_features"]

_EVAL_BATCH = 8192


def _to_tensor(x, name: str, *, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if dtype.is_floating_point:
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}")
        return t.to(dtype)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class labels, got dtype {t.dtype}")
    return t.to(dtype)


def _check_pair(x: torch.Tensor, y: torch.Tensor, split: str, n_classes: int) -> None:
    if x.ndim != 2:
        raise ValueError(f"{split}_x must be 2-D [n, D], got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{split}_y must be 1-D with {x.shape[0]} entries, got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{split} set is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{split}_x contains NaN or inf")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"{split}_y must lie in [0, {n_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


@torch.no_grad()
def _evaluate(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the whole set, in evaluation-sized chunks."""
    correct, loss_sum = 0, 0.0
    for start in range(0, x.shape[0], _EVAL_BATCH):
        logits = layer(x[start : start + _EVAL_BATCH])
        target = y[start : start + _EVAL_BATCH]
        correct += int((logits.argmax(dim=1) == target).sum())
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    return correct / x.shape[0], loss_sum / x.shape[0]


def _inputs(train_x, train_y, test_x, test_y, n_classes: int, device: torch.device):
    """The four arrays as checked tensors on `device`: (xtr, ytr, xte, yte)."""
    xs = []
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        xt = _to_tensor(x, f"{split}_x", dtype=torch.float32)
        yt = _to_tensor(y, f"{split}_y", dtype=torch.int64)
        _check_pair(xt, yt, split, n_classes)
        xs += [xt.to(device), yt.to(device)]
    if xs[0].shape[1] != xs[2].shape[1]:
        raise ValueError(f"train and test features differ in width: {xs[0].shape[1]} vs {xs[2].shape[1]}")
    return xs


def _fit(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
         lr: float, seed: int) -> list[float]:
    """Adam on cross-entropy, minibatches shuffled by a generator seeded with `seed`;
    the mean minibatch loss of every epoch."""
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, losses = x.shape[0], []
    layer.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        losses.append(total / n)
    layer.eval()
    return losses


def train_linear_probe(train_x, train_y, test_x, test_y, *, n_classes: int, epochs: int = 10,
                       batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                       device: str | torch.device = "cpu") -> dict:
    """Train nn.Linear(D, n_classes) with cross-entropy and Adam; return accuracies.

    Inputs are torch tensors or numpy arrays (features cast to float32, labels to int64)
    and are moved to `device` once. No weight decay, no feature normalisation. Returns
    a dict with train_acc and test_acc (on the full sets, after the last epoch), train_loss
    and test_loss (mean cross-entropy there), epoch_losses (mean minibatch loss per epoch),
    n_train, n_test, dim, and the hyper-parameters used.
    """
    n_classes = int(n_classes)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if not float(lr) > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"bad device {device!r}: {e}") from None
    xtr, ytr, xte, yte = _inputs(train_x, train_y, test_x, test_y, n_classes, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(xtr.shape[1], n_classes)
    layer = layer.to(device)
    epoch_losses = _fit(layer, xtr, ytr, int(epochs), int(batch_size), float(lr), int(seed))
    train_acc, train_loss = _evaluate(layer, xtr, ytr)
    test_acc, test_loss = _evaluate(layer, xte, yte)
    return {"train_acc": train_acc, "test_acc": test_acc, "train_loss": train_loss,
            "test_loss": test_loss, "epoch_losses": epoch_losses, "n_train": xtr.shape[0],
            "n_test": xte.shape[0], "dim": xtr.shape[1], "n_classes": n_classes,
            "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
            "seed": int(seed), "device": str(device)}


def raw_pixel_features(images_uint8):
    """uint8 images [N, 3, H, W] -> float32 features [N, 3*H*W] in [0, 1] (x / 255).

    Returns the same kind as the input: a torch tensor (on the input's device) for a
    tensor, a numpy array for an array.
    """
    if isinstance(images_uint8, np.ndarray):
        if images_uint8.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got dtype {images_uint8.dtype}")
        if images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {images_uint8.shape}")
        return images_uint8.reshape(images_uint8.shape[0], -1).astype(np.float32) / np.float32(255)
    if isinstance(images_uint8, torch.Tensor):
        if images_uint8.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got dtype {images_uint8.dtype}")
        if images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {tuple(images_uint8.shape)}")
        return images_uint8.reshape(images_uint8.shape[0], -1).to(torch.float32) / 255.0
    raise ValueError(f"images must be a torch tensor or numpy array, got {type(images_uint8).__name__}")
