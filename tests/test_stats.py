"""Tests for ssl_dynamics.inspect.stats: slow loop references plus hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ssl_dynamics.inspect import stats as st

SEEDS = [0, 1, 2]  # a few random small problems per property test


# ---------------------------------------------------------------------------- slow references


def slow_r_t(correct, valid=None, aug=None):
    s, e, m, k = correct.shape
    out = np.full((e, k), np.nan)
    augs = range(m) if aug is None else [aug]
    for t in range(e):
        for img in range(k):
            vals = [
                int(correct[i, t, j, img])
                for i in range(s)
                if valid is None or valid[i, t]
                for j in augs
            ]
            if vals:
                out[t, img] = sum(vals) / len(vals)
    return out


def random_problem(seed, s=3, e=4, m=2, k=5, with_mask=True):
    rng = np.random.default_rng(seed)
    correct = rng.random((s, e, m, k)) < rng.random((1, 1, 1, k))
    valid = rng.random((s, e)) < 0.7 if with_mask else None
    return correct, valid


# ---------------------------------------------------------------------------- r_t / r_tilde


def hand_correct():
    # S=2 seeds, E=1 epoch, M=2 augmentations, K=2 images; c[seed, 0] is [aug, image].
    c = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    c[0, 0] = [[1, 0], [1, 1]]
    c[1, 0] = [[0, 0], [1, 0]]
    return c


def test_r_t_hand_two_seeds_two_augs():
    c = hand_correct()
    # image 0: 1,1,0,1 -> 3/4 ; image 1: 0,1,0,0 -> 1/4
    np.testing.assert_allclose(st.r_t(c), [[0.75, 0.25]])
    # r_tilde aug 0: image 0 (1+0)/2, image 1 (0+0)/2 ; aug 1: (1+1)/2, (1+0)/2
    np.testing.assert_allclose(st.r_tilde(c, 0), [[0.5, 0.0]])
    np.testing.assert_allclose(st.r_tilde(c, 1), [[1.0, 0.5]])


def test_r_t_valid_mask_excludes_seed():
    c = hand_correct()
    valid = np.array([[True], [False]])
    # only seed 0 counts: image 0 -> 2/2, image 1 -> 1/2 (not (1+0+0+0)/4)
    np.testing.assert_allclose(st.r_t(c, valid), [[1.0, 0.5]])
    np.testing.assert_allclose(st.r_tilde(c, 0, valid), [[1.0, 0.0]])
    np.testing.assert_array_equal(st.seeds_per_epoch(valid), [1])


def test_r_t_epoch_without_valid_seed_is_nan():
    c = np.ones((2, 3, 2, 4), dtype=bool)
    valid = np.array([[True, False, True], [True, False, False]])
    r = st.r_t(c, valid)
    assert np.isnan(r[1]).all()
    np.testing.assert_allclose(r[[0, 2]], 1.0)
    np.testing.assert_array_equal(st.seeds_per_epoch(valid), [2, 0, 1])


@pytest.mark.parametrize("value", [0, 1])
def test_r_t_single_image_constant(value):
    c = np.full((3, 2, 4, 1), value, dtype=np.uint8)
    np.testing.assert_array_equal(st.r_t(c), np.full((2, 1), float(value)))
    np.testing.assert_array_equal(st.r_tilde(c, 3), np.full((2, 1), float(value)))


@pytest.mark.parametrize("seed", SEEDS)
def test_r_t_and_r_tilde_match_loops(seed):
    correct, valid = random_problem(seed)
    for v in (None, valid):
        np.testing.assert_allclose(st.r_t(correct, v), slow_r_t(correct, v), equal_nan=True)
        for j in range(correct.shape[2]):
            np.testing.assert_allclose(
                st.r_tilde(correct, j, v), slow_r_t(correct, v, aug=j), equal_nan=True
            )


def test_seeds_per_epoch_matches_loop():
    valid = np.random.default_rng(3).random((5, 7)) < 0.5
    expected = [sum(bool(valid[i, t]) for i in range(5)) for t in range(7)]
    np.testing.assert_array_equal(st.seeds_per_epoch(valid), expected)


def test_r_t_rejects_bad_input():
    with pytest.raises(ValueError):
        st.r_t(np.ones((2, 2, 2)))
    with pytest.raises(ValueError):
        st.r_t(np.full((1, 1, 1, 2), 2))
    with pytest.raises(ValueError):
        st.r_t(np.ones((1, 1, 1, 2)))  # float dtype
    with pytest.raises(ValueError):
        st.r_t(np.ones((2, 3, 1, 2), bool), valid=np.ones((3, 2), bool))
    with pytest.raises(ValueError):
        st.r_t(np.ones((2, 3, 1, 2), bool), valid=np.ones((2, 3)))
    with pytest.raises(ValueError):
        st.r_tilde(np.ones((1, 1, 2, 2), bool), 2)
    with pytest.raises(ValueError):
        st.r_tilde(np.ones((1, 1, 2, 2), bool), -1)
    with pytest.raises(ValueError):
        st.seeds_per_epoch(np.ones(3, bool))


# ---------------------------------------------------------------------------- curves, alignment


def test_sorted_curves_matches_loop():
    r = np.random.default_rng(4).random((3, 6))
    out = st.sorted_curves(r)
    for t in range(3):
        assert list(out[t]) == sorted(r[t])


def test_epoch_means():
    r = np.array([[0.0, 1.0], [0.5, 0.5], [np.nan, np.nan]])
    out = st.epoch_means(r)
    np.testing.assert_allclose(out[:2], [0.5, 0.5])
    assert np.isnan(out[2])


def test_align_epochs_hand_with_ties_to_earliest():
    ref = np.array([0.125, 0.5, 0.875])
    other = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    # 0.125 ties epochs 0 and 1 -> 0 ; 0.5 -> 2 ; 0.875 ties 3 and 4 -> 3
    np.testing.assert_array_equal(st.align_epochs(ref, other, [0, 1, 2]), [0, 2, 3])
    np.testing.assert_array_equal(st.align_epochs(ref, other, [2, 0]), [3, 0])


def test_align_epochs_skips_nan_epochs():
    ref = np.array([0.5])
    other = np.array([0.0, np.nan, 0.9])
    np.testing.assert_array_equal(st.align_epochs(ref, other, [0]), [2])


@pytest.mark.parametrize("seed", SEEDS)
def test_align_epochs_matches_loop(seed):
    rng = np.random.default_rng(seed)
    ref, other = rng.random(8), rng.random(11)
    got = st.align_epochs(ref, other, range(8))
    for t_a, g in zip(range(8), got):
        best = min(range(11), key=lambda t: (abs(ref[t_a] - other[t]), t))
        assert g == best


def test_align_epochs_exact_tie_of_count_fractions_goes_to_the_earliest():
    # |2/12 - 3/12| == |4/12 - 3/12| exactly; in floats the later distance is the smaller
    assert abs(2 / 12 - 3 / 12) > abs(4 / 12 - 3 / 12)
    np.testing.assert_array_equal(st.align_epochs(np.array([3 / 12]), np.array([2 / 12, 4 / 12]), [0]), [0])
    # the same through r_t: 12 images, 3 of them right for the reference, 2 then 4 for the other
    ref, other = np.zeros((1, 1, 1, 12), np.uint8), np.zeros((1, 2, 1, 12), np.uint8)
    ref[0, 0, 0, :3], other[0, 0, 0, :2], other[0, 1, 0, :4] = 1, 1, 1
    means = [st.epoch_means(st.r_t(c)) for c in (ref, other)]
    np.testing.assert_array_equal(st.align_epochs(*means, [0]), [0])


@pytest.mark.parametrize("seed", SEEDS)
def test_align_epochs_of_count_fractions_matches_exact_loop(seed):
    # means count / (valid seeds x M x K) with a varying number of valid seeds, on a coarse
    # grid so that exact ties are common; the slow version compares Fractions
    from fractions import Fraction

    rng = np.random.default_rng(seed)
    m_k = 3 * 4

    def draw(e):
        dens = rng.integers(1, 4, e) * m_k
        return [Fraction(int(rng.integers(0, d + 1)), int(d)) for d in dens]

    ref, other = draw(30), draw(30)  # seeds 0 and 1 each hold two ties floats get wrong
    got = st.align_epochs(np.array([float(f) for f in ref]), np.array([float(f) for f in other]), range(30))
    for t_a, g in zip(range(30), got):
        assert g == min(range(30), key=lambda t: (abs(ref[t_a] - other[t]), t))


def test_align_epochs_errors():
    with pytest.raises(ValueError):
        st.align_epochs(np.array([0.1]), np.array([0.2]), [1])
    with pytest.raises(ValueError):
        st.align_epochs(np.array([np.nan]), np.array([0.2]), [0])
    with pytest.raises(ValueError):
        st.align_epochs(np.array([0.1]), np.array([np.nan]), [0])


def test_first_epoch_reaching():
    p = np.array([0.1, 0.3, np.nan, 0.2, 0.6])
    assert st.first_epoch_reaching(p, 0.25) == 1
    assert st.first_epoch_reaching(p, 0.3) == 1  # >= is inclusive
    assert st.first_epoch_reaching(p, 0.5) == 4
    assert st.first_epoch_reaching(p, 0.7) is None
    assert isinstance(st.first_epoch_reaching(p, 0.0), int)


def exact_half_tie(n_seeds, k, per_image_low, m=1):
    """[S, 3, M, K]: epoch 1 has exactly half of all (seed, aug, image) indicators correct,
    image counts alternating low / S*M - low; epoch 0 all wrong, epoch 2 all right."""
    c = np.zeros((n_seeds, 3, m, k), np.uint8)
    c[:, 2] = 1
    for img in range(k):
        count = per_image_low if img % 2 == 0 else n_seeds * m - per_image_low
        c[:, 1, :, img] = (np.arange(n_seeds * m) < count).reshape(n_seeds, m)
    assert c[:, 1].sum() * 2 == c[:, 1].size  # exactly half correct
    return c


@pytest.mark.parametrize("n_seeds, k, low, m", [(3, 4, 2, 1), (30, 1024, 8, 1), (30, 1024, 1, 2)])
def test_exact_tie_with_p0_reaches_it(n_seeds, k, low, m):
    # a float mean of the K rates count/(S*M) lands just below 0.5 for these (e.g.
    # 2/3, 1/3, 2/3, 1/3 sums to 0.49999999999999994 * 4); p_hat must be exactly 0.5
    c = exact_half_tie(n_seeds, k, low, m)
    cand = np.array([False, True, True])
    tilde = [st.epoch_means(st.r_tilde(c, 0))] if m == 1 else []  # Table 4.1's p_hat0
    for p in [st.epoch_means(st.r_t(c))] + tilde:
        assert p[1] == 0.5
        assert st.first_epoch_reaching(p, 0.5, cand) == 1
    # the per-class 0.5 level: every image in class 0, or split over two classes
    labels = np.zeros(k, np.int64)
    assert st.per_class_mean(st.r_t(c), labels, 1)[1, 0] == 0.5
    labels = (np.arange(k) // 2) % 2  # pairs (low, high): each class exactly half correct
    np.testing.assert_array_equal(st.per_class_mean(st.r_t(c), labels, 2)[1], [0.5, 0.5])


@pytest.mark.parametrize("seed", SEEDS)
def test_epoch_means_equal_integer_totals(seed):
    correct, valid = random_problem(seed, s=7, e=5, m=3, k=40)
    valid[:, 0] = False  # an epoch with no valid seed stays NaN
    n = valid.sum(axis=0)
    total = np.einsum("sejk,se->e", correct.astype(np.int64), valid.astype(np.int64))
    with np.errstate(invalid="ignore"):
        want = total / (n * 3 * 40)  # int / int: the exact fraction, rounded once
        want0 = np.einsum("sek,se->e", correct[:, :, 0].astype(np.int64), valid) / (n * 40)
    np.testing.assert_array_equal(st.epoch_means(st.r_t(correct, valid)), want)
    np.testing.assert_array_equal(st.epoch_means(st.r_tilde(correct, 0, valid)), want0)


def test_epoch_means_of_arbitrary_floats_is_the_plain_mean():
    r = np.random.default_rng(3).random((4, 9))
    np.testing.assert_array_equal(st.epoch_means(r), r.mean(axis=1))


# ---------------------------------------------------------------------------- binomial tests


@pytest.mark.parametrize("seed", SEEDS)
def test_count_frequencies_matches_loop(seed):
    rng = np.random.default_rng(seed)
    n = 7
    counts = rng.integers(0, n + 1, size=50)
    expected = [sum(1 for c in counts if c == v) for v in range(n + 1)]
    np.testing.assert_array_equal(st.count_frequencies(counts, n), expected)


def test_count_frequencies_errors():
    with pytest.raises(ValueError):
        st.count_frequencies(np.array([0, 4]), 3)
    with pytest.raises(ValueError):
        st.count_frequencies(np.array([-1, 2]), 3)
    with pytest.raises(ValueError):
        st.count_frequencies(np.array([0.5]), 3)
    np.testing.assert_array_equal(st.count_frequencies(np.array([1.0, 1.0]), 2), [0, 2, 0])


@pytest.mark.parametrize("n,p", [(1, 0.3), (5, 0.5), (30, 0.25), (4, 0.0), (4, 1.0)])
def test_binomial_expected_matches_formula(n, p):
    k = 17
    slow = [k * math.comb(n, v) * p**v * (1 - p) ** (n - v) for v in range(n + 1)]
    out = st.binomial_expected(k, n, p)
    np.testing.assert_allclose(out, slow, rtol=1e-10, atol=1e-12)
    assert out.sum() == pytest.approx(k)


def test_binomial_expected_errors():
    with pytest.raises(ValueError):
        st.binomial_expected(10, 5, 1.5)
    with pytest.raises(ValueError):
        st.binomial_expected(0, 5, 0.5)
    with pytest.raises(ValueError):
        st.binomial_expected(10, 0, 0.5)


def slow_pearson(obs, exp):
    return sum((o - e) ** 2 / e for o, e in zip(obs, exp))


def test_chisquare_faithful_hand():
    # n=2, p=1/2, K=4 images with counts 0,0,1,2: observed [2,1,1], expected [1,2,1]
    stat, pval = st.chisquare_faithful(np.array([0, 0, 1, 2]), 2, 0.5)
    assert stat == pytest.approx(1.0 + 0.5 + 0.0)
    # dof = 3 bins - 1 - 1 (estimated p) = 1
    assert pval == pytest.approx(sps.chi2.sf(1.5, 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_chisquare_faithful_matches_loop_and_scipy_call(seed):
    rng = np.random.default_rng(seed)
    n, k = 10, 200
    counts = rng.binomial(n, rng.random(k))  # heterogeneous difficulty
    p = counts.mean() / n
    obs = [sum(1 for c in counts if c == v) for v in range(n + 1)]
    exp = [k * math.comb(n, v) * p**v * (1 - p) ** (n - v) for v in range(n + 1)]
    stat, pval = st.chisquare_faithful(counts, n, p)
    assert stat == pytest.approx(slow_pearson(obs, exp), rel=1e-9)
    assert pval == pytest.approx(sps.chi2.sf(stat, n + 1 - 2), rel=1e-9, abs=1e-300)
    ref = sps.chisquare(obs, np.asarray(exp) * (k / np.sum(exp)), ddof=1)
    assert stat == pytest.approx(ref.statistic, rel=1e-12)


def test_chisquare_faithful_can_be_astronomical():
    # bimodal counts with p = 1/2: the extreme bins have expected K/2^30 ~ 1e-6
    counts = np.array([0] * 512 + [30] * 512)
    stat, pval = st.chisquare_faithful(counts, 30, 0.5)
    assert stat > 1e10 and np.isfinite(stat)
    assert pval == 0.0


def test_chisquare_faithful_zero_expected():
    # p = 1: only bin n has expected > 0; an image in any other bin is impossible -> inf
    stat, pval = st.chisquare_faithful(np.array([3, 2, 3]), 3, 1.0)
    assert stat == np.inf and pval == 0.0
    # all images in the single possible bin: one bin left -> test undefined -> ValueError
    with pytest.raises(ValueError):
        st.chisquare_faithful(np.array([3, 3, 3]), 3, 1.0)


def test_pool_tail_bins_hand():
    # n=4, p=1/2, K=32: expected [2, 8, 12, 8, 2] -> [0..1], [2], [3..4]
    bins = st.pool_tail_bins(st.binomial_expected(32, 4, 0.5))
    np.testing.assert_array_equal(bins, [[0, 1], [2, 2], [3, 4]])


def test_pool_tail_bins_small_grids_hand():
    # a right tail that must stop at the left tail: [2, 3, 6, 1] -> [0..1] (5), [2..3] (7);
    # and the real pmf of 3 seeds, 14 images, p 0.55: [1.28, 4.68, 5.72, 2.33] -> [0..1], [2..3]
    np.testing.assert_array_equal(st.pool_tail_bins([2.0, 3.0, 6.0, 1.0]), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(st.pool_tail_bins(st.binomial_expected(14, 3, 0.55)), [[0, 1], [2, 3]])
    # exactly the minimum is enough ("every expected count >= 5"): nothing pooled
    np.testing.assert_array_equal(st.pool_tail_bins([5.0, 5.0, 5.0]), [[0, 0], [1, 1], [2, 2]])


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_pool_tail_bins_partition_few_seeds_and_images(n):
    """Few seeds and images (the demo's scale), where the two tails meet: every grid of
    K = 5..30 and p on a 0.05 grid gives contiguous, non-overlapping groups of >= 5."""
    for k in range(5, 31):
        for p in np.arange(0.05, 1.0, 0.05):
            e = st.binomial_expected(k, n, float(p))
            bins = st.pool_tail_bins(e)
            check_partition(bins, n + 1)
            sums = np.array([e[lo : hi + 1].sum() for lo, hi in bins])
            assert len(bins) == 1 or np.all(sums >= 5.0 - 1e-9), (k, p, bins)


def test_pool_tail_bins_non_unimodal_safety_pass():
    e = np.array([10, 0, 10, 0, 0, 10, 0.5, 0.5, 10])
    bins = st.pool_tail_bins(e)
    np.testing.assert_array_equal(bins, [[0, 1], [2, 4], [5, 5], [6, 8]])


def check_partition(bins, length):
    assert bins[0, 0] == 0 and bins[-1, 1] == length - 1
    assert np.all(bins[1:, 0] == bins[:-1, 1] + 1)
    assert np.all(bins[:, 1] >= bins[:, 0])


@pytest.mark.parametrize("seed", range(20))
def test_pool_tail_bins_property(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    k = int(rng.integers(1, 3000))
    e = st.binomial_expected(k, n, float(rng.random()))
    bins = st.pool_tail_bins(e)
    check_partition(bins, n + 1)
    sums = np.array([e[lo : hi + 1].sum() for lo, hi in bins])
    if len(bins) > 1:
        assert np.all(sums >= 5.0)
    else:
        assert sums[0] == pytest.approx(k)
    # tails only: every middle group is a single bin
    assert np.all(bins[1:-1, 0] == bins[1:-1, 1])


def test_chisquare_pooled_two_groups_reports_the_statistic_without_a_p_value():
    # K = 16, N = 3, p = 1/2: expected [2, 6, 6, 2] -> groups [0..1] (8), [2..3] (8), dof 0;
    # observed counts 0,0,0,1,1 | 2,...: frequencies [3, 2, 6, 5] -> pooled 5 and 11
    counts = np.repeat(np.arange(4), [3, 2, 6, 5])
    stat, pval, dof, bins = st.chisquare_pooled(counts, 3, 0.5)
    np.testing.assert_array_equal(bins, [[0, 1], [2, 3]])
    assert dof == 0 and np.isnan(pval)
    assert stat == pytest.approx((5 - 8) ** 2 / 8 + (11 - 8) ** 2 / 8)


def test_chisquare_pooled_hand():
    # expected [2,8,12,8,2]; observed frequencies [4,4,10,10,4] -> pooled 8,10,14 vs 10,12,10
    counts = np.repeat(np.arange(5), [4, 4, 10, 10, 4])
    stat, pval, dof, bins = st.chisquare_pooled(counts, 4, 0.5)
    hand = 4 / 10 + 4 / 12 + 16 / 10
    assert stat == pytest.approx(hand)
    assert dof == 1
    assert pval == pytest.approx(sps.chi2.sf(hand, 1))
    np.testing.assert_array_equal(bins, [[0, 1], [2, 2], [3, 4]])


@pytest.mark.parametrize("seed", SEEDS)
def test_chisquare_pooled_matches_hand_pooling(seed):
    rng = np.random.default_rng(seed)
    n, k = 30, 1024
    counts = rng.binomial(n, rng.beta(2, 2, size=k))
    p = counts.mean() / n
    stat, pval, dof, bins = st.chisquare_pooled(counts, n, p)
    obs = [sum(1 for c in counts if c == v) for v in range(n + 1)]
    exp = [k * math.comb(n, v) * p**v * (1 - p) ** (n - v) for v in range(n + 1)]
    pooled_obs = [sum(obs[lo : hi + 1]) for lo, hi in bins]
    pooled_exp = [sum(exp[lo : hi + 1]) for lo, hi in bins]
    assert min(pooled_exp) >= 5.0
    check_partition(bins, n + 1)
    assert dof == len(bins) - 2
    assert stat == pytest.approx(slow_pearson(pooled_obs, pooled_exp), rel=1e-9)
    assert pval == pytest.approx(sps.chi2.sf(stat, dof), rel=1e-9, abs=1e-300)
    # the pooled statistic is far smaller than the faithful one on heterogeneous data
    assert stat < st.chisquare_faithful(counts, n, p)[0]


def test_chisquare_pooled_binomial_data_not_rejected():
    rng = np.random.default_rng(11)
    counts = rng.binomial(30, 0.4, size=4096)
    _, pval, _, _ = st.chisquare_pooled(counts, 30, counts.mean() / 30)
    assert pval > 0.001


def test_chisquare_pooled_too_few_bins_gives_nan_pvalue():
    # K=6, n=4, p=1/2: total expected 6, so everything pools into one group
    stat, pval, dof, bins = st.chisquare_pooled(np.array([0, 1, 2, 2, 3, 4]), 4, 0.5)
    assert np.isnan(pval)
    assert dof == -1
    np.testing.assert_array_equal(bins, [[0, 4]])
    assert stat == pytest.approx(0.0)


def test_g_test_pooled_hand():
    counts = np.repeat(np.arange(5), [4, 4, 10, 10, 4])
    stat, pval, dof, _ = st.g_test_pooled(counts, 4, 0.5)
    hand = 2 * (8 * math.log(8 / 10) + 10 * math.log(10 / 12) + 14 * math.log(14 / 10))
    assert stat == pytest.approx(hand)
    assert dof == 1
    assert pval == pytest.approx(sps.chi2.sf(hand, 1))


# ---------------------------------------------------------------------------- MAE


def slow_mae(r, n, p, draws, seed):
    rng = np.random.default_rng(seed)
    rs = sorted(r)
    out = []
    for _ in range(draws):
        b = sorted(rng.binomial(n, p, size=len(r)) / n)
        out.append(sum(abs(x - y) for x, y in zip(rs, b)) / len(r))
    return out


def test_binomial_mae_matches_loop_and_is_deterministic():
    r = np.random.default_rng(0).random(64)
    mean, std, per = st.binomial_mae(r, 30, 0.4, 5, rng=np.random.default_rng(7))
    slow = slow_mae(r, 30, 0.4, 5, 7)
    np.testing.assert_allclose(per, slow)
    assert mean == pytest.approx(np.mean(slow))
    assert std == pytest.approx(np.std(slow, ddof=0))
    again = st.binomial_mae(r, 30, 0.4, 5, rng=np.random.default_rng(7))
    assert again[0] == mean and again[1] == std
    np.testing.assert_array_equal(again[2], per)


def test_binomial_mae_small_for_binomial_noise():
    rng = np.random.default_rng(1)
    r = rng.binomial(30, 0.4, size=20000) / 30
    mean, std, per = st.binomial_mae(r, 30, 0.4, rng=np.random.default_rng(2))
    assert per.shape == (10,)
    assert mean < 0.01


def test_binomial_mae_large_for_bimodal():
    r = np.array([0.0] * 512 + [1.0] * 512)
    mean, _, _ = st.binomial_mae(r, 30, 0.5, rng=np.random.default_rng(3))
    assert mean > 0.1


def test_binomial_mae_hand_degenerate():
    mean, std, _ = st.binomial_mae(np.ones(10), 30, 1.0, 3, rng=np.random.default_rng(0))
    assert mean == 0.0 and std == 0.0
    mean, _, _ = st.binomial_mae(np.zeros(10), 30, 1.0, 3, rng=np.random.default_rng(0))
    assert mean == 1.0


def test_binomial_mae_errors():
    with pytest.raises(ValueError):
        st.binomial_mae(np.array([0.5, np.nan]), 30, 0.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        st.binomial_mae(np.array([0.5]), 30, 0.5, rng=0)
    with pytest.raises(ValueError):
        st.binomial_mae(np.array([0.5]), 30, 0.5, 0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError):
        st.binomial_mae(np.array([0.5]), 30, 0.5)  # rng is required


# ---------------------------------------------------------------------------- per class, spread


def test_per_class_mean_matches_loop_and_empty_class_nan():
    rng = np.random.default_rng(5)
    r = rng.random((3, 12))
    r[1] = np.nan  # an unevaluated epoch
    labels = rng.integers(0, 3, size=12)  # classes 0..2 only; class 3 is empty
    labels[:3] = [0, 1, 2]
    out = st.per_class_mean(r, labels, 4)
    assert out.shape == (3, 4)
    for t in (0, 2):
        for c in range(3):
            vals = [r[t, k] for k in range(12) if labels[k] == c]
            assert out[t, c] == pytest.approx(sum(vals) / len(vals))
    assert np.isnan(out[:, 3]).all()
    assert np.isnan(out[1]).all()


def test_per_class_mean_hand_1d():
    out = st.per_class_mean(np.array([1.0, 0.0, 0.5]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out, [0.5, 0.5])
    with pytest.raises(ValueError):
        st.per_class_mean(np.array([1.0]), np.array([2]), 2)


def test_spread_rows_hand():
    r = np.array([0.5, 0.1, 0.9, 0.3])
    rt = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]])
    order, rs, rts = st.spread_rows(r, rt, step=2)
    # sorted order is [1, 3, 0, 2]; every 2nd -> images 1, 0
    np.testing.assert_array_equal(order, [1, 0])
    np.testing.assert_allclose(rs, [0.1, 0.5])
    np.testing.assert_allclose(rts, [[1.0, 0.0], [11.0, 10.0]])


def test_spread_rows_default_step_count():
    rng = np.random.default_rng(6)
    r, rt = rng.random(1024), rng.random((10, 1024))
    order, rs, rts = st.spread_rows(r, rt)
    assert len(order) == 21  # positions 0, 50, ..., 1000
    assert np.all(np.diff(rs) >= 0)
    assert rts.shape == (10, 21)
    with pytest.raises(ValueError):
        st.spread_rows(r, rt[:, :5])
