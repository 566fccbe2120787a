"""`train run --devices`: one worker process per device, all filling one run directory.

The parent checks everything and prepares the run directory (run.json, setup.json, the
label permutation) once; then each worker, a spawned process bound to one device, trains
(setup, seed) runs of the grid until none is left. Workers coordinate only through the
per-seed locks of the run directory (`train_runs`), exactly as independent processes or
cluster jobs do. Everything a worker prints goes to its own log,
`<run>/logs/<stamp>/worker-K-<device>.log`; its progress messages also reach the console
as whole lines prefixed with `[K device]`, so outputs never interleave mid-line.

Plain processes (multiprocessing, spawn) rather than submitit's local executor: a worker
needs no requeue (the parent is the user's own session) and starts without a pickle folder.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts as art
from ..config import RunConfig
from ..errors import UserError, WorkFailed
from .grid import check_grid, only, open_prepared, plan, train_runs
from .loop import TrainRequest
from .prepare import prepare_run


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker needs (pickled into the spawned process)."""

    index: int
    device: str
    root: str
    cfg: RunConfig
    setups: tuple[str, ...]
    request: TrainRequest
    log: str
    progress: bool
    threads: int = 0  # CPU threads of this worker (0: torch's default)


def run_on_devices(root: str | Path, cfg: RunConfig, setups: list[str], devices: list[str],
                   request: TrainRequest, check_disk: bool = True, download: bool = True,
                   echo=print, progress: bool = True) -> list[art.SeedStatus]:
    """Train the grid with one worker per device; the grid's status afterwards."""
    root = Path(root)
    dataset, jobs = check_grid(root, cfg, setups, request.resolve(devices[0], cfg.backbone),
                               check_disk, download, echo)
    paths = prepare_run(root, cfg, setups, dataset, echo)
    if jobs:
        folder = art.new_folder(paths.logs)
        echo(f"{len(devices)} workers on {', '.join(devices)}; their logs: {folder}")
        threads = cpu_threads(devices)
        specs = [WorkerSpec(k, dev, str(root), cfg, tuple(setups), request,
                            str(folder / f"worker-{k}-{dev.replace(':', '')}.log"), progress,
                            threads if dev == "cpu" else 0)
                 for k, dev in enumerate(devices)]
        failed = _run(specs)
        if failed:
            raise WorkFailed("; ".join(f"worker {s.index} on {s.device} exited with status {code} "
                                       f"(log: {s.log})" for s, code in failed))
    return art.grid_status(root, only(cfg, setups))


def cpu_threads(devices: list[str]) -> int:
    """The machine's cores shared evenly by the CPU workers (small networks on a CPU gain more
    from one process per core than from several threads per process); 0 (torch's default)
    when OMP_NUM_THREADS says otherwise."""
    n = sum(d == "cpu" for d in devices)
    if not n or "OMP_NUM_THREADS" in os.environ:
        return 0
    return max(1, (os.cpu_count() or 1) // n)


def _run(specs: list[WorkerSpec]) -> list[tuple[WorkerSpec, int]]:
    """Start every worker, wait for all; the ones that failed, with their exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    ctx = mp.get_context("spawn")  # fork would copy the parent's torch threads and CUDA state
    procs = [ctx.Process(target=worker_main, args=(s,), name=f"train-worker-{s.index}") for s in specs]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the same SIGINT; let them stop cleanly
        for p in procs:
            p.join(timeout=30)  # long enough for an epoch's commit to finish its writes
        raise
    return [(s, p.exitcode) for s, p in zip(specs, procs) if p.exitcode]


def worker_main(spec: WorkerSpec) -> None:
    """A worker process: output to its log, whole prefixed lines to the console."""
    console = os.fdopen(os.dup(1), "w", buffering=1)  # line buffered: one write() per line
    log = open(spec.log, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    prefix = f"[{spec.index} {spec.device}] "

    def echo(message: str) -> None:
        print(message, flush=True)
        for line in str(message).splitlines():
            console.write(prefix + line + "\n")

    status = 0
    try:
        _train(spec, echo)
    except UserError as e:
        echo(f"error: {' '.join(str(e).split())}")
        status = 2
    except KeyboardInterrupt:
        status = 130
    except Exception as e:  # noqa: BLE001 - the traceback goes to the log, one line to the console
        traceback.print_exc()
        echo(f"failed: {type(e).__name__}: {e} (traceback in {spec.log})")
        status = 1
    sys.exit(status)


def _train(spec: WorkerSpec, echo) -> None:
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    opts = spec.request.resolve(spec.device, spec.cfg.backbone)
    paths, dataset = open_prepared(spec.root, spec.cfg, list(spec.setups))
    jobs = plan(paths.root, spec.cfg, list(spec.setups))
    echo(f"worker {spec.index} on {opts.device}: {len(jobs)} runs of the grid still need epochs")
    train_runs(paths, spec.cfg, dataset, jobs, opts, echo, spec.progress)
    echo(f"worker {spec.index}: no run left")
