"""The training objectives behind the setups: one class each, the same small interface.

An objective owns everything that depends on what a "view" is:

* `views_per_image` and `views(x, g)`: how a batch of images becomes the batch of views the
  network sees (training and the phase-two bank use the same `make_views`);
* `loss(out, targets)`: the training loss, with the per-view correctness;
* `score(out, targets)`: per view, (correct, probability of the true class);
* `score_bank(out, targets, batch)`: the same for a whole bank [M replays, K images,
  V views, D], so phase two never decides from array shapes how views pair up.

`OBJECTIVES[cfg.objective]` picks the class for a setup config (see config.thesis_setups).
"""
from __future__ import annotations

import torch

from . import augment as aug
from .config import SetupConfig
from .losses import classification_loss, info_nce, pair_logits, partner_index, true_class_outputs


def make_views(kind: str, x: torch.Tensor, n_views: int, g: torch.Generator):
    """(views, params): `n_views` augmentations of every image of uint8 x, interleaved
    (views n*k .. n*k + n-1 come from image k), parameters drawn from g."""
    return aug.augment(kind, x.repeat_interleave(n_views, dim=0) if n_views > 1 else x, g)


def make_packed_views(kind: str, xs: list[torch.Tensor], n_views: int,
                      gens: list[torch.Generator]) -> torch.Tensor:
    """[P, n_views*B, 3, H, W]: `make_views(kind, xs[p], n_views, gens[p])` for every p (the
    same parameters, drawn from each batch's own generator), applied in one call."""
    reps = [x.repeat_interleave(n_views, dim=0) if n_views > 1 else x for x in xs]
    params = aug.concat_params([aug.sample_params(kind, len(r), g, r.shape[-1]) for r, g in zip(reps, gens)])
    out = aug.apply_params(kind, torch.cat(reps), params)
    return out.view(len(xs), -1, *out.shape[1:])


class Objective:
    """What every objective shares: its config, its views, a loss with per-view correctness."""

    views_per_image = 1

    def __init__(self, cfg: SetupConfig):
        self.cfg = cfg

    def views(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return make_views(self.cfg.augment, x, self.views_per_image, g)[0]

    def packed_views(self, xs: list[torch.Tensor], gens: list[torch.Generator]) -> torch.Tensor:
        """`views(xs[p], gens[p])` for P equal-sized batches at once: [P, V*B, 3, H, W]."""
        return make_packed_views(self.cfg.augment, xs, self.views_per_image, gens)

    def loss(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the correctness is a metric: no graph for it
            correct, _ = self.score(out.detach(), targets)
        return self.loss_value(out, targets), correct

    def loss_value(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SimCLRObjective(Objective):
    """Two views per image, InfoNCE over the 2B views (the thesis's section 3; docs/science.md)."""

    views_per_image = 2

    def loss_value(self, out: torch.Tensor, targets=None) -> torch.Tensor:
        return info_nce(out, self.cfg.temperature)

    def score(self, out: torch.Tensor, targets=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Within-batch classification of every view: is its partner the most similar (a
        tie with a negative counts as found, as in the thesis's code)?"""
        logits = pair_logits(out, self.cfg.temperature)
        return true_class_outputs(logits, partner_index(len(out), out.device), ties_correct=True)

    def score_bank(self, out: torch.Tensor, targets: torch.Tensor, batch: int):
        """Each replay's K images are classified within fixed batches of `batch` images
        (2·batch views), as during training. A shorter last batch is scored as it is, but has
        fewer negatives, so its views look easier: `inspect rt` refuses a bank whose K is not
        a multiple of `batch` (rt_plan.check_simclr_batches), as training drops that batch."""
        m, k, v = out.shape[:3]
        correct = torch.empty(m, k, v, dtype=torch.bool, device=out.device)
        p_true = torch.empty(m, k, v, dtype=torch.float32, device=out.device)
        for j in range(m):
            for b0 in range(0, k, batch):
                c, p = self.score(out[j, b0:b0 + batch].reshape(-1, out.shape[-1]))
                correct[j, b0:b0 + batch] = c.view(-1, v)
                p_true[j, b0:b0 + batch] = p.view(-1, v)
        return correct, p_true


class ClassifyObjective(Objective):
    """Cross-entropy on logits / tau against (true or permuted) labels."""

    def loss_value(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return classification_loss(out, targets, self.cfg.temperature)

    def score(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return true_class_outputs(out.float() / self.cfg.temperature, targets)

    def score_bank(self, out: torch.Tensor, targets: torch.Tensor, batch: int):
        """Every view on its own against its image's target (`batch` is not used)."""
        m, k, v = out.shape[:3]
        c, p = self.score(out.reshape(m * k * v, -1), targets.repeat_interleave(v).repeat(m))
        return c.view(m, k, v), p.view(m, k, v)


OBJECTIVES = {"simclr": SimCLRObjective, "classify": ClassifyObjective}


def objective_for(cfg: SetupConfig):
    return OBJECTIVES[cfg.objective](cfg)
