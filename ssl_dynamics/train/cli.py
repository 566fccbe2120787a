"""`train`: phase one from the command line (a thin layer over train.grid and friends)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..cli_util import run_cli, split_names
from ..cluster.cli import cluster_options, from_cli
from ..cluster.records import ranges
from ..config import SETUP_NAMES, override, parse_seeds, preset
from ..errors import UserError, WorkFailed
from .cli_options import how_options
from .loop import TrainRequest, parse_pack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Phase one: train SimCLR, supervised and random-label ResNet-18s, one checkpoint per epoch.

    Checkpoints go to OUT/checkpoints/<setup>/seed-SS/epoch-EEEE.safetensors (epoch 0 is the
    initialization). Every command can be rerun: completed epochs are never redone.

    Exit status: 0 done; 1 workers or jobs failed (their logs named); 2 bad input or something
    to fix (one line on stderr: a damaged file, a full disk, memory, a diverged seed); 130
    interrupted (finished epochs kept).
    """


def _not_empty(ctx, param, value):
    if value is not None and not value.strip():
        raise UserError(f"--{param.name} is empty: give a folder")
    return value


def grid_options(f):
    """What to train and how: shared by `run` and `submit`."""
    opts = [
        click.option("--setup", "setups", multiple=True,
                     help=f"Setup(s) to train (repeatable, or comma-separated; default: all). One of {', '.join(SETUP_NAMES)}."),
        click.option("--seeds", default=None, help="Seeds, e.g. 0-29, 0,3,7 or 0-3,10 (default: the preset's)."),
        click.option("--epochs", type=int, default=None,
                     help="How many epochs to train every selected setup (a count; default: the preset's)."),
        click.option("--out", required=True, callback=_not_empty, help="Run directory (created if missing)."),
        click.option("--preset", "preset_name", default=None,
                     help="thesis (CIFAR-10, 30 seeds), demo (embedded digits, CPU) or smoke (synthetic, tiny). "
                          "Default: an existing OUT's own settings (what it was made with), else thesis."),
        click.option("--dataset", default=None, help="cifar10 | digits | synthetic | imagefolder:<path> "
                                                     "(default: the preset's: cifar10, digits, synthetic)."),
        click.option("--data-root", default=None, help="Where CIFAR-10 is (or is downloaded to; default data/)."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Override any hyperparameter: lr=0.1 (all setups), simclr.temperature=0.5, "
                          "supervised.schedule=cosine, width=16, train_subset=5000 ..."),
        click.option("--ignore-disk-check", is_flag=True, help="Start even if the checkpoints may not fit."),
        click.option("--no-download", is_flag=True, help="Never download CIFAR-10."),
    ]
    for o in reversed(opts[-2:]):  # decorators apply bottom-up: the last option first
        f = o(f)
    f = how_options()(f)
    for o in reversed(opts[:-2]):
        f = o(f)
    return f


def train_request(cfg, device, precision, channels_last, deterministic, checkpoint_dtype, compile_,
                  compile_mode, pack) -> TrainRequest:
    """The TrainRequest of the grid options, refusing a pack the backbone cannot take."""
    if (parse_pack(pack) or 1) > 1:
        from ..packed import check_packable

        check_packable(cfg.backbone)
    return TrainRequest(device, precision, channels_last, deterministic, checkpoint_dtype, compile_,
                        compile_mode, pack)


def grid_config(preset_name, setups, seeds, epochs, dataset, data_root, assignments, out=None):
    """(RunConfig, chosen setups) from the grid options. `preset_name` None (no --preset): an
    existing run directory `out` continues with the settings it records, else the thesis's."""
    from ..config import absolute_locations
    from .prepare import recorded_config

    cfg, trained = recorded_config(out, split_names(setups), click.echo) if preset_name is None else (None, None)
    cfg = cfg or preset(preset_name or "thesis")
    extra = list(assignments)
    if dataset:
        extra.insert(0, f"dataset={dataset}")
    if data_root:
        extra.insert(0, f"data_root={data_root}")
    if epochs is not None:
        extra.insert(0, f"epochs={epochs}")
    cfg = absolute_locations(override(cfg, extra))  # phase two may run from another folder
    if seeds is not None:
        cfg = replace(cfg, seeds=parse_seeds(seeds))
    chosen = split_names(setups) or trained or list(cfg.setups)  # an empty value is refused, never "all"
    for s in chosen:
        if s not in cfg.setups:
            raise UserError(f"unknown setup {s!r}: choose from {', '.join(cfg.setups)}")
    added = [s for s in chosen if trained is not None and s not in trained]
    if added:
        click.echo(f"note: {', '.join(added)} {'is' if len(added) == 1 else 'are'} new to {out}: the "
                   f"preset's settings and this command's --set (the run records no --set for "
                   f"setups it did not have)")
    return cfg, chosen


