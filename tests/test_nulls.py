"""Tests for ssl_dynamics.inspect.nulls: exact references, worked numbers, calibration.

Tolerances are set from the simulated spread of each quantity (measured once, quoted in the
comments) with a margin of >= 4 standard deviations, so they hold for any seed in practice
while still failing on a wrong formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ssl_dynamics.inspect import nulls as nl
from ssl_dynamics.inspect import overdispersion as od
from ssl_dynamics.inspect import stats as st

# The thesis's design for the worked case.
N, M, K, P = 30, 10, 1024, 0.4


def rng(seed=0):
    return np.random.default_rng(seed)


def literal_null_correct(n, m, k, p, g, rho=0.0):
    """Indicators bool [N, M, K] built literally from the null model (independent of the
    module's pmf shortcut): q ~ Beta(mean p, ICC rho) per (seed, image), M replays ~
    Bernoulli(q); rho = 1 copies one Bernoulli(p) draw to every replay."""
    if rho == 1.0:
        return np.repeat(g.random((n, 1, k)) < p, m, axis=1)
    q = p
    if 0.0 < rho and 0.0 < p < 1.0:
        s = 1.0 / rho - 1.0
        q = g.beta(p * s, (1.0 - p) * s, size=(n, 1, k))
    return g.random((n, m, k)) < q


def r_from_correct(c, valid=None):
    """r_t of one epoch via the package's own stats.r_t ([N, M, K] -> [K])."""
    v = None if valid is None else valid[:, None]
    return st.r_t(c[:, None], v)[0]


# ---------------------------------------------------------------------------- faithful MAE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faithful_mae_equals_stats_binomial_mae_bitwise(seed):
    g = rng(seed)
    r = g.random(int(g.integers(1, 300)))
    n, p, draws = int(g.integers(1, 40)), float(g.random()), int(g.integers(1, 12))
    ref = st.binomial_mae(r, n, p, draws, rng=rng(100 + seed))
    got = nl.faithful_mae(r, n, p, draws, rng(100 + seed))
    assert got[0] == ref[0] and got[1] == ref[1]
    np.testing.assert_array_equal(got[2], ref[2])


def test_worked_mae_floor_homogeneous_and_identical_replays():
    # Measured over 200 sims: homogeneous 0.0491 (sd 0.0007 per sim), identical replays
    # 0.0045 (sd 0.0006). With 100 sims the mean's sd is < 1e-4, so the brief's bands
    # (0.045-0.053 and 0.003-0.008) are > 20 sd of the mean wide but catch a wrong design
    # (e.g. M ignored would give ~0.005 for the homogeneous case, and vice versa).
    hom = nl.mae_null_distribution(N, M, K, P, rng(1), sims=100, draws=10)
    same = nl.mae_null_distribution(N, M, K, P, rng(2), sims=100, draws=10, within_seed_rho=1)
    assert 0.045 < hom.mean() < 0.053
    assert 0.003 < same.mean() < 0.008
    # Normal approximation of the quantile gap: E|Z| (sd_b - sd_r) = 0.0488.
    sd = np.sqrt(P * (1 - P))
    approx = np.sqrt(2 / np.pi) * (sd / np.sqrt(N) - sd / np.sqrt(N * M))
    assert abs(hom.mean() - approx) < 0.002


def test_mae_null_matches_slow_reference():
    # Slow path: literal indicators -> stats.r_t -> faithful_mae, p_hat from the simulated r.
    n, m, k, p, rho = 8, 3, 64, 0.3, 0.3
    g = rng(3)
    slow = []
    for _ in range(300):
        r = r_from_correct(literal_null_correct(n, m, k, p, g, rho))
        slow.append(nl.faithful_mae(r, n, r.mean(), 4, g)[0])
    fast = nl.mae_null_distribution(n, m, k, p, rng(4), sims=3000, draws=4, within_seed_rho=rho)
    assert sps.ks_2samp(slow, fast).pvalue > 1e-3
    assert abs(np.mean(slow) - fast.mean()) < 4 * np.std(fast) / np.sqrt(300)


# ---------------------------------------------------------------------------- simulators


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0])
def test_simulate_null_r_moments(rho):
    # Var r = p(1-p)/(NM) (1 + (M-1) rho); 200 x 1024 draws estimate it to ~0.4 % (sd).
    r = nl.simulate_null_r(N, M, K, P, rng(5), sims=200, within_seed_rho=rho)
    assert r.shape == (200, K)
    assert abs(r.mean() - P) < 0.002
    expected = P * (1 - P) / (N * M) * (1 + (M - 1) * rho)
    assert abs(r.var() / expected - 1) < 0.03
    assert np.all(np.isclose(r * N * M, np.round(r * N * M)))  # multiples of 1/(NM)


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0])
def test_literal_indicators_match_simulated_r(rho):
    # The literal model through stats.r_t has the variance simulate_null_r is built on.
    c = literal_null_correct(N, M, K, P, rng(6), rho)
    assert c.shape == (N, M, K) and c.dtype == np.bool_
    r = r_from_correct(c)
    expected = P * (1 - P) / (N * M) * (1 + (M - 1) * rho)
    # One epoch of 1024 images: variance estimated to ~4.5 % (sd); allow 20 %.
    assert abs(r.var() / expected - 1) < 0.2
    if rho == 1.0:
        assert np.all(c == c[:, :1, :])  # identical replays


