"""Sorted r_t curves (Fig. 4.1) and the epoch-aligned comparison of setups (Fig. 4.2, eq. 4.4).

`run_dynamics` reads the `SetupRt` arrays of each setup and writes:

- figure ``fig4_1_sorted_rt``: one panel per setup, r_t over the K probe images sorted
  ascending, one curve per chosen epoch, colour = epoch / t_max of that setup;
- figure ``fig4_2_aligned``: one panel per reference epoch t_A of the reference setup A,
  the sorted r_t of every setup B at its aligned epoch t_B = argmin_t |mean r^A_{t_A} -
  mean r^B_t| (eq. 4.4);
- table ``aligned_epochs``: per reference epoch, each setup's aligned epoch and mean r_t;
- analysis.h5 group ``dynamics``: ``<setup>/{epochs,n_seeds,r_t,sorted_r_t,mean_r_t}`` and
  ``alignment/{ref_epochs,<setup>_epoch,<setup>_mean_r_t}``.

Epochs given by the caller are epoch NUMBERS; internally everything works on indices.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from . import stats as st
from .outputs import Outputs
from .plots import (EPOCH_CMAP, compress_ints, new_figure, rank_x, rate_axis, seed_count_note,
                    seeds_tag, setup_color, setup_label)
from .rtdata import SetupRt

DEFAULT_REF_EPOCHS = (1, 5, 10, 25, 50, 200)
DEFAULT_CURVES = 8  # Fig. 4.1: epochs drawn per setup unless told otherwise
ALIGN_TOLERANCE = 0.05  # note aligned epochs whose mean r_t differs more than this
MAX_LEGEND_CURVES = 10  # beyond this many curves the colour bar alone says the epoch


def _evaluated(d: SetupRt) -> np.ndarray:
    """Indices of epochs with at least one valid seed."""
    return np.flatnonzero(np.asarray(d.valid).any(axis=0))


def usable_ref_epochs(data: dict[str, SetupRt], ref_setup: str | None,
                      wanted: Sequence[int]) -> tuple[int, ...]:
    """The subset of `wanted` epoch numbers that `ref_setup` (or the first setup) evaluated.

    For callers (like ``inspect all``) that prefer skipping absent epochs to an error.
    """
    if not data:
        return ()
    d = data[ref_setup] if ref_setup in data else next(iter(data.values()))
    have = set(int(e) for e in d.epochs[_evaluated(d)])
    return tuple(int(e) for e in wanted if int(e) in have)


def _curve_indices(d: SetupRt, curve_epochs, notes: list[str]) -> np.ndarray:
    """Epoch indices whose sorted curves Fig. 4.1 draws for one setup."""
    ev = _evaluated(d)
    if curve_epochs is None or isinstance(curve_epochs, (int, np.integer)) and not isinstance(curve_epochs, bool):
        n = DEFAULT_CURVES if curve_epochs is None else int(curve_epochs)
        if n < 1:
            raise UserError(f"curve_epochs must be >= 1 curves, got {n}")
        if ev.size <= n:
            return ev
        pick = np.unique(np.round(np.linspace(0, ev.size - 1, n)).astype(int))
        return ev[pick]
    if isinstance(curve_epochs, str):
        if curve_epochs != "all":
            raise UserError(f"curve_epochs {curve_epochs!r}: use 'all', a count or epoch numbers")
        return ev
    wanted = [int(e) for e in curve_epochs]
    have = {int(d.epochs[i]): i for i in ev}
    missing = [e for e in wanted if e not in have]
    if missing:
        notes.append(f"fig4_1: {d.setup} has no evaluated epoch {compress_ints(missing)} "
                     f"(it has {compress_ints(have)}); those curves are left out")
    return np.asarray(sorted(have[e] for e in wanted if e in have), dtype=np.int64)


def _ref_indices(d: SetupRt, ref_epochs: Sequence[int]) -> np.ndarray:
    """Map reference epoch numbers to indices; UserError naming the epochs that exist."""
    wanted = [int(e) for e in ref_epochs]
    if not wanted:
        raise UserError("no reference epochs given")
    ev = _evaluated(d)
    have = {int(d.epochs[i]): int(i) for i in ev}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise UserError(
            f"reference setup {d.setup} has no evaluated epoch {compress_ints(missing)}; "
            f"it has epochs {compress_ints(have)}")
    return np.asarray([have[e] for e in wanted], dtype=np.int64)


def run_dynamics(data: dict[str, SetupRt], out: Outputs, ref_setup: str | None = "simclr",
                 ref_epochs: Sequence[int] = DEFAULT_REF_EPOCHS, curve_epochs=None) -> dict:
    """Fig. 4.1, Fig. 4.2 and the aligned-epoch table for every setup in `data`.

    ``ref_epochs`` are epoch numbers of the reference setup (UserError if it lacks one).
    ``curve_epochs`` picks the Fig. 4.1 curves: None (up to 8 evenly spread evaluated epochs,
    first and last included), an int (that many), "all", or a list of epoch numbers.
    Returns ``{"tables", "figures", "notes", "ref_setup", "aligned"}`` where ``aligned`` maps
    each setup to its aligned epoch numbers (one per reference epoch).
    """
    if not data:
        raise UserError("no setups to analyse")
    notes: list[str] = []
    setups = list(data)
    for s in setups:
        if not _evaluated(data[s]).size:
            raise UserError(f"setup {s} has no evaluated checkpoint")
    if ref_setup not in data:
        first = setups[0]
        if ref_setup is not None:
            notes.append(f"reference setup {ref_setup} is not in the data; using {first} instead")
        ref_setup = first

    r, means, n_seeds = {}, {}, {}
    for s in setups:
        d = data[s]
        r[s] = st.r_t(d.correct, d.valid)
        means[s] = st.epoch_means(r[s])
        n_seeds[s] = st.seeds_per_epoch(np.asarray(d.valid, dtype=bool))
        note = seed_count_note(s, n_seeds[s], d.epochs)
        if note:
            notes.append(note)

    ref = data[ref_setup]
    ref_idx = _ref_indices(ref, ref_epochs)
    aligned_idx = {}
    for s in setups:
        aligned_idx[s] = ref_idx.copy() if s == ref_setup else st.align_epochs(means[ref_setup], means[s], ref_idx)

    rows = []
    for a, ti in enumerate(ref_idx):
        row = {"ref_setup": ref_setup, "ref_epoch": int(ref.epochs[ti])}
        for s in setups:
            e = aligned_idx[s][a]
            row[f"{s}_epoch"] = int(data[s].epochs[e])
            row[f"{s}_mean_rt"] = float(means[s][e])
        rows.append(row)
    for s in setups:
        if s == ref_setup:
            continue
        far = [(int(ref.epochs[ti]), int(data[s].epochs[aligned_idx[s][a]]))
               for a, ti in enumerate(ref_idx)
               if abs(means[ref_setup][ti] - means[s][aligned_idx[s][a]]) > ALIGN_TOLERANCE]
        if far:
            pairs = ", ".join(f"{ta}->{tb}" for ta, tb in far)
            notes.append(f"{s}: no epoch with mean r_t within {ALIGN_TOLERANCE} of {ref_setup}'s "
                         f"for reference->aligned epochs {pairs} (closest epoch used)")

    figures = [_fig_sorted(data, r, n_seeds, out, curve_epochs, notes),
               _fig_aligned(data, r, means, n_seeds, ref_setup, ref_idx, aligned_idx, out)]

    arrays = {}
    for s in setups:
        arrays[f"{s}/epochs"] = np.asarray(data[s].epochs, dtype=np.int64)
        arrays[f"{s}/n_seeds"] = n_seeds[s]
        arrays[f"{s}/r_t"] = r[s].astype(np.float32)
        arrays[f"{s}/sorted_r_t"] = st.sorted_curves(r[s]).astype(np.float32)
        arrays[f"{s}/mean_r_t"] = means[s]
        arrays[f"alignment/{s}_epoch"] = np.asarray(data[s].epochs)[aligned_idx[s]].astype(np.int64)
        arrays[f"alignment/{s}_mean_r_t"] = means[s][aligned_idx[s]]
    arrays["alignment/ref_epochs"] = np.asarray(ref.epochs)[ref_idx].astype(np.int64)
    out.write_arrays("dynamics", arrays, {"ref_setup": ref_setup, "setups": setups, "notes": notes})
    out.write_table("aligned_epochs", rows,
                    note=f"eq. 4.4: for each epoch t_A of {ref_setup}, the epoch of every setup whose "
                         "mean r_t over the probe images is closest to that of the reference "
                         "(ties: earliest epoch).")
    return {
        "tables": {"aligned_epochs": rows},
        "figures": [str(p) for p in figures],
        "notes": notes,
        "ref_setup": ref_setup,
        "aligned": {s: [int(data[s].epochs[e]) for e in aligned_idx[s]] for s in setups},
    }


def _fig_sorted(data, r, n_seeds, out: Outputs, curve_epochs, notes):
    """Fig. 4.1: sorted r_t curves per setup, colour = epoch / t_max."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.7), max_cols=2)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = plt.get_cmap(EPOCH_CMAP)
    for ax, s in zip(axes, setups):
        d = data[s]
        ev = _evaluated(d)
        t_max = int(d.epochs[ev].max())
        idx = _curve_indices(d, curve_epochs, notes)
        k = r[s].shape[1]
        x = rank_x(k)
        for e in idx:
            ep = int(d.epochs[e])
            frac = ep / t_max if t_max > 0 else 1.0
            ax.plot(x, np.sort(r[s][e]), color=cmap(frac), lw=1.3,
                    label=f"{ep}" if len(idx) <= MAX_LEGEND_CURVES else None,
                    drawstyle="steps-mid")
        ax.set_title(f"{setup_label(s)} ($t_{{max}}$ = {t_max}; {seeds_tag(n_seeds[s][idx])})",
                     fontsize=10)
        rate_axis(ax)
        if 0 < len(idx) <= MAX_LEGEND_CURVES:
            ax.legend(title="epoch t", loc="lower right", ncol=2, handlelength=1.2)
    sm = ScalarMappable(norm=Normalize(0, 1), cmap=cmap)
    fig.colorbar(sm, ax=axes, label="epoch  $t / t_{max}$", shrink=0.9, pad=0.02)
    fig.suptitle("Sorted $r_t(x)$ over the probe images at several epochs (Fig. 4.1)")
    return out.save_figure(fig, "fig4_1_sorted_rt")


