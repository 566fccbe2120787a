"""`inspect rt`: evaluate every checkpoint on the bank and fill the r_t store.

Never trains. Reads the run directory (possibly copied from elsewhere, possibly read-only),
checks each checkpoint against its manifest and its run, evaluates it in eval mode on the
stored bank views and writes one chunk per checkpoint. Rerunning skips evaluated
checkpoints; `shard=(i, n)` takes every n-th checkpoint of the grid so that n processes
can share the work on one Zarr store. Every check that can fail runs before the first write.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..config import canonical_json
from ..errors import UserError
from ..objectives import objective_for
from ..progress import bar
from . import bank as bank_mod
from .evaluate import evaluate
from .plots import compress_ints
from .rtdata import export_h5
from .store import RtStore, work_path
from .workspace import Workspace


@dataclass(frozen=True)
class Selection:
    """Which checkpoints: setups (None: all), epoch numbers (None: all), a shard i of n."""

    setups: tuple[str, ...] | None = None
    epochs: tuple[int, ...] | None = None
    shard: tuple[int, int] = (0, 1)
    allow_missing: bool = False


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (not what): device, precision, integrity checks, progress."""

    device: str = "cpu"
    bf16: bool = False
    verify: bool = True  # check every checkpoint's sha256 against its manifest before use
    progress: bool = True


@dataclass(frozen=True)
class BankRequest:
    """Bank settings asked for; None takes the existing bank's value (or the default)."""

    n_probe: int | None = None
    n_replays: int | None = None
    seed: int | None = None
    simclr_batch: int | None = None
    path: Path | None = None  # None: the workspace's bank.h5

    def given(self) -> dict[str, int | None]:
        return {"n_probe": self.n_probe, "n_replays": self.n_replays, "seed": self.seed,
                "simclr_batch": self.simclr_batch}


@dataclass(frozen=True)
class Task:
    setup: str
    seed: int
    epoch: int
    s_idx: int


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: use i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def find_missing(paths: art.RunPaths, setup: str, epochs: int, seeds) -> dict[int, list[int]]:
    """seed -> epochs in 0..epochs without a checkpoint file."""
    missing = {}
    for seed in seeds:
        have = set(paths.epochs(setup, seed))
        gaps = [e for e in range(epochs + 1) if e not in have]
        if gaps:
            missing[seed] = gaps
    return missing


def describe_missing(missing: dict[str, dict[int, list[int]]]) -> str:
    parts = [f"{setup} seed {seed} epochs {compress_ints(epochs)}"
             for setup, seeds in missing.items() for seed, epochs in seeds.items()]
    return "; ".join(parts[:6]) + (f"; and {len(parts) - 6} more" if len(parts) > 6 else "")


def check_selection(run: art.Run, select: Selection) -> tuple[list[str], dict]:
    """Setups to evaluate and the missing checkpoints (refused unless allow_missing)."""
    setups = run.select(list(select.setups) if select.setups else None)
    missing = {s: m for s in setups
               if (m := find_missing(run.paths, s, run.cfg.setups[s].epochs, run.cfg.seeds))}
    if missing and not select.allow_missing:
        raise UserError(f"missing checkpoints: {describe_missing(missing)} "
                        f"(--allow-missing evaluates what exists)")
    if select.epochs is not None:
        top = max(run.cfg.setups[s].epochs for s in setups)
        bad = [e for e in select.epochs if e < 0 or e > top]
        if bad:
            have = ", ".join(f"{s}: 0-{run.cfg.setups[s].epochs}" for s in setups)
            raise UserError(f"epoch(s) {compress_ints(bad)} not in this run (it has {have})")
    return setups, missing


def view_keys(run: art.Run, setups: list[str]) -> list[bank_mod.ViewKey]:
    out = []
    for s in setups:
        sc = run.cfg.setups[s]
        out.append((sc.augment, objective_for(sc).views_per_image))
    return sorted(set(out))


def bank_plan(ws: Workspace, request: BankRequest, keys) -> tuple[Path, bank_mod.BankSpec, bool]:
    """(path, spec, exists) of the bank to use; every setting checked, nothing written."""
    path = request.path or ws.existing_bank() or ws.bank
    given = request.given()
    if path.exists():
        return path, bank_mod.check_existing(path, given, keys, ws.run.dataset_sha256, ws.run.n_train), True
    if given["simclr_batch"] is None and "simclr" in ws.run.cfg.setups:
        given["simclr_batch"] = ws.run.cfg.setups["simclr"].batch_size  # B of the bank = B of training
    try:
        spec = bank_mod.BankSpec.with_overrides(**given)
    except ValueError as e:
        raise UserError(str(e)) from None
    return path, spec, False


