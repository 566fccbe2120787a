"""The grid: every (setup, seed) of a run directory, with provenance and safety checks.

`prepare_run` writes (or checks) run.json, setup.json and the label permutation;
`grid_status` reads what is on disk; `train_grid` trains what is missing.
"""
from __future__ import annotations

import datetime as _dt
import platform
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from .. import artifacts as art
from ..config import SCHEMA_VERSION, RunConfig, canonical_order, SetupConfig, canonical_json
from ..data import Dataset, load_dataset
from ..errors import UserError
from ..models import build_network, count_parameters
from .loop import TrainOptions, batches_per_epoch, train_seed

# Fields of run.json that must agree for a second invocation to share the directory.
RUN_IDENTITY = ("dataset", "data_root", "train_subset", "subset_seed", "backbone", "width",
                "label_seed")
RESUME_STATE_FACTOR = 3  # resume.pt holds weights-sized optimizer moments (Adam: 2, SGD: 1) + slack


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "ssl_dynamics": __version__}
    for pkg in ("torch", "torchvision", "numpy", "h5py", "zarr", "safetensors", "timm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if rev.returncode:
            return None
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def label_permutation(labels: torch.Tensor, seed: int) -> np.ndarray:
    """ONE fixed permutation of the training label vector (keeps class balance)."""
    return np.random.default_rng(seed).permutation(labels.numpy()).astype(np.int64)


def check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {root} is not writable: {e.strerror}") from None


def check_run(paths: art.RunPaths, cfg: RunConfig, setups: list[str], dataset: Dataset) -> np.ndarray:
    """Refuse a run directory made with a different config; returns the label permutation.

    Reads only: nothing is written until every check has passed.
    """
    identity = dataset.identity()
    if paths.run_json.exists():
        old = art.read_json(paths.run_json)
        diffs = [k for k in RUN_IDENTITY if old.get("config", {}).get(k) != getattr(cfg, k)]
        if old.get("dataset", {}).get("sha256") != identity["sha256"]:
            diffs.append("dataset contents")
        if diffs:
            raise UserError(f"{paths.root} was made with a different config ({', '.join(diffs)} "
                            f"differ); use another --out or the same settings")
    perm = label_permutation(dataset.train_y, cfg.label_seed)
    if paths.random_labels.exists() and not np.array_equal(np.load(paths.random_labels), perm):
        raise UserError(f"{paths.random_labels} differs from the permutation of label_seed "
                        f"{cfg.label_seed}; the run directory was altered")
    for name in setups:
        p = paths.setup_json(name)
        if p.exists():
            have, want = art.read_json(p), _setup_record(cfg.setups[name])
            if canonical_json(have) != canonical_json(want):
                keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
                raise UserError(f"{p} was made with a different config ({', '.join(keys)} differ); "
                                f"use another --out or the same settings")
    return perm


def _setup_record(sc: SetupConfig) -> dict:
    return {"schema_version": SCHEMA_VERSION, **sc.to_dict()}


def prepare_run(root: str | Path, cfg: RunConfig, setups: list[str], dataset: Dataset) -> art.RunPaths:
    """Check, then create or update run.json, setup.json files and the label permutation."""
    paths = art.RunPaths(root)
    check_writable(paths.root)
    perm = check_run(paths, cfg, setups, dataset)
    if not paths.random_labels.exists():
        with art.atomic_path(paths.random_labels) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, perm)
    for name in setups:
        if not paths.setup_json(name).exists():
            art.write_json_atomic(paths.setup_json(name), _setup_record(cfg.setups[name]))
    run_json = art.read_json(paths.run_json) if paths.run_json.exists() else {}
    run_json.update({
        "schema_version": SCHEMA_VERSION,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("setups", "seeds")},
        "seeds": sorted(set(run_json.get("seeds", [])) | set(cfg.seeds)),
        "setups": sorted(set(run_json.get("setups", [])) | set(setups)),
        "dataset": dataset.identity(),
        "classes": list(dataset.classes),
        "random_labels_sha256": art.sha256_file(paths.random_labels),
    })
    run_json.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    run_json["provenance"] = {"versions": package_versions(), "git_revision": git_revision(),
                              "host": platform.node()}
    art.write_json_atomic(paths.run_json, run_json)
    return paths


