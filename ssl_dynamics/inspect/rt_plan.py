"""Planning `inspect rt`: which checkpoints, which bank, and every check before a write.

`plan` reads the run, the bank settings and the store's done flags, then reads the header
of every pending checkpoint (a few kB each: metadata, tensor names and shapes) so that a
foreign or damaged checkpoint is refused before anything is evaluated or written. The
full check of each file (sha256 against its manifest, finite weights) happens when it is
loaded for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import artifacts as art
from ..augment import DETERMINISTIC
from ..config import canonical_json, upgrade_setup_dict
from ..errors import UserError
from ..objectives import objective_for
from . import bank as bank_mod
from .plots import compress_ints
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
    group: int = 1  # checkpoints of one setup per forward pass (one grouped network)


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


# Checkpoints per grouped pass on a GPU when --group is auto. Measured on an H200
# (docs/benchmarks.md, bf16, 1,024 x 10 bank): 8 per pass gave 0.71x (SimCLR) and 0.96x
# (supervised) the rate of one at a time: grouped convolutions cost the GPU more than the
# launches they save. So auto is 1 everywhere until a measurement says otherwise; --group G
# remains for trying. On the CPU a grouped network is slower too.
GPU_GROUP_DEFAULT = 1


def resolve_group(text: str | int, device: str, backbone: str) -> int:
    """`--group`: auto (GPU_GROUP_DEFAULT on a GPU for a backbone that can be grouped, else 1)
    or a positive number; a number above 1 needs a backbone that can be grouped."""
    from ..packed import PACKABLE_BACKBONES, check_packable, parse_count

    group = parse_count(text, "--group", "checkpoints", "evaluates one checkpoint at a time")
    if group is None:
        return GPU_GROUP_DEFAULT if device.startswith("cuda") and backbone in PACKABLE_BACKBONES else 1
    if group > 1:
        check_packable(backbone, "--group")
    return group


def group_tasks(tasks: list[Task], size: int) -> list[list[Task]]:
    """Consecutive tasks of one setup, at most `size` per group, in order."""
    groups: list[list[Task]] = []
    for t in tasks:
        if groups and groups[-1][0].setup == t.setup and len(groups[-1]) < size:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


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
    try:  # every value asked for is checked first, whether or not a bank exists
        bank_mod.BankSpec.with_overrides(**given)
    except ValueError as e:
        raise UserError(str(e)) from None
    if path.exists():
        return path, bank_mod.check_existing(path, given, keys, ws.run.dataset_sha256, ws.run.n_train), True
    if given["simclr_batch"] is None and "simclr" in ws.run.cfg.setups:
        given["simclr_batch"] = ws.run.cfg.setups["simclr"].batch_size  # B of the bank = B of training
    try:
        spec = bank_mod.BankSpec.with_overrides(**given)
    except ValueError as e:
        raise UserError(str(e)) from None
    return path, spec, False


def store_bytes(run: art.Run, setups: list[str], spec: bank_mod.BankSpec, keys) -> int:
    """Upper bound of the store's size: uint8 + float32 per view of every checkpoint."""
    total = 0
    for s in setups:
        sc = run.cfg.setups[s]
        v = objective_for(sc).views_per_image
        m = 1 if sc.augment in DETERMINISTIC else spec.n_replays
        total += len(run.cfg.seeds) * (sc.epochs + 1) * m * min(spec.n_probe, run.n_train) * v * 5
    return total


def pending_tasks(run: art.Run, store_path: Path, setups: list[str], select) -> list[Task]:
    """The checkpoints of this shard that exist and are not in the store yet (read only)."""
    done: dict[str, set] = {}
    if work_path(store_path).exists():
        store = RtStore(store_path, writable=False)
        for s in setups:
            if s in store.group:
                seeds, flags = store.attrs(s)["seeds"], store.done(s)
                done[s] = {(int(seeds[i]), int(e)) for i, e in zip(*np.nonzero(flags))}
    shard_i, shard_n = select.shard
    slots: list[Task | None] = []
    for s in setups:
        for seed in run.cfg.seeds:
            have = set(run.paths.epochs(s, seed))
            for e in range(run.cfg.setups[s].epochs + 1):
                # a checkpoint's shard depends only on its place in the full grid, so shards
                # started at different times never take the same checkpoint
                mine = len(slots) % shard_n == shard_i
                wanted = select.epochs is None or e in select.epochs
                slots.append(Task(s, seed, e, -1) if mine and wanted and e in have
                             and (seed, e) not in done.get(s, set()) else None)
    return [t for t in slots if t is not None]


def check_meta(run: art.Run, path: Path, meta: dict, setup: str) -> None:
    """Refuse a checkpoint that belongs to another run, config or architecture."""
    if meta.get("dataset_sha256") != run.dataset_sha256:
        raise UserError(f"checkpoint {path} was trained on a different dataset than the run")
    stored = upgrade_setup_dict(meta.get("setup_config"), run.meta.get("schema_version", 1))
    if canonical_json(stored) != canonical_json(run.cfg.setups[setup].to_dict()):
        raise UserError(f"checkpoint {path} was made with a different config than "
                        f"{run.paths.setup_json(setup)}")
    if meta.get("backbone") != run.cfg.backbone or meta.get("width") != run.cfg.width:
        raise UserError(f"checkpoint {path} has a different architecture than the run")


def precheck(run: art.Run, tasks: list[Task]) -> None:
    """Header, metadata and tensor names/shapes of every pending checkpoint, before any write."""
    for t in tasks:
        shapes = art.network_shapes(run.cfg.backbone, run.cfg.setups[t.setup].head_dim, run.cfg.width)
        path = run.paths.checkpoint(t.setup, t.seed, t.epoch)
        check_meta(run, path, art.check_header(path, shapes), t.setup)


def label_permutation(run: art.Run, setups: list[str]) -> np.ndarray | None:
    """The run's random labels (checked), when a selected setup trains on them."""
    return run.random_labels() if any(run.cfg.setups[s].random_labels for s in setups) else None


def bind_store(run: art.Run, store: RtStore, bank: bank_mod.Bank, setups: list[str],
               tasks: list[Task], random_labels: np.ndarray | None) -> list[Task]:
    """Create or check (and grow) the store's arrays; the tasks with their seed slots."""
    store.init_probes(bank.probe_indices, bank.labels, bank.fingerprint)
    order = {}
    for s in setups:
        sc = run.cfg.setups[s]
        key = (sc.augment, objective_for(sc).views_per_image)
        targets = random_labels[bank.probe_indices] if sc.random_labels else bank.labels
        m, k, v = bank.views[key].shape[:3]
        order[s] = store.ensure_setup(s, list(run.cfg.seeds), sc.epochs + 1, m, k, v, targets, {
            "setup_config": sc.to_dict(), "bank_fingerprint": bank.fingerprints[key],
            "dataset_sha256": run.dataset_sha256, "simclr_batch": bank.spec.simclr_batch})
    return [replace(t, s_idx=order[t.setup].index(t.seed)) for t in tasks]