def _fig_aligned(data, r, means, n_seeds, ref_setup, ref_idx, aligned_idx, out: Outputs):
    """Fig. 4.2: one panel per reference epoch, every setup at its aligned epoch."""
    setups = list(data)
    ref = data[ref_setup]
    plt, fig, axes = new_figure(len(ref_idx), panel_size=(4.2, 3.5), max_cols=3)
    # seed counts go into the legend only where they vary (missing checkpoints)
    counts = {int(n) for s in setups for n in n_seeds[s] if n > 0}
    show_n = len(counts) > 1
    for a, (ax, ti) in enumerate(zip(axes, ref_idx)):
        for pos, s in enumerate(setups):
            e = aligned_idx[s][a]
            x = rank_x(r[s].shape[1])
            ax.plot(x, np.sort(r[s][e]), color=setup_color(s, pos), lw=1.5 if s == ref_setup else 1.3,
                    drawstyle="steps-mid",
                    label=f"{setup_label(s)} (t = {int(data[s].epochs[e])}"
                          + (f", N = {int(n_seeds[s][e])})" if show_n else ")"))
        ax.set_title(f"{setup_label(ref_setup)} epoch {int(ref.epochs[ti])}: "
                     f"mean $r_t$ = {means[ref_setup][ti]:.3f}", fontsize=10)
        rate_axis(ax)
        ax.legend(loc="best")
    fig.suptitle(f"Sorted $r_t(x)$ at epochs aligned to {setup_label(ref_setup)} by mean $r_t$ "
                 "(eq. 4.4, Fig. 4.2)")
    return out.save_figure(fig, "fig4_2_aligned")
