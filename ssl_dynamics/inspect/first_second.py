"""Fig. B.1's numbers: r_t and r̃_t from SimCLR's first views against its second views.

The thesis's r_t uses the first view of each pair; the second view is the same question
asked from the other side. `first_second` returns one table row per drawn epoch and the
curves `binomial_figures.fig_first_second` draws.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from . import stats as st
from .dynamics import thesis_or_spread

THESIS_EPOCHS = (1, 2, 5, 30, 200)  # Fig. B.1 of the thesis draws these epochs
FIRST_SECOND_CURVES = len(THESIS_EPOCHS)  # a run with fewer than two of them: this many, log-spread


def curve_indices(valid: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Epoch indices Fig. B.1 draws: the thesis's epochs the run evaluated, when at least two;
    else up to FIRST_SECOND_CURVES evaluated epochs spread on a log scale of the epoch number."""
    ev = np.flatnonzero(np.asarray(valid, dtype=bool).any(axis=0))
    have = [int(e) for e in np.asarray(epochs)[ev]]
    picked, _ = thesis_or_spread(have, THESIS_EPOCHS, FIRST_SECOND_CURVES)
    return np.asarray([ev[have.index(e)] for e in picked], dtype=np.int64)


def first_second(data, second, r_all, arrays) -> tuple[list[dict], dict]:
    """Fig. B.1's numbers: r_t and r̃_t of first vs second views at a few epochs."""
    rows, curves = [], {}
    for s in second:
        d = data[s]
        valid = np.asarray(d.valid, dtype=bool)
        if d.correct_second.shape != d.correct.shape:
            raise UserError(f"{s}: correct_second has shape {d.correct_second.shape}, "
                            f"correct {d.correct.shape}")
        r1, r2 = r_all[s], st.r_t(d.correct_second, valid)
        t1, t2 = st.r_tilde(d.correct, 0, valid), st.r_tilde(d.correct_second, 0, valid)
        arrays.update({f"{s}/first_second/r_t_second": r2.astype(np.float32),
                       f"{s}/first_second/r_tilde0_second": t2.astype(np.float32)})
        idx = curve_indices(valid, d.epochs)
        curves[s] = [(int(d.epochs[e]), r1[e], r2[e], t1[e], t2[e]) for e in idx]
        rows += [{"setup": s, "epoch": int(d.epochs[e]), "n_seeds": int(valid[:, e].sum()),
                  "mean_abs_diff_r_t": float(np.mean(np.abs(r1[e] - r2[e]))),
                  "mean_abs_diff_r_tilde": float(np.mean(np.abs(t1[e] - t2[e]))),
                  "corr_r_t": _corr(r1[e], r2[e]), "corr_r_tilde": _corr(t1[e], t2[e])} for e in idx]
    return rows, curves


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
