"""Phase-two statistics over the stored correctness indicators (SPEC section 4).

Pure numpy/scipy: no I/O, no plotting. Conventions used throughout:

- ``correct``: bool or 0/1 integer array ``[S seeds, E epochs, M augmentations, K images]``,
  ``correct[i, t, j, k]`` = 1 when seed ``i`` after epoch index ``t`` classifies
  augmentation ``j`` of image ``k`` correctly.
- ``valid``: optional bool array ``[S, E]``; ``False`` marks a (seed, epoch) checkpoint that
  was not evaluated. Missing checkpoints are left out of every mean (never counted as
  zeros). An epoch with no valid seed at all gets NaN in ``r_t`` / ``r_tilde``.
- Epochs are always 0-based *indices* into the E axis; mapping the thesis's epoch numbers
  (1, 5, 10, ...) to indices is the caller's job.
- ``r``: float array ``[E, K]`` (or ``[K]`` where a single epoch is meant) of per-image
  correctness rates.

Chi-square tests (Table 4.1): ``chisquare_faithful`` reproduces the thesis's
``scipy.stats.chisquare(f_obs, f_exp, ddof=1)`` on all N+1 count bins. It is NOT a valid
test (tail expected counts are far below 5, hence statistics like 1e17); report it as
"faithful". ``chisquare_pooled`` (and ``g_test_pooled``) pool tail bins until every
expected count is >= 5 and are the valid versions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as sps

from ssl_dynamics.errors import UserError

__all__ = [
    "r_t",
    "r_tilde",
    "seeds_per_epoch",
    "epoch_means",
    "sorted_curves",
    "align_epochs",
    "first_epoch_reaching",
    "count_frequencies",
    "binomial_expected",
    "chisquare_faithful",
    "pool_tail_bins",
    "chisquare_pooled",
    "g_test_pooled",
    "binomial_mae",
    "per_class_mean",
    "spread_rows",
]

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
# Fig. 4.5 shows every 50th image of the r_t-sorted probe set (K = 1024 -> 21 columns).
DEFAULT_SPREAD_STEP = 50


# ---------------------------------------------------------------------------- validation


def _check_correct(correct: np.ndarray) -> np.ndarray:
    """Return ``correct`` as an array after checking shape [S, E, M, K] and 0/1 values."""
    c = np.asarray(correct)
    if c.ndim != 4:
        raise UserError(f"correct must have shape [S, E, M, K], got {c.ndim} dimensions")
    if 0 in c.shape:
        raise UserError(f"correct must be non-empty, got shape {c.shape}")
    if c.dtype != np.bool_:
        if not np.issubdtype(c.dtype, np.integer):
            raise UserError(f"correct must be bool or 0/1 integers, got dtype {c.dtype}")
        if c.min() < 0 or c.max() > 1:
            raise UserError("correct must contain only 0 and 1")
    return c


def _check_valid(valid: np.ndarray | None, n_seeds: int, n_epochs: int) -> np.ndarray:
    """Return a bool [S, E] mask (all True when ``valid`` is None)."""
    if valid is None:
        return np.ones((n_seeds, n_epochs), dtype=bool)
    v = np.asarray(valid)
    if v.dtype != np.bool_:
        raise UserError(f"valid must be a bool array, got dtype {v.dtype}")
    if v.shape != (n_seeds, n_epochs):
        raise UserError(f"valid must have shape {(n_seeds, n_epochs)}, got {v.shape}")
    return v


def _check_p(p: float) -> float:
    """Return ``p`` as a float after checking 0 <= p <= 1."""
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise UserError(f"p must be in [0, 1], got {p}")
    return p


def _check_n(n: int) -> int:
    """Return ``n`` (number of binomial trials, i.e. seeds) after checking n >= 1."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise UserError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _mean_over_seeds(sums: np.ndarray, valid: np.ndarray, per_seed: int) -> np.ndarray:
    """Mean of ``sums`` [S, E, K] over valid seeds, each seed counting ``per_seed`` trials."""
    total = np.einsum("sek,se->ek", sums.astype(np.int64), valid.astype(np.int64))
    denom = valid.sum(axis=0).astype(np.float64) * per_seed  # [E]
    out = np.full(total.shape, np.nan)
    ok = denom > 0
    out[ok] = total[ok] / denom[ok, None]
    return out


# ---------------------------------------------------------------------------- r_t and friends


