"""Sorted r_t curves (Fig. 4.1) and the epoch-aligned comparison of setups (Fig. 4.2, eq. 4.4).

`run_dynamics` reads the `SetupRt` arrays of each setup and writes:

- figure ``fig4_1_sorted_rt``: one panel per setup, r_t over the K probe images sorted
  ascending, one curve per chosen epoch, colour = epoch / t_max of that setup;
- figure ``fig4_2_aligned``: one panel per reference epoch t_A of the reference setup A,
  the sorted r_t of every setup B at its aligned epoch t_B = argmin_t |mean r^A_{t_A} -
  mean r^B_t| (eq. 4.4);
- table ``aligned_epochs``: per reference epoch, each setup's aligned epoch and mean r_t;
- analysis.h5 group ``dynamics``: ``<setup>/{epochs,n_seeds,r_t,sorted_r_t,mean_r_t}`` and
  ``alignment/{ref_epochs,<setup>_epoch,<setup>_mean_r_t}``, with named dimensions
  (coordinates ``<setup>/{epoch,probe,rank}`` and ``alignment/ref_epoch``).

Epochs given by the caller are epoch NUMBERS; internally everything works on indices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UserError
from . import stats as st
from .outputs import Outputs
from .plots import (EPOCH_CMAP, compress_ints, new_figure, rank_x, rate_axis, seed_count_note,
                    seeds_tag, setup_color, setup_label)
from .rtdata import SetupRt, absent_seeds, require_evaluated

DEFAULT_REF_EPOCHS = (1, 5, 10, 25, 50, 200)
# Fig. 4.1: the thesis draws every epoch (200, 50, 20 and 500 curves per panel), read as a
# colour gradient t / t_max (`inspect dynamics --curves N` draws fewer).
DEFAULT_CURVES = "all"
# A short run with fewer than two of the thesis's reference epochs is aligned at up to this
# many epochs, spread on a log scale: about one per doubling of a 200-epoch run.
FALLBACK_REF_EPOCHS = 8
ALIGN_TOLERANCE = 0.05  # note aligned epochs whose mean r_t differs more than this
MAX_LEGEND_CURVES = 10  # beyond this many curves the colour bar alone says the epoch


def evaluated_indices(d: SetupRt) -> np.ndarray:
    """Indices of epochs with at least one valid seed."""
    return np.flatnonzero(np.asarray(d.valid).any(axis=0))


def log_spread(have: Sequence[int], n: int) -> tuple[int, ...]:
    """Up to `n` of the ascending epoch numbers `have`, spread evenly on a log scale of the
    epoch number (of 1 + epoch, so that epoch 0 has a place): for each of `n` geometric
    steps from the first to the last, the nearest epoch. All of them when there are <= n."""
    nums = np.asarray(have, dtype=np.float64)
    if nums.size <= n:
        return tuple(int(e) for e in have)
    logs = np.log1p(nums)
    targets = np.linspace(logs[0], logs[-1], n)
    return tuple(sorted({int(have[int(np.argmin(np.abs(logs - t)))]) for t in targets}))


def thesis_or_spread(have: Sequence[int], thesis: Sequence[int], n: int) -> tuple[tuple[int, ...], bool]:
    """The `thesis` epochs among `have` when at least two are there, else `log_spread(have,
    n)`; and whether the thesis's epochs were used."""
    present = {int(h) for h in have}
    mine = tuple(e for e in thesis if e in present)
    return (mine, True) if len(mine) >= 2 else (log_spread(have, n), False)


def default_ref_epochs(d: SetupRt, include_init: bool = False) -> tuple[tuple[int, ...], str | None]:
    """The thesis's reference epochs that `d` evaluated; for a short run that has fewer than
    two of them, up to FALLBACK_REF_EPOCHS epochs spread on a log scale. Returns (epochs, note)."""
    ev = evaluated_indices(d)
    ev = ev[st.searchable(d.epochs[ev], include_init)]
    have = [int(e) for e in d.epochs[ev]]
    if not have:
        raise UserError(f"reference setup {d.setup} has no evaluated epoch after the initialization; "
                        "evaluate later epochs (`inspect rt --epochs`) or pass --include-init "
                        "(dynamics, heterogeneity)")
    picked, thesis = thesis_or_spread(have, DEFAULT_REF_EPOCHS, FALLBACK_REF_EPOCHS)
    return picked, None if thesis else (
        f"{d.setup} has few of the thesis's reference epochs {compress_ints(DEFAULT_REF_EPOCHS)}; "
        f"aligning at epochs {compress_ints(picked)}")


def _curve_indices(d: SetupRt, curve_epochs, notes: list[str]) -> np.ndarray:
    """Epoch indices whose sorted curves Fig. 4.1 draws for one setup."""
    ev = evaluated_indices(d)
    curve_epochs = DEFAULT_CURVES if curve_epochs is None else curve_epochs
    if isinstance(curve_epochs, (int, np.integer)) and not isinstance(curve_epochs, bool):
        n = int(curve_epochs)
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


