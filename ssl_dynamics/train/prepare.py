"""Creating (or checking) a run directory before any training: run.json, setup.json, labels.

`check_run` only reads; `prepare_run` writes, under the run's lock, after every check has
passed. A run directory in which nothing has been trained yet (only initial weights, e.g.
after a first epoch that diverged) takes new settings instead of refusing them.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .. import artifacts as art
from ..cluster.records import ranges
from ..config import (LOCATION_FIELDS, SCHEMA_VERSION, RunConfig, absolute_location, SetupConfig, canonical_json, canonical_order, preset,
                      setup_from_dict)
from ..data import Dataset
from ..errors import UserError

# Fields of run.json that must agree for a second invocation to share the directory. Where the
# data lies (data_root, the path in imagefolder:<path>) may change between machines: the
# dataset's sha256 decides whether it is the same data, and run.json records the new place.
RUN_IDENTITY = ("train_subset", "subset_seed", "backbone", "width", "label_seed")
METADATA_SLACK = 64 * 1024  # bytes per checkpoint beyond the tensors: header, metadata
# bytes torch.save adds to resume.pt per stored tensor (about 270 measured for ResNet-18's
# state; doubled so that backbones with many small tensors are not underestimated)
TENSOR_OVERHEAD = 512


def dataset_kind(name: str) -> str:
    """cifar10, digits, synthetic or imagefolder: a dataset's name without its location."""
    return name.split(":", 1)[0]


def _same_places_kept(recorded, config: dict) -> dict:
    """`config` with the recorded spelling of a data location that names the same place
    (a run made with a relative path keeps its run.json unchanged by a rerun from there)."""
    if not isinstance(recorded, dict):
        return config
    same = {k: recorded[k] for k in LOCATION_FIELDS
            if isinstance(recorded.get(k), str) and absolute_location(k, recorded[k]) == config[k]}
    return {**config, **same}


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


def setup_record(sc: SetupConfig) -> dict:
    return {"schema_version": SCHEMA_VERSION, **sc.to_dict()}


def trained_epochs_on_disk(paths: art.RunPaths, setup: str, seed: int) -> list[int]:
    """Epochs beyond 0 whose checkpoint files are in the seed's folder, committed or not."""
    return [e for e in paths.epochs(setup, seed) if e > 0]


def trained_anything(paths: art.RunPaths, setup: str | None = None) -> bool:
    """True once any seed (of `setup`, or of any setup) has committed an epoch beyond 0, or
    holds the checkpoint of one (its manifest may be missing: a partial copy, a deletion)."""
    names = [setup] if setup else paths.setups() + paths.unconfigured()
    for name in names:
        for seed in paths.seeds(name):
            m = paths.manifest(name, seed)
            if m.exists():  # files beyond it are uncommitted: redone by a resume, or forgotten
                if any(int(e) > 0 for e in art.read_manifest(m)["checkpoints"]):
                    return True
            elif trained_epochs_on_disk(paths, name, seed):
                return True
    return False


def check_manifests(paths: art.RunPaths, seeds: list[tuple[str, int]]) -> None:
    """Refuse, before any write, a planned (setup, seed) whose folder holds checkpoints beyond
    epoch 0 but no manifest.json (a partial copy, a deletion): what was committed is unknown."""
    for setup, seed in seeds:
        if not paths.manifest(setup, seed).exists():
            on_disk = trained_epochs_on_disk(paths, setup, seed)
            if on_disk:
                raise UserError(f"{paths.seed_dir(setup, seed)} has checkpoints up to epoch "
                                f"{max(on_disk)} but no manifest.json: restore it (e.g. finish the "
                                f"copy), or delete that folder to retrain the seed")


def differ(keys: list[str], have: dict | None = None, want: dict | None = None) -> str:
    """'lr differs' / 'lr, momentum differ': the keys in which two configs disagree; with
    their values, 'lr: 0.1 in the run, 0.5 asked; ...' (at most 6, the rest counted)."""
    if have is None or want is None:
        return f"{', '.join(keys)} {'differs' if len(keys) == 1 else 'differ'}"
    shown = [f"{k}: {_value(have.get(k))} in the run, {_value(want.get(k))} asked" for k in keys[:6]]
    return "; ".join(shown) + (f"; and {len(keys) - 6} more" if len(keys) > 6 else "")


