"""The grid: every (setup, seed) of a run directory that still needs epochs, trained in turn.

`train_grid` checks everything first (dataset, run directory, disk space), then writes the
run's files and trains what is missing. Each (setup, seed) is trained under its own lock,
so several workers (processes, devices, cluster jobs) can share one run directory: a
worker first trains the seeds no other worker holds, then waits for the held ones (which
are usually finished by then), and a killed worker's lock dies with it.

With `opts.pack` P > 1, up to P seeds of one setup that this worker could lock are trained
together (train/pack.py); seeds held by others are waited for one at a time, as above, and
then trained through the same grouped path.
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..config import RunConfig
from ..data import Dataset, load_dataset
from ..errors import UserError
from ..progress import bar
from .loop import Diverged, TrainOptions, batches_per_epoch, checkpoint_dtypes, train_seed
from .pack import train_pack
from .prepare import check_manifests, check_run, check_unchanged, disk_estimate, prepare_run


@dataclass(frozen=True)
class Job:
    """One (setup, seed) with the epoch it has reached (-1: nothing yet) and must reach."""

    setup: str
    seed: int
    done: int
    until: int


def plan(root: Path, cfg: RunConfig, setups: list[str], until: dict[str, int] | None = None) -> list[Job]:
    """The (setup, seed) pairs that need epochs, in grid order."""
    jobs = []
    for st in art.grid_status(root, only(cfg, setups)):
        job = pending(st, (until or {}).get(st.setup, st.epochs))
        if job is not None:
            jobs.append(job)
    return jobs


def start_line(jobs: list[Job], until: int) -> str:
    """Where training of `jobs` (one setup, one target) starts, in words."""
    done = sorted({j.done for j in jobs})
    if done == [-1]:
        return f"from scratch to epoch {until}"
    if done == [until]:
        return f"epoch {until} was trained before a kill; entering it in the manifest"
    if len(done) == 1:
        return f"resuming after epoch {done[0]}, to {until}"
    each = ", ".join("from scratch" if j.done < 0 else f"after epoch {j.done}" if j.done < until
                     else "done (entering it in the manifest)" for j in jobs)
    return f"resuming {each} respectively, to {until}"


def pending(st: art.SeedStatus, target: int) -> Job | None:
    """The Job that brings a seed to `target` epochs; None when it is complete that far."""
    done = st.extended_to or st.last_epoch
    done = -1 if done is None else done
    if st.state != "complete" or done < target:
        return Job(st.setup, st.seed, done, target)
    return None


def _or_none(epoch: int | None) -> int:
    """An epoch, or -1 (nothing trained) for None."""
    return -1 if epoch is None else epoch


def _epochs(jobs: list[Job]) -> int:
    """Epochs of training the jobs still need."""
    return sum(j.until - max(j.done, 0) for j in jobs)


def only(cfg: RunConfig, setups: list[str]) -> RunConfig:
    """`cfg` restricted to the given setups."""
    return replace(cfg, setups={s: cfg.setups[s] for s in setups})


def recorded_dtype(paths: art.RunPaths, setup: str) -> str:
    """The checkpoint dtype a setup's seeds go on with when none is asked for (`open_seed`):
    the one their manifests record when they all record the same, else fp32 (an upper bound
    for the disk check: seeds of two dtypes, or seeds that predate the record)."""
    have = [seed for seed in paths.seeds(setup) if paths.manifest(setup, seed).exists()]
    recorded = checkpoint_dtypes(paths, setup, have)
    kinds = set(recorded.values())
    return kinds.pop() if len(kinds) == 1 and len(recorded) == len(have) else "fp32"


def check_grid(root: Path, cfg: RunConfig, setups: list[str], opts: TrainOptions, check_disk: bool,
               download: bool, echo, until: dict[str, int] | None = None) -> tuple[Dataset, list[Job]]:
    """Every check that needs no write: setups, dataset, run directory, disk space."""
    unknown = [s for s in setups if s not in cfg.setups]
    if unknown:
        raise UserError(f"unknown setup {unknown[0]!r}: choose from {', '.join(cfg.setups)}")
    if opts.pack > 1:
        from ..packed import check_packable

        check_packable(cfg.backbone)
    if (link := art.broken_link(root)) is not None:
        raise UserError(f"--out {root}: {link}; remove it or point it at a folder")
    base = _existing_ancestor(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file, not a folder")
    for above in Path(os.path.abspath(root)).parents:  # a run inside a run would mix with it
        if (above / "run.json").is_file() or (above / "work.json").is_file():
            what = "the run directory" if (above / "run.json").is_file() else "the inspect work folder"
            raise UserError(f"--out {root} is inside {what} {above}; choose a folder outside it")
    if not base.is_dir():
        raise UserError(f"--out {root}: {base} is a file, not a folder")
    try:
        art.check_writable(base)  # a probe file in the nearest existing folder, removed again
    except UserError:
        raise UserError(f"output directory {root} is not writable ({base} is read-only)") from None
    check_run(art.RunPaths(root), cfg, setups, None)  # what needs no data: before loading it
    dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed,
                           download=download, expect_sha256=recorded_dataset_sha(art.RunPaths(root)))
    for name in setups:
        if cfg.setups[name].objective == "classify" and cfg.setups[name].head_dim < dataset.n_classes:
            raise UserError(f"setup {name}: head_dim {cfg.setups[name].head_dim} is smaller than "
                            f"the dataset's {dataset.n_classes} classes; give --set head_dim="
                            f"{dataset.n_classes}")
    if cfg.backbone.startswith("timm:") and cfg.width != 64:  # the thesis width: no note by default
        echo(f"note: width {cfg.width} applies to resnet18_cifar only; {cfg.backbone} has its own widths")
    if opts.bf16 and opts.device.split(":")[0] == "cpu":
        echo("note: bf16 autocast on the CPU is emulated: about 15x slower than fp32 on a 2-core "
             "machine (--precision fp32)")
    wide = [n for n in setups if cfg.setups[n].objective == "classify" and cfg.setups[n].head_dim > dataset.n_classes]
    if wide:  # it trains, but r_t's argmax may then pick a class the data does not have
        echo(f"note: {', '.join(wide)} classify into {cfg.setups[wide[0]].head_dim} outputs, the "
             f"dataset has {dataset.n_classes} classes; --set head_dim={dataset.n_classes} makes "
             f"a {dataset.n_classes}-way classifier")
    from ..models import check_input

    check_input(cfg.backbone, 10, cfg.width, tuple(dataset.train_x.shape[1:]))
    check_run(art.RunPaths(root), cfg, setups, dataset)
    jobs = plan(root, cfg, setups, until)
    check_manifests(art.RunPaths(root), [(j.setup, j.seed) for j in jobs])
    need = disk_estimate(cfg, [(j.setup, j.seed, j.done, j.until) for j in jobs],
                         {s: opts.checkpoint_dtype or recorded_dtype(art.RunPaths(root), s) for s in setups})
    free = shutil.disk_usage(base).free
    echo(f"checkpoints to write: {art.format_bytes(need)} (free: {art.format_bytes(free)}) in {root}")
    if check_disk and need > free:
        raise UserError(f"not enough disk space in {root}: need {art.format_bytes(need)}, "
                        f"have {art.format_bytes(free)} (--ignore-disk-check overrides)")
    return dataset, jobs


def _stamp(path: Path) -> tuple[int, int] | None:
    """When and how large a file was last written (None: absent): a change detector."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def recorded_dataset_sha(paths: art.RunPaths) -> str | None:
    """The dataset checksum run.json records (None for a new or unreadable run: `check_run`
    judges those)."""
    try:
        sha = art.read_json(paths.run_json, dict).get("dataset", {}).get("sha256")
    except (OSError, UserError, AttributeError):
        return None
    return sha if isinstance(sha, str) else None


