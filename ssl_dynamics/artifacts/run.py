"""Reading a run directory: its config, its dataset identity, its seeds' progress.

Phase two and `train status` read a run only through this module, so a damaged or foreign
run.json, setup.json, manifest or label permutation is refused here with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig, check_schema, canonical_order, setup_from_dict, validate_run_fields
from ..errors import UserError
from .atomic import read_json, sha256_file
from .paths import RunPaths
from .tensorfile import expected_size

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
    check_run_json_values(meta, paths.run_json)
    setups = {}
    for n in canonical_order(paths.setups()):
        sc = setup_from_dict(read_json(paths.setup_json(n)), str(paths.setup_json(n)))
        if sc.name == n:  # else a copy of another setup's folder (a backup): not a setup here
            setups[n] = sc
    known = {f.name for f in fields(RunConfig)} - {"setups", "seeds"}
    try:
        cfg = RunConfig(**{k: v for k, v in meta["config"].items() if k in known},
                        seeds=tuple(int(s) for s in meta["seeds"]), setups=setups)
    except (TypeError, ValueError) as e:
        raise UserError(f"corrupt {paths.run_json}: {e}") from None
    try:
        validate_run_fields(cfg)
    except UserError as e:
        raise UserError(f"corrupt {paths.run_json}: {e}") from None
    from ..models import check_backbone

    check_backbone(cfg.backbone)  # not run.json's fault when this timm lacks the model
    return cfg, meta


def check_run_json_values(meta: dict, path: Path) -> None:
    """Refuse values of run.json that phase two would misread: a schema from a newer
    toolkit, a dataset size or checksum that cannot be, class names that are not names."""
    check_schema(meta.get("schema_version"), str(path))
    n = meta["dataset"].get("n_train")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"corrupt {path}: dataset n_train {n!r} is not a positive integer")
    sha = meta["dataset"].get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise UserError(f"corrupt {path}: dataset sha256 {sha!r} is not a sha256")
    classes = meta.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"corrupt {path}: classes is not a list of names")


def read_manifest(path: Path) -> dict:
    """A seed's manifest, its structure checked: every reader may then trust it."""
    m = read_json(path, dict)
    ckpts = m.get("checkpoints")
    if not isinstance(ckpts, dict):
        raise UserError(f"corrupt manifest {path}: no 'checkpoints' entry")
    bad = [k for k, v in ckpts.items() if not (k.isascii() and k.isdigit() and isinstance(v, str))]
    if bad:
        raise UserError(f"corrupt manifest {path}: checkpoint entry {bad[0]!r} is not "
                        f"epoch number -> sha256")
    if not isinstance(m.get("complete", False), bool):
        raise UserError(f"corrupt manifest {path}: 'complete' is not true or false")
    return m


@dataclass(frozen=True)
class SeedStatus:
    setup: str
    seed: int
    state: str  # complete | partial | missing (the manifest's account: what training resumes from)
    last_epoch: int | None
    epochs: int
    extended_to: int | None = None  # last epoch of an extension beyond `epochs`, if any
    diverged_at: int | None = None  # the epoch whose loss stopped being finite (not committed)
    lost: tuple[int, ...] = ()  # committed epochs whose checkpoint file is absent, empty or truncated
    unrecorded: int | None = None  # no manifest, yet checkpoints up to this epoch (> 0) on disk
    extend_target: int | None = None  # the farthest epoch a `train extend` of it was asked to reach
    unreadable: str | None = None  # why its manifest.json cannot be read (`train status` only)

    @property
    def condition(self) -> str:
        """What `train status` shows: the state, or "damaged" when files and manifest disagree."""
        return "damaged" if self.lost or self.unrecorded is not None or self.unreadable else self.state

    @property
    def damage(self) -> str:
        """One phrase on what is damaged ("" when nothing is)."""
        if self.unreadable:
            return self.unreadable
        if self.unrecorded is not None:
            return f"no manifest.json, checkpoints up to epoch {self.unrecorded} on disk"
        if self.lost:
            few = ", ".join(map(str, self.lost[:3])) + (" ..." if len(self.lost) > 3 else "")
            return f"{len(self.lost)} committed checkpoint(s) missing or truncated (epoch {few})"
        return ""

    @property
    def extension_unfinished(self) -> bool:
        """An extension was asked for and the seed has not reached it: cut short. (The target
        is recorded once the seed's own training starts, so a seed an interrupted `train
        extend` never reached shows nothing.)"""
        return self.extend_target is not None and (self.extended_to or self.epochs) < self.extend_target