def r_t(correct: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Eq. 4.2: mean of ``correct`` over valid seeds and all augmentations -> float [E, K].

    Epochs without any valid seed are NaN.
    """
    c = _check_correct(correct)
    s, e, m, _ = c.shape
    v = _check_valid(valid, s, e)
    return _mean_over_seeds(c.sum(axis=2, dtype=np.int64), v, m)


def r_tilde(correct: np.ndarray, aug: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Eq. 4.5: mean of ``correct[:, :, aug, :]`` over valid seeds -> float [E, K].

    Epochs without any valid seed are NaN. ``aug`` must be in ``0..M-1`` (no negatives).
    """
    c = _check_correct(correct)
    s, e, m, _ = c.shape
    if isinstance(aug, bool) or int(aug) != aug or not 0 <= aug < m:
        raise UserError(f"aug must be an integer in 0..{m - 1}, got {aug!r}")
    v = _check_valid(valid, s, e)
    return _mean_over_seeds(c[:, :, int(aug), :].astype(np.int64), v, 1)


def seeds_per_epoch(valid: np.ndarray) -> np.ndarray:
    """Number of evaluated seeds at each epoch: int array [E] from a bool [S, E] mask."""
    v = np.asarray(valid)
    if v.dtype != np.bool_ or v.ndim != 2:
        raise UserError(f"valid must be a 2-D bool array [S, E], got {v.dtype} {v.shape}")
    return v.sum(axis=0).astype(np.int64)


def epoch_means(r: np.ndarray) -> np.ndarray:
    """Mean over images of ``r`` [E, K] -> [E] (p_hat(t) of section 4; NaN rows stay NaN)."""
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise UserError(f"r must have shape [E, K] with K >= 1, got {a.shape}")
    return a.mean(axis=1)


def sorted_curves(r: np.ndarray) -> np.ndarray:
    """Fig. 4.1: ``r`` sorted ascending along the last (image) axis; NaNs sort last."""
    a = np.asarray(r, dtype=np.float64)
    if a.ndim < 1:
        raise UserError("r must have at least one (image) axis")
    return np.sort(a, axis=-1)


def align_epochs(
    ref_mean: np.ndarray, other_mean: np.ndarray, ref_epochs: Sequence[int]
) -> np.ndarray:
    """Eq. 4.4: for each t_A in ``ref_epochs``, argmin_t |ref_mean[t_A] - other_mean[t]|.

    Inputs are per-epoch means (``epoch_means`` of r_t). Ties go to the earliest epoch.
    NaN entries of ``other_mean`` (unevaluated epochs) are never chosen. Returns an int
    array of epoch indices into ``other_mean``, one per ``ref_epochs`` entry.
    """
    a = np.asarray(ref_mean, dtype=np.float64)
    b = np.asarray(other_mean, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise UserError("ref_mean and other_mean must be 1-D per-epoch means")
    if not np.isfinite(b).any():
        raise UserError("other_mean has no finite epoch to align to")
    out = []
    for t_a in ref_epochs:
        if isinstance(t_a, bool) or int(t_a) != t_a or not 0 <= t_a < a.size:
            raise UserError(f"reference epoch index {t_a!r} outside 0..{a.size - 1}")
        target = a[int(t_a)]
        if not np.isfinite(target):
            raise UserError(f"ref_mean at epoch index {t_a} is not finite")
        dist = np.abs(b - target)
        dist[~np.isfinite(dist)] = np.inf
        out.append(int(np.argmin(dist)))  # argmin returns the first minimum: earliest epoch
    return np.asarray(out, dtype=np.int64)


def first_epoch_reaching(p_hat: np.ndarray, p0: float) -> int | None:
    """First epoch index with ``p_hat >= p0`` (NaN epochs never qualify); None if never."""
    a = np.asarray(p_hat, dtype=np.float64)
    if a.ndim != 1:
        raise UserError(f"p_hat must be 1-D, got shape {a.shape}")
    if not np.isfinite(p0):
        raise UserError(f"p0 must be finite, got {p0}")
    hits = np.flatnonzero(a >= p0)
    return int(hits[0]) if hits.size else None


# ---------------------------------------------------------------------------- binomial tests


def count_frequencies(counts: np.ndarray, n: int) -> np.ndarray:
    """Observed frequency of each count value 0..n: int array [n+1].

    ``counts`` are per-image numbers of correct seeds, n_k = sum_i c[i, t, 0, k].
    """
    n = _check_n(n)
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        raise UserError(f"counts must be a non-empty 1-D array, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        if not np.issubdtype(c.dtype, np.floating) or not np.all(c == np.round(c)):
            raise UserError("counts must be whole numbers")
        c = c.astype(np.int64)
    if c.min() < 0 or c.max() > n:
        raise UserError(f"counts must lie in 0..{n}, got range {c.min()}..{c.max()}")
    return np.bincount(c, minlength=n + 1).astype(np.int64)


def binomial_expected(k_images: int, n: int, p: float) -> np.ndarray:
    """Expected frequency of each count 0..n under uniform difficulty: K * Binom(n, p).pmf."""
    n = _check_n(n)
    p = _check_p(p)
    if isinstance(k_images, bool) or int(k_images) != k_images or k_images < 1:
        raise UserError(f"k_images must be a positive integer, got {k_images!r}")
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
    ``(inf, 0.0)``. Raises UserError if fewer than 3 bins remain (dof would be < 1).
    """
    f_obs, f_exp = _observed_expected(counts, n, p)
    zero = f_exp <= 0.0
    if np.any(zero & (f_obs > 0)):
        return float("inf"), 0.0
    f_obs, f_exp = f_obs[~zero], f_exp[~zero]
    if f_obs.size < 2 + ESTIMATED_PARAMS:
        raise UserError(
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
        raise UserError("f_exp must be a non-empty 1-D array of finite non-negative values")
    if not np.isfinite(min_expected) or min_expected <= 0:
        raise UserError(f"min_expected must be a finite number > 0, got {min_expected}")
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
        raise UserError(f"r must be a non-empty 1-D array [K], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError("r contains NaN/inf (an unevaluated epoch?)")
    n = _check_n(n)
    p = _check_p(p)
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise UserError(f"draws must be a positive integer, got {draws!r}")
    if not isinstance(rng, np.random.Generator):
        raise UserError("rng must be a numpy.random.Generator")
    r_sorted = np.sort(a)
    per_draw = np.empty(int(draws))
    for d in range(int(draws)):
        b = np.sort(rng.binomial(n, p, size=a.size) / n)
        per_draw[d] = np.mean(np.abs(r_sorted - b))
    return float(per_draw.mean()), float(per_draw.std(ddof=MAE_STD_DDOF)), per_draw


def per_class_mean(r: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fig. 5.3: mean of ``r`` over the images of each class -> [E, n_classes] ([n_classes]
    for a 1-D ``r``). A class with no probe images is NaN (no warning)."""
    a = np.asarray(r, dtype=np.float64)
    one_d = a.ndim == 1
    if one_d:
        a = a[None, :]
    if a.ndim != 2:
        raise UserError(f"r must have shape [E, K] or [K], got {np.shape(r)}")
    y = np.asarray(labels)
    if y.shape != (a.shape[1],) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"labels must be {a.shape[1]} integers, got {y.dtype} {y.shape}")
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise UserError(f"n_classes must be a positive integer, got {n_classes!r}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(f"labels must lie in 0..{n_classes - 1}")
    out = np.full((a.shape[0], int(n_classes)), np.nan)
    for cls in range(int(n_classes)):
        members = y == cls
        if members.any():  # empty class stays NaN; NaN rows of r stay NaN
            out[:, cls] = a[:, members].mean(axis=1)
    return out[0] if one_d else out


def spread_rows(
    r: np.ndarray, r_tilde_all: np.ndarray, step: int = DEFAULT_SPREAD_STEP
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fig. 4.5 data: sort images by ``r`` [K] (stable), keep positions 0, step, 2*step, ...

    ``r_tilde_all`` is [M, K] (r_tilde of every augmentation at the same epoch). Returns
    ``(order, r[order], r_tilde_all[:, order])`` where ``order`` are image indices [n].
    """
    a = np.asarray(r, dtype=np.float64)
    rt = np.asarray(r_tilde_all, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise UserError(f"r must be a non-empty 1-D array [K], got shape {a.shape}")
    if rt.ndim != 2 or rt.shape[1] != a.size:
        raise UserError(f"r_tilde_all must have shape [M, {a.size}], got {rt.shape}")
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise UserError(f"step must be a positive integer, got {step!r}")
    order = np.argsort(a, kind="stable")[:: int(step)]
    return order, a[order], rt[:, order]
