"""Learning-rate schedules as pure functions of (setup config, epoch).

"reference" reproduces the thesis's code (SPEC.md):
* simclr: lr held for `constant_lr_epochs` epochs; after that a CosineAnnealingLR whose
  period is the number of batches per epoch is stepped once per epoch (so it never gets
  far: 190 steps of a 195-step half-period in 200 epochs).
* classification: a CosineAnnealingLR with T_max = `cosine_period_epochs` (200) stepped
  once per epoch whatever the run length: zero at epoch 200, back to the full lr at 400.
"cosine" anneals to zero over the run; "constant" keeps the lr.
"""
from __future__ import annotations

import math

from ..config import SetupConfig


def cosine(base_lr: float, step: int, period: int, eta_min: float = 0.0) -> float:
    """torch's CosineAnnealingLR in closed form (periodic beyond `period`, as torch is)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * step / period)) / 2


def learning_rate(cfg: SetupConfig, epoch: int, batches_per_epoch: int) -> float:
    """lr used while training epoch `epoch` (0-based: the first epoch is 0)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        return cosine(cfg.lr, epoch, cfg.epochs)
    if cfg.objective == "simclr":
        steps = max(0, epoch - cfg.constant_lr_epochs)
        return cosine(cfg.lr, steps, max(1, batches_per_epoch))
    return cosine(cfg.lr, epoch, cfg.cosine_period_epochs)
