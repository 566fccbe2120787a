"""Shared plotting helpers of the phase-two figures: setup names and colours, one style.

Every figure module draws through `new_figure` so that panels, fonts, grids and the
"images sorted by r_t" x-axis look the same everywhere (the thesis's figures: light grid,
one panel per setup, rainbow colours for epochs). Nothing here is random.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .outputs import matplotlib_agg

# Display names (English versions of the thesis's panel titles).
SETUP_LABELS = {
    "simclr": "SimCLR",
    "supervised": "Supervised",
    "random_labels": "Random labels",
    "random_labels_aug": "Random labels + aug.",
}
# The thesis's Fig. 4.2 colours: SimCLR blue, supervised orange, random labels green,
# random labels with augmentation red.
SETUP_COLORS = {
    "simclr": "#1f3fd6",
    "supervised": "#f5a623",
    "random_labels": "#1a8a1a",
    "random_labels_aug": "#e0231c",
}
_FALLBACK_COLORS = ("#7b3fb5", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
# Fig. 4.3/4.4: one colour per p0 level (blue, light green, red as in the thesis).
P0_COLORS = ("#4a6fe3", "#9ad52f", "#e0472c", "#8c564b", "#17becf")
EPOCH_CMAP = "rainbow"  # Fig. 4.1: colour = epoch / t_max
# One distinct colour per class: tab10 for CIFAR-10, tab20 up to 20 classes, evenly spaced
# hues beyond (an imagefolder: dataset can have any number of classes).


def class_colors(n: int) -> list[tuple]:
    """n distinct RGBA colours, the first ten those of tab10."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](c) for c in range(n)]
    if n <= 20:  # tab20 pairs a dark and a light shade of each hue: the dark ones (tab10's) first
        return [colormaps["tab20"](c) for c in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    return [colormaps["hsv"](c / n) for c in range(n)]

RANK_LABEL = "images sorted by $r_t(x)$ (rank / K)"
RT_LABEL = "P(correct)  $r_t(x)$"
RTILDE_LABEL = r"P(correct)  $\tilde r_t(\tilde x)$"

STYLE = {
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#999999",
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.framealpha": 0.85,
    "font.size": 10,
}


def setup_label(name: str) -> str:
    """Human-readable name of a setup ("simclr" -> "SimCLR"); unknown names unchanged."""
    return SETUP_LABELS.get(name, name)


def setup_color(name: str, position: int = 0) -> str:
    """The setup's fixed colour; unknown setups get a fallback picked by `position`."""
    return SETUP_COLORS.get(name, _FALLBACK_COLORS[position % len(_FALLBACK_COLORS)])


def p0_color(i: int) -> str:
    return P0_COLORS[i % len(P0_COLORS)]


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """Rows and columns for n panels: 1x1, 1x2, 1x3, 2x2, 2x3, ..."""
    if n <= 0:
        return 1, 1
    if n == 4 and max_cols >= 2:
        return 2, 2
    cols = min(n, max_cols)
    return -(-n // cols), cols


def new_figure(n_panels: int, panel_size=(4.6, 3.6), max_cols: int = 3, shape=None,
               sharex=False, sharey=False):
    """A constrained-layout figure with `n_panels` axes (unused ones hidden).

    Returns ``(plt, fig, axes)`` with ``axes`` a flat list of the visible axes in reading order.
    """
    plt = matplotlib_agg()
    plt.rcParams.update(STYLE)
    rows, cols = shape if shape is not None else grid_shape(n_panels, max_cols)
    fig, grid = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows),
                             squeeze=False, layout="constrained", sharex=sharex, sharey=sharey)
    flat = list(grid.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return plt, fig, flat[:n_panels]


def rank_x(k: int) -> np.ndarray:
    """x positions of K sorted images as rank fractions: 0 for the first, 1 for the last."""
    return np.arange(k) / max(k - 1, 1)


def rate_axis(ax, label: str = RT_LABEL, rank: bool = True) -> None:
    """y in [-0.03, 1.03] labelled as a probability of correct classification."""
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(label)
    if rank:
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(RANK_LABEL)


def compress_ints(values: Iterable[int]) -> str:
    """Sorted unique integers as runs: [0, 1, 2, 3, 5, 7, 8] -> "0-3, 5, 7-8"."""
    vals = sorted({int(v) for v in values})
    if not vals:
        return "none"
    runs, start, prev = [], vals[0], vals[0]
    for v in vals[1:]:
        if v == prev + 1:
            prev = v
            continue
        runs.append((start, prev))
        start = prev = v
    runs.append((start, prev))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def seed_count_note(setup: str, n_seeds: np.ndarray, epochs: Sequence[int],
                    absent: Sequence[int] = ()) -> str | None:
    """A sentence when the number of evaluated seeds varies over epochs, or when some seeds
    (`absent`: their numbers) have no evaluated epoch at all, else None.

    ``n_seeds`` [E] counts valid seeds per epoch index, ``epochs`` the epoch numbers.
    """
    n = np.asarray(n_seeds)
    ep = np.asarray(epochs)
    parts = []
    if len(absent):
        parts.append(f"{plural(len(absent), 'seed')} {compress_ints(absent)} "
                     f"{'has' if len(absent) == 1 else 'have'} no evaluated checkpoint and "
                     f"{'is' if len(absent) == 1 else 'are'} left out")
    missing = ep[n == 0]
    if missing.size:
        parts.append(f"{plural(missing.size, 'epoch')} {compress_ints(missing)} not evaluated")
    ok = n > 0
    if ok.any():
        full = int(n[ok].max())
        short = ok & (n < full)
        if short.any():
            by_count = {}
            for e, c in zip(ep[short], n[short]):
                by_count.setdefault(int(c), []).append(int(e))
            desc = "; ".join(f"{c} at {plural(len(es), 'epoch')} {compress_ints(es)}"
                             for c, es in sorted(by_count.items()))
            parts.append(f"{full} seeds at most epochs, {desc}")
    if not parts:
        return None
    return f"{setup}: " + "; ".join(parts)


def plural(n: int, word: str) -> str:
    """'epoch' for one, 'epochs' for more (the noun only: callers put the numbers)."""
    return word if n == 1 else f"{word}s"


def seeds_tag(n_seeds: np.ndarray) -> str:
    """Short panel-title tag: "N = 5 seeds" or "N = 3-5 seeds" (evaluated epochs only)."""
    n = np.asarray(n_seeds)
    n = n[n > 0]
    if not n.size:
        return "N = 0 seeds"
    lo, hi = int(n.min()), int(n.max())
    return f"N = {hi} {plural(hi, 'seed')}" if lo == hi else f"N = {lo}-{hi} seeds"


def fmt_p(p: float) -> str:
    """A p-value for a panel annotation."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return "0" if p == 0 else f"{p:.2g}"
