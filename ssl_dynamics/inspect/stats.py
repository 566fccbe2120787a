"""Phase-two statistics over the stored correctness indicators (docs/science.md, section 4).

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

The binomial tests of Tables 4.1 and 4.2 live in `binomial_stats.py` and are re-exported
here, so ``stats.chisquare_faithful`` and friends keep working.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy import stats as sps


__all__ = [
    "r_t",
    "r_tilde",
    "seeds_per_epoch",
    "epoch_means",
    "sorted_curves",
    "searchable",
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
    "rank_agreement",
    "DEFAULT_MAE_DRAWS", "DEFAULT_MIN_EXPECTED", "ESTIMATED_PARAMS", "MAE_STD_DDOF",
]

# Fig. 4.5 shows every 50th image of the r_t-sorted probe set (K = 1024 -> 21 columns).
DEFAULT_SPREAD_STEP = 50
# r_t entries are count / (seeds x augmentations). A fraction with a denominator up to 2**26
# is read back exactly from its correctly rounded float: two such fractions differ by at
# least 2**-52, more than the rounding of a value in [0, 1] (at most 2**-54). Runs have a few
# hundred seeds x augmentations at most.
MAX_EXACT_DENOMINATOR = 2**26


# ---------------------------------------------------------------------------- validation


def check_correct(correct: np.ndarray) -> np.ndarray:
    """Return ``correct`` as an array after checking shape [S, E, M, K] and 0/1 values."""
    c = np.asarray(correct)
    if c.ndim != 4:
        raise ValueError(f"correct must have shape [S, E, M, K], got {c.ndim} dimensions")
    if 0 in c.shape:
        raise ValueError(f"correct must be non-empty, got shape {c.shape}")
    if c.dtype != np.bool_:
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"correct must be bool or 0/1 integers, got dtype {c.dtype}")
        if c.min() < 0 or c.max() > 1:
            raise ValueError("correct must contain only 0 and 1")
    return c


def _check_valid(valid: np.ndarray | None, n_seeds: int, n_epochs: int) -> np.ndarray:
    """Return a bool [S, E] mask (all True when ``valid`` is None)."""
    if valid is None:
        return np.ones((n_seeds, n_epochs), dtype=bool)
    v = np.asarray(valid)
    if v.dtype != np.bool_:
        raise ValueError(f"valid must be a bool array, got dtype {v.dtype}")
    if v.shape != (n_seeds, n_epochs):
        raise ValueError(f"valid must have shape {(n_seeds, n_epochs)}, got {v.shape}")
    return v


def _mean_over_seeds(sums: np.ndarray, valid: np.ndarray, per_seed: int) -> np.ndarray:
    """Mean of ``sums`` [S, E, K] over valid seeds, each seed counting ``per_seed`` trials."""
    total = np.einsum("sek,se->ek", sums.astype(np.int64), valid.astype(np.int64))
    denom = valid.sum(axis=0).astype(np.float64) * per_seed  # [E]
    out = np.full(total.shape, np.nan)
    ok = denom > 0
    out[ok] = total[ok] / denom[ok, None]
    return out


def _fractions(values: np.ndarray) -> list[Fraction] | None:
    """The fractions (denominator <= MAX_EXACT_DENOMINATOR) whose correctly rounded floats
    are ``values``; None when some value is no such fraction."""
    out = []
    for v in values.tolist():
        f = Fraction(v).limit_denominator(MAX_EXACT_DENOMINATOR)
        if float(f) != v:
            return None
        out.append(f)
    return out


def _row_means(a: np.ndarray) -> np.ndarray:
    """Mean of each row of a 2-D float array; a row holding NaN is NaN.

    When every entry is a count/denominator fraction (as r_t's are) the mean is computed
    from the integer counts and rounded once, so an exact tie with a level such as 0.5
    compares equal: the float sum of K rates can land an ulp below it. Other values get
    the plain float mean.
    """
    out = a.mean(axis=1)
    rows = np.flatnonzero(np.isfinite(a).all(axis=1))
    if not rows.size:
        return out
    uniq, inv = np.unique(a[rows].ravel(), return_inverse=True)
    fr = _fractions(uniq)
    if fr is None:
        return out
    for i, row in zip(rows, inv.reshape(rows.size, -1)):
        counts = np.bincount(row, minlength=uniq.size)
        used = np.flatnonzero(counts)
        den = math.lcm(*(fr[u].denominator for u in used))
        total = sum(int(counts[u]) * fr[u].numerator * (den // fr[u].denominator) for u in used)
        out[i] = total / (den * a.shape[1])  # int / int: correctly rounded
    return out


# ---------------------------------------------------------------------------- r_t and friends


def r_t(correct: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Eq. 4.2: mean of ``correct`` over valid seeds and all augmentations -> float [E, K].

    Epochs without any valid seed are NaN.
    """
    c = check_correct(correct)
    s, e, m, _ = c.shape
    v = _check_valid(valid, s, e)
    return _mean_over_seeds(c.sum(axis=2, dtype=np.int64), v, m)


def r_tilde(correct: np.ndarray, aug: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Eq. 4.5: mean of ``correct[:, :, aug, :]`` over valid seeds -> float [E, K].

    Epochs without any valid seed are NaN. ``aug`` must be in ``0..M-1`` (no negatives).
    """
    c = check_correct(correct)
    s, e, m, _ = c.shape
    if isinstance(aug, bool) or int(aug) != aug or not 0 <= aug < m:
        raise ValueError(f"aug must be an integer in 0..{m - 1}, got {aug!r}")
    v = _check_valid(valid, s, e)
    return _mean_over_seeds(c[:, :, int(aug), :].astype(np.int64), v, 1)


def seeds_per_epoch(valid: np.ndarray) -> np.ndarray:
    """Number of evaluated seeds at each epoch: int array [E] from a bool [S, E] mask."""
    v = np.asarray(valid)
    if v.dtype != np.bool_ or v.ndim != 2:
        raise ValueError(f"valid must be a 2-D bool array [S, E], got {v.dtype} {v.shape}")
    return v.sum(axis=0).astype(np.int64)


def epoch_means(r: np.ndarray) -> np.ndarray:
    """Mean over images of ``r`` [E, K] -> [E] (p_hat(t) of section 4; NaN rows stay NaN).

    For r_t / r_tilde this is exactly (correct indicators) / (valid seeds x augmentations x
    K), rounded once, so ``first_epoch_reaching`` sees an exact tie with p0 as reaching it.
    """
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"r must have shape [E, K] with K >= 1, got {a.shape}")
    return _row_means(a)


def sorted_curves(r: np.ndarray) -> np.ndarray:
    """Fig. 4.1: ``r`` sorted ascending along the last (image) axis; NaNs sort last."""
    a = np.asarray(r, dtype=np.float64)
    if a.ndim < 1:
        raise ValueError("r must have at least one (image) axis")
    return np.sort(a, axis=-1)


def searchable(epochs: np.ndarray, include_init: bool = False) -> np.ndarray:
    """Bool [E]: the epochs the searches of eq. 4.4 and Tables 4.1/4.2 may pick.

    The thesis's code has statistics for epochs 1..t_max only; the initialization (epoch 0,
    chance-level everywhere) stays in the stored arrays and the curves but is not a
    candidate unless `include_init`.
    """
    e = np.asarray(epochs)
    return np.ones(e.shape, bool) if include_init else e > 0


def _masked(values: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
    if candidates is None:
        return values
    c = np.asarray(candidates, dtype=bool)
    if c.shape != values.shape:
        raise ValueError(f"candidates must have shape {values.shape}, got {c.shape}")
    return np.where(c, values, np.nan)


def align_epochs(
    ref_mean: np.ndarray, other_mean: np.ndarray, ref_epochs: Sequence[int],
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Eq. 4.4: for each t_A in ``ref_epochs``, argmin_t |ref_mean[t_A] - other_mean[t]|.

    Inputs are per-epoch means (``epoch_means`` of r_t). Ties go to the earliest epoch.
    When every mean is a count fraction (as ``epoch_means`` of r_t gives them) the distances
    are compared exactly: in floats |2/12 - 3/12| comes out larger than |4/12 - 3/12|.
    NaN entries of ``other_mean`` (unevaluated epochs) and epochs outside ``candidates``
    (bool [E], see ``searchable``) are never chosen. Returns an int array of epoch
    indices into ``other_mean``, one per ``ref_epochs`` entry.
    """
    a = np.asarray(ref_mean, dtype=np.float64)
    b = np.asarray(other_mean, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("ref_mean and other_mean must be 1-D per-epoch means")
    ok = np.flatnonzero(np.isfinite(_masked(b, candidates)))
    if not ok.size:
        raise ValueError("other_mean has no finite epoch to align to")
    targets = []
    for t_a in ref_epochs:
        if isinstance(t_a, bool) or int(t_a) != t_a or not 0 <= t_a < a.size:
            raise ValueError(f"reference epoch index {t_a!r} outside 0..{a.size - 1}")
        if not np.isfinite(a[int(t_a)]):
            raise ValueError(f"ref_mean at epoch index {t_a} is not finite")
        targets.append(a[int(t_a)])
    exact = _fractions(np.concatenate([b[ok], targets]))  # None: plain floats
    values = exact if exact is not None else np.concatenate([b[ok], targets]).tolist()
    out = []
    for target in values[ok.size:]:
        dist = [abs(v - target) for v in values[:ok.size]]
        out.append(int(ok[min(range(ok.size), key=dist.__getitem__)]))  # first minimum: earliest
    return np.asarray(out, dtype=np.int64)


def first_epoch_reaching(p_hat: np.ndarray, p0: float,
                         candidates: np.ndarray | None = None) -> int | None:
    """First epoch index with ``p_hat >= p0`` among ``candidates`` (bool [E], default all;
    NaN epochs never qualify); None if never."""
    a = np.asarray(p_hat, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"p_hat must be 1-D, got shape {a.shape}")
    a = _masked(a, candidates)
    if not np.isfinite(p0):
        raise ValueError(f"p0 must be finite, got {p0}")
    hits = np.flatnonzero(a >= p0)
    return int(hits[0]) if hits.size else None


def per_class_mean(r: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fig. 5.3: mean of ``r`` over the images of each class -> [E, n_classes] ([n_classes]
    for a 1-D ``r``). A class with no probe images is NaN (no warning)."""
    a = np.asarray(r, dtype=np.float64)
    one_d = a.ndim == 1
    if one_d:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"r must have shape [E, K] or [K], got {np.shape(r)}")
    y = np.asarray(labels)
    if y.shape != (a.shape[1],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {a.shape[1]} integers, got {y.dtype} {y.shape}")
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    out = np.full((a.shape[0], int(n_classes)), np.nan)
    for cls in range(int(n_classes)):
        members = y == cls
        if members.any():  # empty class stays NaN; NaN rows of r stay NaN
            out[:, cls] = _row_means(a[:, members])  # exact for r_t, as epoch_means
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
        raise ValueError(f"r must be a non-empty 1-D array [K], got shape {a.shape}")
    if rt.ndim != 2 or rt.shape[1] != a.size:
        raise ValueError(f"r_tilde_all must have shape [M, {a.size}], got {rt.shape}")
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    order = np.argsort(a, kind="stable")[:: int(step)]
    return order, a[order], rt[:, order]



def rank_agreement(a, b) -> tuple[float, float, int]:
    """Spearman rank correlation of two per-image vectors, dropping pairs with a NaN.

    Returns (rho, p_value, n_pairs); rho and p are NaN when fewer than 3 pairs remain or
    either side is constant (no ranking to compare).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan"), int(x.size)
    res = sps.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), int(x.size)


from .binomial_stats import (DEFAULT_MAE_DRAWS, DEFAULT_MIN_EXPECTED, ESTIMATED_PARAMS,  # noqa: E402
                             MAE_STD_DDOF, binomial_expected, binomial_mae, chisquare_faithful,
                             chisquare_pooled, count_frequencies, g_test_pooled, pool_tail_bins)
