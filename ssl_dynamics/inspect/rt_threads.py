"""The threads around `inspect rt`'s evaluation: loader threads read and check the next
checkpoints into reused buffers ahead of it, and one writer thread puts each result into
the r_t store behind it, so that on a GPU neither reading nor writing waits in line with
the forward passes (benchmarks/checkpoint_load.py, benchmarks/analysis_scale.py).
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .. import artifacts as art
from .rt_plan import Task
from .store import RtStore

# Threads reading and checking checkpoints ahead of the evaluation: reading, hashing and the
# finiteness check release the GIL, and one thread reads ~30 verified checkpoints/s of the
# thesis's size on a 2-core VM (benchmarks/checkpoint_load.py), slower than a GPU evaluates
# them (~8 ms each on an H200). Half the cores (at least 2, at most 8) leave the rest to the
# evaluation itself.
LOADER_THREADS = max(2, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class Loaded:
    """A checkpoint's state dict, whose tensors view `data`, the file's bytes in a buffer
    of the loader's `Buffers` (pinned for a GPU: copy_state then never waits)."""

    state: dict[str, torch.Tensor]
    data: torch.Tensor


def load_task(paths: art.RunPaths, task: Task, verify: bool, buffers: art.Buffers) -> Loaded:
    """Read one checkpoint into a reused buffer and check everything (runs in a loader
    thread). Weights stay in their stored dtype: copy_state converts them."""
    path = paths.checkpoint(task.setup, task.seed, task.epoch)
    data = art.verified_bytes(path, verify, buffers)
    try:
        state, _ = art.load_weights(path, data=data, views=True)
    except BaseException:
        buffers.give(data)
        raise
    return Loaded(state, data)


def release(buffers: art.Buffers, loaded: list[Loaded], dev: torch.device) -> None:
    """Give the loaded checkpoints' buffers back once the copies queued out of them ran."""
    event = None
    if dev.type == "cuda":  # on the stream the copies were queued on: the device's own
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(dev))
    for item in loaded:
        buffers.give(item.data, event)


# Evaluated checkpoints whose store writes may wait at once: a write (~4 ms on a 2-core VM,
# benchmarks/analysis_scale.py) then overlaps the next evaluation instead of following it,
# and a failed write still surfaces within a few checkpoints.
WRITES_AHEAD = 4


class Running:
    """Evaluations in flight, written to the store in the order they started, by one
    writer thread. With one worker each evaluation runs at once in the calling thread (the
    GPU path); with more, in a pool."""

    def __init__(self, workers: int, evaluate, store: RtStore, progress):
        self.workers, self.evaluate, self.store, self.progress = workers, evaluate, store, progress
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        self.writer = ThreadPoolExecutor(max_workers=1)
        self.queue: deque = deque()
        self.writes: deque = deque()
        self.images = 0
        self.waited = {"checkpoints": 0.0, "writes": 0.0}  # seconds the evaluating thread waited

    def start(self, group: list[Task], loaded: list[Loaded]) -> None:
        if self.pool is None:
            done: Future = Future()
            done.set_result(self.evaluate(group, loaded))
            self.queue.append((group, done))
        else:
            self.queue.append((group, self.pool.submit(self.evaluate, group, loaded)))
        if len(self.queue) >= self.workers:
            self.finish_one()

    def finish_one(self) -> None:
        group, future = self.queue.popleft()
        self.writes.append(self.writer.submit(self._write, group, future.result()))
        while len(self.writes) > WRITES_AHEAD:
            self._wait_write()

    def _wait_write(self) -> None:
        t0 = time.perf_counter()
        try:
            self.writes.popleft().result()
        finally:
            self.waited["writes"] += time.perf_counter() - t0

    def _write(self, group: list[Task], results: list) -> None:
        for task, (correct, p_true) in zip(group, results):
            self.store.write(task.setup, task.s_idx, task.epoch, correct, p_true, task.sha256)
            self.images += int(np.prod(correct.shape))
            self.progress.update(1)

    def finish_all(self, quiet: bool = False) -> None:
        """Write every evaluation in flight; `quiet` drops failures (another one is raised)."""
        for pending, step in ((self.queue, self.finish_one), (self.writes, self._wait_write)):
            while pending:
                try:
                    step()
                except Exception:  # noqa: BLE001
                    if not quiet:
                        raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.writer.shutdown()