def open_prepared(root: str | Path, cfg: RunConfig, setups: list[str]) -> tuple[art.RunPaths, Dataset]:
    """The paths and dataset of a run directory another process prepared (`prepare_run`) for
    this config: what a device worker or a cluster job opens. Reads only."""
    paths = art.RunPaths(root)
    if not paths.run_json.exists():
        raise UserError(f"{root} has no run.json: it was not prepared for training (or was moved)")
    dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed, download=False,
                           expect_sha256=recorded_dataset_sha(paths))
    if check_run(paths, cfg, setups, dataset):
        raise UserError(f"{root} was changed since this work was planned: its config differs")
    return paths, dataset


def train_grid(root: str | Path, cfg: RunConfig, setups: list[str], opts: TrainOptions,
               check_disk: bool = True, download: bool = True, echo=print, progress: bool = True,
               until: dict[str, int] | None = None, announce: str | None = None) -> list[art.SeedStatus]:
    """Train every (setup, seed) that is not complete (or short of `until[setup]` epochs).
    `announce` is echoed once the checks passed (a refusal is then the only line)."""
    root = Path(root)
    dataset, jobs = check_grid(root, cfg, setups, opts, check_disk, download, echo, until)
    if announce:
        echo(announce)
    paths = prepare_run(root, cfg, setups, dataset, echo)
    train_runs(paths, cfg, dataset, jobs, opts, echo, progress)
    return art.grid_status(root, only(cfg, setups), sizes=True)  # once, for refuse_damaged


