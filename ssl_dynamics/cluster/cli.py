"""The click options of every `submit` command, turned into checked ClusterOptions."""
from __future__ import annotations

import click

from .options import (CONSTRAINT_RE, DEFAULT_CPUS, DEFAULT_TIME, EXECUTORS, ClusterOptions, check_name,
                      parse_mem, parse_time)


def cluster_options(f):
    """The click options of every `submit` command."""
    opts = [
        click.option("--executor", type=click.Choice(EXECUTORS), default="slurm", show_default=True,
                     help="slurm, or local: the same jobs as local processes (to try a submission)."),
        click.option("--partition", default=None, help="SLURM partition (comma-separated list allowed)."),
        click.option("--account", default=None, help="SLURM account to charge."),
        click.option("--constraint", default=None, help="SLURM node features, e.g. a100|h100."),
        click.option("--gpus-per-job", type=click.IntRange(0), default=1, show_default=True,
                     help="GPUs per job (0: run on the CPU). Local jobs all see GPUs 0..N-1."),
        click.option("--cpus-per-job", type=click.IntRange(1), default=DEFAULT_CPUS, show_default=True,
                     help="CPU cores per SLURM job."),
        click.option("--time", "time_", default=DEFAULT_TIME, show_default=True,
                     help="Time limit of a job: 4h, 90m, 2d, 1-00:00:00 ... (requeued when reached)."),
        click.option("--mem", default=None, help="Memory per job, e.g. 32G (default: the partition's)."),
        click.option("--array-parallelism", type=click.IntRange(1), default=None,
                     help="At most this many jobs of the SLURM array run at once."),
        click.option("--job-name", default=None, help="SLURM job name (default: ssl-train for train submit, ssl-rt for inspect submit rt)."),
        click.option("--max-resubmits", type=click.IntRange(0), default=3, show_default=True,
                     help="While waiting: resubmit a job that died without a result this often."),
        click.option("--wait/--no-wait", default=None,
                     help="Stay until every job has ended, resubmitting dead ones (default: "
                          "yes for local, no for slurm)."),
        click.option("--dry-run", is_flag=True, help="Show the jobs (and the sbatch script); submit nothing."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def from_cli(executor, partition, account, constraint, gpus_per_job, cpus_per_job, time_, mem,
             array_parallelism, job_name, max_resubmits, wait, dry_run, default_name: str) -> ClusterOptions:
    """ClusterOptions from the values of `cluster_options`, every value checked."""
    return ClusterOptions(
        executor=executor, partition=check_name("--partition", partition),
        account=check_name("--account", account),
        constraint=check_name("--constraint", constraint, CONSTRAINT_RE),
        gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, time_min=parse_time(time_),
        mem=parse_mem(mem) if mem is not None else None, array_parallelism=array_parallelism,
        job_name=check_name("--job-name", job_name) or default_name, max_resubmits=max_resubmits,
        wait=executor == "local" if wait is None else wait, dry_run=dry_run)
