"""Heterogeneity of difficulty measured directly (docs/science.md, section 4): a maximum-likelihood
beta-binomial fit to per-image success counts, and the ANOVA intra-class correlation as its
moment cross-check. Pure numpy/scipy, no I/O; bad arguments raise ``ValueError``.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .nulls import _counts, _int

__all__ = ["betabinomial_fit", "icc_anova"]

# Upper end of the rho search: rho = 1 itself (a + b = 0) is not a distribution, and at
# 1 - 1e-9 the beta-binomial is numerically indistinguishable from the all-or-none limit.
RHO_MAX = 1.0 - 1e-9
# Grid (in rho) that brackets the profile-likelihood maximum before bounded refinement; log
# spaced because interesting rho values span 1e-4 (barely heterogeneous) to ~1.
RHO_GRID = np.concatenate([[0.0], np.logspace(-5, np.log10(RHO_MAX), 40)])
# Absolute tolerance on mu and rho in the inner/outer optimisations: far below any
# statistical resolution (K ~ 1e3 images give standard errors ~1e-2).
XTOL = 1e-10


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
    0.5 P(chi2_1 > lr) (boundary mixture; 1 when lr = 0). If rho is not identifiable (n = 1,
    or every count 0 or every count n), rho, lr and p_value are NaN and the CI is [0, 1]:
    such data fit every rho equally well, so reporting 0 ("equally hard") would be a claim
    the data cannot make.
    """
    n = _int("n", n)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    c = _counts(counts, n)
    mean_rate = c.mean() / n
    out = {"mu": float(mean_rate), "rho": float("nan"), "ci_low": 0.0, "ci_high": 1.0,
           "lr": float("nan"), "p_value": float("nan"), "k": int(c.size), "n": n}
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
