"""Fig. 5.4: gradient-ascent pseudo-images per (setup, block), sigmoid-normalized.

Columns are setups, rows are blocks 1-4; each cell is a mosaic of the chosen channels
(36 by default: a 6x6 grid). Channels are taken in a seeded random order; a channel that
cannot be made to fire is replaced by the next one of that order, as the thesis's code
did. A block with fewer live channels than asked shows what it has, and says so.

Every setup's epoch, seed and checkpoint are resolved before the first ascent, so a bad
`--epoch`, `--seed` or a missing checkpoint is refused at once; the networks are loaded one
at a time as the loop reaches them.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..errors import UserError
from ..progress import bar
from ..models import BACKBONES
from .activations import (BLOCKS, L2, MAX_REDRAWS, RECEPTIVE_FIELDS, STEP_SIZE, STEPS, choose_channels,
                          live_channels, maximize_activations, sigmoid_normalize)
from .features import resolve_epoch
from .outputs import Outputs, matplotlib_agg
from .plots import setup_label
from .workspace import Workspace

DEAD_TILE = (0.35, 0.0, 0.0)  # dark red: a channel slot left empty (no live channel left)
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


def _checkpoint(ws: Workspace, setup: str, epoch: int | None, seed: int | None) -> tuple[Path, int, int, str]:
    """(checkpoint path, epoch, seed, how the epoch was chosen) of one setup, without loading it."""
    e, how = resolve_epoch(ws.run, setup, epoch)
    seeds = [sd for sd in ws.run.cfg.seeds if ws.run.paths.checkpoint(setup, sd, e).exists()]
    if not seeds:
        raise UserError(f"{setup} has no checkpoint at epoch {e} for any seed")
    sd = seeds[0] if seed is None else seed
    if sd not in seeds:
        raise UserError(f"{setup} seed {sd} has no checkpoint at epoch {e} (seeds: {seeds})")
    return ws.run.paths.checkpoint(setup, sd, e), e, sd, how


def _backbone_error(ws: Workspace) -> UserError:
    return UserError(f"activation maximization needs the backbone resnet18_cifar (its blocks "
                     f"and receptive fields); this run trained {ws.run.cfg.backbone}")


def _load(ws: Workspace, path: Path, verify: bool):
    net, _ = art.load_network(path, verify=verify)
    if not hasattr(getattr(net, "backbone", None), "forward_to"):
        raise _backbone_error(ws)
    return net


def replaced_count(order: list[int], channels: list[int], n_channels: int) -> int:
    """How many of `channels` stand in for a dead channel among the first `n_channels` of the
    seeded `order`: those from beyond that prefix. (A dead channel with no live one left to
    replace it is an empty slot, counted in `no_live_channel`, not here.)"""
    first = set(order[:n_channels])
    return sum(c not in first for c in channels)


def run_activations(ws: Workspace, out: Outputs, setups: list[str], epoch: int | None = None,
                    seed: int | None = None, steps: int = STEPS, n_channels: int = 36,
                    channel_seed: int = 0, device: str = "cpu", verify: bool = True,
                    progress: bool = True, *, lr: float = STEP_SIZE, l2: float = L2,
                    max_redraws: int = MAX_REDRAWS) -> dict:
    if n_channels < 1:
        raise UserError(f"--channels must be at least 1, got {n_channels}")
    if steps < 0:
        raise UserError(f"--steps must be at least 0, got {steps}")
    if not hasattr(BACKBONES.get(ws.run.cfg.backbone), "forward_to"):
        raise _backbone_error(ws)
    # every setup's checkpoint before the first ascent: a bad one is refused at once
    chosen = {s: _checkpoint(ws, s, epoch, seed) for s in setups}
    cells, rows, arrays, notes = {}, [], {}, []
    if steps == 0:
        notes.append("fig5_4: --steps 0: the images are the random starting points, not optimized "
                     "(the thesis ran 1,000 steps)")
    steps_bar = bar(len(setups) * len(BLOCKS) * steps, "activation maximization", "step", progress)
    for s in setups:
        path, e, sd, how = chosen[s]
        net = _load(ws, path, verify).to(device)
        notes.append(f"fig5_4: {s} epoch {e} ({how}), seed {sd}")
        for block in BLOCKS:
            n_in_block = net.backbone.stages[block - 1][-1].bn2.num_features
            order = choose_channels(n_in_block, n_in_block, seed=channel_seed + block)
            channels = live_channels(net, block, order, n_channels, seed=channel_seed,
                                     max_redraws=max_redraws, device=device)
            done = [0]

            def on_step() -> None:
                done[0] += 1
                steps_bar.update(1)
            res = maximize_activations(net, block, channels, steps=steps, lr=lr, l2=l2,
                                       seed=channel_seed, max_redraws=max_redraws, device=device,
                                       on_step=on_step)
            steps_bar.update(steps - done[0])  # a block with no live channel runs no step
            # a channel live_channels found may still not fire here (an activation within
            # round-off of 0, in a batch of another size): its slot is empty too
            fired = int(res["ok"].sum())
            missing = min(n_channels, n_in_block) - fired
            cells[(s, block)] = (res, min(n_channels, n_in_block) - len(channels), e, sd)
            arrays[f"{s}_block{block}_images"] = res["images"].numpy()
            arrays[f"{s}_block{block}_channels"] = np.asarray(channels)
            rows.append({"setup": s, "epoch": e, "seed": sd, "block": block,
                         "patch": RECEPTIVE_FIELDS[block], "channels": fired,
                         "replaced": replaced_count(order, channels, n_channels),
                         "no_live_channel": missing,
                         "mean_final_activation": float(np.nanmean(res["activation"].numpy()))
                         if fired else float("nan")})
            if missing:
                notes.append(f"{s} block {block}: only {fired} channels can fire")
    steps_bar.close()
    png = out.save_figure(draw_activations(cells, setups, n_channels), "fig5_4_activations")
    settings = {"steps": steps, "lr": lr, "l2": l2, "max_redraws": max_redraws,
                "channel_seed": channel_seed}
    out.write_table("activations", rows, (
        f"Gradient ascent, {steps} steps of size {lr}, L2 {l2}, start U[0,1) (in the network's "
        f"input space) redrawn up to {max_redraws} times until the central activation is "
        f"positive; channel seed {channel_seed} (channel order: permutation seeded "
        f"{channel_seed} + block; starts seeded by ({channel_seed}, channel)); replaced = "
        f"channels beyond the first {n_channels} of the seeded order standing in for ones that "
        f"never fired; no_live_channel = slots left empty"))
    out.write_arrays("activations", arrays, settings)
    return {"tables": {"activations": rows}, "notes": notes, "figures": [png]}


def draw_activations(cells: dict, setups: list[str], n_channels: int):
    """Columns = setups, rows = blocks: each cell a mosaic of sigmoid-normalized images.
    A cell is (maximize_activations' result, slots beyond its channels, epoch, seed)."""
    plt = matplotlib_agg()
    fig, axes = plt.subplots(len(BLOCKS), len(setups), figsize=(3.2 * len(setups), 3.2 * len(BLOCKS)),
                             squeeze=False)
    for j, s in enumerate(setups):
        for i, block in enumerate(BLOCKS):
            res, missing, e, sd = cells[(s, block)]
            size = RECEPTIVE_FIELDS[block]
            shown = sigmoid_normalize(torch.nan_to_num(res["images"])).numpy()
            slots = len(shown) + missing
            images = np.concatenate([shown, np.zeros((missing, 3, size, size), np.float32)])
            ok = np.concatenate([res["ok"].numpy(), np.zeros(missing, bool)])
            ax = axes[i, j]
            ax.imshow(mosaic(images, ok) if slots else np.zeros((size, size, 3)), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{setup_label(s)}\n(epoch {e}, seed {sd})", fontsize=10)
            if j == 0:
                ax.set_ylabel(f"Block {block} ({size}x{size})")
            if (empty := int((~ok).sum())):
                ax.set_xlabel(f"{empty} slot(s) empty: no live channel left", fontsize=8, color="darkred")
    fig.suptitle("Activation maximization: sigmoid((x - mean) / std) per pseudo-image")
    fig.tight_layout()
    return fig
