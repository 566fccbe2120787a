"""Binomial-noise tests of Tables 4.1 and 4.2 (pure numpy/scipy, no I/O, no plotting).

Null hypothesis: every (augmented) image is equally hard, so the number of seeds that
classify it correctly is Binomial(N, p).

Chi-square tests (Table 4.1): ``chisquare_faithful`` reproduces the thesis's
``scipy.stats.chisquare(f_obs, f_exp, ddof=1)`` on all N+1 count bins. It is NOT a valid
test (tail expected counts are far below 5, hence statistics like 1e17); report it as
"faithful". ``chisquare_pooled`` (and ``g_test_pooled``) pool tail bins until every
expected count is >= 5 and are the valid versions. ``binomial_mae`` is Table 4.2's
distance between sorted r_t and sorted binomial noise (see `nulls.py` for its calibration).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

__all__ = ["count_frequencies", "binomial_expected", "chisquare_faithful", "pool_tail_bins",
           "chisquare_pooled", "g_test_pooled", "binomial_mae"]

# Pearson's rule of thumb for the chi-square approximation: every expected count >= 5.
DEFAULT_MIN_EXPECTED = 5.0
# The binomial parameter p is estimated from the same data (p_hat), costing one degree of
# freedom on top of the usual "bins - 1"; the thesis passed ddof=1 to scipy for this.
ESTIMATED_PARAMS = 1
# Standard deviation of the per-draw MAEs uses ddof=0 (numpy's default, which the thesis's
# reference code used via np.std) — the spread of exactly these draws, not an estimate.
MAE_STD_DDOF = 0
# Repetitions of the binomial-noise draw in Table 4.2.
DEFAULT_MAE_DRAWS = 10


def _check_p(p: float) -> float:
    """Return ``p`` as a float after checking 0 <= p <= 1."""
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"p must be in [0, 1], got {p}")
    return p


def _check_n(n: int) -> int:
    """Return ``n`` (number of binomial trials, i.e. seeds) after checking n >= 1."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


# ---------------------------------------------------------------------------- binomial tests


def count_frequencies(counts: np.ndarray, n: int) -> np.ndarray:
    """Observed frequency of each count value 0..n: int array [n+1].

    ``counts`` are per-image numbers of correct seeds, n_k = sum_i c[i, t, 0, k].
    """
    n = _check_n(n)
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        if not np.issubdtype(c.dtype, np.floating) or not np.all(c == np.round(c)):
            raise ValueError("counts must be whole numbers")
        c = c.astype(np.int64)
    if c.min() < 0 or c.max() > n:
        raise ValueError(f"counts must lie in 0..{n}, got range {c.min()}..{c.max()}")
    return np.bincount(c, minlength=n + 1).astype(np.int64)


def binomial_expected(k_images: int, n: int, p: float) -> np.ndarray:
    """Expected frequency of each count 0..n under uniform difficulty: K * Binom(n, p).pmf."""
    n = _check_n(n)
    p = _check_p(p)
    if isinstance(k_images, bool) or int(k_images) != k_images or k_images < 1:
        raise ValueError(f"k_images must be a positive integer, got {k_images!r}")
    return float(k_images) * sps.binom.pmf(np.arange(n + 1), n, p)