# ---------------------------------------------------------------------------- within-seed


def slow_within_seed(c, valid):
    c = c[valid].astype(float)
    n, m, k = c.shape
    p = c.mean()
    if m < 2 or n < 2 or p in (0.0, 1.0):
        return float("nan")
    w = [c[i, j, x] * c[i, jj, x] for i in range(n) for j in range(m) for jj in range(m)
         if j != jj for x in range(k)]
    b = [c[i, j, x] * c[ii, jj, x] for i in range(n) for ii in range(n) if i != ii
         for j in range(m) for jj in range(m) for x in range(k)]
    return float((np.mean(w) - np.mean(b)) / (p - np.mean(b)))  # as estimated: may be < 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_within_seed_correlation_vectorised_equals_loop(seed):
    g = rng(seed)
    s, m, k = 5, 3, 4
    q = g.beta(1, 1, size=(s, 1, k))  # seed x image difficulty: positive correlation
    c = g.random((s, m, k)) < q
    valid = g.random(s) < 0.8
    assert nl.within_seed_correlation(c, valid) == pytest.approx(slow_within_seed(c, valid))


def test_within_seed_correlation_recovers_rho():
    ones = np.ones(N, dtype=bool)
    # Measured sd of the estimate at this design: 0.0004 (rho_w = 0), 0.0022 (rho_w = 0.3).
    iid = nl.within_seed_correlation(literal_null_correct(N, M, K, P, rng(7)), ones)
    assert abs(iid) < 0.003  # unclipped: sampling noise on either side of 0
    est = nl.within_seed_correlation(literal_null_correct(N, M, K, P, rng(8), 0.3), ones)
    assert abs(est - 0.3) < 0.012
    # Heterogeneous images but independent replays: difficulty is not within-seed correlation.
    pk = rng(9).beta(2, 3, size=K)
    het = rng(10).random((N, M, K)) < pk
    assert abs(nl.within_seed_correlation(het, ones)) < 0.003
    # Heterogeneous images AND within-seed correlation 0.3: recovered without the downward
    # bias a pooled p (1 - p) denominator would give (it would say about 0.25 here).
    scale = 1 / 0.3 - 1
    q = rng(11).beta(pk * scale, (1 - pk) * scale, size=(N, 1, K))
    both = rng(12).random((N, M, K)) < q
    assert abs(nl.within_seed_correlation(both, ones) - 0.3) < 0.015


def test_within_seed_correlation_undefined_cases_give_nan():
    c = rng(11).random((4, 3, 5)) < 0.5
    assert np.isnan(nl.within_seed_correlation(c[:, :1], np.ones(4, bool)))  # M = 1
    assert np.isnan(nl.within_seed_correlation(c, np.array([True, False, False, False])))
    assert np.isnan(nl.within_seed_correlation(np.zeros((4, 3, 5), bool), np.ones(4, bool)))
    assert np.isnan(nl.within_seed_correlation(np.ones((4, 3, 5), int), np.ones(4, bool)))
    # image 0 learned by every seed, image 1 by none: no variance left (p - P_b = 0)
    split = np.zeros((3, 2, 2), bool)
    split[:, :, 0] = True
    assert np.isnan(nl.within_seed_correlation(split, np.ones(3, bool)))
    assert nl.null_rho(float("nan")) == 0.0