def train_runs(paths: art.RunPaths, cfg: RunConfig, dataset: Dataset, jobs: list[Job],
               opts: TrainOptions, echo=print, progress: bool = True) -> None:
    """Train the jobs of a prepared run directory, each under its (setup, seed) lock.

    First the seeds no other worker holds, in order (with opts.pack > 1: in packs of up to
    opts.pack seeds of one setup); then, waiting for each lock, the seeds that were held.
    Those are usually finished by then and skipped; a holder that died released its lock
    with its life, and its seed is resumed here. A seed whose loss stops being finite is
    recorded in its manifest and left; `Diverged` names them all once the rest is trained.
    """
    dev = torch.device(opts.device)
    random_y = torch.from_numpy(np.load(paths.random_labels)).to(dev)
    data = (dataset.train_x.to(dev), dataset.train_y.to(dev), random_y, dataset.identity()["sha256"])
    overall = bar(_epochs(jobs), "grid (epochs)", "ep", progress,
                  position=0)
    run = _Runner(paths, cfg, data, opts, overall, echo, progress,
                  stamps={(j.setup, j.seed): _stamp(paths.manifest(j.setup, j.seed)) for j in jobs})
    held = []
    for _, group in groupby(jobs, key=lambda j: (j.setup, j.until)):
        queue = list(group)
        while queue:
            held += run.locked(queue, opts.pack, blocking=False)
    for job in held:
        if run.locked([job], 1, blocking=False):
            echo(f"{job.setup} seed {job.seed}: another worker is training it; waiting for it")
            run.locked([job], 1, blocking=True)
    overall.close()
    if run.lost:
        raise Diverged(run.lost)


