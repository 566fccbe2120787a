"""`inspect submit`: phase-two work as cluster jobs (a thin layer over inspect.submit)."""
from __future__ import annotations

from pathlib import Path

import click

from ..cli_util import parse_int_list, split_names
from ..cluster.cli import cluster_options, from_cli
from ..errors import WorkFailed
from .cli_options import BANK, DATA, NO_VERIFY, PRECISION, SETUP, WORK, not_empty, options


@click.group("submit")
def submit():
    """Submit phase-two work as a job array (SLURM via submitit, or local processes)."""


@submit.command("rt")
@click.argument("run_dir")
@click.option("--shards", type=click.IntRange(1), default=8, show_default=True,
              help="Jobs: job i evaluates `inspect rt --shard i/N` (keep N for one store).")
@options(WORK, SETUP, *DATA, PRECISION, NO_VERIFY)
@click.option("--store", default=None, callback=not_empty, help="r_t store, a .zarr folder (default WORK/rt.zarr).")
@click.option("--epochs", default=None, help="Only these epoch numbers (comma-separated; default: all).")
@click.option("--allow-missing", is_flag=True, help="Evaluate what exists when checkpoints are missing.")
@options(*BANK)
@cluster_options
def submit_rt_cmd(run_dir, shards, work, store, setups, epochs, allow_missing, dataset, data_root,
                  bank, probes, replays, bank_seed, simclr_batch, precision, group, no_verify, **cluster):
    """Evaluate RUN_DIR's checkpoints into the r_t store with SHARDS jobs.

    Jobs are requeued when preempted or out of time and skip evaluated checkpoints; the
    analyses then run anywhere (`inspect all RUN_DIR`). RUN_DIR and the work folder must be
    on a filesystem the nodes share. Records and logs go to WORK/jobs/.

    \b
    Examples:
      inspect submit rt /shared/thesis --shards 32 --partition gpu --time 2h
      inspect submit rt runs/try --shards 3 --executor local --gpus-per-job 0
    """
    from .rt import BankRequest, Selection
    from ..cluster import executor as ex
    from .submit import submit_rt

    opts = from_cli(**cluster, default_name="ssl-rt")
    select = Selection(tuple(split_names(setups) or ()) or None,
                       tuple(parse_int_list(epochs, "--epochs")) if epochs is not None else None, (0, 1), allow_missing)
    request = BankRequest(probes, replays, bank_seed, simclr_batch, Path(bank).absolute() if bank else None)
    device = "cuda" if opts.executor == "slurm" and opts.gpus_per_job else "auto" if opts.gpus_per_job else "cpu"
    sub = submit_rt(run_dir, work, shards, select, request, store, {"dataset": dataset, "data_root": data_root},
                    opts, device, precision == "bf16", not no_verify, click.echo, group)
    then = " ".join(["inspect all", str(run_dir), *(["--work", str(work)] if work else []),
                     *(["--store", str(store)] if store else []),
                     *(["--bank", str(Path(bank).absolute())] if bank else []),
                     *(a for s in dict.fromkeys(split_names(setups) or []) for a in ("--setup", s)),
                     *(["--precision", precision] if precision != "fp32" else [])])
    if sub is None or not opts.wait:
        if sub is not None:
            click.echo(f"when the jobs are done: {then}")
        return
    failures = ex.wait(sub, click.echo)
    if failures:
        raise WorkFailed(f"{len(failures)} job(s) failed: " + "; ".join(failures))
    click.echo(f"r_t store complete for the submitted shards; next: {then}")
