"""Per-example learning dynamics from the stored correctness indicators (no new forward passes).

Pure numpy: no I/O, no plotting; bad arguments raise ``ValueError``. Inputs of one setup:

- ``correct``: bool or 0/1 integer ``[S seeds, E epochs, M replays, K images]``; 1 when seed
  ``s`` after epoch index ``e`` classifies replay ``j`` of image ``k`` correctly (SimCLR:
  partner identification within a batch).
- ``p_true``: float ``[S, E, M, K]``, softmax probability of the target (NaN where not
  evaluated; it must be finite at every used checkpoint).
- ``valid``: bool ``[S, E]``; False marks a missing checkpoint: skipped (transitions are
  taken between the evaluated epochs around it), never read as zeros, and counted.
- ``epochs``: strictly increasing int ``[E]`` epoch numbers (index -> epoch; 0 = init).

``start_epoch`` (default 1): checkpoints with epoch number < ``start_epoch`` are left out of
every per-example measure, so epoch 0 (random initialisation, whose "correct" is chance)
neither creates forgetting events nor counts as learned. A seed is "used" when it has at
least one evaluated epoch >= ``start_epoch``; other seeds are excluded (NaN rows in the
per-pair arrays) and counted. Per-pair arrays are float64 ``[S, M, K]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .stats import check_correct as _check_correct

__all__ = ["NonFiniteProbability", "evaluated_mask", "missing_checkpoints", "first_learned",
           "forgetting_events", "cartography", "rt_at", "example_summary", "setup_summary",
           "hardness_order"]

# The thesis's epoch 0 is the random initialisation: its correctness is chance, not learning.
DEFAULT_START_EPOCH = 1
# Cartography variability is the population std over epochs (ddof 0), as Swayamdipta et al.
VARIABILITY_DDOF = 0
# Seeds are a sample of training runs, so their spread is the sample std (ddof 1); with
# fewer than 2 used seeds it is undefined and reported as NaN.
SEED_STD_DDOF = 1
# hardness_order: +1 when a larger value means harder, -1 when a smaller value does.
HARDNESS_DIRECTION = {"correctness": -1, "confidence": -1, "unforgettable_share": -1,
                      "first_learned_median": +1, "never_learned_share": +1,
                      "forgetting_mean": +1, "never_correct_share": +1}
# Prefix of the r_t columns (``rt_<epoch number>``); lower r_t means harder.
RT_PREFIX = "rt_"


class NonFiniteProbability(ValueError):
    """p_true is NaN or infinite at a checkpoint the measures use: ``seed`` is the position
    on the seed axis, ``epoch`` the epoch number (the caller knows the seed's number)."""

    def __init__(self, seed: int, epoch: int):
        super().__init__(f"p_true is not finite at an evaluated checkpoint: seed index {seed}, "
                         f"epoch {epoch}")
        self.seed, self.epoch = seed, epoch


# ---------------------------------------------------------------------------- validation


def _check_valid_epochs(valid, epochs, start_epoch, shape=None):
    """Validated (valid [S, E], int64 epochs [E], evaluated mask [S, E]).

    ``shape`` is the (S, E) that ``valid`` must have, if known from ``correct``.
    """
    v = np.asarray(valid)
    want = "[S, E]" if shape is None else str(tuple(shape))
    if v.dtype != np.bool_ or v.ndim != 2 or (shape is not None and v.shape != tuple(shape)):
        raise ValueError(f"valid must be a bool array of shape {want}, got {v.dtype} {v.shape}")
    ep = np.asarray(epochs)
    if ep.shape != (v.shape[1],) or not np.issubdtype(ep.dtype, np.integer):
        raise ValueError(f"epochs must be {v.shape[1]} integers, got {ep.dtype} {ep.shape}")
    if np.any(np.diff(ep) <= 0):
        raise ValueError("epochs must be strictly increasing")
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, (int, np.integer)):
        raise ValueError(f"start_epoch must be an integer, got {start_epoch!r}")
    ep = ep.astype(np.int64)
    return v, ep, v & (ep >= start_epoch)[None, :]


def _inputs(correct, valid, epochs, start_epoch):
    """Validated (correct, int64 epochs, evaluated mask [S, E])."""
    c = _check_correct(correct)
    _, ep, mask = _check_valid_epochs(valid, epochs, start_epoch, c.shape[:2])
    return c, ep, mask