def _observed_expected(counts: np.ndarray, n: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed frequencies and expected ones rescaled to the same total (scipy checks it)."""
    f_obs = count_frequencies(counts, n).astype(np.float64)
    f_exp = binomial_expected(int(f_obs.sum()), n, p)
    # The pmf sums to 1 only up to rounding; scipy.stats.chisquare rejects mismatched sums.
    f_exp = f_exp * (f_obs.sum() / f_exp.sum())
    return f_obs, f_exp


def chisquare_faithful(counts: np.ndarray, n: int, p: float) -> tuple[float, float]:
    """Table 4.1 as the thesis computed it: ``scipy.stats.chisquare(f_obs, f_exp, ddof=1)``.

    All n+1 count bins are used, so dof = (n+1) - 1 - 1. NOT a valid test: tail expected
    counts are tiny and the statistic can be astronomically large (1e17); that is expected.
    Zero expected counts (p = 0 or 1, or pmf underflow): bins with expected 0 AND observed 0
    are dropped (their 0/0 term is taken as 0; dof shrinks accordingly); if any image falls
    in a bin with expected 0 the data are impossible under the model and the result is
    ``(inf, 0.0)``. Raises ValueError if fewer than 3 bins remain (dof would be < 1).
    """
    f_obs, f_exp = _observed_expected(counts, n, p)
    zero = f_exp <= 0.0
    if np.any(zero & (f_obs > 0)):
        return float("inf"), 0.0
    f_obs, f_exp = f_obs[~zero], f_exp[~zero]
    if f_obs.size < 2 + ESTIMATED_PARAMS:
        raise ValueError(
            f"chi-square needs at least 3 bins with nonzero expected count, got {f_obs.size}"
        )
    res = sps.chisquare(f_obs, f_exp, ddof=ESTIMATED_PARAMS)
    return float(res.statistic), float(res.pvalue)


def pool_tail_bins(
    f_exp: np.ndarray, min_expected: float = DEFAULT_MIN_EXPECTED
) -> np.ndarray:
    """Group adjacent count bins, pooling each tail inward until every group's expected >= min.

    Returns int array [G, 2] of inclusive (lo, hi) count ranges covering 0..len-1. Each tail
    keeps absorbing the next bin while its own total is below ``min_expected`` or the next
    bin alone is below it; for a unimodal f_exp (any binomial pmf) every remaining middle bin
    is then >= ``min_expected``. If a tail still falls short (nothing left to absorb) it is
    merged into its neighbour; if the whole total is below ``min_expected`` one group is left.
    """
    e = np.asarray(f_exp, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("f_exp must be a non-empty 1-D array of finite non-negative values")
    if not np.isfinite(min_expected) or min_expected <= 0:
        raise ValueError(f"min_expected must be a finite number > 0, got {min_expected}")
    last = e.size - 1
    # Left tail: bins 0..left_hi.
    left_hi, acc = 0, e[0]
    while left_hi < last and (acc < min_expected or e[left_hi + 1] < min_expected):
        left_hi += 1
        acc += e[left_hi]
    if left_hi == last:
        return np.array([[0, last]], dtype=np.int64)
    # Right tail: bins right_lo..last, not reaching into the left tail.
    right_lo, acc = last, e[last]
    while right_lo - 1 > left_hi and (acc < min_expected or e[right_lo - 1] < min_expected):
        right_lo -= 1
        acc += e[right_lo]
    groups = [[0, left_hi]] + [[k, k] for k in range(left_hi + 1, right_lo)] + [[right_lo, last]]
    # Safety pass (only reachable for a non-unimodal f_exp or a short right tail): merge any
    # group still below the minimum into its left neighbour.
    i = 1
    while i < len(groups):
        lo, hi = groups[i]
        if e[lo : hi + 1].sum() < min_expected:
            groups[i - 1][1] = hi
            del groups[i]
        else:
            i += 1
    return np.asarray(groups, dtype=np.int64)


def _pooled(counts: np.ndarray, n: int, p: float, min_expected: float):
    """Pooled observed and expected frequencies plus the bin ranges."""
    f_obs, f_exp = _observed_expected(counts, n, p)
    bins = pool_tail_bins(f_exp, min_expected)
    obs = np.array([f_obs[lo : hi + 1].sum() for lo, hi in bins])
    exp = np.array([f_exp[lo : hi + 1].sum() for lo, hi in bins])
    return obs, exp, bins


def chisquare_pooled(
    counts: np.ndarray, n: int, p: float, min_expected: float = DEFAULT_MIN_EXPECTED
) -> tuple[float, float, int, np.ndarray]:
    """Valid Pearson chi-square: tail bins pooled until every expected count >= min_expected.

    Returns ``(statistic, pvalue, dof, bins)`` with dof = G - 1 - 1 (p was estimated) and
    ``bins`` the [G, 2] inclusive count ranges from ``pool_tail_bins``. When fewer than 3
    groups remain (dof < 1, e.g. very few images) the test is undefined: the statistic is
    still returned but the p-value is NaN (no exception, so tables can show "n/a").
    """
    obs, exp, bins = _pooled(counts, n, p, min_expected)
    dof = len(bins) - 1 - ESTIMATED_PARAMS
    # Every group's expected count is > 0: groups reach min_expected > 0, or a lone group
    # holds the whole total K >= 1.
    stat = float(np.sum((obs - exp) ** 2 / exp))
    if dof < 1:
        return stat, float("nan"), dof, bins
    res = sps.chisquare(obs, exp, ddof=ESTIMATED_PARAMS)
    return float(res.statistic), float(res.pvalue), dof, bins


def g_test_pooled(
    counts: np.ndarray, n: int, p: float, min_expected: float = DEFAULT_MIN_EXPECTED
) -> tuple[float, float, int, np.ndarray]:
    """Likelihood-ratio (G) test on the same pooled bins as ``chisquare_pooled``.

    G = 2 * sum O ln(O/E) (0 ln 0 = 0), dof = G_bins - 1 - 1; p-value NaN when dof < 1.
    """
    obs, exp, bins = _pooled(counts, n, p, min_expected)
    dof = len(bins) - 1 - ESTIMATED_PARAMS
    pos = obs > 0
    stat = float(2.0 * np.sum(obs[pos] * np.log(obs[pos] / exp[pos])))
    if dof < 1:
        return stat, float("nan"), dof, bins
    return stat, float(sps.chi2.sf(stat, dof)), dof, bins


def binomial_mae(
    r: np.ndarray,
    n: int,
    p: float,
    draws: int = DEFAULT_MAE_DRAWS,
    *,
    rng: np.random.Generator,
) -> tuple[float, float, np.ndarray]:
    """Table 4.2: MAE between sorted ``r`` [K] and sorted binomial noise Binom(n, p)/n.

    Each of ``draws`` repetitions draws K values b_k and computes
    mean_k |sort(r)_k - sort(b)_k|. Returns ``(mean, std, per_draw)``; std uses ddof=0.
    ``rng`` (keyword-only, required) is a seeded numpy Generator, so results are reproducible.
    """
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"r must be a non-empty 1-D array [K], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("r contains NaN/inf (an unevaluated epoch?)")
    n = _check_n(n)
    p = _check_p(p)
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    r_sorted = np.sort(a)
    per_draw = np.empty(int(draws))
    for d in range(int(draws)):
        b = np.sort(rng.binomial(n, p, size=a.size) / n)
        per_draw[d] = np.mean(np.abs(r_sorted - b))
    return float(per_draw.mean()), float(per_draw.std(ddof=MAE_STD_DDOF)), per_draw
