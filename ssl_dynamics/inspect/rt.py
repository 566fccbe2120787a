"""`inspect rt`: evaluate every checkpoint on the bank and fill the r_t store.

Never trains. Reads the run directory (possibly copied from elsewhere), checks that each
checkpoint belongs to it, evaluates it in eval mode on the stored bank views and writes one
chunk per checkpoint. Rerunning skips evaluated checkpoints; `shard=(i, n)` takes every
n-th pending checkpoint so that n processes can share the work on one Zarr store.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import artifacts as art
from ..config import RunConfig, SetupConfig, canonical_json
from ..data import load_dataset
from ..errors import UserError
from ..models import build_network
from ..train.grid import load_run_config
from ..train.setups import objective_for
from . import bank as bank_mod
from .plots import compress_ints
from .store import RtStore, export_h5

EVAL_CHUNK = 2048  # views per forward pass: large enough to fill a GPU, small for 2 CPU cores


@dataclass(frozen=True)
class Task:
    setup: str
    seed: int
    epoch: int
    s_idx: int


def find_missing(paths: art.RunPaths, setup: SetupConfig, seeds: list[int]) -> dict[int, list[int]]:
    """seed -> epochs in 0..t_max without a checkpoint file."""
    missing = {}
    for seed in seeds:
        have = set(paths.epochs(setup.name, seed))
        gaps = [e for e in range(setup.epochs + 1) if e not in have]
        if gaps:
            missing[seed] = gaps
    return missing


def describe_missing(missing: dict[str, dict[int, list[int]]]) -> str:
    parts = []
    for setup, seeds in missing.items():
        for seed, epochs in seeds.items():
            parts.append(f"{setup} seed {seed} epochs {compress_ints(epochs)}")
    shown = "; ".join(parts[:6]) + (f"; and {len(parts) - 6} more" if len(parts) > 6 else "")
    return shown


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


def ensure_bank(run_dir: Path, cfg: RunConfig, meta: dict, setups: list[str], bank_path: Path,
                n_probe: int | None, n_replays: int | None, seed: int | None,
                simclr_batch: int | None, echo=print) -> bank_mod.Bank:
    """Load the bank (checking it fits the request) or build it from the run's dataset."""
    kinds = sorted({cfg.setups[s].augment for s in setups})
    sha = meta["dataset"]["sha256"]
    n_train = int(meta["dataset"]["n_train"])
    if simclr_batch is None and not bank_path.exists() and "simclr" in cfg.setups:
        simclr_batch = cfg.setups["simclr"].batch_size  # B of the bank = B of training (SPEC)
    settings = bank_mod.resolve_settings(bank_path, kinds, n_train, sha, n_probe, n_replays, seed,
                                         simclr_batch)
    if bank_path.exists():
        return bank_mod.load_bank(bank_path)
    dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed, download=False)
    if dataset.identity()["sha256"] != sha:
        raise UserError(f"the dataset {cfg.dataset} found here differs from the one {run_dir} was "
                        f"trained on (sha256 mismatch); point --data-root at the original copy")
    echo(f"building the bank: {min(settings['n_probe'], n_train)} images x {settings['n_replays']} "
         f"replays of each augmentation -> {bank_path}")
    # every augmentation of the run, not only the selected setups': later calls reuse it
    all_kinds = sorted({sc.augment for sc in cfg.setups.values()})
    return bank_mod.build_bank(bank_path, dataset.train_x, dataset.train_y, all_kinds, sha, **settings)


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective, views: torch.Tensor, targets: torch.Tensor,
             simclr_batch: int, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """correct, p_true [M, K, V] of one network on bank views [M, K, V, 3, H, W].

    Runs in channels_last (NHWC): the same fp32 arithmetic, ~1.5x faster convolutions on
    CPUs and tensor cores alike.
    """
    m, k, v = views.shape[:3]
    model = model.to(memory_format=torch.channels_last)
    flat = views.reshape(m * k * v, *views.shape[3:]).contiguous(memory_format=torch.channels_last)
    dev = flat.device
    outs = []
    for start in range(0, len(flat), EVAL_CHUNK):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(model(flat[start:start + EVAL_CHUNK])["out"].float())
    out = torch.cat(outs).reshape(m, k, v, -1)
    correct = torch.empty(m, k, v, dtype=torch.bool, device=dev)
    p_true = torch.empty(m, k, v, dtype=torch.float32, device=dev)
    if v == 2:  # SimCLR: classify each view among the 2B views of its fixed batch
        for j in range(m):
            for b0 in range(0, k, simclr_batch):
                z = out[j, b0:b0 + simclr_batch].reshape(-1, out.shape[-1])
                c, p = objective.score(z)
                correct[j, b0:b0 + simclr_batch] = c.view(-1, 2)
                p_true[j, b0:b0 + simclr_batch] = p.view(-1, 2)
    else:
        c, p = objective.score(out.reshape(m * k, -1), targets.repeat(m))
        correct[..., 0], p_true[..., 0] = c.view(m, k), p.view(m, k)
    return correct.cpu().numpy(), p_true.cpu().numpy()