def load_task(paths: art.RunPaths, run: art.Run, task: Task, verify: bool) -> dict:
    """Load and check one checkpoint (runs in a background thread); its state dict."""
    path = paths.checkpoint(task.setup, task.seed, task.epoch)
    net, cmeta = art.load_network(path, verify=verify)
    sc = run.cfg.setups[task.setup]
    if cmeta.get("dataset_sha256") != run.dataset_sha256:
        raise UserError(f"checkpoint {path} was trained on a different dataset than the run")
    if canonical_json(cmeta.get("setup_config")) != canonical_json(sc.to_dict()):
        raise UserError(f"checkpoint {path} was made with a different config than "
                        f"{paths.setup_json(task.setup)}")
    if cmeta.get("backbone") != run.cfg.backbone or cmeta.get("width") != run.cfg.width:
        raise UserError(f"checkpoint {path} has a different architecture than the run")
    return net.state_dict()


@dataclass(frozen=True)
class RtPlan:
    """What `check_rt` established: the store, the setups, the bank to use or to build."""

    store_path: Path
    setups: list[str]
    missing: dict
    bank_path: Path
    spec: bank_mod.BankSpec
    bank_exists: bool


def check_rt(ws: Workspace, select: Selection = Selection(), request: BankRequest = BankRequest(),
             store_path: str | Path | None = None) -> RtPlan:
    """Every check of an evaluation that needs no write: shard, checkpoints, bank, space."""
    run = ws.run
    store_path = Path(store_path) if store_path else ws.store
    if select.shard[1] > 1 and store_path.suffix != ".zarr":
        raise UserError("--shard needs a .zarr store: HDF5 has a single writer")
    work_path(store_path)
    setups, missing = check_selection(run, select)
    keys = view_keys(run, setups)
    bank_path, spec, exists = bank_plan(ws, request, keys)
    art.check_writable(work_path(store_path).parent)
    need = store_bytes(run, setups, spec, keys) + (0 if exists else bank_mod.bank_bytes(spec, keys, (3, 32, 32)))
    art.check_space(work_path(store_path).parent, need, "the bank and the r_t store")
    return RtPlan(store_path, setups, missing, bank_path, spec, exists)


def open_rt(ws: Workspace, plan: RtPlan, data: dict | None = None, echo=print) -> tuple[RtStore, bank_mod.Bank]:
    """The bank (built now if it does not exist yet) and the store, opened for writing."""
    bank = ensure_bank(ws, plan.bank_path, plan.spec, plan.bank_exists, data or {}, echo)
    return RtStore(plan.store_path), bank


def compute_rt(ws: Workspace, select: Selection = Selection(), opts: EvalOptions = EvalOptions(),
               request: BankRequest = BankRequest(), store_path: str | Path | None = None,
               data: dict | None = None, echo=print) -> dict:
    """Fill the store; returns counts and timing (checkpoints/s, images/s).

    `data` ({"dataset": ..., "data_root": ...}) says where the run's dataset is now, for
    building the bank when the run directory moved from its machine.
    """
    plan = check_rt(ws, select, request, store_path)
    store, bank = open_rt(ws, plan, data, echo)
    tasks = plan_tasks(ws.run, store, bank, plan.setups, select)
    shard_i, shard_n = select.shard
    echo(f"{len(tasks)} checkpoints to evaluate"
         + (f" (shard {shard_i}/{shard_n})" if shard_n > 1 else "") + f" on {opts.device}")
    res = evaluate_tasks(ws.run, store, bank, tasks, opts)
    if plan.store_path.suffix in (".h5", ".hdf5"):
        export_h5(store, plan.store_path)
    return {**res, "store": str(plan.store_path),
            "missing": {s: {str(k): v for k, v in m.items()} for s, m in plan.missing.items()}}


def store_bytes(run: art.Run, setups: list[str], spec: bank_mod.BankSpec, keys) -> int:
    """Upper bound of the store's size: uint8 + float32 per view of every checkpoint."""
    total = 0
    for s in setups:
        sc = run.cfg.setups[s]
        v = objective_for(sc).views_per_image
        m = 1 if sc.augment == "none" else spec.n_replays
        total += len(run.cfg.seeds) * (sc.epochs + 1) * m * min(spec.n_probe, run.n_train) * v * 5
    return total