def _value(v) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


SAME_SETTINGS = ("use another --out, or the run's own settings (without --preset and --set, "
                 "`train run --out` continues a run with the settings it records)")


def made_with(recorded: dict, asked: str) -> str:
    """' (the run was made with --preset NAME)' from run.json's `recorded` config when NAME
    is not the `asked` preset (the settings a rerun must repeat), else ''."""
    name = recorded.get("preset")
    return f" (the run was made with --preset {name})" if isinstance(name, str) and name != asked else ""


def identity_diffs(recorded: dict, cfg: RunConfig) -> list[str]:
    """The RUN_IDENTITY fields in which `cfg` differs from a run's recorded config."""
    return [k for k in RUN_IDENTITY if recorded.get(k) != getattr(cfg, k)]


def stored_setup(p: Path) -> dict:
    """A setup.json as a config dict in today's terms (one stored under an older schema)."""
    return setup_from_dict(art.read_json(p, dict), str(p)).to_dict()


def check_run(paths: art.RunPaths, cfg: RunConfig, setups: list[str], dataset: Dataset | None) -> list[str]:
    """Refuse a run directory trained with different settings. Reads only.

    Returns what may be replaced because nothing was trained with it yet: "run" (run.json
    and the label permutation) and/or setup names. With `dataset` None, only what needs no
    data is compared (before loading, or downloading, a dataset the run may not even use).
    """
    replace_ = []
    recorded: dict = {}  # the run's config as run.json records it
    if not paths.run_json.exists() and trained_anything(paths):
        raise UserError(f"{paths.root} holds trained checkpoints but no run.json: restore run.json "
                        f"(the checkpoints do not record all of its settings), or use another --out")
    if paths.run_json.exists():
        old = art.read_json(paths.run_json, dict)
        for key in ("config", "dataset"):
            if not isinstance(old.get(key), dict):
                raise UserError(f"corrupt {paths.run_json}: no valid {key!r} entry (restore it, or "
                                f"use another --out)")
        art.check_run_json_values(old, paths.run_json)  # never rewritten in an older schema
        recorded = old["config"]
        diffs = identity_diffs(recorded, cfg)
        if dataset_kind(str((old.get("config") or {}).get("dataset"))) != dataset_kind(cfg.dataset):
            diffs.insert(0, "dataset")
        if dataset is not None and (old.get("dataset") or {}).get("sha256") != dataset.identity()["sha256"]:
            diffs.append("dataset contents")
        if diffs and trained_anything(paths):
            sha = (old.get("dataset") or {}).get("sha256")
            have = {**recorded, "dataset contents": f"sha256 {str(sha)[:12]}"}
            want = {**{k: getattr(cfg, k) for k in (*RUN_IDENTITY, "dataset")},
                    "dataset contents": f"sha256 {dataset.identity()['sha256'][:12]}" if dataset else None}
            if set(diffs) <= {"dataset", "dataset contents"}:  # also what `train extend` can meet
                raise UserError(f"{paths.root} was made from other data ({differ(diffs, have, want)}): "
                                f"give the data it was made with (--data-root / --dataset), or start "
                                f"a new run with another --out")
            raise UserError(f"{paths.root} was made with a different config ({differ(diffs, have, want)})"
                            f"{made_with(recorded, cfg.preset)}; {SAME_SETTINGS}")
        if diffs:
            replace_.append("run")
    if dataset is not None and cfg.train_subset > len(dataset.train_y) and \
            recorded.get("train_subset") != cfg.train_subset:  # a run made before keeps what it has
        raise UserError(f"train_subset {cfg.train_subset} is larger than the dataset's "
                        f"{len(dataset.train_y)} training images; use at most that, or 0 for all")
    if dataset is not None and "run" not in replace_ and paths.random_labels.exists():
        perm = label_permutation(dataset.train_y, cfg.label_seed)
        try:
            same = np.array_equal(np.load(paths.random_labels, allow_pickle=False), perm)
        except (OSError, ValueError, EOFError):
            same = False
        if not same:
            raise UserError(f"{paths.random_labels} differs from the permutation of label_seed "
                            f"{cfg.label_seed}; the run directory was altered")
    for name in setups:
        p = paths.setup_json(name)
        if not p.exists() and trained_anything(paths, name):
            check_lost_setup(paths, name, cfg.setups[name].to_dict())
        if p.exists():
            have, want = stored_setup(p), cfg.setups[name].to_dict()
            if canonical_json(have) != canonical_json(want):
                if trained_anything(paths, name):
                    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
                    longer = keys == ["epochs"] and want["epochs"] > have["epochs"]
                    raise UserError(f"{p} was made with a different config ({differ(keys, have, want)})"
                                    f"{made_with(recorded, cfg.preset)}; "
                                    + (f"`train extend {paths.root} --setup {name} --to {want['epochs']}` "
                                       f"trains its seeds further" if longer else
                                       SAME_SETTINGS))
                replace_.append(name)
    return replace_


