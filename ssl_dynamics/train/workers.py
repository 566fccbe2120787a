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
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import artifacts as art
from ..config import RunConfig
from ..errors import UserError, WorkFailed
from .grid import check_grid, only, open_prepared, plan, train_runs
from .loop import Diverged, TrainRequest
from .prepare import prepare_run


# A worker's exit status when every run it could train is trained but some diverged (their
# manifests say where); the parent then reports the diverged seeds as one process would.
DIVERGED_STATUS = 3
# A worker's exit status when it stopped on a UserError (bad input, a damaged file, out of
# GPU memory), which it printed as one line: the parent then exits as a refusal too (2).
STOPPED_STATUS = 2
STOP_GRACE_S = 30  # after an interrupt: long enough for an epoch's commit to finish its writes


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
                   echo=print, progress: bool = True, announce: str | None = None) -> list[art.SeedStatus]:
    """Train the grid with one worker per device; the grid's status afterwards. `announce`
    is echoed once the checks passed."""
    root = Path(root)
    dataset, jobs = check_grid(root, cfg, setups, request.resolve(devices[0], cfg.backbone),
                               check_disk, download, echo)
    if announce:
        echo(announce)
    paths = prepare_run(root, cfg, setups, dataset, echo)
    if jobs:
        folder = art.new_folder(paths.logs)
        echo(f"{len(devices)} workers on {', '.join(devices)}; their logs: {folder}")
        threads = cpu_threads(devices)
        specs = [WorkerSpec(k, dev, str(root), cfg, tuple(setups), request,
                            str(folder / f"worker-{k}-{dev.replace(':', '')}.log"), progress,
                            threads if dev == "cpu" else 0)
                 for k, dev in enumerate(devices)]
        failed = [(s, code) for s, code in _run(specs) if code != DIVERGED_STATUS]
        status = art.grid_status(root, only(cfg, setups))
        lost = [f"{st.setup} seed {st.seed} in epoch {st.diverged_at}" for st in status
                if st.diverged_at is not None and st.state != "complete"]
        if failed:
            done = sum(st.state == "complete" for st in status)
            tail = (f"; {done}/{len(status)} runs complete" + (", a rerun resumes the rest" if
                                                               done < len(status) else "")
                    + (f"; diverged: {', '.join(lost)}" if lost else ""))
            if all(code == STOPPED_STATUS for _, code in failed):  # each said why in one line
                raise UserError(f"{len(failed)} worker(s) stopped on an error (its line is above, "
                                f"and in {failed[0][0].log}){tail}")
            raise WorkFailed("; ".join(f"worker {s.index} on {s.device} {_ended(code)} (log: {s.log})"
                                       for s, code in failed) + tail)
        if lost:
            raise Diverged(lost)
    return art.grid_status(root, only(cfg, setups), sizes=True)  # once, for refuse_damaged


def _ended(code: int) -> str:
    """How a worker ended, in words: a negative exit code is the signal that killed it."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def cpu_threads(devices: list[str]) -> int:
    """The machine's cores shared evenly by the CPU workers (small networks on a CPU gain more
    from one process per core than from several threads per process); 0 (torch's default)
    when OMP_NUM_THREADS says otherwise."""
    n = sum(d == "cpu" for d in devices)
    if not n or "OMP_NUM_THREADS" in os.environ:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups)
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // n)


def _run(specs: list[WorkerSpec]) -> list[tuple[WorkerSpec, int]]:
    """Start every worker, wait for all; the ones that failed, with their exit status.

    Workers start with SIGINT ignored (a Ctrl-C while they import torch would print a
    traceback from each); `worker_main` restores it. An interrupt of the parent (Ctrl-C,
    SIGTERM, SIGHUP, whether or not the workers got it too) is passed on to every worker,
    which stops at once (finished epochs are on disk); one still running after
    STOP_GRACE_S is terminated. A worker whose parent dies stops by itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    ctx = mp.get_context("spawn")  # fork would copy the parent's torch threads and CUDA state
    procs = [ctx.Process(target=worker_main, args=(s,), name=f"train-worker-{s.index}") for s in specs]
    with _handling({signal.SIGINT: signal.SIG_IGN}):  # inherited by the spawned workers
        for p in procs:
            p.start()
    try:
        with _handling({signal.SIGTERM: _as_interrupt, signal.SIGHUP: _as_interrupt}):
            for p in procs:
                p.join()
    except KeyboardInterrupt:
        _stop(procs)
        raise
    return [(s, p.exitcode) for s, p in zip(specs, procs) if p.exitcode]


@contextmanager
def _handling(handlers: dict) -> Iterator[None]:
    """These signal handlers for the block, then the previous ones again. Only the main
    thread may set them: called from another thread (a library caller), it sets none."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in handlers}
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(procs) -> None:
    """Interrupt every live worker, wait up to STOP_GRACE_S for all, terminate the rest."""
    import time

    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()


def _stop_with_parent() -> None:
    """Interrupt this worker when its parent process ends (killed by pid, by the OOM killer):
    a worker never goes on training the grid as an orphan."""
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_main(spec: WorkerSpec) -> None:
    """A worker process: output to its log, whole prefixed lines to the console."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored while it started
    _stop_with_parent()
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
    except Diverged:  # echoed as each happened; the parent names every diverged seed
        status = DIVERGED_STATUS
    except UserError as e:
        echo(f"error: {' '.join(str(e).split())}")
        status = STOPPED_STATUS
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
