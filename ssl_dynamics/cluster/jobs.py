"""The callables that cluster jobs run. Each is submitit-Checkpointable: on the requeue
signal submitit pickles the same callable and requeues it, and the new process resumes
from the run directory (per-epoch checkpoints, r_t chunks). Nothing else is carried.

They live in an importable module because submitit pickles classes by reference: the job's
Python must import `ssl_dynamics` (the same installation, on a shared filesystem).
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from submitit.helpers import Checkpointable, DelayedSubmission

from ..config import RunConfig
from ..train.loop import TrainRequest

if TYPE_CHECKING:
    from ..inspect.rt import BankRequest, Selection


def job_started(sigterm_requeues: bool) -> None:
    """Say where the job runs; optionally treat SIGTERM like the requeue signal.

    submitit only logs SIGTERM. SLURM's own preemption requeue restarts a `--requeue` job
    from its pickle anyway, so on SLURM SIGTERM keeps that meaning; for local jobs SIGTERM
    is the only "preemption" there is, and it requeues the job like SIGUSR2 does.
    """
    import submitit

    env = submitit.JobEnvironment()
    print(f"job {env.job_id} on {env.hostname}, pid {os.getpid()}", flush=True)
    if sigterm_requeues:
        signal.signal(signal.SIGTERM, signal.getsignal(env._usr_sig()))


class _Resubmits(Checkpointable):
    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """All progress is on disk: requeueing the same callable is the whole checkpoint."""
        return DelayedSubmission(self, *args, **kwargs)


@dataclass(frozen=True)
class TrainWork:
    """(setup, seed, last epoch) runs of one job, with the grid's config and how to run."""

    root: str
    cfg: RunConfig
    runs: tuple[tuple[str, int, int], ...]
    request: TrainRequest


class TrainJob(_Resubmits):
    """Train the job's (setup, seed) runs into the run directory; their states at the end."""

    def __init__(self, work: TrainWork, sigterm_requeues: bool = False):
        self.work = work
        self.sigterm_requeues = sigterm_requeues

    def __call__(self) -> list[tuple[str, int, str]]:
        from .. import artifacts as art
        from ..config import canonical_order
        from ..train.grid import open_prepared, pending, train_runs

        job_started(self.sigterm_requeues)
        w = self.work
        opts = w.request.resolve(backbone=w.cfg.backbone)
        setups = canonical_order({s for s, _, _ in w.runs})
        paths, dataset = open_prepared(w.root, w.cfg, setups)
        status = {(s, seed): art.seed_status(paths, s, seed, w.cfg.setups[s].epochs) for s, seed, _ in w.runs}
        jobs = [j for s, seed, until in w.runs if (j := pending(status[s, seed], until)) is not None]
        print(f"training {len(jobs)} of the job's {len(w.runs)} runs on {opts.device}", flush=True)
        train_runs(paths, w.cfg, dataset, jobs, opts, echo=lambda m: print(m, flush=True))
        return [(s, seed, art.seed_status(paths, s, seed, w.cfg.setups[s].epochs).state)
                for s, seed, _ in w.runs]


@dataclass(frozen=True)
class RtWork:
    """One shard of the r_t evaluation: everything `inspect rt --shard i/n` would be given."""

    run_dir: str
    work_dir: str
    store: str
    select: Selection  # with the job's shard
    bank: BankRequest
    data: dict
    device: str = "auto"
    bf16: bool = False
    verify: bool = True
    group: str = "auto"  # checkpoints per forward pass, resolved on the job's device


class RtJob(_Resubmits):
    """Evaluate one shard's checkpoints into the shared Zarr store (skipping done chunks)."""

    def __init__(self, work: RtWork, sigterm_requeues: bool = False):
        self.work = work
        self.sigterm_requeues = sigterm_requeues

    def __call__(self) -> dict:
        from ..devices import resolve_device
        from ..inspect.rt import EvalOptions, compute_rt
        from ..inspect.rt_plan import resolve_group
        from ..inspect.workspace import open_workspace

        job_started(self.sigterm_requeues)
        w = self.work
        ws = open_workspace(w.run_dir, w.work_dir, echo=print)
        dev = resolve_device(w.device)
        opts = EvalOptions(dev, w.bf16, w.verify, progress=True,
                           group=resolve_group(w.group, dev, ws.run.cfg.backbone))
        res = compute_rt(ws, w.select, opts, w.bank, Path(w.store), w.data,
                         echo=lambda m: print(m, flush=True))
        return {k: v for k, v in res.items() if k != "missing"}