def load_run_config(root: str | Path) -> tuple[RunConfig, dict]:
    """RunConfig (with its stored setups) of an existing run directory, and run.json."""
    paths = art.RunPaths(root)
    if not paths.run_json.exists():
        raise UserError(f"{root} is not a run directory (no run.json)")
    meta = art.read_json(paths.run_json)
    names = canonical_order(paths.setups())
    setups = {n: SetupConfig(**{k: v for k, v in art.read_json(paths.setup_json(n)).items()
                                if k != "schema_version"}) for n in names}
    c = meta["config"]
    cfg = RunConfig(**{k: c[k] for k in c if k in RunConfig.__dataclass_fields__},
                    seeds=tuple(meta["seeds"]), setups=setups)
    return cfg, meta


@dataclass(frozen=True)
class SeedStatus:
    setup: str
    seed: int
    state: str  # complete | partial | missing
    last_epoch: int | None
    epochs: int


def grid_status(root: str | Path, cfg: RunConfig | None = None) -> list[SeedStatus]:
    paths = art.RunPaths(root)
    if cfg is None:
        cfg, _ = load_run_config(root)
    out = []
    for name, sc in cfg.setups.items():
        for seed in cfg.seeds:
            manifest = paths.manifest(name, seed)
            if not manifest.exists():
                out.append(SeedStatus(name, seed, "missing", None, sc.epochs))
                continue
            m = art.read_json(manifest)
            last = max(int(e) for e in m["checkpoints"]) if m["checkpoints"] else None
            state = "complete" if m.get("complete") and last == sc.epochs else "partial"
            out.append(SeedStatus(name, seed, state, last, sc.epochs))
    return out


def disk_estimate(cfg: RunConfig, setups: list[str], status: list[SeedStatus]) -> int:
    """Bytes the remaining checkpoints (and resume states) will take."""
    todo = {(s.setup, s.seed): s for s in status}
    total = 0
    for name in setups:
        sc = cfg.setups[name]
        n_params = count_parameters(build_network(cfg.backbone, sc.head_dim, cfg.width))
        per_ckpt = 4 * n_params + 64 * 1024  # fp32 weights (+BN buffers, metadata slack)
        for seed in cfg.seeds:
            st = todo.get((name, seed))
            done = (st.last_epoch + 1) if st and st.last_epoch is not None else 0
            remaining = sc.epochs + 1 - done
            total += remaining * per_ckpt + (0 if done else RESUME_STATE_FACTOR * per_ckpt)
    return total


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def train_grid(root: str | Path, cfg: RunConfig, setups: list[str], opts: TrainOptions,
               check_disk: bool = True, download: bool = True, echo=print, progress: bool = True):
    """Train every (setup, seed) that is not complete; returns the final status."""
    unknown = [s for s in setups if s not in cfg.setups]
    if unknown:
        raise UserError(f"unknown setup {unknown[0]!r}: choose from {', '.join(cfg.setups)}")
    root = Path(root)
    check_writable(root)
    dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.subset_seed,
                           download=download)
    check_run(art.RunPaths(root), cfg, setups, dataset)
    sub = replace(cfg, setups={s: cfg.setups[s] for s in setups})
    status = grid_status(root, sub)
    need = disk_estimate(sub, setups, status)
    free = shutil.disk_usage(root).free
    echo(f"checkpoints to write: {format_bytes(need)} (free: {format_bytes(free)}) in {root}")
    if check_disk and need > free:
        raise UserError(f"not enough disk space in {root}: need {format_bytes(need)}, "
                        f"have {format_bytes(free)} (--ignore-disk-check overrides)")
    paths = prepare_run(root, cfg, setups, dataset)
    dev = torch.device(opts.device)
    train_x = dataset.train_x.to(dev)
    true_y = dataset.train_y.to(dev)
    random_y = torch.from_numpy(np.load(paths.random_labels)).to(dev)
    sha = dataset.identity()["sha256"]
    todo = [s for s in status if s.state != "complete"]
    total_epochs = sum(s.epochs - (s.last_epoch or 0) for s in todo)
    overall = tqdm(total=total_epochs, desc="grid (epochs)", unit="ep", disable=not progress,
                   position=0)
    for st in todo:
        sc = cfg.setups[st.setup]
        targets = random_y if sc.random_labels else true_y
        nb = batches_per_epoch(len(train_x), sc)
        bar = tqdm(total=nb * (sc.epochs - (st.last_epoch or 0)), desc=f"{st.setup} seed {st.seed}",
                   unit="batch", leave=False, disable=not progress, position=1)
        train_seed(paths, cfg, sc, st.seed, train_x, targets, sha, opts,
                   on_batch=lambda: bar.update(1),
                   on_epoch=lambda e, m: (overall.update(1),
                                          overall.set_postfix(loss=f"{m['loss']:.3f}")))
        bar.close()
    overall.close()
    return grid_status(root, sub)
