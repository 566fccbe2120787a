"""Learning-rate schedules as pure functions of (setup config, epoch).

"reference" reproduces the thesis's code (docs/science.md):
* simclr: lr held for the first `constant_lr_epochs` epochs (1-10); the code steps a
  CosineAnnealingLR, whose period is the number of batches per epoch, after every epoch
  from the 10th on, so epoch 11 already runs at the first cosine step and epoch 200 at
  step 190 of a 195-step half-period: 0.16% of the base rate.
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
        # 1-based epoch E > C runs at cosine step E - C (`if epoch >= C: scheduler.step()`
        # after each epoch); C = 0 behaves like C = 1 (no step before the first epoch)
        steps = max(0, epoch + 1 - max(cfg.constant_lr_epochs, 1))
        return cosine(cfg.lr, steps, max(1, batches_per_epoch))
    return cosine(cfg.lr, epoch, cfg.cosine_period_epochs)
