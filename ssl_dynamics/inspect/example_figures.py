"""Figures of the per-example measures (`examples.py` computes, this module only draws).

Same style as the thesis figures (`plots.new_figure`): one panel per setup, light grid,
the setups' fixed colours. Nothing here is random.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .outputs import Outputs
from .plots import new_figure, plural, setup_color, setup_label

CORRECTNESS_CMAP = "RdYlBu"  # red: rarely correct, blue: almost always (data-map convention)
AGREEMENT_CMAP = "RdBu_r"  # rank correlation -1..1, white at 0
GRID_COLS = 8  # images per row of a hardest/easiest grid (32 images: 4 rows)
CAPTION_HEIGHT = 0.9  # space above each grid image for its caption, in image heights
MAX_POINTS = 20000  # data-map points drawn per panel; beyond, a fixed subsample
MAX_BARS = 20  # forgetting counts up to this are grouped bars; more (long runs) are lines


def cartography(data, columns: dict[str, dict], out: Outputs):
    """Data map per setup: variability (x) vs confidence (y), colour = correctness."""
    from matplotlib.ticker import MaxNLocator

    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(4.4, 3.8), max_cols=2)
    sc = None
    for ax, s in zip(axes, setups):
        c = columns[s]
        x, y, z = (np.asarray(c[k], dtype=np.float64) for k in ("variability", "confidence", "correctness"))
        keep = np.flatnonzero(np.isfinite(x) & np.isfinite(y) & np.isfinite(z))
        if keep.size > MAX_POINTS:  # evenly spaced, so the same data gives the same figure
            keep = keep[np.linspace(0, keep.size - 1, MAX_POINTS).astype(int)]
        sc = ax.scatter(x[keep], y[keep], c=z[keep], cmap=CORRECTNESS_CMAP, vmin=0, vmax=1,
                        s=9, linewidths=0, alpha=0.85)
        n = int(np.max(c["n_seeds"])) if len(c["n_seeds"]) else 0
        ax.set_title(f"{setup_label(s)} ({keep.size} images, N = {n} {plural(n, 'seed')})", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # small ranges have long tick labels
        ax.set_xlabel("variability  (std of $p_{true}$ over epochs)")
        ax.set_ylabel("confidence  (mean $p_{true}$)")
        ax.set_ylim(-0.03, 1.03)
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="correctness (share of epochs correct)", shrink=0.9, pad=0.02)
    fig.suptitle("Data maps of the probe images (dataset cartography)")
    return out.save_figure(fig, "examples_cartography")


def forgetting(sums: dict[str, dict], out: Outputs):
    """Share of (seed, replay, image) triples with n forgetting events, per setup: grouped
    bars for a few possible counts, lines for many (long runs)."""
    from matplotlib.ticker import MaxNLocator

    plt, fig, axes = new_figure(1, panel_size=(6.4, 4.0))
    ax = axes[0]
    shown = {s: u for s, u in sums.items() if np.sum(u["forgetting_hist"])}
    top = max((len(u["forgetting_hist"]) for u in shown.values()), default=0)
    width = 0.8 / max(len(shown), 1)
    for pos, (s, u) in enumerate(shown.items()):
        hist = np.asarray(u["forgetting_hist"], dtype=np.float64)
        share, n = hist / hist.sum(), np.arange(hist.size)
        label = (f"{setup_label(s)} (mean {u['forgetting_mean']:.2f}, "
                 f"unforgettable images {u['unforgettable_image_share']:.0%})")
        color = setup_color(s, list(sums).index(s))
        if top <= MAX_BARS:
            ax.bar(n - 0.4 + width * (pos + 0.5), share, width=width, color=color, label=label)
        else:
            ax.plot(n[share > 0], share[share > 0], color=color, lw=1.3, label=label)
    if shown:
        ax.set_yscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("forgetting events (correct -> incorrect between consecutive epochs)")
    ax.set_ylabel("share of (seed, replay, image)")
    fig.suptitle("Distribution of forgetting events per setup")
    return out.save_figure(fig, "examples_forgetting")


def rank_agreement(setups: Sequence[str], rho: np.ndarray, out: Outputs):
    """Heat map of the Spearman correlations of first-learned epochs between setups."""
    p = len(setups)
    plt, fig, axes = new_figure(1, panel_size=(1.3 * p + 2.4, 1.1 * p + 1.6))
    ax = axes[0]
    im = ax.imshow(np.nan_to_num(rho, nan=0.0), cmap=AGREEMENT_CMAP, vmin=-1, vmax=1)
    labels = [setup_label(s) for s in setups]
    ax.set_xticks(range(p), labels, rotation=30, ha="right")
    ax.set_yticks(range(p), labels)
    ax.grid(False)
    for i in range(p):
        for j in range(p):
            ax.text(j, i, "n/a" if not np.isfinite(rho[i, j]) else f"{rho[i, j]:.2f}",
                    ha="center", va="center", fontsize=9,
                    color="white" if np.isfinite(rho[i, j]) and abs(rho[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Spearman $\\rho$", shrink=0.85)
    ax.set_title("Rank agreement of the first-learned epoch")
    return out.save_figure(fig, "examples_rank_agreement")


def image_grid(images: np.ndarray, captions: Sequence[str], setup: str, kind: str, by: str,
               out: Outputs):
    """The given uint8 [n, C, H, W] images in rows of GRID_COLS, each with its caption above.

    One mosaic in one axes (32 separate axes take seconds to lay out)."""
    n, c, h, w = images.shape
    rows, cols = max(1, -(-n // GRID_COLS)), min(GRID_COLS, max(n, 1))
    cap, gap = int(round(h * CAPTION_HEIGHT)), max(1, w // 8)
    cell_h, cell_w = h + cap, w + gap
    canvas = np.full((rows * cell_h, cols * cell_w - gap, 3), 255, dtype=np.uint8)
    plt, fig, axes = new_figure(1, panel_size=(1.15 * cols, 1.55 * rows))
    ax = axes[0]
    for i in range(n):
        r, k = divmod(i, cols)
        img = np.transpose(images[i], (1, 2, 0))
        y0, x0 = r * cell_h + cap, k * cell_w
        canvas[y0:y0 + h, x0:x0 + w] = img if c == 3 else np.repeat(img[..., :1], 3, axis=2)
        ax.text(x0 + w / 2, y0 - 1, captions[i], ha="center", va="bottom", fontsize=6.5)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    order = "hardest first" if kind == "hardest" else "easiest first"
    ax.set_title(f"{setup_label(setup)}: the {n} {kind} probe images by {by} ({order})", fontsize=10)
    return out.save_figure(fig, f"examples_{kind}_{setup}")