def test_within_seed_correlation_negative_is_reported_not_clipped():
    """One image, two seeds, two replays; each seed gets exactly one replay right: P_w = 0
    (no seed has both right), P_b = mean over cross-seed pairs = 1/4, p = 1/2:
    rho_w = (0 - 1/4) / (1/2 - 1/4) = -1. The null can only simulate rho >= 0."""
    c = np.array([[[1], [0]], [[0], [1]]])
    assert nl.within_seed_correlation(c, np.ones(2, bool)) == -1.0
    assert nl.null_rho(-1.0) == 0.0 and nl.null_rho(0.3) == 0.3
    c = rng(13).random((6, 4, 50)) < 0.5
    est = nl.within_seed_correlation(c, np.ones(6, bool))
    assert est == pytest.approx(slow_within_seed(c, np.ones(6, bool)))


# ---------------------------------------------------------------------------- chi-square


def test_chisquare_statistic_equals_stats_chisquare_faithful():
    g = rng(12)
    for n, k in [(30, 1024), (5, 40), (2, 7)]:
        counts = g.binomial(n, g.beta(2, 3, size=k))
        hist = np.bincount(counts, minlength=n + 1)[None]
        ref = st.chisquare_faithful(counts, n, counts.mean() / n)[0]
        assert nl._chisquare_from_hist(hist)[0] == pytest.approx(ref, rel=1e-10)


def test_chisquare_null_matches_slow_reference():
    n, k, p = 12, 200, 0.35
    g = rng(13)
    slow = []
    for _ in range(300):
        counts = g.binomial(n, p, size=k)
        slow.append(st.chisquare_faithful(counts, n, counts.mean() / n)[0])
    fast = nl.chisquare_null_distribution(n, k, p, rng(14), sims=3000)
    assert sps.ks_2samp(slow, fast).pvalue > 1e-3


# ---------------------------------------------------------------------------- calibration


def test_calibrate_hand_values():
    out = nl.calibrate(3.0, [1.0, 2.0, 3.0, 4.0])
    assert out["p_value"] == pytest.approx(3 / 5)  # (1 + #{3, 4}) / (1 + 4)
    assert out["z"] == pytest.approx((3 - 2.5) / np.std([1, 2, 3, 4], ddof=1))
    assert out["sims"] == 4 and out["null_mean"] == 2.5
    assert nl.calibrate(9.0, [1.0, 2.0])["p_value"] == pytest.approx(1 / 3)
    assert np.isnan(nl.calibrate(1.0, [2.0, 2.0])["z"])  # zero spread
    # two-sided: twice the smaller tail, capped at 1
    assert nl.calibrate(3.0, [1.0, 2.0, 3.0, 4.0], two_sided=True)["p_value"] == pytest.approx(1.0)
    assert nl.calibrate(0.0, [1.0, 2.0, 3.0, 4.0], two_sided=True)["p_value"] == pytest.approx(2 / 5)
    assert nl.calibrate(9.0, [1.0, 2.0, 3.0, 4.0], two_sided=True)["p_value"] == pytest.approx(2 / 5)


def uniformity_checks(stat, b, rng_, two_sided=False):
    """stat [reps, 1 + b]: column 0 plays 'observed', the other b columns its null."""
    p = np.array([nl.calibrate(row[0], row[1:], two_sided)["p_value"] for row in stat])
    if two_sided:  # twice the smaller one-sided p: below 0.05 in 5% of datasets (ties aside)
        lo, hi = sps.binom.interval(0.999, p.size, 0.05)
        assert lo <= np.sum(p <= 0.05) <= hi + 2  # +2: discrete two-tailed grid
        return
    # Under exchangeability p is uniform on {1, ..., b+1}/(b+1): with b = 99, P(p <= 0.05)
    # = 0.05 exactly (ties only make it smaller). 99.9 % binomial band for 200 reps: 2..21.
    lo, hi = sps.binom.interval(0.999, p.size, 0.05)
    assert lo <= np.sum(p <= 0.05) <= hi
    # Discrete-aware KS: spreading each p uniformly over its grid cell gives U(0, 1).
    jittered = p - rng_.random(p.size) / (b + 1)
    assert sps.kstest(jittered, "uniform").pvalue > 1e-3