def _check_p_true(p_true, shape) -> np.ndarray:
    """Return ``p_true`` after checking it is a float array of the same shape as ``correct``."""
    p = np.asarray(p_true)
    if p.shape != shape or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"p_true must be a float array of shape {shape}, "
                         f"got {p.dtype} {p.shape}")
    return p


def _per_seed(mask: np.ndarray):
    """Yield (seed, evaluated epoch indices) for every seed with at least one evaluated epoch."""
    for s in range(mask.shape[0]):
        idx = np.flatnonzero(mask[s])
        if idx.size:
            yield s, idx


def evaluated_mask(valid, epochs, start_epoch: int = DEFAULT_START_EPOCH) -> np.ndarray:
    """Bool [S, E]: evaluated (``valid``) and epoch >= ``start_epoch``; ``.any(1)``: used seeds."""
    return _check_valid_epochs(valid, epochs, start_epoch)[2]


def missing_checkpoints(valid, epochs, start_epoch: int = DEFAULT_START_EPOCH) -> int:
    """Number of missing (seed, epoch) checkpoints among epochs >= ``start_epoch``."""
    v, ep, _ = _check_valid_epochs(valid, epochs, start_epoch)
    return int((~v & (ep >= start_epoch)[None, :]).sum())


# ---------------------------------------------------------------------------- per-pair measures


def first_learned(correct, valid, epochs, start_epoch: int = DEFAULT_START_EPOCH) -> np.ndarray:
    """Float64 [S, M, K]: first evaluated epoch number from which the pair stays correct.

    The epoch e >= ``start_epoch`` such that the pair is correct at e and at every later
    evaluated epoch of its seed. Never learned (incorrect at the seed's last evaluated epoch)
    is censored as ``max(epochs) + 1``. Excluded seeds (no evaluated epoch) are NaN.
    """
    c, ep, mask = _inputs(correct, valid, epochs, start_epoch)
    out = np.full((c.shape[0], *c.shape[2:]), np.nan)
    for s, idx in _per_seed(mask):
        wrong = c[s, idx] == 0  # bool [n, M, K]
        last_wrong = idx.size - 1 - np.argmax(wrong[::-1], axis=0)
        start = np.where(wrong.any(axis=0), last_wrong + 1, 0)  # position n = never learned
        out[s] = np.append(ep[idx], ep[-1] + 1)[start]
    return out


def forgetting_events(correct, valid, epochs,
                      start_epoch: int = DEFAULT_START_EPOCH) -> np.ndarray:
    """Float64 [S, M, K]: correct -> incorrect transitions between consecutive evaluated epochs.

    Toneva et al. (2019). Only epochs >= ``start_epoch`` take part; a missing checkpoint is
    skipped. Excluded seeds are NaN.
    """
    c, _, mask = _inputs(correct, valid, epochs, start_epoch)
    out = np.full((c.shape[0], *c.shape[2:]), np.nan)
    for s, idx in _per_seed(mask):
        b = c[s, idx].astype(bool, copy=False)
        out[s] = (b[:-1] & ~b[1:]).sum(axis=0)
    return out


def cartography(correct, p_true, valid, epochs, start_epoch: int = DEFAULT_START_EPOCH):
    """Data-map coordinates (Swayamdipta et al., 2020) per pair: three float64 [S, M, K].

    Returns (confidence, variability, correctness) over evaluated epochs >= ``start_epoch``:
    mean p_true, std of p_true (ddof 0), fraction of epochs correct. Excluded seeds are NaN.
    Raises NonFiniteProbability (a ValueError) if p_true is not finite at a used checkpoint.
    """
    c, ep, mask = _inputs(correct, valid, epochs, start_epoch)
    p = _check_p_true(p_true, c.shape)
    conf, var, corr = (np.full((c.shape[0], *c.shape[2:]), np.nan) for _ in range(3))
    for s, idx in _per_seed(mask):
        ps = p[s, idx]  # [n, M, K], one seed at a time; sums accumulate in float64
        conf[s] = ps.mean(axis=0, dtype=np.float64)
        if not np.all(np.isfinite(conf[s])):  # a NaN or inf in p_true reaches the mean
            first_bad = np.flatnonzero(~np.isfinite(ps).all(axis=(1, 2)))[0]
            raise NonFiniteProbability(s, int(ep[idx[first_bad]]))
        dev = np.subtract(ps, conf[s], dtype=np.float64)  # two-pass: no cancellation near p=1
        np.square(dev, out=dev)
        var[s] = np.sqrt(dev.sum(axis=0) / (idx.size - VARIABILITY_DDOF))
        corr[s] = c[s, idx].sum(axis=0, dtype=np.int64) / idx.size
    return conf, var, corr