def checkpointed_setup(paths: art.RunPaths, setup: str) -> dict | None:
    """The setup config recorded in the header of the first committed checkpoint of `setup`
    (in today's terms), or None when no seed has one to read."""
    for seed in paths.seeds(setup):
        if paths.manifest(setup, seed).exists():
            for epoch in sorted(map(int, art.read_manifest(paths.manifest(setup, seed))["checkpoints"])):
                ckpt = paths.checkpoint(setup, seed, epoch)
                if ckpt.is_file():
                    meta, version = art.header_meta(ckpt)
                    stored = {**meta.get("setup_config", {}), "schema_version": version}
                    return setup_from_dict(stored, f"setup config in {ckpt}").to_dict()
    return None


def recorded_config(out, asked: list[str] | None = None,
                    echo=print) -> tuple[RunConfig | None, list[str] | None]:
    """(the config run directory `out` was made with, the setups it has), or (None, None) when
    `out` has no run.json: what `train run` without --preset continues. Its setups are those
    run.json lists and any folder with trained seeds, each with the settings its setup.json
    records, else those in the header of its checkpoints (a deleted setup.json, which the
    rerun writes again); a setup it does not have gets its preset's; its seeds, every seed
    trained so far. A listed setup whose folder is gone is refused unless `asked` (--setup)
    leaves it out: its settings are recorded nowhere."""
    if out is None or not (Path(out) / "run.json").is_file():
        return None, None
    cfg, meta = art.load_run_config(out)
    paths = art.RunPaths(out)
    listed = [n for n in meta.get("setups", []) if isinstance(n, str)] if isinstance(meta.get("setups"), list) else []
    names = canonical_order(dict.fromkeys([*cfg.setups, *listed, *paths.unconfigured()]))
    try:
        base = preset(cfg.preset).setups
    except UserError:  # a preset this version does not know: what the run records
        base = {}
    setups, gone = {}, []
    for n in names:
        if n in cfg.setups:
            setups[n] = cfg.setups[n]
        elif (header := checkpointed_setup(paths, n)) is not None:
            setups[n] = setup_from_dict(header, f"setup config in the checkpoints of {n}")
        else:  # listed in run.json, its folder gone: its settings are nowhere on disk
            gone.append(n)
    if gone and (asked is None or set(asked) & set(gone)):
        raise UserError(f"{out} lists {', '.join(gone)}, whose folder is gone, so its settings "
                        f"are recorded nowhere: give --preset and the --set values it was made with "
                        f"to train it again, or --setup to continue the others")
    runs = [(n, sd) for n in setups for sd in cfg.seeds]
    fresh = [(n, sd) for n, sd in runs if not paths.seed_dir(n, sd).is_dir()]
    echo(f"{out} continues with the settings it was made with (--preset {cfg.preset}, "
               f"{', '.join(setups) or 'no setup left'}, seeds {ranges(list(cfg.seeds))}, data {cfg.dataset}"
               + (f" in {cfg.data_root}" if cfg.dataset == "cifar10" else "") + ")"
               + (f"; {len(fresh)} of its {len(runs)} runs are not started yet (e.g. {fresh[0][0]} seed "
                  f"{fresh[0][1]}), and --setup / --seeds choose which to train" if fresh else "")
               + "; --preset starts from a preset's settings instead")
    return replace(cfg, setups={**base, **setups}), list(setups)