@dataclass
class _Runner:
    """What training under locks needs besides the jobs."""

    paths: art.RunPaths
    cfg: RunConfig
    data: tuple
    opts: TrainOptions
    overall: object
    echo: object
    progress: bool
    lost: list[str] = field(default_factory=list)  # seeds that diverged, reported at the end
    # each planned seed's manifest as it was when this process planned (see `_diverged_elsewhere`)
    stamps: dict = field(default_factory=dict)

    def locked(self, queue: list[Job], size: int, blocking: bool) -> list[Job]:
        """Take jobs from the front of `queue` until `size` of them are locked here, train
        those (together when opts.pack > 1); returns the jobs whose locks others hold."""
        held = []
        with ExitStack() as locks:
            mine = []
            while queue and len(mine) < size:
                job = queue.pop(0)
                lock = art.file_lock(self.paths.seed_lock(job.setup, job.seed), blocking=blocking)
                (mine if locks.enter_context(lock) else held).append(job)
            self._train(mine)
        return held

    def _diverged_elsewhere(self, job: Job) -> bool:
        """True when another process (a device worker) tried this seed after this one planned
        and it diverged: that process reports it; trying it again here would only repeat it.
        (A divergence recorded by an earlier invocation is retried, once, as always.)"""
        manifest = self.paths.manifest(job.setup, job.seed)
        if _stamp(manifest) == self.stamps.get((job.setup, job.seed)):
            return False
        st = art.seed_status(self.paths, job.setup, job.seed, self.cfg.setups[job.setup].epochs)
        if st.diverged_at is None:
            return False
        self.echo(f"{job.setup} seed {job.seed}: diverged in another worker (epoch {st.diverged_at}); "
                  f"left for a rerun")
        return True

    def _train(self, jobs: list[Job]) -> None:
        """Train locked jobs of one setup with one `until`, skipping those finished meanwhile."""
        sc = self.cfg.setups[jobs[0].setup] if jobs else None
        now = [n for j in jobs if not self._diverged_elsewhere(j)
               and (n := pending(art.seed_status(self.paths, j.setup, j.seed, sc.epochs), j.until))]
        # a kill between resume.pt and the manifest is rolled forward (loop._resume): such a
        # seed goes on after resume.pt's epoch, one past the manifest's
        now = [replace(n, done=max(n.done, _or_none(art.resume_epoch(self.paths.resume(n.setup, n.seed)))))
               for n in now]
        # epochs trained since the plan (by another worker, or before a kill) count as done
        self.overall.update(_epochs(jobs) - _epochs(now))
        if not now:  # other workers finished them since the plan was made
            return
        check_unchanged(self.paths, self.cfg, now[0].setup)
        train_x, true_y, random_y, sha = self.data
        name, until = now[0].setup, now[0].until
        seeds = ", ".join(str(j.seed) for j in now)
        low = min(j.done for j in now)
        self.echo(f"{name} seed{'s' if len(now) > 1 else ''} {seeds}"
                  + (" (packed)" if self.opts.pack > 1 else "") + ": " + start_line(now, until))
        steps = bar(batches_per_epoch(len(train_x), sc) * (until - max(low, 0)),
                    f"{name} seed{'s' if len(now) > 1 else ''} {seeds}", "batch", self.progress,
                    leave=False, position=1)

        def epoch_done(*args) -> None:
            self.overall.update(1)
            self.overall.set_postfix(loss=f"{args[-1]['loss']:.3f}")

        targets = random_y if sc.random_labels else true_y
        try:
            if self.opts.pack > 1:
                train_pack(self.paths, self.cfg, sc, [j.seed for j in now], train_x, targets, sha,
                           self.opts, on_batch=lambda: steps.update(1), on_epoch=epoch_done, until=until)
            else:
                train_seed(self.paths, self.cfg, sc, now[0].seed, train_x, targets, sha, self.opts,
                           on_batch=lambda: steps.update(1), on_epoch=epoch_done, until=until)
        except Diverged as e:  # the rest of the grid goes on; reported when it is done
            self.echo(f"diverged: {'; '.join(e.what)}")
            self.lost += e.what
        except torch.cuda.OutOfMemoryError:
            raise UserError(f"{self.opts.device} ran out of memory training {name} seed"
                            f"{'s' if len(now) > 1 else ''} {seeds} (--pack {self.opts.pack}, batch "
                            f"{sc.batch_size}): " + ("use a smaller --pack; " if self.opts.pack > 1 else
                                                     "one network of this batch does not fit; ")
                            + "a rerun resumes every seed from its last epoch") from None
        finally:
            steps.close()


def refuse_damaged(status, out) -> None:
    """A seed whose committed checkpoints are missing or truncated is not complete, and no
    rerun repairs it (its later epochs stand): say which, and how to recover (exit 2)."""
    damaged = [s for s in status if s.condition == "damaged"]
    if damaged:
        shown = "; ".join(f"{s.setup} seed {s.seed}: {s.damage}" for s in damaged[:3])
        more = f"; and {len(damaged) - 3} more (train status {out})" if len(damaged) > 3 else ""
        raise UserError(f"{len(damaged)} run(s) damaged: {shown}{more}. Restore the files from a "
                        f"copy, or delete each such seed's folder and rerun to train it again")
