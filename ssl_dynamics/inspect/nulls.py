"""Null distributions and calibration for the phase-two difficulty statistics (SPEC section 4).

Pure numpy/scipy, no I/O; bad arguments raise ``ValueError``; all randomness comes from a
caller-supplied ``numpy.random.Generator``.

r_t(x_k) averages N seeds x M replays, so even if every image were equally hard it is much
narrower than the Binom(N, p)/N noise of Table 4.2: the thesis's MAE has a floor set by the
design (N = 30, M = 10, K = 1024, p = 0.4: about 0.049; identical replays, as without
augmentation: about 0.005). Here the statistics are simulated under "every image equally
hard" with exactly the study's design, observed values are calibrated against that (z,
empirical p-value), and a beta-binomial fit measures heterogeneity of difficulty directly.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy import stats as sps

__all__ = ["faithful_mae", "simulate_null_r", "within_seed_correlation", "mae_null_distribution",
           "chisquare_null_distribution", "calibrate", "betabinomial_fit", "icc_anova"]

# Most float64 cells one vectorised chunk of noise draws may hold (2**22 * 8 B = 32 MiB), so
# large simulations stay bounded in memory on a shared machine.
CHUNK_CELLS = 2**22
# Upper end of the rho search: rho = 1 itself (a + b = 0) is not a distribution, and at
# 1 - 1e-9 the beta-binomial is numerically indistinguishable from the all-or-none limit.
RHO_MAX = 1.0 - 1e-9
# Grid (in rho) that brackets the profile-likelihood maximum before bounded refinement; log
# spaced because interesting rho values span 1e-4 (barely heterogeneous) to ~1.
RHO_GRID = np.concatenate([[0.0], np.logspace(-5, np.log10(RHO_MAX), 40)])
# Absolute tolerance on mu and rho in the inner/outer optimisations: far below any
# statistical resolution (K ~ 1e3 images give standard errors ~1e-2).
XTOL = 1e-10


def _int(name: str, v, minimum: int = 1) -> int:
    """Return ``v`` as int after checking it is a whole number >= ``minimum``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _prob(name: str, v) -> float:
    """Return ``v`` as float after checking 0 <= v <= 1 (rejects NaN)."""
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def _rng(rng) -> np.random.Generator:
    """Check that ``rng`` is a numpy Generator (the only allowed source of randomness)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _counts(counts, n: int) -> np.ndarray:
    """Return per-image success counts as int64 after checking they are whole, in 0..n."""
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)) or c.min() < 0 or c.max() > n:
        raise ValueError(f"counts must be whole numbers in 0..{n}")
    return c.astype(np.int64)


def faithful_mae(r, n: int, p: float, draws: int, rng) -> tuple[float, float, np.ndarray]:
    """Table 4.2 MAE for one epoch: mean_k |sort(r)_k - sort(b)_k|, b_k ~ Binom(n, p)/n.

    ``draws`` repetitions; returns (mean, std with ddof 0, per_draw [draws]). Consumes the
    generator exactly like ``stats.binomial_mae`` (one K-vector per draw, in order), so the
    result is identical for the same generator state.
    """
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"r must be a non-empty finite 1-D array [K], got shape {a.shape}")
    n, p, draws = _int("n", n), _prob("p", p), _int("draws", draws)
    b = np.sort(_rng(rng).binomial(n, p, size=(draws, a.size)) / n, axis=-1)
    per_draw = np.mean(np.abs(np.sort(a) - b), axis=1)
    return float(per_draw.mean()), float(per_draw.std()), per_draw


def _total_pmf(n_valid: int, m: int, p: float, rho: float) -> np.ndarray:
    """pmf [N M + 1] of an image's successes over N seeds x M replays under the null.

    Per (seed, image): Binom(M, p) (rho = 0), all-or-none Bernoulli(p) (rho = 1), else
    BetaBinom(M, a, b) with a + b = 1/rho - 1; seeds are independent: N-fold convolution.
    """
    if rho == 0.0 or m == 1:  # m == 1: a Beta-Bernoulli is marginally Bernoulli(p)
        one = sps.binom.pmf(np.arange(m + 1), m, p)
    elif rho == 1.0:
        one = np.zeros(m + 1)
        one[0], one[m] = 1.0 - p, p
    else:
        scale = 1.0 / rho - 1.0
        one = sps.betabinom.pmf(np.arange(m + 1), m, p * scale, (1.0 - p) * scale)
    total = np.ones(1)
    for _ in range(n_valid):
        total = np.convolve(total, one)
    return total / total.sum()


def simulate_null_r(n_valid, m, k, p, rng, sims, within_seed_rho=0.0) -> np.ndarray:
    """r_t [sims, K] simulated under "every image equally hard" with the study's design.

    r = (successes over N seeds x M replays) / (N M), images independent. rho_w = 0: all
    indicators iid Bernoulli(p), r ~ Binom(NM, p)/(NM). 0 < rho_w < 1: the M replays of a
    (seed, image) are Bernoulli(q) with q ~ Beta(mean p, ICC rho_w). rho_w = 1: identical
    replays, r ~ Binom(N, p)/N. Totals are drawn exactly from their pmf (inverse CDF).
    """
    n_valid, m, k, sims = _int("n_valid", n_valid), _int("m", m), _int("k", k), _int("sims", sims)
    p, rho, rng = _prob("p", p), _prob("within_seed_rho", within_seed_rho), _rng(rng)
    if p in (0.0, 1.0):
        return np.full((sims, k), p)
    cdf = np.cumsum(_total_pmf(n_valid, m, p, rho))
    totals = np.minimum(np.searchsorted(cdf, rng.random((sims, k)), side="right"), cdf.size - 1)
    return totals / float(n_valid * m)  # same arithmetic as stats.r_t


def within_seed_correlation(correct_t, valid_t) -> float:
    """Within-seed replay correlation not explained by image difficulty, for one epoch.

    correct_t [S, M, K], valid_t bool [S]. With s_ik = successes of seed i on image k:
    P_w = P(two different replays of one seed and image both correct), P_b = P(replays
    from two different seeds of one image both correct), both averaged over images;
    rho_w = (P_w - P_b) / (p - P_b), clipped to [0, 1]. P_b estimates the mean of p_k^2
    over images (seeds are independent), so the denominator is an unbiased estimate of
    the mean of p_k (1 - p_k), the per-image Bernoulli variance: heterogeneous difficulty
    does not bias rho_w downwards (with equally hard images it equals p (1 - p)).
    Returns 0.0 when undefined: M = 1, fewer than 2 valid seeds, or p in {0, 1}.
    """
    c, v = np.asarray(correct_t), np.asarray(valid_t)
    if c.ndim != 3 or c.size == 0:
        raise ValueError(f"correct_t must be a non-empty [S, M, K] array, got shape {c.shape}")
    if c.dtype != np.bool_ and not (np.issubdtype(c.dtype, np.integer) and c.min() >= 0
                                    and c.max() <= 1):
        raise ValueError("correct_t must be bool or 0/1 integers")
    if v.dtype != np.bool_ or v.shape != (c.shape[0],):
        raise ValueError(f"valid_t must be a bool array of shape ({c.shape[0]},)")
    s = c[v].sum(axis=1, dtype=np.int64)  # [N, K]
    n, m, k = s.shape[0], c.shape[1], c.shape[2]
    p = s.sum() / (n * m * k) if n else 0.0
    if m < 2 or n < 2 or p in (0.0, 1.0):
        return 0.0
    p_within = np.sum(s * (s - 1)) / (n * k * m * (m - 1))
    col = s.sum(axis=0)
    p_between = np.sum(col**2 - np.sum(s**2, axis=0)) / (k * n * (n - 1) * m * m)
    spread = p - p_between
    if spread <= 0:  # every image all-or-none across seeds: no within-seed variance left
        return 0.0
    return float(np.clip((p_within - p_between) / spread, 0.0, 1.0))


def _sorted_binomial_noise(n: int, p_hat: np.ndarray, k: int, draws: int, rng) -> np.ndarray:
    """Sorted Binom(n, p_hat)/n samples [len(p_hat), draws, K] drawn via their histogram.

    The sorted sample of K iid draws is its multinomial(K, pmf) histogram expanded in
    order, so this equals (in distribution) sorting K binomial draws, at O(n) cost per draw.
    """
    pmf = sps.binom.pmf(np.arange(n + 1), n, p_hat[:, None])
    pmf /= pmf.sum(axis=1, keepdims=True)
    hist = rng.multinomial(k, pmf[:, None, :], size=(p_hat.size, draws))
    values = np.tile(np.arange(n + 1) / n, p_hat.size * draws)
    return np.repeat(values, hist.ravel()).reshape(p_hat.size, draws, k)


def mae_null_distribution(n_valid, m, k, p, rng, sims, draws, within_seed_rho=0.0):
    """Faithful MAE [sims] of r simulated under the equally-hard null (``simulate_null_r``).

    As in the real analysis, p_hat is re-estimated from each simulated r (mean over images)
    and the MAE is the mean over ``draws`` Binom(N, p_hat)/N noise draws.
    """
    draws, rng = _int("draws", draws), _rng(rng)
    r = np.sort(simulate_null_r(n_valid, m, k, p, rng, sims, within_seed_rho), axis=-1)
    out, step = np.empty(r.shape[0]), max(1, CHUNK_CELLS // (draws * r.shape[1]))
    for lo in range(0, r.shape[0], step):
        b = _sorted_binomial_noise(n_valid, r[lo:lo + step].mean(axis=1), k, draws, rng)
        out[lo:lo + step] = np.abs(r[lo:lo + step, None, :] - b).mean(axis=2).mean(axis=1)
    return out


def chisquare_null_distribution(n_valid, k, p, rng, sims) -> np.ndarray:
    """Faithful all-bins chi-square statistics [sims] of counts n_k ~ Binom(N, p), K images.

    Per simulation p_hat0 = mean(n_k)/N, expected = K Binom(N, p_hat0).pmf rescaled to K;
    bins with expected 0 and observed 0 are dropped (observed > 0 where expected is 0 gives
    inf), as in ``stats.chisquare_faithful``. N = 1 or p in {0, 1} fit exactly (0 up to
    rounding). The count histogram is drawn directly as multinomial(K, Binom(N, p).pmf).
    """
    n, k, p, sims = _int("n_valid", n_valid), _int("k", k), _prob("p", p), _int("sims", sims)
    pmf = sps.binom.pmf(np.arange(n + 1), n, p)
    return _chisquare_from_hist(_rng(rng).multinomial(k, pmf / pmf.sum(), size=sims))


def _chisquare_from_hist(hist) -> np.ndarray:
    """Faithful chi-square statistic per row of count histograms [sims, N + 1]."""
    f_obs = np.asarray(hist, dtype=np.float64)
    n, k = f_obs.shape[1] - 1, f_obs.sum(axis=1, keepdims=True)
    p_hat = f_obs @ np.arange(n + 1) / (k[:, 0] * n)
    f_exp = sps.binom.pmf(np.arange(n + 1), n, p_hat[:, None])
    f_exp *= k / f_exp.sum(axis=1, keepdims=True)  # same total as observed, like scipy
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (f_obs - f_exp) ** 2 / f_exp
    terms[(f_exp <= 0) & (f_obs == 0)] = 0.0
    terms[(f_exp <= 0) & (f_obs > 0)] = np.inf
    return terms.sum(axis=1)


def calibrate(observed, null, two_sided: bool = False) -> dict:
    """Calibrate an observed statistic against its simulated null distribution [sims].

    z = (observed - null_mean) / null_std (std ddof 1; NaN when it is 0 or undefined);
    p_value = (1 + #{null >= observed}) / (1 + sims), the one-sided upper-tail empirical
    p-value (never 0; smallest possible 1 / (1 + sims)). With `two_sided`, twice the smaller
    of the two tails (capped at 1): for statistics that depart from the null either way,
    like Table 4.2's MAE, which extra variance across images can push below its floor (r_t
    moves towards the binomial noise) as well as above it.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size == 0 or np.any(np.isnan(null)):
        raise ValueError("null must be a non-empty 1-D array without NaN")
    obs, mean = float(observed), float(null.mean())
    if np.isnan(obs):
        raise ValueError("observed must not be NaN")
    std = float(null.std(ddof=1)) if null.size > 1 else float("nan")  # ddof 1: sample std
    ok = np.isfinite(std) and std > 0 and np.isfinite(mean) and np.isfinite(obs)
    z = (obs - mean) / std if ok else float("nan")
    upper = (1.0 + np.count_nonzero(null >= obs)) / (1.0 + null.size)
    lower = (1.0 + np.count_nonzero(null <= obs)) / (1.0 + null.size)
    p_value = min(1.0, 2.0 * min(upper, lower)) if two_sided else upper
    return {"z": z, "p_value": float(p_value), "null_mean": mean, "null_std": std,
            "sims": int(null.size)}