def check_lost_setup(paths: art.RunPaths, setup: str, want: dict) -> None:
    """Refuse to recreate a trained setup's deleted setup.json with settings its checkpoints
    were not made with. With the same settings, prepare_run writes it again."""
    p = paths.setup_json(setup)
    have = checkpointed_setup(paths, setup)
    if have is None:
        raise UserError(f"{p} is missing and no committed checkpoint of {setup} records its "
                        f"settings: restore setup.json, or use another --out")
    if canonical_json(have) != canonical_json(want):
        keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise UserError(f"{p} is missing, and {setup}'s checkpoints were made with a different "
                        f"config ({differ(keys)}); rerun with their settings to restore "
                        f"it, or use another --out")


def check_unchanged(paths: art.RunPaths, cfg: RunConfig, setup: str) -> None:
    """Refuse to train `setup` with a config that the run directory no longer holds: another
    `train run` replaced it (allowed while nothing of it was trained) after this process read
    it. Called under the seeds' locks, before a seed is opened."""
    p = paths.setup_json(setup)
    have = stored_setup(p) if p.exists() else None
    run = art.read_json(paths.run_json, dict) if paths.run_json.exists() else {}
    if canonical_json(have) != canonical_json(cfg.setups[setup].to_dict()) or \
            identity_diffs(run.get("config") or {}, cfg):
        raise UserError(f"{paths.root}: the settings of {setup} were replaced by another process "
                        f"since this one started; rerun with the new settings (or use another --out)")


def _forget_untrained(paths: art.RunPaths, names: list[str], echo) -> None:
    """Remove the initial weights of setups whose settings changed before any training.

    Each seed's lock is taken first: a seed that another process is training (its first
    epoch, with the old settings) is refused, not deleted under it. The lock files stay, so
    the lock keeps meaning one file."""
    with ExitStack() as locks:
        for name in names:
            for seed in paths.seeds(name):
                if not locks.enter_context(art.file_lock(paths.seed_lock(name, seed), blocking=False)):
                    raise UserError(f"{name} seed {seed} is being trained by another process with the "
                                    f"old settings; wait for it (or stop it) before changing them")
        for name in names:
            echo(f"{name}: nothing was trained with its old settings; starting it with the new ones")
            for seed in paths.seeds(name):
                for entry in paths.seed_dir(name, seed).iterdir():
                    if entry != paths.seed_lock(name, seed):
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            paths.setup_json(name).unlink(missing_ok=True)


def prepare_run(root: str | Path, cfg: RunConfig, setups: list[str], dataset: Dataset,
                echo=print) -> art.RunPaths:
    """Check, then create or update run.json, setup.json files and the label permutation.

    Runs under the run's lock, so concurrent workers create each file once.
    """
    paths = art.RunPaths(root)
    art.check_writable(paths.root)
    with art.file_lock(paths.lock):
        replace_ = check_run(paths, cfg, setups, dataset)
        # seed folders first: a kill in between leaves the old run.json, which the rerun
        # compares again, never old weights under a new run.json
        _forget_untrained(paths, paths.setups() if "run" in replace_ else replace_, echo)
        if "run" in replace_:
            paths.random_labels.unlink(missing_ok=True)
            paths.run_json.unlink()
        _remove_run_temps(paths)
        if not paths.random_labels.exists():
            with art.atomic_path(paths.random_labels) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, label_permutation(dataset.train_y, cfg.label_seed))
        for name in setups:
            if not paths.setup_json(name).exists():
                art.write_json_atomic(paths.setup_json(name), setup_record(cfg.setups[name]))
        art.write_json_atomic(paths.run_json, _run_record(paths, cfg, setups, dataset))
    return paths