def ref_indices(d: SetupRt, ref_epochs: Sequence[int], include_init: bool = False) -> np.ndarray:
    """Map reference epoch numbers to indices (a repeated one once); UserError naming the
    epochs that exist, or when epoch 0 is asked for without `include_init`."""
    wanted = list(dict.fromkeys(int(e) for e in ref_epochs))
    if not wanted:
        raise UserError("no reference epochs given")
    if 0 in wanted and not include_init:
        raise UserError(f"reference epoch 0 of {d.setup} is the initialization, which eq. 4.4 leaves "
                        "out (the thesis's code had no epoch-0 statistics); drop it from the "
                        "reference epochs, or pass --include-init (dynamics, heterogeneity)")
    ev = evaluated_indices(d)
    have = {int(d.epochs[i]): int(i) for i in ev}
    missing = [e for e in wanted if e not in have]
    if missing:
        raise UserError(
            f"reference setup {d.setup} has no evaluated epoch {compress_ints(missing)}; "
            f"it has epochs {compress_ints(have)}")
    return np.asarray([have[e] for e in wanted], dtype=np.int64)


def resolve_reference(data: dict[str, SetupRt], ref_setup: str | None) -> str:
    if ref_setup is None:
        return "simclr" if "simclr" in data else next(iter(data))
    if ref_setup not in data:
        raise UserError(f"reference setup {ref_setup!r} is not in the data (it has {', '.join(data)})")
    return ref_setup


def _aligned_rows(data, means, ref_setup, ref_idx, aligned_idx, notes) -> list[dict]:
    ref = data[ref_setup]
    rows = []
    for a, ti in enumerate(ref_idx):
        row = {"ref_setup": ref_setup, "ref_epoch": int(ref.epochs[ti])}
        for s in data:
            e = aligned_idx[s][a]
            row[f"{s}_epoch"] = int(data[s].epochs[e])
            row[f"{s}_mean_rt"] = float(means[s][e])
        rows.append(row)
    for s in data:
        far = [(int(ref.epochs[ti]), int(data[s].epochs[aligned_idx[s][a]]))
               for a, ti in enumerate(ref_idx)
               if abs(means[ref_setup][ti] - means[s][aligned_idx[s][a]]) > ALIGN_TOLERANCE]
        if s != ref_setup and far:
            pairs = ", ".join(f"{ta}->{tb}" for ta, tb in far)
            notes.append(f"{s}: no epoch with mean r_t within {ALIGN_TOLERANCE} of {ref_setup}'s "
                         f"for reference->aligned epochs {pairs} (closest epoch used)")
    return rows


def align_setups(data: dict[str, SetupRt], means: dict[str, np.ndarray], ref_setup: str,
                 ref_idx: np.ndarray, include_init: bool = False) -> dict[str, np.ndarray]:
    """Eq. 4.4 for every setup: epoch indices aligned to the reference's `ref_idx`."""
    out = {}
    for s in data:
        candidates = st.searchable(data[s].epochs, include_init)
        if s != ref_setup and not np.isfinite(means[s][candidates]).any():
            raise UserError(
                f"setup {s} has no evaluated epoch after the initialization to align to "
                f"{ref_setup}'s (eq. 4.4 leaves epoch 0 out): evaluate later epochs (`inspect rt "
                f"--epochs`), leave {s} out (--setup), or pass --include-init (dynamics, heterogeneity)")
        out[s] = ref_idx.copy() if s == ref_setup else st.align_epochs(
            means[ref_setup], means[s], ref_idx, candidates)
    return out


@dataclass(frozen=True)
class Alignment:
    """Eq. 4.4 for a set of setups: the reference, its epoch indices, every setup's aligned
    epoch indices (one per reference epoch), the per-epoch mean r_t, and notes."""

    ref_setup: str
    ref_idx: np.ndarray
    ref_epochs: list[int]  # the reference's epoch numbers at ref_idx
    aligned: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    notes: list[str]


def reference_alignment(data: dict[str, SetupRt], ref_setup: str | None = None,
                        ref_epochs: Sequence[int] | None = None, include_init: bool = False,
                        r: dict[str, np.ndarray] | None = None) -> Alignment:
    """Eq. 4.4 as every analysis does it (`r`: r_t per setup when already computed)."""
    if not data:
        raise UserError("no setups to analyse")
    notes: list[str] = []
    require_evaluated(data)
    ref_setup = resolve_reference(data, ref_setup)
    if ref_epochs is None:
        ref_epochs, note = default_ref_epochs(data[ref_setup], include_init)
        notes += [note] if note else []
    r = r or {s: st.r_t(d.correct, d.valid) for s, d in data.items()}
    means = {s: st.epoch_means(r[s]) for s in data}
    ref_idx = ref_indices(data[ref_setup], ref_epochs, include_init)
    return Alignment(ref_setup, ref_idx, [int(e) for e in data[ref_setup].epochs[ref_idx]],
                     align_setups(data, means, ref_setup, ref_idx, include_init), means, notes)


