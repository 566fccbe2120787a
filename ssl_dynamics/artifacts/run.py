"""Reading a run directory: its config, its dataset identity, its seeds' progress.

Phase two and `train status` read a run only through this module, so a damaged or foreign
run.json, setup.json, manifest or label permutation is refused here with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig, canonical_order, setup_from_dict, validate
from ..errors import UserError
from .atomic import read_json, sha256_file
from .paths import RunPaths

RUN_JSON_KEYS = {"config": dict, "seeds": list, "dataset": dict}  # what phase two needs


def load_run_config(root: str | Path) -> tuple[RunConfig, dict]:
    """RunConfig (with its stored setups) of an existing run directory, and run.json."""
    paths = RunPaths(root)
    if paths.root.exists() and not paths.root.is_dir():
        raise UserError(f"{root} is a file, not a run directory")
    if not paths.run_json.is_file():
        raise UserError(f"{root} is not a run directory (no run.json)")
    meta = read_json(paths.run_json, dict)
    for key, kind in RUN_JSON_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise UserError(f"corrupt {paths.run_json}: no valid {key!r} entry")
    for key in ("sha256", "n_train"):
        if key not in meta["dataset"]:
            raise UserError(f"corrupt {paths.run_json}: dataset has no {key!r}")
    setups = {n: setup_from_dict(read_json(paths.setup_json(n)), str(paths.setup_json(n)))
              for n in canonical_order(paths.setups())}
    known = {f.name for f in fields(RunConfig)} - {"setups", "seeds"}
    try:
        cfg = RunConfig(**{k: v for k, v in meta["config"].items() if k in known},
                        seeds=tuple(int(s) for s in meta["seeds"]), setups=setups)
    except (TypeError, ValueError) as e:
        raise UserError(f"corrupt {paths.run_json}: {e}") from None
    validate(cfg)
    return cfg, meta


def read_manifest(path: Path) -> dict:
    m = read_json(path, dict)
    if not isinstance(m.get("checkpoints"), dict):
        raise UserError(f"corrupt manifest {path}: no 'checkpoints' entry")
    return m


@dataclass(frozen=True)
class SeedStatus:
    setup: str
    seed: int
    state: str  # complete | partial | missing
    last_epoch: int | None
    epochs: int
    extended_to: int | None = None  # last epoch of an extension beyond `epochs`, if any
    diverged_at: int | None = None  # the epoch whose loss stopped being finite (not committed)


def seed_status(paths: RunPaths, setup: str, seed: int, epochs: int) -> SeedStatus:
    manifest = paths.manifest(setup, seed)
    if not manifest.exists():
        return SeedStatus(setup, seed, "missing", None, epochs)
    m = read_manifest(manifest)
    done = [int(e) for e in m["checkpoints"]]
    last = max(done) if done else None
    planned = [e for e in done if e <= epochs]
    top = max(planned) if planned else None
    state = "complete" if m.get("complete") and top == epochs else "partial"
    lost = m.get("diverged")
    lost_at = lost.get("epoch") if isinstance(lost, dict) and isinstance(lost.get("epoch"), int) else None
    return SeedStatus(setup, seed, state, top, epochs, last if last and last > epochs else None, lost_at)


def grid_status(root: str | Path, cfg: RunConfig | None = None) -> list[SeedStatus]:
    paths = RunPaths(root)
    if cfg is None:
        cfg, _ = load_run_config(root)
    return [seed_status(paths, name, seed, sc.epochs)
            for name, sc in cfg.setups.items() for seed in cfg.seeds]


@dataclass(frozen=True)
class Run:
    """A run directory opened for reading (phase two): config, run.json, paths."""

    paths: RunPaths
    cfg: RunConfig
    meta: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> "Run":
        cfg, meta = load_run_config(root)
        if not cfg.setups:
            raise UserError(f"{root} has no trained setup yet")
        return cls(RunPaths(root), cfg, meta)

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def dataset_sha256(self) -> str:
        return str(self.meta["dataset"]["sha256"])

    @property
    def n_train(self) -> int:
        return int(self.meta["dataset"]["n_train"])

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta.get("classes") or []]

    def select(self, setups: list[str] | None) -> list[str]:
        """The setups asked for (default: all), each checked to exist in the run."""
        if not setups:
            return list(self.cfg.setups)
        for s in setups:
            if s not in self.cfg.setups:
                raise UserError(f"setup {s!r} is not in this run (it has {', '.join(self.cfg.setups)})")
        return list(dict.fromkeys(setups))

    def random_labels(self) -> np.ndarray:
        """The stored label permutation, checked against run.json."""
        path = self.paths.random_labels
        try:
            perm = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"corrupt label permutation {path}: {type(e).__name__}") from None
        if perm.ndim != 1 or len(perm) != self.n_train or not np.issubdtype(perm.dtype, np.integer):
            raise UserError(f"corrupt label permutation {path}: expected {self.n_train} integers")
        want = self.meta.get("random_labels_sha256")
        if want and sha256_file(path) != want:
            raise UserError(f"{path} differs from the permutation run.json recorded")
        return perm.astype(np.int64)

    def load_dataset(self, dataset: str | None = None, data_root: str | None = None):
        """The run's dataset, proven to be the same data by its checksum.

        `dataset` / `data_root` say where it is now when the run moved from its machine
        (e.g. imagefolder:<new path>); the checksum decides whether it is the same data.
        """
        from ..data import load_dataset

        c = self.cfg
        if dataset:
            c = replace(c, dataset=dataset)
        if data_root:
            c = replace(c, data_root=str(data_root))
        ds = load_dataset(c.dataset, c.data_root, c.train_subset, c.subset_seed, download=False)
        if ds.identity()["sha256"] != self.dataset_sha256:
            raise UserError(f"the dataset {c.dataset} found here differs from the one {self.root} "
                            f"was trained on (sha256 mismatch); point --data-root or --dataset at "
                            f"the original data")
        return ds