def seed_words(seeds) -> str:
    """'seed 0' / 'seeds 0-3'."""
    return f"seed{'s' if len(seeds) > 1 else ''} {ranges(list(seeds))}"


@cli.command("run")
@grid_options
@click.option("--device", default=None, help="auto | cpu | cuda[:N] (default: auto).")
@click.option("--devices", default=None,
              help="One worker per device, sharing the grid: all (every visible GPU), or a list "
                   "such as cuda:0,cuda:1 or cpu,cpu (a device may repeat).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def run_cmd(setups, seeds, epochs, out, preset_name, dataset, data_root, assignments, precision,
            channels_last, deterministic, checkpoint_dtype, compile_, compile_mode, pack,
            ignore_disk_check, no_download, device, devices, no_progress):
    """Train (setup, seed) pairs into OUT, resuming whatever is incomplete.

    \b
    Examples:
      train run --out artifacts/thesis                      # the whole thesis grid
      train run --out artifacts/thesis --devices all        # one worker per GPU
      train run --setup simclr --seeds 0-3 --epochs 10 --out artifacts/x
      train run --preset demo --out artifacts/demo          # CPU, minutes
      train run --out artifacts/thesis --pack 2             # 2 seeds per grouped network (GPU default 4)
    """
    from ..artifacts import SeedStatus

    if device is not None and devices is not None:
        raise UserError("give --device (one process) or --devices (one worker per device), not both")
    cfg, chosen = grid_config(preset_name, setups, seeds, epochs, dataset, data_root, assignments, out)
    request = train_request(cfg, "auto" if device is None else device, precision, channels_last, deterministic,
                            checkpoint_dtype, compile_, compile_mode, pack)
    kw = dict(check_disk=not ignore_disk_check, download=not no_download, echo=click.echo,
              progress=not no_progress)
    status: list[SeedStatus]
    if devices is not None:  # an empty value reaches resolve_devices, which refuses it
        from ..devices import resolve_devices
        from .workers import run_on_devices

        devs = resolve_devices(devices)
        status = run_on_devices(out, cfg, chosen, devs, request, **kw, announce=(
            f"training {', '.join(chosen)} x {seed_words(cfg.seeds)} on {', '.join(devs)} into {out}"))
    else:
        from .grid import train_grid

        opts = request.resolve(backbone=cfg.backbone)
        status = train_grid(out, cfg, chosen, opts, **kw, announce=(
            f"training {', '.join(chosen)} x {seed_words(cfg.seeds)} on {opts.device} "
            f"({'bf16' if opts.bf16 else 'fp32'}" + (f", {opts.pack} seeds per pack" if opts.pack > 1 else "")
            + f") into {out}"))
    from .grid import refuse_damaged

    done = sum(s.condition == "complete" for s in status)
    click.echo(f"done: {done}/{len(status)} runs complete")
    refuse_damaged(status, out)


@cli.command("submit")
@grid_options
@cluster_options
@click.option("--runs-per-job", type=click.IntRange(1), default=None,
              help="(setup, seed) runs of one setup trained by each job: one after another, or in "
                   "packs of --pack seeds (at most one pack, or a multiple of it). Default: the pack jobs train "
                   "(4 with a GPU per job, else 1).")
def submit_cmd(setups, seeds, epochs, out, preset_name, dataset, data_root, assignments, precision,
               channels_last, deterministic, checkpoint_dtype, compile_, compile_mode, pack,
               ignore_disk_check, no_download, runs_per_job, **cluster):
    """Submit the grid's incomplete runs as a job array (SLURM via submitit, or local).

    Jobs write into OUT (which must be on a filesystem the nodes share), are requeued when
    preempted or out of time, and resume from their last finished epoch. Submitting again
    submits only what is still incomplete. The record and the jobs' logs go to OUT/jobs/.

    \b
    Examples:
      train submit --out /shared/thesis --partition gpu --gpus-per-job 1 --time 4h
      train submit --out /shared/thesis --partition gpu --dry-run      # show the sbatch script
      train submit --preset smoke --out runs/try --executor local --gpus-per-job 0
    """
    from ..cluster import executor as ex
    from .submit import submit_grid

    opts = from_cli(**cluster, default_name="ssl-train")
    cfg, chosen = grid_config(preset_name, setups, seeds, epochs, dataset, data_root, assignments, out)
    gpu = "cuda" if opts.executor == "slurm" and opts.gpus_per_job else "auto" if opts.gpus_per_job else "cpu"
    request = train_request(cfg, gpu, precision, channels_last, deterministic, checkpoint_dtype,
                            compile_, compile_mode, pack)
    from .grid import refuse_damaged

    sub = submit_grid(out, cfg, chosen, request, opts, runs_per_job, not ignore_disk_check,
                      not no_download, click.echo)
    if sub is None or not opts.wait:
        if sub is None and not opts.dry_run:  # nothing (else) submitted: none may be called complete
            from ..artifacts import grid_status
            from .grid import only

            refuse_damaged(grid_status(out, only(cfg, chosen), sizes=True), out)
        return
    failures = ex.wait(sub, click.echo)
    rows = _summary(out)
    if failures:
        raise WorkFailed(f"{len(failures)} job(s) failed: " + "; ".join(failures))
    refuse_damaged([r for r in rows if r.setup in chosen and r.seed in cfg.seeds], out)


