"""Fig. 5.4: gradient-ascent pseudo-images per (setup, block), sigmoid-normalized.

Columns are setups, rows are blocks 1-4; each cell is a mosaic of the chosen channels
(36 by default: a 6x6 grid). Dead channels (never positive at the start) are drawn as
dark red tiles and counted in the cell's title.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..models import build_network
from ..train.grid import load_run_config
from .activations import BLOCKS, RECEPTIVE_FIELDS, choose_channels, maximize_activations, sigmoid_normalize
from .features import resolve_epoch
from .outputs import Outputs, matplotlib_agg
from .plots import setup_label

DEAD_TILE = (0.35, 0.0, 0.0)  # dark red: a channel that never fired
BORDER = 1  # pixels of black between tiles


def mosaic(images: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[n, 3, s, s] images in [0, 1] -> one [H, W, 3] grid image, near-square."""
    n, _, s, _ = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell = s + BORDER
    grid = np.zeros((rows * cell + BORDER, cols * cell + BORDER, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = images[i].transpose(1, 2, 0) if ok[i] else np.broadcast_to(DEAD_TILE, (s, s, 3))
        grid[BORDER + r * cell:BORDER + r * cell + s, BORDER + c * cell:BORDER + c * cell + s] = tile
    return grid


def run_activations(run_dir: str | Path, out: Outputs, setups: list[str], epoch: int | None = None,
                    seed: int | None = None, steps: int = 1000, n_channels: int = 36,
                    channel_seed: int = 0, device: str = "cpu", echo=print) -> dict:
    plt = matplotlib_agg()
    cfg, _ = load_run_config(run_dir)
    paths = art.RunPaths(run_dir)
    fig, axes = plt.subplots(len(BLOCKS), len(setups), figsize=(3.2 * len(setups), 3.2 * len(BLOCKS)),
                             squeeze=False)
    rows, arrays, notes = [], {}, []
    for j, s in enumerate(setups):
        e = resolve_epoch(cfg, s, epoch)
        seeds = [sd for sd in cfg.seeds if paths.checkpoint(s, sd, e).exists()]
        if not seeds:
            from ..errors import UserError

            raise UserError(f"{s} has no checkpoint at epoch {e} for any seed")
        sd = seeds[0] if seed is None or seed not in seeds else seed
        state, _ = art.load_checkpoint(paths.checkpoint(s, sd, e))
        net = build_network(cfg.backbone, cfg.setups[s].head_dim, cfg.width)
        net.load_state_dict(state)
        net.to(device).eval()
        for i, block in enumerate(BLOCKS):
            n_in_block = net.backbone.stages[block - 1][-1].bn2.num_features
            channels = choose_channels(n_in_block, n_channels, seed=channel_seed + block)
            echo(f"activation maximization: {s} block {block} ({len(channels)} channels, {steps} steps)")
            res = maximize_activations(net, block, channels, steps=steps, seed=channel_seed, device=device)
            ok = res["ok"].numpy()
            shown = sigmoid_normalize(torch.nan_to_num(res["images"])).numpy()
            arrays[f"{s}_block{block}_images"] = res["images"].numpy()
            arrays[f"{s}_block{block}_channels"] = np.asarray(channels)
            dead = int((~ok).sum())
            rows.append({"setup": s, "epoch": e, "seed": sd, "block": block,
                         "patch": RECEPTIVE_FIELDS[block], "channels": len(channels), "dead": dead,
                         "mean_final_activation": float(np.nanmean(res["activation"].numpy()))
                         if ok.any() else float("nan")})
            ax = axes[i, j]
            ax.imshow(mosaic(shown, ok), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{setup_label(s)}\n(epoch {e}, seed {sd})", fontsize=10)
            if j == 0:
                size = RECEPTIVE_FIELDS[block]
                ax.set_ylabel(f"Block {block} ({size}x{size})")
            if dead:
                ax.set_xlabel(f"{dead} dead channel(s) (dark red)", fontsize=8, color="darkred")
                notes.append(f"{s} block {block}: {dead} of {len(channels)} channels never fired")
    fig.suptitle("Activation maximization: sigmoid((x - mean) / std) per pseudo-image")
    fig.tight_layout()
    png = out.save_figure(fig, "fig5_4_activations")
    out.write_table("activations", rows, "Gradient ascent, step 1, L2 0.01, start U[0,1) redrawn "
                    "until the central activation is positive")
    out.write_arrays("activations", arrays, {"steps": steps})
    return {"tables": {"activations": rows}, "notes": notes, "figures": [png]}