def _remove_run_temps(paths: art.RunPaths) -> None:
    """Temporary files of run-level writes a kill left (under the run's lock: the only writer)."""
    for name in (paths.run_json.name, paths.random_labels.name):
        art.remove_stale_temps(paths.root, f".{name}.*.tmp")
    for setup in paths.setups():
        art.remove_stale_temps(paths.setup_json(setup).parent, ".setup.json.*.tmp")


def _run_record(paths: art.RunPaths, cfg: RunConfig, setups: list[str], dataset: Dataset) -> dict:
    run_json = art.read_json(paths.run_json, dict) if paths.run_json.exists() else {}
    run_json.update({
        "schema_version": SCHEMA_VERSION,
        "config": _same_places_kept(run_json.get("config"),
                                    {k: v for k, v in cfg.to_dict().items() if k not in ("setups", "seeds")}),
        "seeds": sorted(set(run_json.get("seeds", [])) | set(cfg.seeds)),
        "setups": sorted(set(run_json.get("setups", [])) | set(setups)),
        "dataset": dataset.identity(),
        "classes": list(dataset.classes),
        "random_labels_sha256": art.sha256_file(paths.random_labels),
    })
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    run_json.setdefault("created", now)
    here = {"versions": package_versions(), "git_revision": git_revision(), "host": platform.node()}
    # the first invocation's provenance stays; each other environment that trained into the
    # run is added once, with when it first did (a resume elsewhere is part of the record)
    later = [p for p in run_json.pop("provenance_later", None) or [] if isinstance(p, dict)]
    if not isinstance(run_json.get("provenance"), dict):
        run_json["provenance"] = here
    elif here != run_json["provenance"] and all(
            {k: v for k, v in p.items() if k != "first_seen"} != here for p in later):
        later.append({**here, "first_seen": now})
    if later:
        run_json["provenance_later"] = later
    return run_json


def checkpoint_bytes(cfg: RunConfig, sc: SetupConfig, dtype: str = "fp32") -> tuple[int, int]:
    """(bytes of one checkpoint, bytes of one resume.pt) of a setup, from its real state dict."""
    from ..models import build_network

    with torch.device("meta"):  # shapes and dtypes only: no memory, whatever the width
        net = build_network(cfg.backbone, sc.head_dim, cfg.width)
    def nbytes(state: dict) -> int:
        return sum(t.numel() * t.element_size() for t in state.values())

    ckpt = nbytes(art.model_state(net, art.CHECKPOINT_DTYPES[dtype])) + METADATA_SLACK
    tensors = list(net.parameters())
    params = sum(p.numel() * p.element_size() for p in tensors)
    # the optimizer's state per parameter: Adam exp_avg + exp_avg_sq (and a `step` tensor);
    # SGD its momentum buffer, none without momentum
    moments = 2 if sc.optimizer == "adam" else (1 if sc.momentum else 0)
    stored = len(tensors) * (moments + (sc.optimizer == "adam"))
    resume = moments * params + stored * TENSOR_OVERHEAD + METADATA_SLACK
    if dtype != "fp32":  # a rounded checkpoint leaves the exact weights and buffers to resume.pt
        exact = art.model_state(net)
        resume += nbytes(exact) + len(exact) * TENSOR_OVERHEAD
    return ckpt, resume


def disk_estimate(cfg: RunConfig, todo: list[tuple[str, int, int, int]], dtype: str | dict[str, str] = "fp32") -> int:
    """Bytes the remaining checkpoints need: todo = (setup, seed, last done epoch or -1, until);
    `dtype`: the checkpoints' storage type, or one per setup; a new seed also writes a
    resume.pt. Not counted: a begun seed's resume.pt growing by the exact weights when its
    checkpoints switch to bf16, and the new resume.pt written beside the old one for a moment
    (one per seed training at once)."""
    sizes: dict[str, tuple[int, int]] = {}
    total = 0
    for name, _seed, done, until in todo:
        if name not in sizes:
            sizes[name] = checkpoint_bytes(cfg, cfg.setups[name], dtype if isinstance(dtype, str) else dtype[name])
        ckpt, resume = sizes[name]
        total += (until - done) * ckpt + (resume if done < 0 else 0)
    return total