def rt_at(correct, valid, epoch_indices: Sequence[int]) -> np.ndarray:
    """Float64 [len(epoch_indices), K]: r_t = mean of correct over valid seeds and replays.

    ``epoch_indices`` index the E axis (``start_epoch`` does not apply); NaN where no seed
    is valid at that epoch.
    """
    c = _check_correct(correct)
    v = np.asarray(valid)
    if v.dtype != np.bool_ or v.shape != c.shape[:2]:
        raise ValueError(f"valid must be a bool array of shape {c.shape[:2]}, "
                         f"got {v.dtype} {v.shape}")
    for e in epoch_indices:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not 0 <= e < v.shape[1]:
            raise ValueError(f"epoch index {e!r} outside 0..{v.shape[1] - 1}")
    out = np.full((len(epoch_indices), c.shape[3]), np.nan)
    for row, e in enumerate(epoch_indices):
        seeds = np.flatnonzero(v[:, e])
        if seeds.size:
            total = c[seeds, e].sum(axis=(0, 1), dtype=np.int64)
            out[row] = total / (seeds.size * c.shape[2])
    return out


# ---------------------------------------------------------------------------- summaries


def _pairs(a: np.ndarray, used: np.ndarray) -> np.ndarray:
    """[S, M, K] -> [S_used * M, K]: the (seed, replay) pairs of used seeds as rows."""
    return a[used].reshape(-1, a.shape[-1])


def _column_mean(rows: np.ndarray) -> np.ndarray:
    """Mean over rows (axis 0); NaN, without a warning, when there are no rows."""
    return rows.mean(axis=0) if rows.shape[0] else np.full(rows.shape[1], np.nan)