def load_for_eval(paths: art.RunPaths, cfg: RunConfig, meta: dict, task: Task) -> dict:
    """Load and check one checkpoint (runs in a background thread)."""
    path = paths.checkpoint(task.setup, task.seed, task.epoch)
    state, cmeta = art.load_checkpoint(path)
    sc = cfg.setups[task.setup]
    if cmeta.get("dataset_sha256") != meta["dataset"]["sha256"]:
        raise UserError(f"checkpoint {path} was trained on a different dataset than the run")
    if canonical_json(cmeta.get("setup_config")) != canonical_json(sc.to_dict()):
        raise UserError(f"checkpoint {path} was made with a different config than "
                        f"{paths.setup_json(task.setup)}")
    if cmeta.get("backbone") != cfg.backbone or cmeta.get("width") != cfg.width:
        raise UserError(f"checkpoint {path} has a different architecture than the run")
    return state


def compute_rt(run_dir: str | Path, store_path: str | Path | None = None, setups: list[str] | None = None,
               epochs: list[int] | None = None, shard: str | None = None, allow_missing: bool = False,
               device: str = "cpu", bf16: bool = False, n_probe: int | None = None,
               n_replays: int | None = None, bank_seed: int | None = None,
               simclr_batch: int | None = None, bank_path: str | Path | None = None,
               data_root: str | None = None, progress: bool = True, echo=print) -> dict:
    """Fill the store; returns counts and timing (checkpoints/s, images/s).

    Bank options left as None take the existing bank's values (or the defaults).
    `data_root` points at the dataset when the run directory was moved from its machine.
    """
    run_dir = Path(run_dir)
    cfg, meta = load_run_config(run_dir)
    if data_root:
        from dataclasses import replace

        cfg = replace(cfg, data_root=str(data_root))
    paths = art.RunPaths(run_dir)
    setups = select_setups(cfg, setups)
    store_path = Path(store_path) if store_path else paths.inspect / "rt.zarr"
    shard_i, shard_n = parse_shard(shard)
    if shard_n > 1 and store_path.suffix != ".zarr":
        raise UserError("--shard needs a .zarr store: HDF5 has a single writer")

    missing = {s: m for s in setups if (m := find_missing(paths, cfg.setups[s], list(cfg.seeds)))}
    if missing and not allow_missing:
        raise UserError(f"missing checkpoints: {describe_missing(missing)} "
                        f"(--allow-missing evaluates what exists)")
    if epochs is not None:
        check_epochs(cfg, setups, epochs)

    bank = ensure_bank(run_dir, cfg, meta, setups, Path(bank_path or paths.inspect / "bank.h5"),
                       n_probe, n_replays, bank_seed, simclr_batch, echo)
    store = RtStore(store_path)
    store.init_probes(bank.probe_indices, bank.labels, bank.fingerprint)
    random_labels = np.load(paths.random_labels)
    tasks = []
    for s in setups:
        sc = cfg.setups[s]
        targets = (random_labels[bank.probe_indices] if sc.random_labels else bank.labels)
        v = bank.views[sc.augment]
        store.ensure_setup(s, list(cfg.seeds), sc.epochs + 1, v.shape[0], v.shape[1], v.shape[2],
                           targets, {"setup_config": sc.to_dict(), "bank_fingerprint": bank.fingerprints[sc.augment],
                                     "dataset_sha256": meta["dataset"]["sha256"],
                                     "simclr_batch": bank.simclr_batch})
        done = store.done(s)
        for s_idx, seed in enumerate(cfg.seeds):
            have = set(paths.epochs(s, seed))
            for e in range(sc.epochs + 1):
                # a checkpoint's shard depends only on its place in the full grid, so shards
                # started at different times never take the same checkpoint
                mine = len(tasks) % shard_n == shard_i
                tasks.append(Task(s, seed, e, s_idx) if mine and (epochs is None or e in epochs)
                             and e in have and not done[s_idx, e] else None)
    tasks = [t for t in tasks if t is not None]
    echo(f"{len(tasks)} checkpoints to evaluate"
         + (f" (shard {shard_i}/{shard_n})" if shard_n > 1 else "") + f" on {device}")

    dev = torch.device(device)
    views_on_dev: dict[str, torch.Tensor] = {}
    targets_on_dev: dict[str, torch.Tensor] = {}
    models: dict[str, tuple[torch.nn.Module, object]] = {}
    n_images = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(tasks), desc="checkpoints", unit="ckpt", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as pool:  # loads the next checkpoint during compute
        future = pool.submit(load_for_eval, paths, cfg, meta, tasks[0]) if tasks else None
        for i, task in enumerate(tasks):
            state = future.result()
            if i + 1 < len(tasks):
                future = pool.submit(load_for_eval, paths, cfg, meta, tasks[i + 1])
            sc = cfg.setups[task.setup]
            if sc.augment not in views_on_dev:
                views_on_dev[sc.augment] = torch.from_numpy(bank.views[sc.augment]).to(dev)
            if task.setup not in targets_on_dev:
                targets_on_dev[task.setup] = torch.from_numpy(store.read_targets(task.setup)).to(dev)
            if task.setup not in models:
                net = build_network(cfg.backbone, sc.head_dim, cfg.width).to(dev).eval()
                models[task.setup] = (net, objective_for(sc))
            net, objective = models[task.setup]
            net.load_state_dict(state)
            views = views_on_dev[sc.augment]
            correct, p_true = evaluate(net, objective, views, targets_on_dev[task.setup],
                                       bank.simclr_batch, bf16)
            store.write(task.setup, task.s_idx, task.epoch, correct, p_true)
            n_images += int(np.prod(views.shape[:3]))
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    if store_path.suffix in (".h5", ".hdf5"):
        export_h5(store, store_path)
    return {"evaluated": len(tasks), "seconds": seconds,
            "checkpoints_per_s": len(tasks) / seconds if tasks and seconds else 0.0,
            "images_per_s": n_images / seconds if tasks and seconds else 0.0,
            "store": str(store_path), "missing": {s: {str(k): v for k, v in m.items()} for s, m in missing.items()}}


def select_setups(cfg: RunConfig, setups: list[str] | None) -> list[str]:
    if not cfg.setups:
        raise UserError("the run directory has no trained setup yet")
    if not setups:
        return list(cfg.setups)
    for s in setups:
        if s not in cfg.setups:
            raise UserError(f"setup {s!r} is not in this run (it has {', '.join(cfg.setups)})")
    return list(setups)


def check_epochs(cfg: RunConfig, setups: list[str], epochs: list[int]) -> None:
    top = max(cfg.setups[s].epochs for s in setups)
    bad = [e for e in epochs if e < 0 or e > top]
    if bad:
        have = ", ".join(f"{s}: 0-{cfg.setups[s].epochs}" for s in setups)
        raise UserError(f"epoch(s) {compress_ints(bad)} not in this run (it has {have})")
