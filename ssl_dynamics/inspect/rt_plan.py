"""Planning `inspect rt`: which checkpoints, which bank, and every check before a write.

`plan` reads the run, the bank settings and the store's done flags, then reads the header
of every pending checkpoint (a few kB each: metadata, tensor names and shapes) so that a
foreign, misplaced or damaged checkpoint is refused before anything is evaluated or
written. A checkpoint counts only once its seed's manifest lists it (the manifest commits an
epoch). The full check of each file (sha256 against its manifest, finite weights) happens
when it is loaded for evaluation. The store records the manifest's sha256 of every
checkpoint it evaluates; a checkpoint whose manifest now says otherwise (retrained or
replaced since) is evaluated again.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import artifacts as art
from ..augment import DETERMINISTIC
from ..config import canonical_json, upgrade_setup_dict
from ..errors import UserError
from ..objectives import objective_for
from . import bank as bank_mod
from .plots import compress_ints
from .rtdata import bank_spec, open_store
from .store import RtStore, other_precision, sha_hex, work_path
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
    sha256: str = ""  # the checkpoint's sha256 in its manifest at planning: recorded with its chunk
    redo: bool = False  # evaluated before, from another checkpoint than the manifest's now


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


def committed_epochs(paths: art.RunPaths, setup: str, seed: int) -> set[int]:
    """Epochs of a seed whose checkpoint file exists and is listed in the seed's manifest.
    A file the manifest lacks is an epoch not committed (still being written, or killed
    before its commit): it counts as missing, never as a checkpoint to evaluate."""
    return set(committed_shas(paths, setup, seed))


def committed_shas(paths: art.RunPaths, setup: str, seed: int) -> dict[int, str]:
    """epoch -> the sha256 that the manifest lists, for the epochs of `committed_epochs`
    ("" for an entry that is not text: the loader refuses that checkpoint)."""
    files = set(paths.epochs(setup, seed))
    manifest = paths.manifest(setup, seed)
    if not files or not manifest.is_file():
        return {}
    try:
        entries = art.read_manifest(manifest)["checkpoints"].items()
        listed = {int(e): v if isinstance(v, str) else "" for e, v in entries}
    except ValueError:
        raise UserError(f"corrupt manifest {manifest}: an epoch key is not a number") from None
    return {e: sha for e, sha in listed.items() if e in files}


def find_missing(paths: art.RunPaths, setup: str, epochs: int, seeds) -> dict[int, list[int]]:
    """seed -> epochs in 0..epochs without a committed checkpoint (`committed_epochs`)."""
    missing = {}
    for seed in seeds:
        have = committed_epochs(paths, setup, seed)
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
        unlisted = [f"{s} seed {seed}" for s, seeds in missing.items() for seed in seeds
                    if not run.paths.manifest(s, seed).exists() and run.paths.epochs(s, seed)]
        why = (f"; {', '.join(unlisted[:3])}{' ...' if len(unlisted) > 3 else ''}: checkpoints without "
               f"manifest.json, which commits them (`train status` says more)" if unlisted else "")
        raise UserError(f"missing checkpoints (no file, or not in its seed's manifest): "
                        f"{describe_missing(missing)}{why} (--allow-missing evaluates what exists)")
    if select.epochs is not None:
        top = max(run.cfg.setups[s].epochs for s in setups)
        bad = [e for e in select.epochs if e < 0 or e > top]
        if bad:
            have = ", ".join(f"{s}: 0-{run.cfg.setups[s].epochs}" for s in setups)
            raise UserError(f"epoch(s) {compress_ints(bad)} not in this run's planned epochs ({have}); "
                            f"`inspect rt` evaluates those only (epochs `train extend` added are read "
                            f"by `probe`, `embed` and `activations`)")
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
        spec = bank_mod.check_existing(path, given, keys, ws.run.dataset_sha256, ws.run.n_train)
        check_simclr_batches(spec.n_probe, spec.simclr_batch, keys, ws.run.n_train, path)
        return path, spec, True
    if given["simclr_batch"] is None and "simclr" in ws.run.cfg.setups:
        given["simclr_batch"] = ws.run.cfg.setups["simclr"].batch_size  # B of the bank = B of training
    try:
        spec = bank_mod.BankSpec.with_overrides(**given)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_simclr_batches(min(spec.n_probe, ws.run.n_train), spec.simclr_batch, keys, ws.run.n_train,
                         asked=spec.n_probe)
    return path, spec, False


def check_new_bank(run: art.Run, store_path: Path, bank_path: Path, spec: bank_mod.BankSpec) -> None:
    """Refuse, before a new bank is built, one that the existing store could not accept: built
    with other settings than the store's bank. A store made before the settings were recorded
    is checked on what it shows: its probe images (a function of K, the seed and the training
    set's size alone), replays per image and SimCLR batch. Nothing is read but the store."""
    with existing_store(store_path) as store:
        if store is None:
            return
        if "bank_fingerprint" not in store.root_attrs():  # made, but no bank bound to it yet
            return
        have = store.probes()[0]
        recorded = bank_spec(store.root_attrs())
        attrs = {s: store.attrs(s) for s in store.setups() if s in run.cfg.setups}
    spec = replace(spec, n_probe=min(spec.n_probe, run.n_train))  # what building it would record
    replays = {s: 1 if run.cfg.setups[s].augment in DETERMINISTIC else spec.n_replays for s in attrs}
    if recorded is not None:
        differ = recorded != asdict(spec)
    else:
        differ = (not np.array_equal(have, bank_mod.choose_probes(run.n_train, spec.n_probe, spec.seed))
                  or any("shape" in a and int(a["shape"][2]) != replays[s] for s, a in attrs.items())
                  or any(a.get("simclr_batch", spec.simclr_batch) != spec.simclr_batch
                         for a in attrs.values()))
    if differ:
        raise UserError(f"{store_path} was made from another bank than the new one --bank {bank_path} "
                        f"would be" + (f" ({_spec_diff(recorded, asdict(spec))})" if recorded else "")
                        + "; pass the bank it was made with, or another --store path")


def _spec_diff(have: dict, want: dict) -> str:
    names = {"n_probe": "probes", "n_replays": "replays", "seed": "bank seed", "simclr_batch": "SimCLR batch"}
    return "; ".join(f"{names.get(k, k)} {have.get(k)} there, {want[k]} here" for k in want
                     if have.get(k) != want[k])


def check_simclr_batches(k: int, b: int, keys, n_train: int, existing: Path | None = None,
                         asked: int | None = None) -> None:
    """Refuse evaluating SimCLR (a pair objective, V = 2) on K probe images that do not fill
    whole batches of B: a short last batch has fewer negatives, which makes its views easier
    to classify and inflates their r_t (training drops that batch: drop_last)."""
    if not any(v > 1 for _, v in keys) or k % b == 0:
        return
    probes = [n for n in (k - k % b, k - k % b + b) if 0 < n <= n_train]  # K <= the training set
    batches = [d for d in range(min(b, k), 0, -1) if k % d == 0][:3]
    capped = f" (--probes {asked}, capped to the {n_train} training images)" if asked and asked > k else ""
    raise UserError((f"bank {existing} has K = {k} probe images" if existing else f"K = {k} probe images{capped}")
                    + f", not a multiple of the SimCLR batch B = {b}: the last batch would be short "
                    f"and inflate r_t; use " + ("a new --bank with " if existing else "")
                    + (f"--probes {' or '.join(map(str, probes))}, or " if probes else "")
                    + f"--simclr-batch {' or '.join(map(str, batches))}")


def store_bytes(run: art.Run, setups: list[str], spec: bank_mod.BankSpec, keys) -> int:
    """Upper bound of the store's size: uint8 + float32 per view of every checkpoint."""
    total = 0
    for s in setups:
        sc = run.cfg.setups[s]
        v = objective_for(sc).views_per_image
        m = 1 if sc.augment in DETERMINISTIC else spec.n_replays
        total += len(run.cfg.seeds) * (sc.epochs + 1) * m * min(spec.n_probe, run.n_train) * v * 5
    return total


@contextmanager
def existing_store(store_path: Path) -> Iterator:
    """What the store holds now, read only: its Zarr work store, else (an .h5 path whose work
    store is gone) the archive itself, else None."""
    if work_path(store_path).exists():
        yield RtStore(store_path, writable=False)
    elif store_path.suffix in (".h5", ".hdf5") and store_path.exists():
        with open_store(store_path) as store:
            yield store
    else:
        yield None


def shard_of(setup: str, seed: int, epoch: int, n: int) -> int:
    """The shard (of n) that evaluates checkpoint (setup, seed, epoch). It depends on that key
    alone (not on the run's other seeds or setups, nor on their order), so shards planned at
    different times, before and after seeds were added, split the grid the same way; the
    epochs of one (setup, seed) go round-robin from a stable hash, so shards stay balanced."""
    return (zlib.crc32(f"{setup}/{seed}".encode()) + epoch) % n


def evaluated(store, setup: str) -> dict[tuple[int, int], str]:
    """(seed, epoch) -> recorded sha256 ("" when not recorded) of the setup's evaluated
    checkpoints in a store or archive."""
    seeds, flags = store.attrs(setup).get("seeds"), store.done(setup)
    if not isinstance(seeds, list) or len(seeds) > flags.shape[0]:
        raise UserError(f"corrupt r_t store {store.path}: {setup} lists {seeds!r} as seeds for "
                        f"{flags.shape[0]} rows; rerun `inspect rt` into a new --store")
    # rows beyond the committed seeds: a kill while seeds were added (repaired when the store
    # is next opened for writing); nothing was evaluated in them
    flags = flags[:len(seeds)]
    record = store.checkpoint_sha(setup)
    return {(int(seeds[i]), int(e)): sha_hex(record[i, e]) if record is not None else ""
            for i, e in zip(*np.nonzero(flags))}


@dataclass(frozen=True)
class Evaluations:
    """What a store or archive holds evaluated, in one reading: its id and bank, and per
    setup its precision and (seed, epoch) -> recorded sha256 ("" when not recorded) of each
    evaluated checkpoint. Reads no chunk of the big arrays."""

    store_id: str | None
    bank_fingerprint: str | None
    precision: dict[str, str | None]
    cells: dict[str, dict[tuple[int, int], str]]

    @classmethod
    def read(cls, store, setups: list[str] | None = None) -> "Evaluations":
        """Of an open store, for `setups` (default: all; those it lacks are left out)."""
        root = store.root_attrs()
        names = [s for s in store.setups() if setups is None or s in setups]
        return cls(None if root.get("store_id") is None else str(root["store_id"]),
                   None if root.get("bank_fingerprint") is None else str(root["bank_fingerprint"]),
                   {s: store.attrs(s).get("precision") for s in names},
                   {s: evaluated(store, s) for s in names})

    def snapshot(self, setups: list[str] | None = None) -> tuple[str, int]:
        """(fingerprint, count) of what analyses of `setups` (default: all) read: which store
        it is, its bank, and each setup's precision and evaluated checkpoints with the sha256
        each was evaluated from. Seeds added but not yet evaluated do not change it (they are
        left out of every mean); a checkpoint evaluated since, or again from another file,
        does."""
        h, n = hashlib.sha256(), 0
        h.update(json.dumps([str(self.store_id), str(self.bank_fingerprint)]).encode())
        for s, cells in self.cells.items():
            if setups is None or s in setups:
                n += len(cells)
                h.update(json.dumps([s, str(self.precision[s]), sorted(cells.items())]).encode())
        return h.hexdigest(), n


def evaluations(store_path: str | Path, setups: list[str] | None = None) -> Evaluations:
    """`Evaluations` of the store or archive at `store_path` (read only; refused when there
    is none)."""
    with open_store(store_path) as store:
        return Evaluations.read(store, setups)


def pending_tasks(run: art.Run, store_path: Path, setups: list[str], select,
                  held: Evaluations | None = None) -> list[Task]:
    """The checkpoints of this shard that are committed and not in the store yet, or in it
    from another checkpoint than the manifest lists now (`redo`; read only). Chunks without
    a record (stores made before checkpoints were recorded) are trusted as they are.
    `held`: the store's `Evaluations`, when read already."""
    if held is None:
        with existing_store(store_path) as store:
            held = Evaluations.read(store, setups) if store is not None else Evaluations(None, None, {}, {})
    done = held.cells
    shard_i, shard_n = select.shard
    tasks = []
    for s in setups:
        for seed in run.cfg.seeds:
            shas = committed_shas(run.paths, s, seed)
            for e in range(run.cfg.setups[s].epochs + 1):
                if (shard_of(s, seed, e, shard_n) != shard_i or e not in shas
                        or (select.epochs is not None and e not in select.epochs)):
                    continue
                recorded = done.get(s, {}).get((seed, e))
                if recorded is None:
                    tasks.append(Task(s, seed, e, -1, shas[e]))
                elif recorded and recorded != shas[e]:
                    tasks.append(Task(s, seed, e, -1, shas[e], redo=True))
    return tasks


def describe_redo(tasks: list[Task]) -> str | None:
    """One line naming the checkpoints evaluated again because they changed; None if none."""
    redo: dict[str, dict[int, list[int]]] = {}
    for t in tasks:
        if t.redo:
            redo.setdefault(t.setup, {}).setdefault(t.seed, []).append(t.epoch)
    if not redo:
        return None
    n = sum(len(e) for seeds in redo.values() for e in seeds.values())
    return (f"{n} checkpoint(s) changed since they were evaluated (their manifest's sha256 differs "
            f"from the store's record: retrained or replaced), evaluating again: {describe_missing(redo)}")


def store_behind(run: art.Run, store_path: Path, setups: list[str],
                 held: Evaluations | None = None) -> str | None:
    """One line saying which committed checkpoints of `setups` (their planned epochs, as
    `inspect rt` evaluates) the store lacks, or holds from an older checkpoint; None when it
    is up to date, or when the run's manifests or the store cannot be read (what reads
    them says so). For analyses that read the store without evaluating (read only);
    `held`: the store's `Evaluations`, when read already."""
    try:
        tasks = pending_tasks(run, Path(store_path), [s for s in setups if s in run.cfg.setups],
                              Selection(), held)
    except (UserError, OSError):
        return None
    if not tasks:
        return None
    new: dict[str, dict[int, list[int]]] = {}
    for t in tasks:
        if not t.redo:
            new.setdefault(t.setup, {}).setdefault(t.seed, []).append(t.epoch)
    changed = sum(t.redo for t in tasks)
    parts = ([f"lacks {len(tasks) - changed} checkpoint(s) the run has ({describe_missing(new)})"] if new else []) \
        + ([f"holds {changed} checkpoint(s) from before they changed (retrained or replaced)"] if changed else [])
    return f"the r_t store {' and '.join(parts)}; `inspect rt` evaluates them"


def check_precision(store_path: Path, setups: list[str], precision: str) -> None:
    """Refuse adding results of another precision to a setup of the store (read only).
    Stores written before the precision was recorded have none: accepted."""
    with existing_store(store_path) as store:
        for s in [s for s in setups if s in store.setups()] if store is not None else []:
            have = store.attrs(s).get("precision")
            if have is not None and have != precision:
                raise other_precision(store_path, s, have)


def check_meta(run: art.Run, path: Path, meta: dict, setup: str, seed: int | None = None,
               epoch: int | None = None) -> None:
    """Refuse a checkpoint that belongs to another run, config, architecture or place in the
    grid (its own setup, seed and epoch, when given, must be those of its path)."""
    if seed is not None:
        said = {"setup": meta.get("setup"), "seed": meta.get("seed"), "epoch": meta.get("epoch")}
        want = {"setup": setup, "seed": seed, "epoch": epoch}
        wrong = [f"{k} {said[k]!r} (its path says {want[k]!r})" for k in want if said[k] != want[k]]
        if wrong:
            raise UserError(f"checkpoint {path} is another checkpoint's file: it records "
                            f"{', '.join(wrong)}")
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
        check_meta(run, path, art.check_header(path, shapes), t.setup, t.seed, t.epoch)


def label_permutation(run: art.Run, setups: list[str]) -> np.ndarray | None:
    """The run's random labels (checked), when a selected setup trains on them."""
    return run.random_labels() if any(run.cfg.setups[s].random_labels for s in setups) else None


def bind_store(run: art.Run, store: RtStore, bank: bank_mod.Bank, setups: list[str],
               tasks: list[Task], random_labels: np.ndarray | None, precision: str = "fp32") -> list[Task]:
    """Create or check (and grow) the store's arrays; the tasks with their seed slots."""
    store.init_probes(bank.probe_indices, bank.labels, bank.fingerprint, asdict(bank.spec))
    order: dict[str, list[int]] = {}
    for s in setups:
        sc = run.cfg.setups[s]
        key = (sc.augment, objective_for(sc).views_per_image)
        targets = random_labels[bank.probe_indices] if sc.random_labels else bank.labels
        m, k, v = bank.views[key].shape[:3]
        order[s] = store.ensure_setup(s, list(run.cfg.seeds), sc.epochs + 1, m, k, v, targets, {
            "setup_config": sc.to_dict(), "bank_fingerprint": bank.fingerprints[key],
            "dataset_sha256": run.dataset_sha256, "simclr_batch": bank.spec.simclr_batch,
            "precision": precision})
    bound = [replace(t, s_idx=order[t.setup].index(t.seed)) for t in tasks]
    for t in bound:
        if t.redo:  # pending again until its new chunk is written, whatever stops the run
            store.forget(t.setup, t.s_idx, t.epoch)
    return bound
