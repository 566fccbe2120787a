"""Null distributions and calibration for the phase-two difficulty statistics (docs/science.md, section 4).

Pure numpy/scipy, no I/O; bad arguments raise ``ValueError``; all randomness comes from a
caller-supplied ``numpy.random.Generator``.

r_t(x_k) averages N seeds x M replays, so even if every image were equally hard it is much
narrower than the Binom(N, p)/N noise of Table 4.2: with equally hard images the thesis's
MAE takes a value set by the design (N = 30, M = 10, K = 1024, p = 0.4: about 0.049;
identical replays, as without augmentation: about 0.005). Here the statistics are simulated
under "every image equally hard" with exactly the study's design, observed values are
calibrated against that (z, empirical p-value). The MAE is not monotone in how different
the images are (some heterogeneity pulls it below the homogeneous value, more pushes it
above, and in between it crosses it), so a large p-value does not show equally hard images;
`overdispersion.py` measures heterogeneity of difficulty directly.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

__all__ = ["faithful_mae", "simulate_null_r", "within_seed_correlation", "null_rho", "mae_null_distribution",
           "chisquare_null_distribution", "calibrate"]

# Most float64 cells one vectorised chunk of noise draws may hold (2**22 * 8 B = 32 MiB), so
# large simulations stay bounded in memory on a shared machine.
CHUNK_CELLS = 2**22
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
    rho_w = (P_w - P_b) / (p - P_b). P_b estimates the mean of p_k^2 over images (seeds
    are independent), so the denominator is an unbiased estimate of the mean of
    p_k (1 - p_k), the per-image Bernoulli variance: heterogeneous difficulty does not bias
    rho_w downwards (with equally hard images it equals p (1 - p)).

    The estimate is returned as measured: a negative one (replays of one seed agree less
    often than replays of different seeds) is reported, not hidden as 0; `null_rho` says
    what a null can simulate. NaN where it is undefined: M = 1, fewer than 2 valid seeds,
    p in {0, 1}, or every image learned by all seeds or by none (no variance left).
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
        return float("nan")
    p_within = np.sum(s * (s - 1)) / (n * k * m * (m - 1))
    col = s.sum(axis=0)
    p_between = np.sum(col**2 - np.sum(s**2, axis=0)) / (k * n * (n - 1) * m * m)
    spread = p - p_between
    if spread <= 0:  # every image all-or-none across seeds: no within-seed variance left
        return float("nan")
    return float((p_within - p_between) / spread)


def null_rho(rho_w: float) -> float:
    """The within-seed correlation a null can simulate for an estimate `rho_w`: a Beta
    mixture has an intra-class correlation in [0, 1], so a negative estimate is simulated
    as 0 (independent replays) and an undefined one (NaN) too; one above 1 (sampling
    noise) as 1."""
    return 0.0 if np.isnan(rho_w) else float(np.clip(rho_w, 0.0, 1.0))


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
    like Table 4.2's MAE, which extra variance across images can push below its homogeneous
    value (r_t moves towards the binomial noise) as well as above it.
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


from .stats import rank_agreement  # noqa: E402,F401  (kept importable from here)