def seed_status(paths: RunPaths, setup: str, seed: int, epochs: int, sizes: bool = False,
                tolerate: bool = False) -> SeedStatus:
    """What the seed's manifest and files say. `sizes`: also read each committed
    checkpoint's header to find truncated files (about 0.2 ms a checkpoint, 5 s for the
    thesis grid); without it only missing and empty ones count as lost. A manifest that
    cannot be read is refused, or with `tolerate` (a report of the whole grid) a damaged
    seed saying why."""
    manifest = paths.manifest(setup, seed)
    if not manifest.exists():
        on_disk = [e for e in paths.epochs(setup, seed) if e > 0]  # as prepare.trained_epochs_on_disk
        return SeedStatus(setup, seed, "missing", None, epochs, unrecorded=max(on_disk, default=None))
    try:
        m = read_manifest(manifest)
    except (UserError, OSError) as e:  # damaged, or a folder / no permission where it belongs
        if not tolerate:
            raise
        why = str(e) if isinstance(e, UserError) else f"{manifest} cannot be read ({e.strerror or type(e).__name__})"
        return SeedStatus(setup, seed, "partial", None, epochs, unreadable=why)
    done = sorted(int(e) for e in m["checkpoints"])
    last = max(done) if done else None
    planned = [e for e in done if e <= epochs]
    top = max(planned) if planned else None
    state = "complete" if m.get("complete") and top == epochs else "partial"
    lost = m.get("diverged")
    lost_at = lost.get("epoch") if isinstance(lost, dict) and isinstance(lost.get("epoch"), int) else None
    gone = tuple(e for e in done if _absent(paths.checkpoint(setup, seed, e), sizes))
    target = m.get("extend_target")
    return SeedStatus(setup, seed, state, top, epochs, last if last and last > epochs else None,
                      lost_at, gone, extend_target=target if isinstance(target, int) else None)


def _absent(path: Path, sizes: bool = False) -> bool:
    """A checkpoint that cannot be read as committed: no file, an empty one, or (`sizes`) one
    whose size is not what its own header says (cut short by a copy, or appended to). Reads
    the header only; a change of content is for the sha256 check of phase two to find. A
    file that exists but cannot be read (permissions, I/O) raises its OSError: that is not
    damage to repair by retraining."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    return size == 0 or (sizes and expected_size(path) != size)


def grid_status(root: str | Path, cfg: RunConfig | None = None, sizes: bool = False,
                tolerate: bool = False) -> list[SeedStatus]:
    """Every (setup, seed) of the run's grid (`cfg`'s); `sizes`, `tolerate` as in `seed_status`."""
    paths = RunPaths(root)
    if cfg is None:
        cfg, _ = load_run_config(root)
    return [seed_status(paths, name, seed, sc.epochs, sizes, tolerate)
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
        from ..config import absolute_locations
        from ..data import DataNotFound, load_dataset

        c = self.cfg
        if dataset:
            c = replace(c, dataset=dataset)
        if data_root:
            c = replace(c, data_root=str(data_root))
        if dataset or data_root:  # ~ expanded, as `train run` records it
            c = absolute_locations(c)
        try:
            ds = load_dataset(c.dataset, c.data_root, c.train_subset, c.subset_seed, download=False,
                              expect_sha256=self.dataset_sha256)
        except DataNotFound as e:
            if dataset or data_root:
                raise
            where = c.dataset if c.dataset.startswith("imagefolder:") else f"{c.dataset} in {c.data_root}"
            raise UserError(f"{e} ({where}: where run.json says the data was when {self.root.name} "
                            f"was trained; point --dataset or --data-root at where it is now)") from None
        if ds.identity()["sha256"] != self.dataset_sha256:
            raise UserError(f"the dataset {c.dataset} found here differs from the one {self.root} "
                            f"was trained on (sha256 mismatch); point --data-root or --dataset at "
                            f"the original data")
        return ds
