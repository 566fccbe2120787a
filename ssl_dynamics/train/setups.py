"""The training objectives behind the setups: one class each, the same small interface.

`SETUPS` (config.thesis_setups) says which objective, augmentation and hyperparameters a
setup uses; `OBJECTIVES[cfg.objective]` says how a batch becomes a loss and how a batch of
views is scored (correct / probability of the true class) in phase two.
"""
from __future__ import annotations

import torch

from .. import augment as aug
from ..config import SetupConfig, thesis_setups
from ..losses import classification_loss, info_nce, pair_logits, partner_index, true_class_outputs

SETUPS = thesis_setups()


class SimCLRObjective:
    """Two views per image, InfoNCE over the 2B views (SPEC.md section 3)."""

    views_per_image = 2

    def __init__(self, cfg: SetupConfig):
        self.cfg = cfg

    def views(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # Interleaved: views 2k and 2k+1 are two augmentations of image k.
        views, _ = aug.augment(self.cfg.augment, x.repeat_interleave(2, dim=0), g)
        return views

    def loss(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct, _ = self.score(out, targets)
        return info_nce(out, self.cfg.temperature), correct

    def score(self, out: torch.Tensor, targets=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Within-batch classification of every view: is its partner the most similar?"""
        logits = pair_logits(out, self.cfg.temperature)
        return true_class_outputs(logits, partner_index(len(out), out.device))


class ClassifyObjective:
    """Cross-entropy on logits / tau against (true or permuted) labels."""

    views_per_image = 1

    def __init__(self, cfg: SetupConfig):
        self.cfg = cfg

    def views(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        views, _ = aug.augment(self.cfg.augment, x, g)
        return views

    def loss(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct, _ = self.score(out, targets)
        return classification_loss(out, targets, self.cfg.temperature), correct

    def score(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return true_class_outputs(out.float() / self.cfg.temperature, targets)


OBJECTIVES = {"simclr": SimCLRObjective, "classify": ClassifyObjective}


def objective_for(cfg: SetupConfig):
    return OBJECTIVES[cfg.objective](cfg)