def test_homogeneous_data_give_uniform_calibrated_p_values():
    reps, b = 200, 99
    # Smaller design than the thesis (cost): calibration does not depend on the size.
    mae = nl.mae_null_distribution(10, 3, 128, 0.3, rng(15), sims=reps * (b + 1), draws=3)
    uniformity_checks(mae.reshape(reps, b + 1), b, rng(16))
    uniformity_checks(mae.reshape(reps, b + 1), b, rng(16), two_sided=True)
    chi = nl.chisquare_null_distribution(N, K, P, rng(17), sims=reps * (b + 1))
    uniformity_checks(chi.reshape(reps, b + 1), b, rng(18))


def heterogeneous_counts(seed, k=K):
    g = rng(seed)
    return g.binomial(N, g.beta(2, 3, size=k))


def test_heterogeneous_data_are_detected():
    g = rng(19)
    c = g.random((N, M, K)) < g.beta(2, 3, size=K)  # per-image p_k ~ Beta(2, 3)
    r = r_from_correct(c)
    obs = nl.faithful_mae(r, N, r.mean(), 10, g)[0]
    cal = nl.calibrate(obs, nl.mae_null_distribution(N, M, K, r.mean(), g, sims=99, draws=10))
    assert cal["p_value"] == pytest.approx(1 / 100) and cal["z"] > 20
    counts = c[:, 0, :].sum(axis=0)
    obs = st.chisquare_faithful(counts, N, counts.mean() / N)[0]
    cal = nl.calibrate(obs, nl.chisquare_null_distribution(N, K, counts.mean() / N, g, 99))
    assert cal["p_value"] == pytest.approx(1 / 100) and cal["z"] > 20



def beta_difficulty_correct(rho, seed):
    """Indicators [N, M, K] of images whose difficulty p_k ~ Beta(mean P, ICC rho)."""
    g = rng(seed)
    a, b = P * (1 / rho - 1), (1 - P) * (1 / rho - 1)
    return g.random((N, M, K)) < g.beta(a, b, size=K), g


@pytest.mark.parametrize("rho, sign", [(0.03, -1), (0.15, 1)])
def test_mae_departs_from_the_null_in_both_directions(rho, sign):
    # some spread across images pulls r_t towards the binomial noise (MAE below the
    # homogeneous 0.049, z about -50), more pushes it beyond (z about +50)
    c, g = beta_difficulty_correct(rho, seed=int(rho * 1000))
    r = r_from_correct(c)
    obs = nl.faithful_mae(r, N, r.mean(), 10, g)[0]
    cal = nl.calibrate(obs, nl.mae_null_distribution(N, M, K, r.mean(), g, 99, 10), two_sided=True)
    assert sign * cal["z"] > 20 and cal["p_value"] == pytest.approx(2 / 100)
    assert od.betabinomial_fit(c[:, 0].sum(axis=0), N)["p_value"] < 1e-6


def test_mae_crosses_the_null_where_images_clearly_differ():
    # between the two, z changes sign (near rho = 0.085-0.09 for this design; seeds move the
    # point a little): there the MAE sits at the null's mean and its p-value is large, although
    # the beta-binomial test of the same data rejects equally hard images at every rho here;
    # why the report says to compare setups by rho, not by the MAE's p
    z = {}
    for rho in (0.08, 0.095):
        c, g = beta_difficulty_correct(rho, seed=5)
        r = r_from_correct(c)
        obs = nl.faithful_mae(r, N, r.mean(), 10, g)[0]
        z[rho] = nl.calibrate(obs, nl.mae_null_distribution(N, M, K, r.mean(), g, 99, 10))["z"]
        assert od.betabinomial_fit(c[:, 0].sum(axis=0), N)["p_value"] < 1e-100
    assert z[0.08] < -3 and z[0.095] > 3