def ensure_bank(ws: Workspace, path: Path, spec: bank_mod.BankSpec, exists: bool, data: dict,
                echo) -> bank_mod.Bank:
    if exists:
        return bank_mod.load_bank(path)
    dataset = ws.run.load_dataset(data.get("dataset"), data.get("data_root"))
    # every (augmentation, views) pair of the run, not only the selected setups': later calls reuse it
    keys = view_keys(ws.run, list(ws.run.cfg.setups))
    echo(f"building the bank: {min(spec.n_probe, ws.run.n_train)} images x {spec.n_replays} "
         f"replays of each augmentation -> {path}")
    return bank_mod.build_bank(path, dataset.train_x, dataset.train_y, keys, ws.run.dataset_sha256, spec)


def plan_tasks(run: art.Run, store: RtStore, bank: bank_mod.Bank, setups: list[str],
               select: Selection) -> list[Task]:
    """Create/check the store's arrays; the pending checkpoints of this shard."""
    store.init_probes(bank.probe_indices, bank.labels, bank.fingerprint)
    random_labels = run.random_labels() if any(run.cfg.setups[s].random_labels for s in setups) else None
    shard_i, shard_n = select.shard
    slots: list[Task | None] = []
    for s in setups:
        sc = run.cfg.setups[s]
        key = (sc.augment, objective_for(sc).views_per_image)
        targets = random_labels[bank.probe_indices] if sc.random_labels else bank.labels
        m, k, v = bank.views[key].shape[:3]
        order = store.ensure_setup(s, list(run.cfg.seeds), sc.epochs + 1, m, k, v, targets, {
            "setup_config": sc.to_dict(), "bank_fingerprint": bank.fingerprints[key],
            "dataset_sha256": run.dataset_sha256, "simclr_batch": bank.spec.simclr_batch})
        done = store.done(s)
        for seed in run.cfg.seeds:
            s_idx, have = order.index(seed), set(run.paths.epochs(s, seed))
            for e in range(sc.epochs + 1):
                # a checkpoint's shard depends only on its place in the full grid, so shards
                # started at different times never take the same checkpoint
                mine = len(slots) % shard_n == shard_i
                wanted = select.epochs is None or e in select.epochs
                slots.append(Task(s, seed, e, s_idx) if mine and wanted and e in have
                             and not done[s_idx, e] else None)
    return [t for t in slots if t is not None]


def evaluate_tasks(run: art.Run, store: RtStore, bank: bank_mod.Bank, tasks: list[Task],
                   opts: EvalOptions) -> dict:
    """Evaluate the tasks in order, loading the next checkpoint while the current one runs."""
    dev = torch.device(opts.device)
    on_dev: dict = {}
    n_images, t0 = 0, time.perf_counter()
    progress = bar(len(tasks), "checkpoints", "ckpt", opts.progress)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(load_task, run.paths, run, tasks[0], opts.verify) if tasks else None
        for i, task in enumerate(tasks):
            state = future.result()
            if i + 1 < len(tasks):
                future = pool.submit(load_task, run.paths, run, tasks[i + 1], opts.verify)
            net, objective, views, targets = _on_device(on_dev, run, store, bank, task.setup, dev)
            net.load_state_dict(state)
            correct, p_true = evaluate(net, objective, views, targets, bank.spec.simclr_batch, opts.bf16)
            store.write(task.setup, task.s_idx, task.epoch, correct, p_true)
            n_images += int(np.prod(views.shape[:3]))
            progress.update(1)
    progress.close()
    seconds = time.perf_counter() - t0
    return {"evaluated": len(tasks), "seconds": seconds,
            "checkpoints_per_s": len(tasks) / seconds if tasks and seconds else 0.0,
            "images_per_s": n_images / seconds if tasks and seconds else 0.0}


def _on_device(cache: dict, run: art.Run, store: RtStore, bank: bank_mod.Bank, setup: str, dev):
    """(network, objective, views, targets) of a setup on the device, made once per setup."""
    if setup not in cache:
        from ..models import build_network

        sc = run.cfg.setups[setup]
        objective = objective_for(sc)
        key = (sc.augment, objective.views_per_image)
        if key not in cache:
            cache[key] = torch.from_numpy(bank.views[key]).to(dev)
        net = build_network(run.cfg.backbone, sc.head_dim, run.cfg.width).to(dev).eval()
        targets = torch.from_numpy(store.read_targets(setup)).to(dev)
        cache[setup] = (net, objective, cache[key], targets)
    return cache[setup]