def _seed_std(a: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Std across used seeds (ddof SEED_STD_DDOF) of the per-seed replay means of a [S, M, K]."""
    per_seed = a[used].mean(axis=1)  # [S_used, K]
    if per_seed.shape[0] <= SEED_STD_DDOF:
        return np.full(a.shape[-1], np.nan)
    return per_seed.std(axis=0, ddof=SEED_STD_DDOF)


def example_summary(correct, p_true, valid, epochs, start_epoch: int = DEFAULT_START_EPOCH,
                    rt_epoch_indices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per-image summary: dict of 1-D columns of length K (pairs = (seed, replay), used seeds).

    Columns:
    - first_learned_median: median over pairs of the first-learned epoch (never: max epoch + 1)
    - never_learned_share: share of pairs incorrect at their seed's last evaluated epoch
    - forgetting_mean: mean over pairs of the number of forgetting events
    - forgetting_seed_std: std across seeds (ddof 1) of the per-seed mean forgetting events
    - unforgettable_share: share of pairs learned at some evaluated epoch and never forgotten
    - never_correct_share: share of pairs correct at no evaluated epoch
    - confidence: mean over pairs of the mean p_true over evaluated epochs
    - confidence_seed_std: std across seeds (ddof 1) of the per-seed confidence
    - variability: mean over pairs of the std (ddof 0) of p_true over evaluated epochs
    - correctness: mean over pairs of the fraction of evaluated epochs correct
    - n_seeds: seeds with at least one evaluated epoch >= start_epoch (per setup)
    - n_missing_checkpoints: missing (seed, epoch) checkpoints at epochs >= start_epoch (per setup)
    - rt_<epoch>: r_t at epoch number <epoch>, one per ``rt_epoch_indices`` entry (indices into E)

    Evaluated epochs are those >= ``start_epoch`` (default 1: initialisation left out). With no
    used seed every measure column is NaN. std columns are NaN with fewer than 2 used seeds.
    """
    c, ep, mask = _inputs(correct, valid, epochs, start_epoch)
    rt = None if rt_epoch_indices is None else rt_at(c, valid, rt_epoch_indices)
    used, k = mask.any(axis=1), c.shape[3]
    fl, fg = first_learned(c, valid, ep, start_epoch), forgetting_events(c, valid, ep, start_epoch)
    conf, var, corr = cartography(c, p_true, valid, ep, start_epoch)
    fl_rows, fg_rows, corr_rows = _pairs(fl, used), _pairs(fg, used), _pairs(corr, used)
    learned = fl_rows <= ep[-1]
    out = {
        "first_learned_median": (np.median(fl_rows, axis=0) if fl_rows.shape[0]
                                 else np.full(k, np.nan)),
        "never_learned_share": _column_mean(~learned),
        "forgetting_mean": _column_mean(fg_rows),
        "forgetting_seed_std": _seed_std(fg, used),
        "unforgettable_share": _column_mean(learned & (fg_rows == 0)),
        "never_correct_share": _column_mean(corr_rows == 0),
        "confidence": _column_mean(_pairs(conf, used)),
        "confidence_seed_std": _seed_std(conf, used),
        "variability": _column_mean(_pairs(var, used)),
        "correctness": _column_mean(corr_rows),
        "n_seeds": np.full(k, int(used.sum()), dtype=np.int64),
        "n_missing_checkpoints": np.full(k, missing_checkpoints(valid, ep, start_epoch),
                                         dtype=np.int64),
    }
    for row, e in enumerate(rt_epoch_indices if rt is not None else []):
        out[f"{RT_PREFIX}{ep[e]}"] = rt[row]
    return out


def setup_summary(correct, valid, epochs, start_epoch: int = DEFAULT_START_EPOCH) -> dict:
    """Per-setup figures of forgetting; returns a dict.

    - unforgettable_image_share: share of images whose every pair is unforgettable
    - forgetting_mean: mean forgetting events over all (seed, replay, image) triples
    - forgetting_hist: int [n_max + 1], number of triples with 0, 1, ..., n_max events
    - never_learned_share: share of triples never learned
    - n_seeds, n_excluded_seeds: used seeds and seeds without any evaluated epoch
    - n_missing_checkpoints: missing (seed, epoch) checkpoints among epochs >= start_epoch
    With no used seed the shares and the mean are NaN and the histogram is empty.
    """
    c, ep, mask = _inputs(correct, valid, epochs, start_epoch)
    used = mask.any(axis=1)
    fl_rows = _pairs(first_learned(c, valid, ep, start_epoch), used)
    fg_rows = _pairs(forgetting_events(c, valid, ep, start_epoch), used)
    any_pair = fg_rows.shape[0] > 0
    unforgettable = (fl_rows <= ep[-1]) & (fg_rows == 0)
    return {
        "unforgettable_image_share": (float(unforgettable.all(axis=0).mean()) if any_pair
                                      else np.nan),
        "forgetting_mean": float(fg_rows.mean()) if any_pair else np.nan,
        "forgetting_hist": np.bincount(fg_rows.astype(np.int64).ravel()),
        "never_learned_share": float((fl_rows > ep[-1]).mean()) if any_pair else np.nan,
        "n_seeds": int(used.sum()),
        "n_excluded_seeds": int((~used).sum()),
        "n_missing_checkpoints": missing_checkpoints(valid, ep, start_epoch),
    }


def hardness_order(summary: dict, by: str = "correctness") -> np.ndarray:
    """Int [K] image indices from hardest to easiest by column ``by`` of ``example_summary``.

    Lower correctness / confidence / unforgettable_share / rt_<epoch> is harder; higher
    first_learned_median / never_learned_share / forgetting_mean / never_correct_share is
    harder. Ties: later first_learned_median first, then lower index. NaN values go last.
    The hardest n images are ``order[:n]``, the easiest n are ``order[-n:]``.
    """
    if by in HARDNESS_DIRECTION:
        direction = HARDNESS_DIRECTION[by]
    elif isinstance(by, str) and by.startswith(RT_PREFIX):
        direction = -1
    else:
        raise ValueError(f"by must be one of {sorted(HARDNESS_DIRECTION)} or rt_<epoch>, "
                         f"got {by!r}")
    for name in (by, "first_learned_median"):
        if name not in summary:
            raise ValueError(f"summary has no column {name!r}")
    key = np.asarray(summary[by], dtype=np.float64)
    tie = np.asarray(summary["first_learned_median"], dtype=np.float64)
    if key.ndim != 1 or tie.shape != key.shape:
        raise ValueError(f"columns {by!r} and 'first_learned_median' must be 1-D of equal length")
    # lexsort: last key is primary; ascending with NaN last, so "harder first" is -value.
    return np.lexsort((np.arange(key.size), -tie, -direction * key)).astype(np.int64)