# ---------------------------------------------------------------------------- beta-binomial


def test_betabinomial_recovers_rho_with_coverage():
    true_rho = 1 / (2 + 3 + 1)
    fits = [od.betabinomial_fit(heterogeneous_counts(100 + i), N) for i in range(40)]
    first = fits[0]
    assert first["ci_low"] < first["rho"] < first["ci_high"]
    assert first["ci_low"] < true_rho < first["ci_high"]
    assert first["mu"] == pytest.approx(0.4, abs=0.03) and first["p_value"] < 1e-10
    assert first["rho"] == pytest.approx(od.icc_anova(heterogeneous_counts(100), N), abs=0.02)
    covered = sum(f["ci_low"] <= true_rho <= f["ci_high"] for f in fits)
    assert covered >= 32  # nominal 95 %: P(<= 31 of 40) = 1e-4



def _slow_icc_anova(counts, n):
    """One-way ANOVA ICC on the expanded K x n 0/1 matrix (image k: counts[k] ones, then
    zeros), sums of squares by explicit loops: MSB = SSB / (K - 1), MSW = SSW / (K (n - 1)),
    ICC = (MSB - MSW) / (MSB + (n - 1) MSW)."""
    k_img = len(counts)
    rows = [[1.0] * int(c) + [0.0] * (n - int(c)) for c in counts]
    grand = sum(sum(r) for r in rows) / (k_img * n)
    ssb = ssw = 0.0
    for r in rows:
        row_mean = sum(r) / n
        ssb += n * (row_mean - grand) ** 2
        for v in r:
            ssw += (v - row_mean) ** 2
    msb, msw = ssb / (k_img - 1), ssw / (k_img * (n - 1))
    return (msb - msw) / (msb + (n - 1) * msw)


def test_icc_anova_hand_worked():
    # counts [1, 2, 0, 2] of n = 3 seeds, K = 4 images:
    # rates 1/3, 2/3, 0, 2/3, grand mean 5/12; deviations -1/12, 3/12, -5/12, 3/12,
    # squares sum to (1 + 9 + 25 + 9) / 144 = 11/36, so SSB = n * 11/36 = 11/12 and
    # MSB = SSB / (K - 1) = 11/36.
    # Within image k: c (1 - c/n)^2 + (n - c) (c/n)^2 = c (n - c) / n = 2/3, 2/3, 0, 2/3,
    # SSW = 2, MSW = SSW / (K (n - 1)) = 2/8 = 1/4 = 9/36.
    # ICC = (11/36 - 9/36) / (11/36 + 2 * 9/36) = 2/29.
    assert od.icc_anova([1, 2, 0, 2], 3) == pytest.approx(2 / 29, rel=1e-12)
    assert _slow_icc_anova([1, 2, 0, 2], 3) == pytest.approx(2 / 29, rel=1e-12)
    # all-or-none images: MSW = 0, ICC = 1; identical counts: MSB = 0, ICC = -1 / (n - 1)
    assert od.icc_anova([0, 3, 3, 0], 3) == pytest.approx(1.0, rel=1e-12)
    assert od.icc_anova([1, 1, 1, 1], 3) == pytest.approx(-0.5, rel=1e-12)


@pytest.mark.parametrize("n,seed", [(2, 0), (5, 1), (N, 2)])
def test_icc_anova_matches_slow_anova_on_expanded_matrix(n, seed):
    g = rng(300 + seed)
    for k_img in (2, 3, 17, 200):
        counts = g.binomial(n, g.beta(2.0, 3.0, size=k_img))
        assert od.icc_anova(counts, n) == pytest.approx(_slow_icc_anova(counts, n), rel=1e-10, abs=1e-12)
    counts = heterogeneous_counts(100)
    assert od.icc_anova(counts, N) == pytest.approx(_slow_icc_anova(counts, N), rel=1e-10)

