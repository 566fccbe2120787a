"""Losses as pure functions of model outputs (tested against slow direct formulas).

SimCLR views are interleaved: views 2k and 2k+1 (0-based) come from image k, so the
partner of view i is i XOR 1. The same `pair_logits` defines the SimCLR loss in phase one
and the within-batch classification ("is my partner my nearest view?") in phase two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def partner_index(n_views: int, device=None) -> torch.Tensor:
    """Index of each view's positive: 1, 0, 3, 2, ..."""
    return torch.arange(n_views, device=device) ^ 1


def pair_logits(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarities / tau between all 2B views, -inf on the diagonal (k != i)."""
    if z.shape[0] % 2:
        raise ValueError(f"SimCLR needs an even number of views, got {z.shape[0]}")
    with torch.autocast(z.device.type, enabled=False):  # fp32 even inside an autocast region
        z = F.normalize(z.float(), dim=1)
        logits = z @ z.T / temperature
    return logits.fill_diagonal_(float("-inf"))


def info_nce(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 3.2: mean over all 2B views of -log p(partner | view)."""
    logits = pair_logits(z, temperature)
    return F.cross_entropy(logits, partner_index(len(z), z.device))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0):
    """Cross-entropy on logits / tau (tau = 1 is the plain loss the thesis used)."""
    return F.cross_entropy(logits.float() / temperature, labels)


def true_class_outputs(logits: torch.Tensor, targets: torch.Tensor,
                       ties_correct: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, p_true) per row: argmax == target, softmax probability of the target.

    An exact tie for the maximum goes to the first column (torch's argmax, and the thesis's
    top-k accuracy for classifiers), or with `ties_correct` to the target: the thesis's
    SimCLR put the positive in column 0 of its logits, so a partner tied with a negative
    counted as found (it matters only for collapsed representations).
    """
    probs = torch.softmax(logits.float(), dim=1)
    if ties_correct:
        correct = logits.gather(1, targets.view(-1, 1)).squeeze(1) >= logits.max(dim=1).values
    else:
        correct = logits.argmax(dim=1) == targets
    return correct, probs.gather(1, targets.view(-1, 1)).squeeze(1)
