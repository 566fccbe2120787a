"""Drawing Fig. 5.1 (t-SNE scatter per setup) and Fig. 5.2 (KL matrices, log colour scale).

Only drawing: the numbers come from `representations.py`.
"""
from __future__ import annotations

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


def draw_kl(kls: dict[str, np.ndarray], names: list[str]):
    """One [C, C] KL matrix per setup on a shared log colour scale (diagonal blank)."""
    plt = matplotlib_agg()
    from matplotlib.colors import LogNorm

    n = len(kls)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    off = np.concatenate([k[~np.eye(len(k), dtype=bool)] for k in kls.values()])
    pos = off[off > 0]
    vmin, vmax = (float(pos.min()), float(pos.max())) if len(pos) else (1e-3, 1.0)
    im = None
    for ax, (s, kl) in zip(axes[0], kls.items()):
        k = kl.copy()
        np.fill_diagonal(k, np.nan)  # KL(y||y) = 0 has no place on a log scale
        im = ax.imshow(np.where(k > 0, k, np.nan), norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis")
        ax.set_title(setup_label(s))
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("z"), ax.set_ylabel("y")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="KL(N_y || N_z)")
    fig.suptitle("KL divergence between class Gaussians of the representation (log scale)")
    return fig
