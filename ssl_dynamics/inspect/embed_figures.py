"""Drawing Fig. 5.1 (t-SNE scatter per setup) and Fig. 5.2 (KL matrices, a log colour scale each).

Only drawing: the numbers come from `representations.py`.
"""
from __future__ import annotations

from textwrap import wrap

import numpy as np

from .outputs import matplotlib_agg
from .plots import class_colors, setup_label


def draw_tsne(embeddings: dict, labels: np.ndarray, names: list[str], fraction: float):
    """embeddings: setup -> (emb [n, 2], epoch, seed); labels [n] of the embedded images."""
    plt = matplotlib_agg()
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    colors = np.asarray(class_colors(len(names)))
    for ax, (s, (emb, e, sd)) in zip(axes[0], embeddings.items()):
        ax.scatter(emb[:, 0], emb[:, 1], c=colors[labels], s=2, rasterized=True)
        ax.set_title(f"{setup_label(s)} (epoch {e}, seed {sd})")
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=names[c])
               for c in range(len(names))]
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(names)), frameon=False)
    fig.suptitle(f"t-SNE of the representation ({len(labels)} training images, class-stratified "
                 f"{int(fraction * 100)}%)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


# Above this many classes the cells are too small for their numbers (the thesis prints all 100).
ANNOTATE_MAX_CLASSES = 12


def kl_label(v: float) -> str:
    """A cell's number as the thesis prints it: whole nats from 10 up, else 1-2 decimals."""
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def draw_kl(kls: dict[str, np.ndarray | str], names: list[str]):
    """One [C, C] KL matrix per setup, each on its own log colour scale with its numbers in the
    cells (the thesis's Fig. 5.2: SimCLR's 66-1,061 beside supervised's 6,309-18,697 would leave
    one panel a sliver of a shared scale). A setup whose value is a string (why its KL is
    undefined) gets a panel saying so."""
    plt = matplotlib_agg()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(kls), figsize=(5.2 * len(kls), 4.6), squeeze=False)
    # the diagonal, KL(y || y) = 0, has no place on a log scale: drawn black, as the thesis's
    cmap = plt.get_cmap("viridis").with_extremes(bad="black")
    for ax, (s, kl) in zip(axes[0], kls.items()):
        ax.set_title(setup_label(s))
        if isinstance(kl, str):
            ax.text(0.5, 0.5, "KL undefined:\n" + "\n".join(wrap(kl, 40)[:6]),
                    ha="center", va="center", fontsize=8, color="darkred", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        k = np.array(kl, dtype=float)
        np.fill_diagonal(k, np.nan)
        pos = k[np.isfinite(k) & (k > 0)]
        lo, hi = (float(pos.min()), float(pos.max())) if len(pos) else (1e-3, 1.0)
        norm = LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))  # one value: a scale of nonzero width
        im = ax.imshow(np.where(k > 0, k, np.nan), norm=norm, cmap=cmap)
        if len(names) <= ANNOTATE_MAX_CLASSES:
            for (a, b), v in np.ndenumerate(kl):
                dark = a == b or not v > 0 or sum(cmap(norm(v))[:3]) < 1.5
                ax.text(b, a, "0" if a == b else kl_label(v), ha="center", va="center",
                        fontsize=6.5, color="white" if dark else "black")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("z"), ax.set_ylabel("y")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="KL(N_y || N_z), nats")
    fig.suptitle("KL divergence between class Gaussians of the representation (log scale per panel)")
    fig.tight_layout()
    return fig