def _summary(run_dir) -> list:
    """Print the grid's counts; returns its statuses."""
    from ..artifacts import grid_status

    rows = grid_status(run_dir, sizes=True)
    counts = {k: sum(r.condition == k for r in rows) for k in ("complete", "partial", "missing", "damaged")}
    click.echo("grid: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "damaged"))
    return rows


@cli.command("status")
@click.argument("run_dir")
@click.option("--work", "works", multiple=True, metavar="DIR",
              help="Also list the jobs of `inspect submit rt --work DIR` (repeatable).")
def status_cmd(run_dir, works):
    """Which (setup, seed) runs of RUN_DIR are complete, partial, missing or damaged (its
    manifest names checkpoints that are gone, or checkpoints lie there without a manifest);
    known jobs (train submit's, and inspect submit rt's in RUN_DIR/inspect or each --work DIR).
    Exits 2 when anything is damaged, after the table."""
    from ..artifacts import RunPaths, grid_status, load_run_config
    from ..cluster.records import status_lines

    cfg, meta = load_run_config(run_dir)  # read once: the table and the lines below
    rows = grid_status(run_dir, cfg, sizes=True, tolerate=True)  # a damaged manifest is a row
    click.echo(f"{'setup':<20} {'seed':>4}  {'state':<9} {'epoch':>11}")
    for r in rows:
        last = "-" if r.last_epoch is None else str(r.last_epoch)
        more = (f"  extended to {r.extended_to}" if r.extended_to else "") + \
            (f"  (`train extend --to {r.extend_target}` unfinished)" if r.extension_unfinished else "") + \
            (f"  diverged in epoch {r.diverged_at}" if r.diverged_at is not None else "") + \
            (f"  {r.damage}" if r.damage else "")
        click.echo(f"{r.setup:<20} {r.seed:>4}  {r.condition:<9} {last:>5}/{r.epochs:<5}{more}")
    counts = {k: sum(r.condition == k for r in rows) for k in ("complete", "partial", "missing", "damaged")}
    paths = RunPaths(run_dir)
    listed, unconfigured = {r.setup for r in rows}, paths.unconfigured()
    gone = sorted(set(meta.get("setups") or []) - listed - set(unconfigured))
    unlisted = len(unconfigured) + len(gone)  # setups whose seeds the table cannot show
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "damaged")
               + (f"; {unlisted} damaged setup{'s' if unlisted > 1 else ''} not in the table (below)"
                  if unlisted else ""))
    for name in unconfigured:
        click.echo(f"{name}: damaged: seed folders but no setup.json, so its seeds are not listed; "
                   f"`train run` with the setup's settings restores it from the checkpoints")
    for name in sorted(set(paths.setups()) - listed):
        click.echo(f"checkpoints/{name}: not a setup of this run (its setup.json names another "
                   f"setup: a copy?); ignored")
    for name in gone:
        click.echo(f"{name}: damaged: run.json lists it, but its folder checkpoints/{name} is gone")
    for w in works:
        if not Path(w).is_dir():
            click.echo(f"--work {w}: no such folder; no jobs listed from it")
    folders = [paths.jobs, paths.inspect / "jobs", *(Path(w) / "jobs" for w in works)]
    jobs = status_lines(*dict.fromkeys(f.resolve() for f in folders))  # each folder once
    if jobs:
        click.echo(f"\n{'submission':<24} {'exec':<5} {'job id':>12}  {'state':<18} work")
        for line in jobs:
            click.echo(line)
    parts = [f"{counts['damaged']} run(s) damaged: restore their files from a copy, or delete each such "
             f"seed's folder and rerun `train run` to train it again"] if counts["damaged"] else []
    if unlisted:
        parts.append(f"{unlisted} setup(s) damaged (their lines above say how to recover)")
    if parts:  # after the table, so scripts can tell (`train run` exits 2 on these too)
        raise UserError("; ".join(parts))


from .extend import extend_cmd  # noqa: E402  (a command of its own module)

cli.add_command(extend_cmd)


def main() -> None:
    run_cli(cli, "completed epochs are on disk; rerun the same command to resume")


if __name__ == "__main__":
    main()