def test_betabinomial_homogeneous_counts():
    fits = [od.betabinomial_fit(rng(200 + i).binomial(N, P, size=K), N) for i in range(40)]
    first = fits[0]
    assert first["rho"] < 0.01 and first["ci_low"] == 0.0 and first["p_value"] > 0.05
    assert sum(f["ci_low"] == 0.0 for f in fits) >= 32
    assert sum(f["p_value"] < 0.05 for f in fits) <= 8  # nominal 2 of 40
    # The boundary is reachable: under-dispersed samples give exactly rho = 0, p = 1.
    zero = [f for f in fits if f["rho"] == 0.0]
    assert zero and all(f["lr"] == 0.0 and f["p_value"] == 1.0 for f in zero)


def test_betabinomial_all_or_none_counts_reach_rho_one():
    fit = od.betabinomial_fit(np.repeat([0, N], [600, 424]), N)
    assert fit["rho"] > 0.99 and fit["ci_high"] == 1.0
    assert fit["mu"] == pytest.approx(424 / 1024, abs=1e-6)


# ---------------------------------------------------------------------------- rank agreement


def test_rank_agreement_matches_spearman_and_drops_nans():
    g = rng(20)
    a = g.random(50)
    b = a + g.normal(0, 0.3, 50)
    ref = sps.spearmanr(a, b)
    assert nl.rank_agreement(a, b) == pytest.approx((ref.statistic, ref.pvalue, 50))
    a[[3, 7]] = np.nan
    b[[7, 11]] = np.nan
    keep = ~(np.isnan(a) | np.isnan(b))
    ref = sps.spearmanr(a[keep], b[keep])
    assert nl.rank_agreement(a, b) == pytest.approx((ref.statistic, ref.pvalue, 47))
    assert np.isnan(nl.rank_agreement(np.ones(5), np.arange(5.0))[0])
    # two pairs always rank-correlate at +-1: undefined below three (n still reported)
    rho, p, n = nl.rank_agreement(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert np.isnan(rho) and np.isnan(p) and n == 2
    assert nl.rank_agreement(np.arange(3.0), np.arange(3.0))[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_degenerate_rates(p):
    for rho in (0.0, 0.5, 1.0):
        assert np.all(nl.simulate_null_r(N, M, 16, p, rng(), 3, rho) == p)
        assert np.all(nl.mae_null_distribution(N, M, 16, p, rng(), 3, 2, rho) == 0.0)
    assert np.all(nl.chisquare_null_distribution(N, 16, p, rng(), 3) == 0.0)
    fit = od.betabinomial_fit(np.full(16, int(p) * N), N)
    # every rho fits these counts equally well: undefined, not "equally hard" (rho = 0)
    assert fit["mu"] == p and np.isnan(fit["rho"]) and np.isnan(fit["p_value"])
    assert (fit["ci_low"], fit["ci_high"]) == (0.0, 1.0)


def test_single_seed_and_single_image():
    g = rng(21)
    assert nl.simulate_null_r(1, M, K, P, g, 2).shape == (2, K)
    np.testing.assert_allclose(nl.chisquare_null_distribution(1, K, P, g, 5), 0.0, atol=1e-12)
    # one seed: half the images never learned, half always; rho is undefined (30 seeds with
    # the same all-or-none pattern give rho = 1, test_betabinomial_all_or_none_counts_...)
    single = od.betabinomial_fit(np.repeat([0, 1], K // 2), 1)
    assert np.isnan(single["rho"]) and np.isnan(single["p_value"]) and single["ci_high"] == 1.0
    assert nl.faithful_mae([0.5], 1, P, 3, g)[2].shape == (3,)
    assert nl.simulate_null_r(N, M, 1, P, g, 4).shape == (4, 1)
    assert nl.mae_null_distribution(N, M, 1, P, g, 4, 2).shape == (4,)
    assert np.all(np.isfinite(nl.chisquare_null_distribution(N, 1, P, g, 4)))
    one = od.betabinomial_fit([12], N)
    assert 0.0 <= one["ci_low"] <= one["rho"] <= one["ci_high"] <= 1.0
    # one image, hand-worked: seed 0 gets both replays, seed 1 neither -> P_w = 1/2, P_b = 0,
    # p = 1/2: rho_w = (1/2 - 0) / (1/2 - 0) = 1
    assert nl.within_seed_correlation(np.array([[[1], [1]], [[0], [0]]]), np.ones(2, bool)) == 1.0
    assert np.isnan(nl.rank_agreement([1.0], [2.0])[0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nl.faithful_mae([0.1, np.nan], 3, 0.5, 2, rng()), "finite"),
        (lambda: nl.faithful_mae([0.1], 0, 0.5, 2, rng()), "n must"),
        (lambda: nl.faithful_mae([0.1], 3, 1.5, 2, rng()), "p must"),
        (lambda: nl.faithful_mae([0.1], 3, 0.5, 2, np.random.RandomState(0)), "Generator"),
        (lambda: nl.simulate_null_r(3, 0, 4, 0.5, rng(), 2), "m must"),
        (lambda: nl.simulate_null_r(3, 2, 4, 0.5, rng(), 2, -0.1), "within_seed_rho"),
        (lambda: nl.simulate_null_r(3, 2, 4, 0.5, rng(), 2.5), "sims must"),
        (lambda: nl.mae_null_distribution(3, 2, 4, 0.5, rng(), 2, 0), "draws must"),
        (lambda: nl.chisquare_null_distribution(3, 0, 0.5, rng(), 2), "k must"),
        (lambda: nl.within_seed_correlation(np.full((2, 2, 2), 2), np.ones(2, bool)), "0/1"),
        (lambda: nl.within_seed_correlation(np.ones((2, 2, 2), int), np.ones(3, bool)), "valid_t"),
        (lambda: nl.calibrate(np.nan, [1.0]), "observed"),
        (lambda: nl.calibrate(1.0, []), "null"),
        (lambda: od.betabinomial_fit([1, 4], 3), "0..3"),
        (lambda: od.betabinomial_fit([1.5], 3), "whole"),
        (lambda: od.betabinomial_fit([1], 3, alpha=1.0), "alpha"),
        (lambda: od.icc_anova([1], 3), "2 images"),
        (lambda: od.icc_anova([1, 2], 1), "n must"),
        (lambda: nl.rank_agreement([1, 2], [1, 2, 3]), "equal length"),
    ],
)
def test_invalid_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_betabinomial_likelihood_and_interval_match_scipy():
    # Independent likelihood: scipy's betabinom (betaln form) instead of the product form.
    # Mild heterogeneity (rho = 0.01, K = 400: LR ~ 19) so the p-value and both CI ends
    # are informative.
    g = rng(0)
    counts = g.binomial(N, g.beta(0.4 * 99, 0.6 * 99, size=400))
    fit = od.betabinomial_fit(counts, N)

    def loglik(mu, rho):
        if rho == 0.0:
            return sps.binom.logpmf(counts, N, mu).sum()
        s = 1 / rho - 1
        return sps.betabinom.logpmf(counts, N, mu * s, (1 - mu) * s).sum()

    l_hat = loglik(fit["mu"], fit["rho"])
    assert fit["lr"] == pytest.approx(2 * (l_hat - loglik(counts.mean() / N, 0.0)), rel=1e-8)
    assert fit["p_value"] == pytest.approx(0.5 * sps.chi2.sf(fit["lr"], 1))
    assert 0 < fit["ci_low"] < fit["rho"] < fit["ci_high"] < 0.05 and fit["lr"] > 5
    for d_mu, d_rho in [(0.01, 0), (-0.01, 0), (0, 0.005), (0, -0.005)]:
        assert loglik(fit["mu"] + d_mu, fit["rho"] + d_rho) < l_hat
    # At each CI end the profile log-likelihood (max over mu, here on a 1e-4 grid: error
    # ~ curvature * 1e-8, negligible) is 1.92 below the maximum.
    cut = l_hat - 0.5 * sps.chi2.ppf(0.95, 1)
    for rho in (fit["ci_low"], fit["ci_high"]):
        best = max(loglik(mu, rho) for mu in fit["mu"] + np.linspace(-0.01, 0.01, 201))
        assert best == pytest.approx(cut, abs=1e-3)
