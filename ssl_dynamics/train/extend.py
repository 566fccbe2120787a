"""`train extend`: train chosen seeds of a setup beyond its planned epochs.

The thesis's representation analyses (Table B.1, Figs 5.1, 5.2, 5.4) used longer-trained
models than its dynamics runs: supervised after 200 epochs (the dynamics run has 50), random
labels after 30 (20). The reference learning-rate schedules do not depend on the run length
(classification: cosine with T_max = 200 epochs; SimCLR: cosine over the batches of one epoch
stepped per epoch), so continuing a finished seed gives exactly the checkpoints of a seed
trained that long from the start. The extra epochs land in the same seed folder and manifest
(`extended_to`); the setup's planned epochs, the r_t store and the dynamics analyses are
unchanged, and the representation analyses use the thesis's epochs once they exist.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..artifacts import RunPaths, load_run_config
from ..cli_util import split_names
from ..cluster.records import ranges
from ..config import absolute_locations, parse_seeds
from ..errors import UserError
from .grid import refuse_damaged, train_grid
from .cli_options import how_options
from .loop import TrainOptions, TrainRequest, checkpoint_dtypes

THESIS_EXTENSIONS = {"supervised": 200, "random_labels": 30}  # thesis section 5.1


def extend_grid(root: str | Path, setups: list[str], until: int, opts: TrainOptions,
                seeds: tuple[int, ...] | None = None, data_root: str | None = None,
                check_disk: bool = True, echo=print, progress: bool = True,
                dataset: str | None = None, announce: str | None = None):
    """Train `seeds` (default: all of the run's) of `setups` up to epoch `until`; `announce` is
    echoed once the checks passed."""
    cfg, _ = load_run_config(root)
    for s in setups:
        if s not in cfg.setups:
            raise UserError(f"setup {s!r} is not in {root} (it has {', '.join(cfg.setups)})")
        sc = cfg.setups[s]
        if sc.schedule == "cosine":
            raise UserError(f"{s} anneals its learning rate over its {sc.epochs} planned epochs "
                            f"(schedule=cosine), so a longer run would differ from the start; "
                            f"train a new run with --epochs {until} instead")
        if until <= sc.epochs:
            raise UserError(f"{s} already plans {sc.epochs} epochs; --to must be larger "
                            f"(`train run` finishes the planned ones)")
        if sc.schedule == "reference" and sc.objective == "classify" and until > sc.cosine_period_epochs:
            echo(f"note: {s}'s learning rate follows the reference cosine of period "
                 f"{sc.cosine_period_epochs} epochs: it is 0 at epoch {sc.cosine_period_epochs} and "
                 f"rises again after it (as in the thesis's 500-epoch random_labels_aug run)")
    if seeds is not None:
        extra = sorted(set(seeds) - set(cfg.seeds))
        if extra:
            raise UserError(f"seeds {extra} are not in {root}; `train run --seeds` adds seeds")
        cfg = replace(cfg, seeds=tuple(seeds))
    if data_root:
        cfg = replace(cfg, data_root=str(data_root))
    if dataset:
        cfg = replace(cfg, dataset=dataset)
    if data_root or dataset:  # recorded as absolute paths (`train run` does the same)
        cfg = absolute_locations(cfg)
    return train_grid(root, cfg, setups, opts, check_disk=check_disk, download=False, echo=echo,
                      progress=progress, until={s: until for s in setups}, announce=announce)


@click.command("extend")
@click.argument("run_dir")
@click.option("--setup", "setups", multiple=True, required=True,
              help="Setup(s) to extend (repeatable, or comma-separated).")
@click.option("--to", "until", type=click.IntRange(1), default=None,
              help="Last epoch to reach (default: the thesis's, supervised 200, random_labels 30).")
@click.option("--seeds", default=None, help="Seeds to extend, e.g. 0 or 0-3 (default: all of the run's).")
@click.option("--data-root", default=None, help="Where the run's CIFAR-10 is now (its checksum must match).")
@click.option("--dataset", default=None,
              help="imagefolder:<path>: where the run's image folder is now (its checksum must match).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
@how_options()
@click.option("--ignore-disk-check", is_flag=True, help="Start even if the checkpoints may not fit.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def extend_cmd(run_dir, setups, until, seeds, data_root, dataset, device, precision, channels_last,
               deterministic, checkpoint_dtype, compile_, compile_mode, pack, ignore_disk_check,
               no_progress):
    """Train seeds of setups beyond their planned epochs (e.g. supervised to 200 for the
    thesis's Table B.1); the dynamics keep reading the planned epochs. A seed not yet
    finished is trained through its planned epochs first.

    It trains the way `train run` does by default (bf16 and packs of 4 on a GPU), and stores
    the weights in the run's checkpoint dtype; the options change either.
    """
    cfg, _ = load_run_config(run_dir)
    setups = split_names(setups)
    if not setups:
        raise UserError("--setup names no setup")
    for s in setups:
        if s not in cfg.setups:
            raise UserError(f"unknown setup {s!r}: {run_dir} has {', '.join(cfg.setups)}")
        if until is None and s not in THESIS_EXTENSIONS:
            raise UserError(f"{s}: give --to (the thesis extended only {', '.join(THESIS_EXTENSIONS)})")
    chosen = parse_seeds(seeds) if seeds is not None else None  # '' is refused, not "all"
    status = []  # every setup is extended before a damaged seed of any is refused
    for s in setups:
        to = THESIS_EXTENSIONS[s] if until is None else until
        # None: each seed keeps its own checkpoints' dtype (`loop.open_seed`)
        paths = RunPaths(run_dir)
        recorded = checkpoint_dtypes(paths, s)  # a seed not begun takes the setup's (`open_seed`)
        kept = {sd: recorded.get(sd) or (next(iter(recorded.values()), "fp32") if not paths.manifest(s, sd).exists()
                                         else "as stored") for sd in chosen or cfg.seeds}
        kinds = {d: [sd for sd, k in kept.items() if k == d] for d in sorted(set(kept.values()))}
        dtype = (f", {checkpoint_dtype} checkpoints)" if checkpoint_dtype else
                 f", each seed keeps its checkpoint dtype: {', '.join(kinds) or 'fp32'})" if len(kinds) < 2 else
                 ", each seed keeps its checkpoint dtype: " + "; ".join(
                     f"{d} (seed{'s' if len(v) > 1 else ''} {ranges(v)})" for d, v in kinds.items()) + ")")
        opts = TrainRequest(device, precision, channels_last, deterministic, checkpoint_dtype, compile_,
                            compile_mode, pack).resolve(backbone=cfg.backbone)
        announce = (f"extending {s} to epoch {to} on {opts.device} ({'bf16' if opts.bf16 else 'fp32'}"
                    + (f", {opts.pack} seeds per pack" if opts.pack > 1 else "")
                    + dtype)
        status += extend_grid(run_dir, [s], to, opts, chosen, data_root, check_disk=not ignore_disk_check,
                              echo=click.echo, progress=not no_progress, dataset=dataset, announce=announce)
    refuse_damaged([st for st in status if chosen is None or st.seed in chosen], run_dir)