def run_dynamics(data: dict[str, SetupRt], out: Outputs, ref_setup: str | None = None,
                 ref_epochs: Sequence[int] | None = None, curve_epochs=None,
                 include_init: bool = False) -> dict:
    """Fig. 4.1, Fig. 4.2 and the aligned-epoch table for every setup in `data`.

    ``ref_setup``: the reference A (None: simclr if present, else the first setup).
    ``ref_epochs`` are epoch numbers of the reference (None: `default_ref_epochs`).
    ``curve_epochs`` picks the Fig. 4.1 curves: "all" evaluated epochs (None: DEFAULT_CURVES,
    every epoch, as the thesis), an int n (up to n evaluated epochs evenly spread over their
    list, first and last included), or a list of epoch numbers.
    ``include_init`` lets eq. 4.4 pick epoch 0 (the thesis's code could not).
    Returns ``{"tables", "figures", "notes", "ref_setup", "aligned"}``.
    """
    if not data:
        raise UserError("no setups to analyse")
    r = {s: st.r_t(d.correct, d.valid) for s, d in data.items()}
    al = reference_alignment(data, ref_setup, ref_epochs, include_init, r)
    ref_setup, ref_idx, aligned_idx, means, notes = al.ref_setup, al.ref_idx, al.aligned, al.means, al.notes
    n_seeds = {s: st.seeds_per_epoch(np.asarray(d.valid, dtype=bool)) for s, d in data.items()}
    notes += [n for s in data if (n := seed_count_note(s, n_seeds[s], data[s].epochs, absent_seeds(data[s])))]
    rows = _aligned_rows(data, means, ref_setup, ref_idx, aligned_idx, notes)
    figures = [_fig_sorted(data, r, n_seeds, out, curve_epochs, notes),
               _fig_aligned(data, r, means, n_seeds, ref_setup, ref_idx, aligned_idx, out)]
    _write_arrays(data, r, means, n_seeds, ref_setup, ref_idx, aligned_idx, notes, out)
    out.write_table("aligned_epochs", rows,
                    note=f"eq. 4.4: for each epoch t_A of {ref_setup}, the epoch of every setup whose "
                         "mean r_t over the probe images is closest to that of the reference "
                         "(ties: earliest epoch; the initialization, epoch 0, is "
                         + ("a candidate: --include-init)." if include_init else "not a candidate)."))
    return {"tables": {"aligned_epochs": rows}, "figures": [str(p) for p in figures],
            "notes": notes, "ref_setup": ref_setup,
            "aligned": {s: [int(data[s].epochs[e]) for e in aligned_idx[s]] for s in data}}


def _write_arrays(data, r, means, n_seeds, ref_setup, ref_idx, aligned_idx, notes, out) -> None:
    arrays, dims, coords = {}, {}, {}
    for s in data:
        coords.update({f"{s}/epoch": np.asarray(data[s].epochs, dtype=np.int64),
                       f"{s}/probe": np.asarray(data[s].probe_indices, dtype=np.int64),
                       f"{s}/rank": np.arange(r[s].shape[1], dtype=np.int64)})
        arrays[f"{s}/epochs"] = np.asarray(data[s].epochs, dtype=np.int64)
        arrays[f"{s}/n_seeds"] = n_seeds[s]
        arrays[f"{s}/r_t"] = r[s].astype(np.float32)
        arrays[f"{s}/sorted_r_t"] = st.sorted_curves(r[s]).astype(np.float32)
        arrays[f"{s}/mean_r_t"] = means[s]
        dims.update({f"{s}/{n}": ("epoch",) for n in ("epochs", "n_seeds", "mean_r_t")})
        dims.update({f"{s}/r_t": ("epoch", "probe"), f"{s}/sorted_r_t": ("epoch", "rank")})
        arrays[f"alignment/{s}_epoch"] = np.asarray(data[s].epochs)[aligned_idx[s]].astype(np.int64)
        arrays[f"alignment/{s}_mean_r_t"] = means[s][aligned_idx[s]]
    arrays["alignment/ref_epochs"] = np.asarray(data[ref_setup].epochs)[ref_idx].astype(np.int64)
    coords["alignment/ref_epoch"] = arrays["alignment/ref_epochs"]
    dims.update({name: ("ref_epoch",) for name in arrays if name.startswith("alignment/")})
    out.write_arrays("dynamics", arrays, {"ref_setup": ref_setup, "setups": list(data), "notes": notes},
                     dims=dims, coords=coords)


def _fig_sorted(data, r, n_seeds, out: Outputs, curve_epochs, notes):
    """Fig. 4.1: sorted r_t curves per setup, colour = epoch / t_max."""
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.6, 3.7), max_cols=2)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = plt.get_cmap(EPOCH_CMAP)
    for ax, s in zip(axes, setups):
        d = data[s]
        ev = evaluated_indices(d)
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
