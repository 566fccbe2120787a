import math

import pytest
import torch

from ssl_dynamics.losses import (classification_loss, info_nce, pair_logits, partner_index,
                                 true_class_outputs)


def slow_info_nce(z, tau):
    """Eq. 3.2 written out: views 2k, 2k+1 (0-based) are partners; softmax over k != i."""
    n = len(z)
    zn = [v / v.norm() for v in z.double()]
    total = 0.0
    for i in range(n):
        partner = i + 1 if i % 2 == 0 else i - 1
        denom = sum(math.exp(float(zn[k] @ zn[i]) / tau) for k in range(n) if k != i)
        total += -math.log(math.exp(float(zn[partner] @ zn[i]) / tau) / denom)
    return total / n


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("dim", [3, 128])
def test_info_nce_matches_slow_formula(batch, tau, dim):
    z = torch.randn(2 * batch, dim, generator=torch.Generator().manual_seed(batch * 7 + dim))
    assert info_nce(z, tau).item() == pytest.approx(slow_info_nce(z, tau), rel=1e-4, abs=1e-5)


def test_info_nce_batch_one_is_zero():
    # With B = 1 each view has a single candidate: its partner, so p = 1 and the loss is 0.
    z = torch.randn(2, 8)
    assert info_nce(z, 0.07).item() == pytest.approx(0.0, abs=1e-6)


def test_info_nce_is_scale_invariant_and_low_for_matched_pairs():
    base = torch.eye(4).repeat_interleave(2, 0)  # partners identical, others orthogonal
    assert info_nce(base, 0.07) < 1e-3
    assert info_nce(3 * base, 0.07).item() == pytest.approx(info_nce(base, 0.07).item(), abs=1e-6)


def test_pair_logits_rejects_odd_views():
    with pytest.raises(ValueError):
        pair_logits(torch.randn(3, 4), 0.1)


def test_partner_index():
    assert partner_index(6).tolist() == [1, 0, 3, 2, 5, 4]


def test_within_batch_correctness_hand_case():
    # views: image 0 = (a, a'), image 1 = (b, c) where c is closer to a than to b.
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, -0.2]])
    correct, p = true_class_outputs(pair_logits(z, 1.0), partner_index(4))
    # cos(v0,v1)=0.994 > cos(v0,v3)=0.981: views 0 and 1 find each other. View 3's partner
    # is view 2 (cos -0.196) but view 0 is nearer; view 2 prefers view 1 (0.110): both wrong.
    assert correct.tolist() == [True, True, False, False]
    assert torch.all((p > 0) & (p < 1))


def test_simclr_ties_count_as_found_as_in_the_thesis():
    # a collapsed representation: every view equally similar to every other. The thesis put
    # the positive in column 0 of its logits, so argmax found it: every view is correct
    from ssl_dynamics.config import thesis_setups
    from ssl_dynamics.objectives import objective_for

    z = torch.ones(8, 4)
    simclr = objective_for(thesis_setups()["simclr"])
    correct, p = simclr.score(z)
    assert correct.all() and torch.allclose(p, torch.full((8,), 1 / 7))
    # the thesis's own layout, [positive, negatives...], scored with argmax
    logits = pair_logits(z, 0.07)
    part = partner_index(8)
    thesis = [torch.cat([logits[i, part[i]].view(1), logits[i][(torch.arange(8) != i) & (torch.arange(8) != part[i])]])
              for i in range(8)]
    assert all(t.argmax().item() == 0 for t in thesis)
    # a negative above the partner is still a miss: view 3's partner (cos 0.22) loses to
    # view 0 (cos 0.98); the others find theirs (0.995 > 0.993, 0.22 > 0.10)
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.9, 0.2]])
    assert simclr.score(z2)[0].tolist() == [True, True, True, False]


def test_classification_loss_temperature_one_is_cross_entropy():
    logits = torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    expected = -torch.log_softmax(logits, 1)[torch.arange(6), y].mean()
    assert classification_loss(logits, y, 1.0).item() == pytest.approx(expected.item(), rel=1e-6)
    scaled = -torch.log_softmax(logits / 2, 1)[torch.arange(6), y].mean()
    assert classification_loss(logits, y, 2.0).item() == pytest.approx(scaled.item(), rel=1e-6)


def test_true_class_outputs_hand_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    correct, p = true_class_outputs(logits, torch.tensor([0, 1]))
    assert correct.tolist() == [True, False]  # tie: argmax picks the first class
    assert p[0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 1))
    assert p[1].item() == pytest.approx(0.5)


def test_classifier_scores_its_views_at_its_own_temperature():
    """p_true is the softmax of logits / tau, the distribution the setup trained; a tau other
    than 1 changes p_true (not which class wins)."""
    from dataclasses import replace

    from ssl_dynamics.config import preset
    from ssl_dynamics.objectives import objective_for

    out = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]])
    targets = torch.tensor([0, 2])
    sup = preset("thesis").setups["supervised"]
    for tau in (1.0, 2.0, 0.5):
        correct, p_true = objective_for(replace(sup, temperature=tau)).score(out, targets)
        want = torch.softmax(out / tau, dim=1)[torch.arange(2), targets]
        torch.testing.assert_close(p_true, want)
        assert correct.tolist() == [True, False]