def _bb_profile(rho, g, h, k_img) -> tuple[float, float]:
    """(profile log-likelihood, mu_hat) of the beta-binomial at ``rho``, from g, h, K.

    Product form without the binomial coefficients (they cancel in every ratio):
    l = sum_j g_j log(mu + j t) + h_j log(1 - mu + j t) - K log(1 + j t), t = rho / (1 - rho),
    continuous at rho = 0 (the binomial). Concave in mu: mu_hat is the root of the score.
    """
    jt = np.arange(g.size) * (rho / (1.0 - rho))

    def score(mu):
        return g @ (1.0 / (mu + jt)) - h @ (1.0 / (1.0 - mu + jt))

    mu = optimize.brentq(score, XTOL, 1.0 - XTOL, xtol=XTOL)
    a = np.where(g > 0, g * np.log(mu + jt), 0.0)  # g_j = 0 terms vanish (0 log 0 = 0)
    b = np.where(h > 0, h * np.log(1.0 - mu + jt), 0.0)
    return float(np.sum(a + b) - k_img * np.sum(np.log1p(jt))), mu


def betabinomial_fit(counts, n: int, alpha: float = 0.05) -> dict:
    """ML beta-binomial fit to per-image success counts over ``n`` seeds.

    Returns dict: mu, rho = 1/(a+b+1) (0 = homogeneous difficulty, binomial), ci_low/ci_high
    (profile-likelihood interval, chi2(1) cutoff), lr = 2(l(rho_hat) - l(0)) and p_value =
    0.5 P(chi2_1 > lr) (boundary mixture; 1 when lr = 0). If rho is not identifiable (n = 1
    or all counts 0 / all n), rho = 0 with CI [0, 1] and p_value 1.
    """
    n = _int("n", n)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    c = _counts(counts, n)
    mean_rate = c.mean() / n
    out = {"mu": float(mean_rate), "rho": 0.0, "ci_low": 0.0, "ci_high": 1.0,
           "lr": 0.0, "p_value": 1.0, "k": int(c.size), "n": n}
    if n == 1 or mean_rate in (0.0, 1.0):
        return out
    # Sufficient statistics from the count histogram, j = 0..n-1:
    # g[j] = #{images with count > j}, h[j] = #{images with n - count > j}.
    freq = np.bincount(c, minlength=n + 1).astype(np.float64)
    g, h, k_img = freq[::-1].cumsum()[::-1][1:], freq.cumsum()[:-1][::-1], float(c.size)

    def prof(rho):
        return _bb_profile(rho, g, h, k_img)[0]

    grid = np.array([prof(r) for r in RHO_GRID])
    i = int(np.argmax(grid))
    lo, hi = RHO_GRID[max(i - 1, 0)], RHO_GRID[min(i + 1, RHO_GRID.size - 1)]
    res = optimize.minimize_scalar(lambda r: -prof(r), bounds=(lo, hi), method="bounded",
                                   options={"xatol": XTOL})
    rho_hat = res.x if -res.fun > grid[i] else RHO_GRID[i]  # keeps rho = 0 reachable
    l_hat, mu_hat = _bb_profile(rho_hat, g, h, k_img)
    lr = max(0.0, 2.0 * (l_hat - grid[0]))
    cut = l_hat - 0.5 * sps.chi2.ppf(1.0 - alpha, 1)

    def above(rho):
        return prof(rho) - cut

    out.update(mu=float(mu_hat), rho=float(rho_hat), lr=float(lr),
               p_value=float(0.5 * sps.chi2.sf(lr, 1)) if lr > 0 else 1.0)
    if above(0.0) < 0:
        out["ci_low"] = float(optimize.brentq(above, 0.0, rho_hat, xtol=XTOL))
    if above(RHO_MAX) < 0:
        out["ci_high"] = float(optimize.brentq(above, rho_hat, RHO_MAX, xtol=XTOL))
    return out


def icc_anova(counts, n: int) -> float:
    """One-way ANOVA intra-class correlation of binary outcomes (images = groups of n seeds).

    (MSB - MSW) / (MSB + (n - 1) MSW); moment cross-check of the beta-binomial rho (can be
    negative). NaN when both mean squares are 0. Needs n >= 2 and at least 2 images.
    """
    n = _int("n", n, minimum=2)
    c = _counts(counts, n)
    if c.size < 2:
        raise ValueError("icc_anova needs at least 2 images")
    rate = c / n
    msb = n * np.sum((rate - rate.mean()) ** 2) / (c.size - 1)
    msw = np.sum(c * (1.0 - rate)) / (c.size * (n - 1))
    denom = msb + (n - 1) * msw
    return float((msb - msw) / denom) if denom > 0 else float("nan")


from .stats import rank_agreement  # noqa: E402,F401  (kept importable from here)
